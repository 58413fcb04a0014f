"""An in-process driver of one KV replica: the node's replica machine without NATS.

:class:`LocalKVDriver` runs the same pure :class:`~edgefn.state.machine.Replica` as the node's
:class:`~edgefn.state.driver.KVDriver`, as the only replica of its namespace, over the same
:class:`~edgefn.state.store.SqliteStore` (in memory unless given a file). ``edgefn.testing`` serves
function code's KV calls with it through the node's own call path (``edge.kv_calls``), so
revisions, ``if_revision`` conflicts, limits, TTLs and listing are the node's, not a model's.

The instructions of the machine are carried out in the call, in order:

- ``Persist``: applied to the store before anything after it;
- ``Reply``: the answer of the operation with that id;
- ``AskHome`` (a strong operation): applied to a :class:`~edgefn.state.home.HomeRegister`, the
  pure model of the JetStream home that the real driver follows; its outcome goes back to the
  machine at once as ``StrongResult``;
- ``Broadcast`` and ``SendTo``: dropped, there are no peers;
- ``ScheduleTick``: remembered. An operation that is not answered at once (a session token naming
  writes this replica never saw) waits, and the driver feeds ``Tick`` at the scheduled times
  until the machine answers it (it times out after ``session_wait_ms``, as on a node).

Time is the wall clock, as in ``KVDriver``: a TTL expires in real time.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from edgefn.state import (
    AskHome,
    Event,
    Failed,
    HomeRegister,
    Persist,
    Replica,
    ReplicaConfig,
    Reply,
    Result,
    ScheduleTick,
    StrongResult,
    Tick,
)
from edgefn.state.operations import ReplicaOperations
from edgefn.state.store import SqliteStore

__all__ = ["LocalDriverStatistics", "LocalKVDriver"]


@dataclass(frozen=True, slots=True)
class LocalDriverStatistics:
    namespace: str
    replica: str
    operations: int
    home_operations: int
    ticks: int


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class LocalKVDriver(ReplicaOperations):
    """The one replica of ``namespace``, driven in this process (``config``: ReplicaConfig fields)."""

    def __init__(
        self,
        *,
        namespace: str,
        replica_id: str = "local",
        store_path: str | Path = ":memory:",
        config: Mapping[str, int] | None = None,
    ) -> None:
        self.namespace = namespace
        settings = ReplicaConfig(replica_id=replica_id, replicas=(replica_id,), **(config or {}))
        self.replica = Replica(settings)
        self.store = SqliteStore(store_path)
        # The store's connection closes with the driver, whoever forgets to call close().
        self._finalizer = weakref.finalize(self, self.store.close)
        self.home = HomeRegister()
        self._op_ids = itertools.count(1)
        self._answers: dict[int, Result] = {}
        self._tick_at_ms: int | None = None
        self._stats = {"operations": 0, "home_operations": 0, "ticks": 0}
        self._feed(self.store.recover(_wall_ms()))
        self._feed(Tick(_wall_ms()))

    def close(self) -> None:
        self._finalizer()

    # -- client operations: edgefn.state.operations (the same as KVDriver's) -------------------
    def _now_ms(self) -> int:
        return _wall_ms()

    def statistics(self) -> LocalDriverStatistics:
        return LocalDriverStatistics(self.namespace, self.replica.id, **self._stats)

    # -- machine plumbing ----------------------------------------------------------------------
    async def _call(self, make: Callable[[int], Event]) -> Result:
        op_id = next(self._op_ids)
        self._stats["operations"] += 1
        self._feed(make(op_id))
        while op_id not in self._answers:
            # The machine keeps the operation waiting: its ticks answer it (at the latest with
            # KVSessionBehind once session_wait_ms has passed). Every Tick schedules the next.
            assert self._tick_at_ms is not None, "a waiting operation has a tick scheduled"
            await asyncio.sleep(max(self._tick_at_ms - _wall_ms(), 0) / 1000)
            self._tick_at_ms = None
            self._stats["ticks"] += 1
            self._feed(Tick(_wall_ms()))
        result = self._answers.pop(op_id)
        if isinstance(result, Failed):
            raise result.error
        return result

    def _feed(self, event: Event) -> None:
        events = collections.deque([event])
        while events:
            for ins in self.replica.handle(events.popleft()):
                if isinstance(ins, Persist):
                    self.store.apply(ins)
                elif isinstance(ins, Reply):
                    self._answers[ins.op_id] = ins.result
                elif isinstance(ins, AskHome):
                    self._stats["home_operations"] += 1
                    outcome = self.home.apply(ins.op)
                    events.append(StrongResult(ins.op.op_id, outcome, _wall_ms()))
                elif isinstance(ins, ScheduleTick) and (
                    self._tick_at_ms is None or ins.at_ms < self._tick_at_ms
                ):
                    self._tick_at_ms = ins.at_ms
                # Broadcast and SendTo go to peers, and there are none.
