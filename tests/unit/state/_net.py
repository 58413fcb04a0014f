"""A tiny lossless network for unit tests: replicas plus a queue of messages in flight."""

from __future__ import annotations

from edgefn.state import (
    AskHome,
    Broadcast,
    Event,
    HomeRegister,
    Instruction,
    Replica,
    ReplicaConfig,
    Reply,
    Result,
    SendTo,
    StrongResult,
    received,
)
from edgefn.state.messages import Message


class Net:
    def __init__(self, names: tuple[str, ...] = ("a", "b", "c"), **limits: int) -> None:
        self.names = names
        self.replicas = {
            n: Replica(ReplicaConfig(replica_id=n, replicas=names, **limits)) for n in names
        }
        self.in_flight: list[tuple[str, str, Message]] = []
        self.replies: dict[int, Result] = {}
        self.home = HomeRegister()
        self.home_reachable = True
        self.now = 1_000

    def do(self, name: str, event: Event) -> list[Instruction]:
        out = self.replicas[name].handle(event)
        self.replicas[name].check_invariants()
        for ins in out:
            if isinstance(ins, Broadcast):
                self.in_flight += [(name, p, ins.message) for p in self.names if p != name]
            elif isinstance(ins, SendTo):
                self.in_flight.append((name, ins.replica, ins.message))
            elif isinstance(ins, Reply):
                self.replies[ins.op_id] = ins.result
            elif isinstance(ins, AskHome) and self.home_reachable:
                outcome = self.home.apply(ins.op)
                self.do(name, StrongResult(ins.op.op_id, outcome, self.now))
        return out

    def flush(self, *, only: str | None = None, rounds: int = 100) -> None:
        for _ in range(rounds):
            if not self.in_flight:
                return
            batch, self.in_flight = self.in_flight, []
            for src, dst, message in batch:
                if only is not None and dst != only and src != only:
                    self.in_flight.append((src, dst, message))
                    continue
                self.do(dst, received(message, self.now))
        assert not self.in_flight or only is not None, "network did not settle"

    def drop_all(self) -> None:
        self.in_flight.clear()
