"""Hypothesis stateful test: random deploys, rollbacks, partitions and bad versions vs a model.

The model tracks the active, previous and pending version. Whatever the interleaving, every step
keeps the reconciler's invariants, a completion is only ever of the pending good version, an
automatic rollback only ever of a bad one, and after healing and settling every location serves
exactly the model's active version.
"""

from __future__ import annotations

from _control_harness import Node, World, ref
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from edgefn.control import (
    DeploymentCompleted,
    DeploymentStarted,
    DeployRequested,
    GateThresholds,
    PlacementChosen,
    Reconciler,
    ReconcilerOptions,
    Rejected,
    RollbackRequested,
    RolledBack,
)

FN = "fn"
BAD = 5  # versions >= BAD fail to load
LAYOUT = {"ams": "eu", "fra": "eu", "iad": "us", "nrt": "ap"}
OPTIONS = ReconcilerOptions(
    gates=GateThresholds(min_soak_ms=2000), canary_weight=0.25, max_region_waves=2
)


class ReconcilerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        bad = frozenset(ref(n).version_id for n in range(BAD, 8))
        nodes = [Node(loc, region, bad_versions=bad) for loc, region in LAYOUT.items()]
        self.w = World(Reconciler(OPTIONS), nodes)
        self.w.register_all()
        self.active: int | None = None
        self.previous: int | None = None
        self.pending: int | None = None
        self.deployed = False

    def _apply(self, out: list[object], started: int | None = None) -> None:
        for ins in out:
            if isinstance(ins, DeploymentStarted):
                assert started is not None
                self.deployed = True
                self.pending = started
            elif isinstance(ins, DeploymentCompleted):
                assert self.pending is not None
                assert ins.version_id == ref(self.pending).version_id
                assert self.pending < BAD
                self.previous, self.active, self.pending = self.active, self.pending, None
            elif isinstance(ins, RolledBack) and ins.automatic:
                assert self.pending is not None
                assert self.pending >= BAD, ins.reason
                self.pending = None

    @rule(n=st.integers(1, 7), strategy=st.sampled_from(["immediate", "canary"]))
    def deploy(self, n: int, strategy: str) -> None:
        # The model has no traffic: canaries advance on their soak (allow_no_traffic).
        out = self.w.feed(DeployRequested(FN, ref(n), strategy, self.w.now_ms, (), True))
        # Instructions apply in order: a pending rollout whose last stage was applied everywhere
        # completes before the new one starts (and the new one may roll back at once).
        self._apply(list(out), started=n)
        rejected = any(isinstance(i, Rejected) for i in out)
        started = any(isinstance(i, DeploymentStarted) for i in out)
        assert rejected != started
        if rejected:
            assert n == self.active  # only deploying the active version is refused

    @rule(to=st.none() | st.integers(1, 4))
    def rollback(self, to: int | None) -> None:
        out = self.w.feed(RollbackRequested(FN, None if to is None else ref(to), self.w.now_ms))
        rejected = any(isinstance(i, Rejected) for i in out)
        if not self.deployed:
            assert rejected
        elif self.pending is not None and to in (None, self.active):
            self.pending = None
        elif to is None:
            assert rejected == (self.previous is None)
            if not rejected:
                self.active, self.previous = self.previous, self.active
        elif self.pending is None and to == self.active:
            assert rejected
        else:
            assert not rejected
            self.pending = None
            self.previous, self.active = self.active, to

    @rule(silent=st.sets(st.sampled_from(sorted(LAYOUT))), ms=st.integers(1, 3000))
    def step(self, silent: set[str], ms: int) -> None:
        self.w.silent = silent
        self._apply(list(self.w.step(ms)))

    @rule()
    def heal_and_settle(self) -> None:
        self.w.silent = set()
        for _ in range(60):
            self._apply(list(self.w.step(1000)))
            if self.pending is None and not self.w.pending:
                break
        assert self.pending is None
        expected = {ref(self.active).version_id: 1.0} if self.active else {}
        for node in self.w.nodes.values():
            assert node.weights(FN) == expected, (node.location, node.weights(FN), expected)
        status = self.w.r.function_status(FN)
        assert status is None or status.converged

    @invariant()
    def reconciler_agrees_with_model(self) -> None:
        status = self.w.r.function_status(FN)
        if status is None:
            return
        assert status.active == (ref(self.active) if self.active else None)
        assert status.previous == (ref(self.previous) if self.previous else None)
        pending = status.deployment is not None and status.deployment.status == "in_progress"
        assert pending == (self.pending is not None)


ReconcilerMachine.TestCase.settings = settings(
    max_examples=80, stateful_step_count=30, deadline=None
)
test_reconciler_stateful = ReconcilerMachine.TestCase


class PlacementMachine(RuleBasedStateMachine):
    """Random re-placements of a smart function while locations go silent and come back: once
    its first deploy completed, some location serves it at every step (make before break), and
    after settling exactly the chosen locations do."""

    def __init__(self) -> None:
        super().__init__()
        self.w = World(Reconciler(OPTIONS), [Node(loc, region) for loc, region in LAYOUT.items()])
        self.w.register_all()
        self.chosen: tuple[str, ...] = ("ams",)
        self.w.feed(DeployRequested(FN, ref(1), "immediate", 0, (), True, self.chosen))
        for _ in range(5):
            self.w.step(1000)
        assert self._serving() == {"ams"}

    def _serving(self) -> set[str]:
        vid = ref(1).version_id
        return {loc for loc, n in self.w.nodes.items() if n.weights(FN).get(vid) == 1.0}

    @rule(locations=st.sets(st.sampled_from(sorted(LAYOUT)), min_size=1))
    def place(self, locations: set[str]) -> None:
        self.chosen = tuple(sorted(locations))
        self.w.feed(PlacementChosen(FN, self.chosen, self.w.now_ms))

    @rule(silent=st.sets(st.sampled_from(sorted(LAYOUT))), ms=st.integers(1, 3000))
    def step(self, silent: set[str], ms: int) -> None:
        self.w.silent = silent
        self.w.step(ms)

    @rule()
    def heal_and_settle(self) -> None:
        self.w.silent = set()
        for _ in range(20):
            self.w.step(1000)
        assert self._serving() == set(self.chosen)

    @invariant()
    def someone_serves(self) -> None:
        assert self._serving(), "no location serves the function"


PlacementMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None
)
test_placement_stateful = PlacementMachine.TestCase
