"""Hypothesis state machine: two replicas under arbitrary delivery order against a model.

The model is the definition of last-writer-wins: for each key, the write with the greatest stamp
among all writes made so far. After every message is delivered, both replicas must agree with
the model; a replica's own reads always reflect its own latest write.
"""

from __future__ import annotations

from _net import Net
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from edgefn.state import Delete, Get, GetDone, Put, Tick, WriteDone

KEYS = st.sampled_from(["k0", "k1", "k2"])
NAMES = st.sampled_from(["a", "b"])


class ReplicaPair(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.net = Net(("a", "b"))
        self.model: dict[str, tuple[tuple[int, str], bytes | None]] = {}
        self.op_id = 0

    def _next(self) -> int:
        self.op_id += 1
        return self.op_id

    def _remember(self, key: str, result: object, value: bytes | None) -> None:
        assert isinstance(result, WriteDone)
        assert result.stamp is not None
        best = self.model.get(key)
        if best is None or result.stamp > best[0]:
            self.model[key] = (result.stamp, value)

    @rule(name=NAMES, key=KEYS, value=st.binary(max_size=4), advance=st.integers(0, 5))
    def put(self, name: str, key: str, value: bytes, advance: int) -> None:
        self.net.now += advance
        op = self._next()
        self.net.do(name, Put(op, key, value, self.net.now))
        self._remember(key, self.net.replies[op], value)
        assert self._read(name, key) == value

    @rule(name=NAMES, key=KEYS)
    def delete(self, name: str, key: str) -> None:
        op = self._next()
        self.net.do(name, Delete(op, key, self.net.now))
        self._remember(key, self.net.replies[op], None)
        assert self._read(name, key) is None

    @precondition(lambda self: self.net.in_flight)
    @rule(index=st.integers(0, 1_000), duplicate=st.booleans())
    def deliver_one(self, index: int, duplicate: bool) -> None:
        """Deliver any message in flight (reordering), possibly keeping a copy (duplication)."""
        from edgefn.state import received

        i = index % len(self.net.in_flight)
        _src, dst, message = self.net.in_flight[i] if duplicate else self.net.in_flight.pop(i)
        self.net.do(dst, received(message, self.net.now))

    @rule(name=NAMES)
    def tick(self, name: str) -> None:
        self.net.now += 600
        self.net.do(name, Tick(self.net.now))

    @rule()
    def settle(self) -> None:
        self.net.flush()
        for name in ("a", "b"):
            for key in ("k0", "k1", "k2"):
                expected = self.model.get(key, (None, None))[1]
                assert self._read(name, key) == expected, (name, key)

    def _read(self, name: str, key: str) -> bytes | None:
        op = self._next()
        self.net.do(name, Get(op, key, self.net.now))
        result = self.net.replies.pop(op)
        assert isinstance(result, GetDone)
        return result.item.value

    @invariant()
    def frontier_never_passes_own_writes(self) -> None:
        a, b = self.net.replicas["a"], self.net.replicas["b"]
        assert a.applied.get("b", 0) <= b.own_seq
        assert b.applied.get("a", 0) <= a.own_seq


ReplicaPair.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestReplicaPair = ReplicaPair.TestCase
