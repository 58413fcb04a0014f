"""A tiny in-memory world around a Reconciler: nodes that apply desired state when asked."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgefn.control import (
    DesiredState,
    Instruction,
    NodeObserved,
    ObservedState,
    Reconciler,
    Tick,
    VersionRef,
    VersionStats,
    WriteDesired,
)


def ref(n: int) -> VersionRef:
    sha = f"{n:02x}" * 32
    return VersionRef(sha[:12], sha, f"sig{n}")


@dataclass
class Node:
    location: str
    region: str
    applied: DesiredState | None = None
    stats: dict[str, dict[str, VersionStats]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    bad_versions: frozenset[str] = frozenset()

    @property
    def generation(self) -> int:
        return self.applied.generation if self.applied else 0

    def observed(self, now_ms: int) -> ObservedState:
        # A bad version fails to load wherever it is applied, as an import error would.
        failed = {v: "ImportError: boom" for f in self.applied_functions() for v in f}
        errors = {v: r for v, r in failed.items() if v in self.bad_versions} | self.errors
        return ObservedState(
            self.location,
            self.generation,
            self.stats,
            errors,
            now_ms,
            self.region,
            f"http://{self.location}",
        )

    def applied_functions(self) -> list[dict[str, float]]:
        if self.applied is None:
            return []
        return [self.weights(name) for name in self.applied.functions]

    def weights(self, function: str) -> dict[str, float]:
        if self.applied is None or function not in self.applied.functions:
            return {}
        return {v.version_id: v.weight for v in self.applied.functions[function].versions}


class World:
    """Reconciler + nodes. ``pending`` holds the desired state each node has not applied yet."""

    def __init__(self, reconciler: Reconciler, nodes: list[Node]) -> None:
        self.r = reconciler
        self.nodes = {n.location: n for n in nodes}
        self.pending: dict[str, DesiredState] = {}
        self.log: list[Instruction] = []
        self.now_ms = 0
        self.silent: set[str] = set()

    def feed(self, event: object) -> list[Instruction]:
        out = self.r.handle(event)  # type: ignore[arg-type]
        self.r.check_invariants()
        self.log.extend(out)
        for ins in out:
            if isinstance(ins, WriteDesired):
                self.pending[ins.location] = ins.state
        return out

    def register_all(self) -> None:
        for node in self.nodes.values():
            self.feed(NodeObserved(node.observed(self.now_ms), self.now_ms))

    def step(self, advance_ms: int = 1000) -> list[Instruction]:
        """Time passes; every reachable node applies what is pending and reports."""
        self.now_ms += advance_ms
        out: list[Instruction] = []
        for location in sorted(self.nodes):
            if location in self.silent:
                continue
            node = self.nodes[location]
            if location in self.pending:
                node.applied = self.pending.pop(location)
            out += self.feed(NodeObserved(node.observed(self.now_ms), self.now_ms))
        out += self.feed(Tick(self.now_ms))
        return out

    def run_until(self, predicate: object, max_steps: int = 200) -> None:
        for _ in range(max_steps):
            if predicate():  # type: ignore[operator]
                return
            self.step()
        raise AssertionError("condition not reached within the step budget")
