"""Instance pools ([cold_start] instance_concurrency): closed forms, reuse rule, invariants, schema.

Closed forms (sim/_analytic.py): one instance with a fixed keep-alive is a renewal process with
exact cold, rejection, instance, idle and lifetime figures; with no capacity limit and no
cold-start time the busy instances are M/G/∞ (mean λE[S]); one instance of concurrency 3 that
never expires is M/G/3/3 (Erlang B); a keep-alive of 0 makes every request cold. Each figure is
checked against the run's own batch-means 95% interval widened Bonferroni-style for the family
of intervals in this file (as test_validation.py does). Seeds are fixed, not searched.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.special import stdtrit
from typer.testing import CliRunner

from edgefn.cli.main import app
from edgefn.errors import ScenarioError
from edgefn.runtime.keepalive import FixedKeepAlive, HybridHistogramPolicy
from edgefn.sim import (
    NON_DETERMINISTIC_KEYS,
    PoolSpec,
    RequestArrays,
    erlang_b,
    parse_scenario,
    run_pool,
    simulate,
    single_instance_pool,
)
from edgefn.sim._pool import Arrive, Finish, PoolMachine, Schedule

FAMILY = 12  # intervals checked against theory in this file
EXAMPLES = Path(__file__).parent.parent.parent / "examples" / "scenarios"


def _within(ci: dict[str, Any], theory: float) -> bool:
    dof = int(ci["n"]) - 1
    widen = float(stdtrit(dof, 1.0 - 0.05 / (2 * FAMILY)) / stdtrit(dof, 0.975))
    return abs(float(ci["mean"]) - theory) <= float(ci["half_width"]) * widen


def pool_doc(
    *,
    rate_per_s: float,
    service_ms: float,
    cold_ms: float,
    keep_alive_s: float,
    duration_s: float,
    concurrency: int = 1,
    max_instances: int | None = None,
    service: str = "exponential",
    seed: int = 1,
    locations: int = 1,
    keep_alive: str = "fixed",
    functions: int = 1,
) -> dict[str, Any]:
    cold: dict[str, Any] = {
        "enabled": True,
        "distribution": "deterministic",
        "mean_ms": cold_ms,
        "keep_alive": keep_alive,
        "keep_alive_s": keep_alive_s,
        "instance_concurrency": concurrency,
    }
    if max_instances is not None:
        cold["max_instances"] = max_instances
    return {
        "run": {"duration_s": duration_s, "seed": seed, "warmup_s": duration_s / 50},
        "locations": [{"name": f"l{i}"} for i in range(locations)],
        "workload": {"arrivals": "poisson", "rate_per_s": rate_per_s, "functions": functions},
        "service": {"distribution": service, "mean_ms": service_ms, "scv": 2.0},
        "cold_start": cold,
    }


def test_single_instance_matches_renewal_closed_form() -> None:
    lam, es, ec, t = 1.0, 1.0, 0.5, 2.0
    doc = pool_doc(
        rate_per_s=lam,
        service_ms=es * 1000,
        cold_ms=ec * 1000,
        keep_alive_s=t,
        duration_s=40_000.0,
        max_instances=1,
    )
    r = simulate(parse_scenario(doc), workers=1)
    th = single_instance_pool(lam, es, ec, t)
    inst = r["instances"]
    assert _within(r["ci95"]["cold_start_fraction"], th.cold_fraction_served), (r["ci95"], th)
    assert _within(inst["ci95"]["rejection_probability"], th.rejection_probability), (inst, th)
    assert _within(inst["ci95"]["mean"], th.instances_mean), (inst, th)
    assert _within(inst["ci95"]["idle_mean"], th.idle_mean), (inst, th)
    assert _within(r["ci95"]["response_ms_mean"], th.response_s_mean * 1000), (r["ci95"], th)
    # Lifetimes are i.i.d. across instances; their spread is about their mean (geometric sum).
    life = inst["lifetime_s"]
    assert life["mean"] == pytest.approx(th.lifetime_s_mean, rel=4 * 1.2 / math.sqrt(life["count"]))
    assert inst["max"] == 1
    assert r["failed"] == r["rejected"] > 0


def test_unlimited_pool_busy_instances_are_mginf() -> None:
    lam, es = 3.0, 2.0  # lognormal service, SCV 2: M/G/inf, mean busy = lambda E[S]
    doc = pool_doc(
        rate_per_s=lam,
        service_ms=es * 1000,
        cold_ms=0.0,
        keep_alive_s=5.0,
        duration_s=8_000.0,
        service="lognormal",
    )
    r = simulate(parse_scenario(doc), workers=1)
    inst = r["instances"]
    assert _within(inst["ci95"]["busy_mean"], lam * es), inst
    assert inst["mean"] > inst["busy_mean"] > 0
    assert inst["idle_mean"] == pytest.approx(inst["mean"] - inst["busy_mean"], abs=1e-5)
    assert r["rejection_probability"] == 0.0
    assert 0.0 < r["cold_start_probability"] < 0.5


def test_busy_instances_obey_littles_law_with_cold_starts() -> None:
    # Busy time per served request is S + C for cold ones: mean busy = lambda (E[S] + p_cold E[C]).
    lam, es, ec = 2.0, 1.0, 1.5
    doc = pool_doc(
        rate_per_s=lam, service_ms=es * 1000, cold_ms=ec * 1000, keep_alive_s=1.0, duration_s=10_000
    )
    r = simulate(parse_scenario(doc), workers=1)
    p_cold = r["cold_start_fraction"]
    assert _within(r["instances"]["ci95"]["busy_mean"], lam * (es + p_cold * ec)), r["instances"]


def test_concurrency_with_one_instance_is_erlang_b() -> None:
    lam, es, n = 2.0, 1.0, 3  # never expires: one instance, 3 slots = M/G/3/3
    doc = pool_doc(
        rate_per_s=lam,
        service_ms=es * 1000,
        cold_ms=0.0,
        keep_alive_s=1e9,
        duration_s=15_000.0,
        concurrency=n,
        max_instances=1,
        service="hyperexponential",
    )
    r = simulate(parse_scenario(doc), workers=1)
    inst = r["instances"]
    assert _within(inst["ci95"]["rejection_probability"], erlang_b(n, lam * es)), inst
    assert inst["started"] == 1
    assert inst["max"] == 1
    assert inst["mean"] == pytest.approx(1.0)


def test_zero_keep_alive_makes_every_request_cold() -> None:
    lam, es, ec = 2.0, 1.0, 0.5
    doc = pool_doc(
        rate_per_s=lam, service_ms=es * 1000, cold_ms=ec * 1000, keep_alive_s=0.0, duration_s=5000
    )
    r = simulate(parse_scenario(doc), workers=1)
    assert r["cold_start_fraction"] == 1.0
    assert r["instances"]["idle_mean"] == pytest.approx(0.0, abs=1e-9)
    assert _within(r["instances"]["ci95"]["mean"], lam * (es + ec)), r["instances"]


def _requests(arrival: list[float], service: list[float], cold: float = 0.0) -> RequestArrays:
    n = len(arrival)
    return RequestArrays(
        np.array(arrival), np.zeros(n, dtype=np.int64), np.array(service), np.full(n, cold)
    )


def test_newest_instance_is_reused_first() -> None:
    # Two instances created at 0 and 1 go idle at 10 and 11; the arrival at 12 must pick the
    # one created last (id 1), as SimFaaS does, and the other expires on its own keep-alive.
    req = _requests([0.0, 1.0, 12.0], [10.0, 10.0, 1.0])
    m = PoolMachine(
        req,
        spec=PoolSpec(instance_concurrency=1),
        keep_alive=FixedKeepAlive(keep_alive_ms=5),
        function_names=["f"],
        window_ms=(0.0, 100.0),
    )
    for t, ev in ((0.0, Arrive(0)), (1.0, Arrive(1)), (10.0, Finish(0, 0)), (11.0, Finish(1, 1))):
        m.handle(t, ev)
        m.check_invariants()
    out = m.handle(12.0, Arrive(2))
    finishes = [i.event for i in out if isinstance(i, Schedule) and isinstance(i.event, Finish)]
    assert finishes == [Finish(1, 2)]
    out = run_pool(
        req,
        spec=PoolSpec(instance_concurrency=1),
        keep_alive=FixedKeepAlive(keep_alive_ms=5),
        function_names=["f"],
        location="l",
        window_ms=(0.0, 100.0),
        check_every=1,
    )
    assert out.cold.tolist() == [True, True, False]
    # Instance 0: created 0, idle from 10, expires 15. Instance 1: created 1, idle 13, gone 18.
    life = out.tally.lifetimes
    assert life.n == 2
    assert life.total == pytest.approx(15.0 + 17.0)


def test_riders_on_a_starting_instance_wait_for_it() -> None:
    req = _requests([0.0, 10.0, 20.0], [5.0, 5.0, 5.0], cold=100.0)
    out = run_pool(
        req,
        spec=PoolSpec(instance_concurrency=2),
        keep_alive=FixedKeepAlive(keep_alive_ms=1000),
        function_names=["f"],
        location="l",
        window_ms=(0.0, 1000.0),
        check_every=1,
    )
    # Request 0 starts the instance (busy 105); 1 rides on it, starting when it is ready at
    # 100; 2 finds both slots taken and starts a second instance.
    assert out.cold.tolist() == [True, True, True]
    assert out.start_ms.tolist() == [0.0, 100.0, 20.0]
    assert out.busy_ms.tolist() == [105.0, 5.0, 105.0]
    assert out.tally.started == 2


@pytest.mark.parametrize("concurrency", [1, 3])
@pytest.mark.parametrize("policy", ["fixed", "hybrid"])
def test_invariants_hold_after_every_event(concurrency: int, policy: str) -> None:
    rng = np.random.default_rng(5)
    n = 3000
    arrival = np.cumsum(rng.exponential(200.0, n))
    fn = rng.integers(0, 3, n)
    req = RequestArrays(arrival, fn, rng.exponential(500.0, n), np.full(n, 300.0))
    ka = (
        FixedKeepAlive(keep_alive_ms=400)
        if policy == "fixed"
        else HybridHistogramPolicy(bin_ms=100, range_ms=5000, min_samples=5)
    )
    out = run_pool(
        req,
        spec=PoolSpec(instance_concurrency=concurrency, max_instances=4),
        keep_alive=ka,
        function_names=["a", "b", "c"],
        location="l",
        window_ms=(0.0, float(arrival[-1])),
        check_every=1,
    )
    assert out.served.any()
    assert (out.start_ms[out.served] >= arrival[out.served]).all()
    assert out.tally.peaks["l"] <= 12  # 3 functions x 4 instances


def test_same_seed_same_json_and_replications_merge() -> None:
    doc = pool_doc(
        rate_per_s=5.0,
        service_ms=300.0,
        cold_ms=200.0,
        keep_alive_s=1.0,
        duration_s=500.0,
        locations=2,
        functions=3,
        max_instances=2,
    )
    doc["run"]["replications"] = 2
    s = parse_scenario(doc)
    a, b = simulate(s, workers=1), simulate(s, workers=1)
    for k in NON_DETERMINISTIC_KEYS:
        a.pop(k)
        b.pop(k)
    assert a == b
    c = simulate(s, seed=2, workers=1)
    assert c["instances"] != a["instances"]
    per_loc = [a["locations"][f"l{i}"]["instances"] for i in range(2)]
    # The total is the sum over locations of time-averaged counts and of peaks.
    assert a["instances"]["mean"] == pytest.approx(sum(p["mean"] for p in per_loc), rel=1e-6)
    assert a["instances"]["max"] == sum(p["max"] for p in per_loc)
    assert "utilization" not in a  # no shared workers in pool mode


def test_hybrid_policy_prewarms_instances() -> None:
    # A request every 10 s: the histogram policy learns the idle time (~9.9 s) and answers with
    # a pre-warm delay, so each instance is unloaded when idle and a fresh one is loaded just
    # before the next request, which then finds it warm.
    n = 60
    req = _requests([10_000.0 * k for k in range(n)], [100.0] * n, cold=500.0)
    policy = HybridHistogramPolicy(bin_ms=1000, range_ms=60_000, min_samples=5, cv_threshold=1.0)
    out = run_pool(
        req,
        spec=PoolSpec(instance_concurrency=1),
        keep_alive=policy,
        function_names=["f"],
        location="l",
        window_ms=(0.0, 10_000.0 * n),
        check_every=1,
    )
    assert policy.statistics().decisions_histogram > 0
    assert out.tally.prewarmed > 0
    assert not out.cold[-20:].any()  # served by pre-warmed instances
    assert out.tally.started < 10


def test_pending_events_stay_bounded_by_instances() -> None:
    # 40,000 requests, ~25 instances: the kernel holds O(instances) events, not O(requests).
    rng = np.random.default_rng(3)
    n = 40_000
    arrival = np.cumsum(rng.exponential(20.0, n))
    req = RequestArrays(
        arrival, np.zeros(n, dtype=np.int64), rng.exponential(400.0, n), np.full(n, 50.0)
    )
    out = run_pool(
        req,
        spec=PoolSpec(instance_concurrency=1),
        keep_alive=FixedKeepAlive(keep_alive_ms=60_000),
        function_names=["f"],
        location="l",
        window_ms=(0.0, float(arrival[-1])),
    )
    peak = out.tally.peaks["l"]
    assert 10 < peak < 100
    assert out.events_pending_max <= 2 * peak + 2


@pytest.mark.parametrize(
    ("cold", "loc", "key", "fragment"),
    [
        ({"enabled": True, "instance_concurrency": 0}, {}, "cold_start.instance_concurrency", ">="),
        (
            {"enabled": False, "instance_concurrency": 1},
            {},
            "cold_start.instance_concurrency",
            "on",
        ),
        ({"enabled": True, "max_instances": 3}, {}, "cold_start.max_instances", "no"),
        (
            {"enabled": True, "instance_concurrency": 1, "max_instances": 0},
            {},
            "cold_start.max_instances",
            ">=",
        ),
        ({"enabled": True, "instance_concurrency": 1}, {"servers": 4}, "locations[0].servers", ""),
        (
            {"enabled": True, "instance_concurrency": 1},
            {"memory_budget_mb": 512},
            "locations[0].memory_budget_mb",
            "",
        ),
        (
            {"enabled": True, "distribution": "hyperexponential", "scv": 0.5},
            {},
            "cold_start.scv",
            "scv",
        ),
    ],
)
def test_pool_keys_are_validated(
    cold: dict[str, Any], loc: dict[str, Any], key: str, fragment: str
) -> None:
    doc = {
        "run": {"duration_s": 10.0},
        "locations": [{"name": "l", **loc}],
        "workload": {"rate_per_s": 1.0},
        "cold_start": cold,
    }
    with pytest.raises(ScenarioError) as err:
        parse_scenario(doc, path="pool.toml")
    text = str(err.value)
    assert "pool.toml" in text
    assert key in text
    assert fragment in text


def test_pool_keys_refused_on_planets() -> None:
    doc = {
        "run": {"duration_s": 10.0},
        "world": {"pops": 2},
        "cold_start": {"enabled": True, "instance_concurrency": 1},
    }
    with pytest.raises(ScenarioError, match=r"queue scenarios only"):
        parse_scenario(doc, path="p.toml")


def test_cold_start_accepts_every_distribution() -> None:
    for kind in ("exponential", "deterministic", "lognormal", "hyperexponential", "fixed"):
        doc = {
            "run": {"duration_s": 10.0},
            "locations": [{"name": "l", "servers": 1}],
            "workload": {"rate_per_s": 1.0},
            "cold_start": {"enabled": True, "distribution": kind, "mean_ms": 300.0, "scv": 2.0},
        }
        d = parse_scenario(doc).cold_start.duration
        assert d.mean_ms == 300.0
        assert d.kind == ("deterministic" if kind == "fixed" else kind)


def test_example_pool_scenario_through_the_cli(tmp_path: Path) -> None:
    text = (EXAMPLES / "pool.toml").read_text().replace("duration_s = 20000", "duration_s = 2000")
    path = tmp_path / "pool.toml"
    path.write_text(text)
    res = CliRunner().invoke(app, ["simulate", str(path), "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    inst = r["instances"]
    for key in ("mean", "idle_mean", "max", "lifetime_s", "started"):
        assert key in inst
    assert inst["max"] == 3  # the example's max_instances
    assert 0.0 < r["rejection_probability"] < 1.0
    assert 0.0 < r["cold_start_probability"] < 1.0
    assert r["failed"] == r["rejected"]
