"""Rollout reconciler transitions: immediate, canary stages, gates, rollbacks, partitions."""

from __future__ import annotations

import pytest
from _control_harness import Node, World, ref

from edgefn.control import (
    DeploymentCompleted,
    DeploymentStarted,
    DeployRequested,
    GateThresholds,
    LocationForgotten,
    NodeObserved,
    ObservedState,
    PlacementChosen,
    Reconciler,
    ReconcilerOptions,
    Rejected,
    RollbackRequested,
    RolledBack,
    StageAdvanced,
    Tick,
    VersionStats,
    WriteDesired,
)

GATES = GateThresholds(min_requests=100, min_soak_ms=5000, advance_requests=1000)
OPTIONS = ReconcilerOptions(gates=GATES, canary_weight=0.1, max_region_waves=3)
FN = "hello"


def _world(layout: dict[str, str] | None = None) -> World:
    layout = layout or {"ams": "eu", "fra": "eu", "iad": "us", "sfo": "us", "nrt": "ap"}
    w = World(Reconciler(OPTIONS), [Node(loc, region) for loc, region in layout.items()])
    w.register_all()
    return w


def _deploy(
    w: World,
    n: int,
    strategy: str = "immediate",
    regions: tuple[str, ...] = (),
    *,
    allow_no_traffic: bool = False,
) -> None:
    w.feed(DeployRequested(FN, ref(n), strategy, w.now_ms, regions, allow_no_traffic))


def _completed(w: World) -> bool:
    return any(isinstance(i, DeploymentCompleted) for i in w.log)


def _serving(w: World, n: int) -> set[str]:
    vid = ref(n).version_id
    return {loc for loc, node in w.nodes.items() if node.weights(FN).get(vid) == 1.0}


def test_registration_writes_generation_for_every_location() -> None:
    """Each node that reports generation 0 gets an (empty) desired state with a fresh generation."""
    w = _world()
    writes = [i for i in w.log if isinstance(i, WriteDesired)]
    assert sorted(i.location for i in writes) == sorted(w.nodes)
    assert len({i.state.generation for i in writes}) == len(writes)
    assert all(i.state.functions == {} for i in writes)
    w.step()
    assert all(s.converged for s in w.r.location_status())


def test_immediate_deploy_converges_everywhere() -> None:
    w = _world()
    _deploy(w, 1)
    status = w.r.function_status(FN)
    assert status is not None
    assert not status.converged
    assert set(status.waiting_for) == set(w.nodes)
    w.run_until(lambda: _completed(w))
    status = w.r.function_status(FN)
    assert status is not None
    assert status.converged
    assert status.active == ref(1)
    assert status.deployment is not None
    assert status.deployment.status == "completed"
    assert _serving(w, 1) == set(w.nodes)
    assert dict(status.version_vector) == {loc: n.generation for loc, n in w.nodes.items()}
    desired = w.r.desired("ams")
    assert desired is not None
    assert desired.signatures == {ref(1).sha256: "sig1"}


def test_canary_stages_weights_and_waves() -> None:
    """Canary: ams at 10% (90% old), then region eu, then ap (regions by name), then all."""
    w = _world()
    _deploy(w, 1)
    w.run_until(lambda: _completed(w))
    w.log.clear()
    _deploy(w, 2, "canary", allow_no_traffic=True)  # this world has no traffic: soak alone
    started = [i for i in w.log if isinstance(i, DeploymentStarted)]
    assert started[0].stages == 4  # canary, eu, ap, all (us, the last region, is the final wave)
    w.step()
    assert w.nodes["ams"].weights(FN) == pytest.approx(
        {ref(2).version_id: 0.1, ref(1).version_id: 0.9}
    )
    assert w.nodes["fra"].weights(FN) == {ref(1).version_id: 1.0}
    w.run_until(lambda: _completed(w))
    stages = [(i.stage, i.locations) for i in w.log if isinstance(i, StageAdvanced)]
    assert stages == [
        (1, ("ams", "fra")),
        (2, ("ams", "fra", "nrt")),
        (3, ("ams", "fra", "iad", "nrt", "sfo")),
    ]
    assert _serving(w, 2) == set(w.nodes)
    status = w.r.function_status(FN)
    assert status is not None
    assert (status.active, status.previous) == (ref(2), ref(1))
    # Each of 4 stages soaked >= 5 s of simulated time; nothing advanced early.
    assert w.now_ms >= 4 * GATES.min_soak_ms


def test_canary_advances_early_on_request_count() -> None:
    w = _world({"ams": "eu"})
    _deploy(w, 1)
    w.run_until(lambda: _completed(w))
    w.log.clear()
    _deploy(w, 2, "canary")
    w.step()
    w.nodes["ams"].stats = {FN: {ref(2).version_id: VersionStats(1000, 0, 5, 10)}}
    out = w.step(advance_ms=1)
    assert any(isinstance(i, StageAdvanced) for i in out)


def test_failing_canary_rolls_back_automatically() -> None:
    """New version's error rate 10% vs previous 1%: the gate fails and every location goes back."""
    w = _world()
    _deploy(w, 1)
    w.run_until(lambda: _completed(w))
    for node in w.nodes.values():
        node.stats = {FN: {ref(1).version_id: VersionStats(1000, 10, 5, 20)}}
    w.log.clear()
    _deploy(w, 2, "canary")
    w.step()
    w.nodes["ams"].stats[FN][ref(2).version_id] = VersionStats(200, 20, 5, 20)
    w.step()
    rolled = [i for i in w.log if isinstance(i, RolledBack)]
    assert len(rolled) == 1
    assert rolled[0].automatic
    assert rolled[0].to_version_id == ref(1).version_id
    assert "error rate 10.00%" in rolled[0].reason
    w.step()
    assert _serving(w, 1) == set(w.nodes)
    status = w.r.function_status(FN)
    assert status is not None
    assert status.active == ref(1)
    assert status.deployment is not None
    assert status.deployment.status == "rolled_back"
    assert w.r.statistics().rollbacks_automatic == 1


def test_slow_canary_rolls_back_on_p99() -> None:
    w = _world({"ams": "eu", "fra": "eu"})
    _deploy(w, 1)
    w.run_until(lambda: _completed(w))
    w.nodes["fra"].stats = {FN: {ref(1).version_id: VersionStats(1000, 0, 5, 100)}}
    _deploy(w, 2, "canary")
    w.step()
    w.nodes["ams"].stats = {FN: {ref(2).version_id: VersionStats(150, 0, 50, 171)}}
    w.step()
    rolled = [i for i in w.log if isinstance(i, RolledBack)]
    assert rolled
    assert "p99 171.0 ms > limit 170.0 ms" in rolled[0].reason


def test_load_error_rolls_back_even_first_deploy() -> None:
    """A node that cannot load the new version fails the gate; with no previous, function drops."""
    w = _world({"ams": "eu", "fra": "eu"})
    _deploy(w, 1, "canary")
    w.step()
    assert w.nodes["ams"].weights(FN) == {ref(1).version_id: 1.0}  # first deploy: no split
    w.nodes["ams"].errors = {ref(1).version_id: "ImportError: no module named foo"}
    w.step()
    rolled = [i for i in w.log if isinstance(i, RolledBack)]
    assert rolled[0].to_version_id is None
    assert "ams could not load" in rolled[0].reason
    w.step()
    assert all(n.weights(FN) == {} for n in w.nodes.values())


def test_partitioned_location_blocks_stage_until_heal() -> None:
    """A silent location never reports the stage generation; the rollout waits, then converges."""
    w = _world()
    w.silent.add("iad")
    _deploy(w, 1)
    for _ in range(50):
        w.step()
    assert not _completed(w)
    status = w.r.function_status(FN)
    assert status is not None
    assert status.waiting_for == ("iad",)
    assert not status.converged
    w.silent.clear()
    w.run_until(lambda: _completed(w))
    status = w.r.function_status(FN)
    assert status is not None
    assert status.converged


def test_manual_rollback_to_previous_and_to_named_version() -> None:
    w = _world({"ams": "eu"})
    for n in (1, 2, 3):
        w.log.clear()
        _deploy(w, n)
        w.run_until(lambda: _completed(w))
    w.feed(RollbackRequested(FN, None, w.now_ms))
    w.step()
    assert _serving(w, 2) == {"ams"}
    w.feed(RollbackRequested(FN, ref(1), w.now_ms))
    w.step()
    assert _serving(w, 1) == {"ams"}
    status = w.r.function_status(FN)
    assert status is not None
    assert (status.active, status.previous) == (ref(1), ref(2))
    assert w.r.statistics().rollbacks_manual == 2
    assert w.r.pinned_versions(FN) == {ref(1).version_id, ref(2).version_id}


def test_manual_rollback_during_canary_aborts_it() -> None:
    w = _world()
    _deploy(w, 1)
    w.run_until(lambda: _completed(w))
    _deploy(w, 2, "canary")
    w.step()
    out = w.feed(RollbackRequested(FN, None, w.now_ms))
    assert [type(i) for i in out if not isinstance(i, WriteDesired)] == [RolledBack]
    w.step()
    assert _serving(w, 1) == set(w.nodes)
    assert w.r.deployments(FN)[-1].status == "rolled_back"


def test_new_deploy_supersedes_running_rollout() -> None:
    w = _world()
    _deploy(w, 1)
    w.run_until(lambda: _completed(w))
    _deploy(w, 2, "canary")
    w.step()
    _deploy(w, 3, "immediate")
    w.run_until(lambda: _serving(w, 3) == set(w.nodes))
    assert [d.status for d in w.r.deployments(FN)] == ["completed", "superseded", "completed"]


@pytest.mark.parametrize(
    ("event_factory", "needle"),
    [
        (lambda: DeployRequested(FN, ref(1), "blue-green", 0), "unknown strategy"),
        (lambda: DeployRequested(FN, ref(1), "immediate", 0), "is active"),
        (lambda: RollbackRequested("nope", None, 0), "never deployed"),
        (lambda: RollbackRequested(FN, None, 0), "no previous version"),
        (lambda: RollbackRequested(FN, ref(1), 0), "already active"),
    ],
)
def test_rejections(event_factory: object, needle: str) -> None:
    w = _world({"ams": "eu"})
    _deploy(w, 1)
    w.run_until(lambda: _completed(w))
    out = w.feed(event_factory())  # type: ignore[operator]
    rejected = [i for i in out if isinstance(i, Rejected)]
    assert len(rejected) == 1
    assert needle in rejected[0].reason


def test_placement_regions_limit_targets() -> None:
    w = _world()
    _deploy(w, 1, regions=("us",))
    w.run_until(lambda: _completed(w))
    assert _serving(w, 1) == {"iad", "sfo"}
    assert w.r.targets(FN) == ("iad", "sfo")


def test_restarted_reconciler_writes_past_node_generation() -> None:
    """A node that applied generation 40 from a previous reconciler gets generation 41+."""
    r = Reconciler(OPTIONS)
    out = r.handle(NodeObserved(ObservedState("ams", 40, region="eu"), 0))
    writes = [i for i in out if isinstance(i, WriteDesired)]
    assert writes[0].state.generation == 41
    r.check_invariants()


def test_forgotten_location_stops_blocking() -> None:
    w = _world({"ams": "eu", "fra": "eu"})
    w.silent.add("fra")
    _deploy(w, 1)
    w.step()
    assert not _completed(w)
    w.feed(LocationForgotten("fra"))
    del w.nodes["fra"]
    w.feed(Tick(w.now_ms))
    w.run_until(lambda: _completed(w))
    assert w.r.statistics().locations == 1


def test_rollback_after_back_to_back_deploys_goes_to_the_superseded_one() -> None:
    """deploy v1, then v2 before v1's rollout is marked complete, then rollback: v1 was sent
    everywhere, so the rollback goes to it (it used to answer "no previous version")."""
    w = _world()
    _deploy(w, 1)
    w.step()  # v1's only stage is written, but no node has reported it yet
    _deploy(w, 2)
    w.run_until(lambda: _completed(w) and _serving(w, 2) == set(w.nodes))
    out = w.feed(RollbackRequested(FN, None, w.now_ms))
    assert not [i for i in out if isinstance(i, Rejected)]
    w.step()
    assert _serving(w, 1) == set(w.nodes)


def test_a_superseded_canary_is_not_what_a_rollback_goes_to() -> None:
    w = _world()
    _deploy(w, 1)
    w.run_until(lambda: _completed(w))
    _deploy(w, 2, "canary")
    w.step()
    _deploy(w, 3)
    w.run_until(lambda: _completed(w) and _serving(w, 3) == set(w.nodes))
    w.feed(RollbackRequested(FN, None, w.now_ms))
    w.step()
    assert _serving(w, 1) == set(w.nodes)


def test_a_canary_without_traffic_does_not_advance_on_soak_alone() -> None:
    """A soaked stage with zero requests proved nothing: it waits for min_requests (or an explicit
    allow_no_traffic), then advances on the soak."""
    w = _world({"ams": "eu", "iad": "us"})
    _deploy(w, 1)
    w.run_until(lambda: _completed(w))
    w.log.clear()
    _deploy(w, 2, "canary")
    for _ in range(10):
        w.step(advance_ms=GATES.min_soak_ms)
    assert not [i for i in w.log if isinstance(i, StageAdvanced)]
    status = w.r.function_status(FN)
    assert status is not None
    assert status.deployment is not None
    assert status.deployment.status == "in_progress"
    w.nodes["ams"].stats = {FN: {ref(2).version_id: VersionStats(GATES.min_requests, 0, 5, 10)}}
    w.step(advance_ms=1)
    w.step(advance_ms=GATES.min_soak_ms)
    assert [i for i in w.log if isinstance(i, StageAdvanced)]


def _canary_beside(prev_requests_at_canary: int) -> list[RolledBack]:
    """fra serves only v1 (fast); the canary location ams serves v1 and v2, both slower. The
    counts are cumulative, as nodes report them: v1 is judged by what it served after ams first
    reported v2."""
    w = _world({"ams": "eu", "fra": "eu"})
    _deploy(w, 1)
    w.run_until(lambda: _completed(w))
    v1, v2 = ref(1).version_id, ref(2).version_id
    w.nodes["fra"].stats = {FN: {v1: VersionStats(5000, 0, 5, 20)}}
    w.nodes["ams"].stats = {FN: {v1: VersionStats(3000, 0, 50, 90)}}
    w.step()
    _deploy(w, 2, "canary")
    w.step()
    w.nodes["ams"].stats = {FN: {v1: VersionStats(3000, 0, 50, 90), v2: VersionStats(1, 0, 50, 95)}}
    w.step()
    w.nodes["fra"].stats = {FN: {v1: VersionStats(10000, 0, 5, 20)}}
    w.nodes["ams"].stats = {
        FN: {
            v1: VersionStats(3000 + prev_requests_at_canary, 0, 50, 90),
            v2: VersionStats(150, 0, 50, 95),
        }
    }
    w.step()
    return [i for i in w.log if isinstance(i, RolledBack)]


def _canary_in_a_fault(v1_errors_since: int) -> list[RolledBack]:
    """v1 served 100,000 requests with 10 errors before the deploy; then a fault (a KV home's
    leader dying) fails 3 of the canary's first 150 requests and ``v1_errors_since`` of the 900
    that v1 served beside it meanwhile."""
    w = _world({"ams": "eu"})
    _deploy(w, 1)
    w.run_until(lambda: _completed(w))
    v1, v2 = ref(1).version_id, ref(2).version_id
    w.nodes["ams"].stats = {FN: {v1: VersionStats(100_000, 10, 5, 20)}}
    w.step()
    _deploy(w, 2, "canary")
    w.step()
    w.nodes["ams"].stats = {
        FN: {
            v1: VersionStats(100_900, 10 + v1_errors_since, 5, 20),
            v2: VersionStats(150, 3, 5, 20),
        }
    }
    w.step()
    return [i for i in w.log if isinstance(i, RolledBack)]


def test_a_fault_during_the_canary_is_judged_over_the_same_time_for_both_versions() -> None:
    # 2% for the canary, 2% for v1 since the rollout began: the fault, not the version.
    assert _canary_in_a_fault(18) == []
    # v1 served the same time without errors: the canary's 2% is its own.
    rolled = _canary_in_a_fault(0)
    assert rolled
    assert "error rate 2.00% > limit 1.00% (previous 0.00%)" in rolled[0].reason


def test_a_canary_is_judged_against_its_own_locations_traffic() -> None:
    """The canary location is slower than the rest for both versions (farther from the KV home):
    against the planet-wide p99 the canary would fail; against its own location's it passes."""
    assert _canary_beside(900) == []
    # Without enough of the active version's requests beside it, the planet-wide figure counts.
    rolled = _canary_beside(10)
    assert rolled
    assert "p99 95.0 ms" in rolled[0].reason


def _weights_at(w: World, location: str) -> dict[str, float]:
    applied = w.nodes[location].applied
    return w.nodes[location].weights(FN) if applied and FN in applied.functions else {}


def test_smart_placement_deploys_only_at_the_chosen_locations() -> None:
    w = _world()
    w.feed(DeployRequested(FN, ref(1), "immediate", w.now_ms, placed=("fra", "iad")))
    w.run_until(lambda: _completed(w))
    assert _serving(w, 1) == {"fra", "iad"}
    status = w.r.function_status(FN)
    assert status is not None
    assert (status.targets, status.placed, status.converged) == (
        ("fra", "iad"),
        ("fra", "iad"),
        True,
    )


def test_a_new_placement_keeps_the_old_locations_until_the_new_ones_serve() -> None:
    """Make before break: fra and iad serve on until nrt and sfo applied the function."""
    w = _world()
    w.feed(DeployRequested(FN, ref(1), "immediate", w.now_ms, placed=("fra", "iad")))
    w.run_until(lambda: _completed(w))
    w.silent.add("nrt")  # nrt is slow to apply: the old replicas must not go yet
    w.feed(PlacementChosen(FN, ("nrt", "sfo"), w.now_ms))
    for _ in range(5):
        w.step()
        assert _serving(w, 1) >= {"fra", "iad"}
    assert w.r.targets(FN) == ("fra", "iad", "nrt", "sfo")
    w.silent.clear()
    w.run_until(lambda: _serving(w, 1) >= {"nrt", "sfo"})
    arrived = w.now_ms
    # The others learn from beacons that nrt and sfo run it: fra and iad serve on meanwhile.
    assert _serving(w, 1) >= {"fra", "iad"}
    w.run_until(lambda: _serving(w, 1) == {"nrt", "sfo"})
    assert w.now_ms - arrived >= OPTIONS.placement_grace_ms
    assert w.r.targets(FN) == ("nrt", "sfo")
    assert _weights_at(w, "fra") == {}


def test_a_deploy_without_placement_goes_back_to_every_location() -> None:
    w = _world()
    w.feed(DeployRequested(FN, ref(1), "immediate", w.now_ms, placed=("ams",)))
    w.run_until(lambda: _completed(w))
    _deploy(w, 2)
    w.run_until(lambda: _serving(w, 2) == set(w.nodes))
    status = w.r.function_status(FN)
    assert status is not None
    assert status.placed is None


def test_a_smart_canary_stays_inside_the_placement() -> None:
    w = _world()
    w.feed(DeployRequested(FN, ref(1), "immediate", w.now_ms, placed=("fra", "nrt")))
    w.run_until(lambda: _completed(w))
    w.feed(DeployRequested(FN, ref(2), "canary", w.now_ms, placed=("fra", "nrt")))
    for _ in range(30):
        w.step()
        assert all(not _weights_at(w, loc) for loc in ("ams", "iad", "sfo"))
