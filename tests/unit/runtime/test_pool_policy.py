"""The pure pool policy: events in, instructions out."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edgefn.runtime import pool_policy as pp


def _policy(**kw: int) -> pp.PoolPolicy:
    return pp.PoolPolicy(pp.PoolConfig(**kw))


def test_start_forks_generic_workers() -> None:
    pol = _policy(generic_target=2)
    assert pol.handle(pp.Tick(0)) == [pp.Spawn(2)]
    pol.check_invariants()


def test_cold_start_specialises_a_generic_worker_and_refills() -> None:
    """A request with no warm worker takes a generic one; the pool forks a replacement."""
    pol = _policy(generic_target=1)
    pol.handle(pp.Tick(0))
    pol.handle(pp.WorkerSpawned(10, 0))
    out = pol.handle(pp.RequestArrived("f@v1", 1))
    assert out == [pp.Specialize(10, "f@v1", for_request=True), pp.Spawn(1)]
    assert pol.handle(pp.WorkerLoaded(10, True, 2)) == []
    assert pol.handle(pp.RequestDone(10, 3)) == []
    # Warm now: the next request is dispatched without a cold start.
    assert pol.handle(pp.RequestArrived("f@v1", 4)) == [pp.Dispatch(10)]
    assert pol.statistics().cold_starts == 1
    pol.check_invariants()


def test_requests_ride_on_a_loading_worker() -> None:
    pol = _policy(generic_target=1)
    pol.handle(pp.WorkerSpawned(1, 0))
    pol.handle(pp.RequestArrived("f@v", 0))
    assert pol.handle(pp.RequestArrived("f@v", 0)) == [pp.Specialize(1, "f@v", for_request=True)]
    assert pol.statistics().cold_starts == 1


def test_without_generic_workers_the_request_waits_and_a_fork_is_asked() -> None:
    pol = _policy(generic_target=0)
    assert pol.handle(pp.RequestArrived("f@v", 0)) == [pp.Spawn(1), pp.Wait("f@v")]


def test_idle_worker_retired_after_keep_alive() -> None:
    pol = _policy(generic_target=0, keep_alive_ms=1000)
    pol.handle(pp.WorkerSpawned(1, 0))
    pol.handle(pp.RequestArrived("f@v", 0))
    pol.handle(pp.WorkerLoaded(1, True, 0))
    pol.handle(pp.RequestDone(1, 10))
    assert pol.handle(pp.Tick(500)) == []
    assert pol.handle(pp.Tick(1011)) == [pp.Retire(1, "idle past keep-alive")]


def test_retired_version_drains_busy_workers() -> None:
    pol = _policy(generic_target=0)
    pol.handle(pp.WorkerSpawned(1, 0))
    pol.handle(pp.RequestArrived("f@v", 0))
    pol.handle(pp.WorkerLoaded(1, True, 0))
    assert pol.handle(pp.VersionRetired("f@v", 1)) == []
    assert pol.handle(pp.RequestDone(1, 2)) == [pp.Retire(1, "version retired")]


def test_memory_budget_bounds_forks() -> None:
    pol = _policy(generic_target=10, memory_budget_mb=64, worker_memory_mb=16)
    assert pol.handle(pp.Tick(0)) == [pp.Spawn(4)]


def test_failed_load_retires_the_worker() -> None:
    pol = _policy(generic_target=0)
    pol.handle(pp.WorkerSpawned(1, 0))
    pol.handle(pp.RequestArrived("f@v", 0))
    assert pol.handle(pp.WorkerLoaded(1, False, 1)) == [pp.Retire(1, "load failed")]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 5)), max_size=60))
def test_invariants_hold_under_any_event_sequence(steps: list[tuple[int, int]]) -> None:
    pol = _policy(generic_target=2, max_workers_per_version=2, max_concurrency_per_worker=2)
    now = 0
    for kind, arg in steps:
        now += 10
        wid = arg
        event: pp.Event
        if kind == 0:
            event = pp.WorkerSpawned(wid, now)
        elif kind == 1:
            event = pp.RequestArrived(f"f@{arg % 2}", now)
        elif kind == 2:
            event = pp.WorkerLoaded(wid, arg % 3 != 0, now)
        elif kind == 3:
            event = pp.RequestDone(wid, now)
        elif kind == 4:
            event = pp.WorkerExited(wid, now)
        elif kind == 5:
            event = pp.Tick(now)
        else:
            event = pp.VersionRetired(f"f@{arg % 2}", now)
        pol.handle(event)
        pol.check_invariants()
