"""A hot location: less admission capacity, and peers route around it before anything fails."""

from __future__ import annotations

import random

import pytest

from edgefn.routing import (
    AdmissionConfig,
    AdmissionController,
    Admit,
    Arrived,
    CapacityChanged,
    Completed,
    LimitConfig,
    LoadReport,
    LoadReported,
    Queue,
    RouteRequest,
    RoutingConfigError,
    RoutingPolicy,
    ThermalConfig,
    ThermalThrottle,
)


def test_capacity_falls_from_soft_to_hard_and_hot_has_hysteresis() -> None:
    t = ThermalThrottle(ThermalConfig(soft_c=80, hard_c=95, hysteresis_c=3, min_factor=0.25))
    assert t.update(None) == t.state
    assert (t.state.hot, t.state.capacity) == (False, 1.0)
    assert (t.update(60).hot, t.state.capacity) == (False, 1.0)
    assert (t.update(80).hot, t.state.capacity) == (True, 1.0)
    assert t.update(87.5).capacity == pytest.approx(0.625)
    assert t.update(120).capacity == 0.25
    # Cooling: still hot until below soft - hysteresis.
    assert (t.update(78).hot, t.state.capacity) == (True, 1.0)
    assert t.update(76.9).hot is False
    # A lost reading is never a reason to throttle.
    assert t.update(None).hot is False
    assert t.state.capacity == 1.0


@pytest.mark.parametrize(
    "kw", [{"soft_c": 90, "hard_c": 80}, {"min_factor": 0.0}, {"hysteresis_c": -1}]
)
def test_bad_thermal_config_is_a_clear_error(kw: dict[str, float]) -> None:
    with pytest.raises(RoutingConfigError, match="thermal"):
        ThermalConfig(**kw)


def test_admission_capacity_lowers_the_limit_and_a_rise_admits_waiters() -> None:
    limit = LimitConfig(min_limit=4, initial_limit=8, max_limit=8)
    ctl = AdmissionController(AdmissionConfig(limit=limit, max_queue=10, queue_timeout_ms=10_000))
    assert ctl.handle(CapacityChanged(0.25, 0)) == []
    assert ctl.limit == 2
    verdicts = [ctl.handle(Arrived(i, 0))[0] for i in range(1, 5)]
    assert [type(v) for v in verdicts] == [Admit, Admit, Queue, Queue]
    ctl.check_invariants()
    # Cooler again: the limit is back and the two waiters are admitted at once.
    admitted = ctl.handle(CapacityChanged(1.0, 10))
    assert [a.req_id for a in admitted if isinstance(a, Admit)] == [3, 4]
    assert ctl.limit == 8
    ctl.handle(Completed(1, 20.0, True, 20))
    ctl.check_invariants()
    assert ctl.load_report("fra", now_ms=30, hot=True).hot is True


def test_a_hot_ingress_forwards_to_a_close_cool_neighbour_and_keeps_far_traffic() -> None:
    pos = {"fra": 0.0, "ams": 10.0, "syd": 900.0}

    def rtt(a: str, b: str) -> float:
        return abs(pos[a] - pos[b])

    def policy(hot_fra: bool) -> RoutingPolicy:
        p = RoutingPolicy(rtt, rng=random.Random(1))
        for loc in pos:
            hot = hot_fra and loc == "fra"
            p.handle(LoadReported(LoadReport(loc, 0, 0, 10, 20.0, False, False, 0, hot=hot)))
        return p

    def target(p: RoutingPolicy, ingress: str) -> str:
        req = RouteRequest(ingress=ingress, function="f", candidates=tuple(pos), now_ms=100)
        return p.decide(req).target

    assert target(policy(False), "fra") == "fra"
    assert target(policy(True), "fra") == "ams"  # 10 ms away beats a 400 ms hot penalty
    assert target(policy(True), "ams") == "ams"  # nobody is sent to the hot location
    # A neighbour farther than the penalty is worth: the hot location still serves.
    only_far = RouteRequest(ingress="fra", function="f", candidates=("fra", "syd"), now_ms=100)
    assert policy(True).decide(only_far).target == "fra"
