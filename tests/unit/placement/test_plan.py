"""Placement model: MILP vs Lagrangian, constraints, routing LP, replanning, demand fit, inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from edgefn.errors import PlanInputError
from edgefn.placement import (
    Client,
    FunctionSpec,
    Observation,
    PlacementProblem,
    RoutingWeights,
    Site,
    Weights,
    build_problem,
    fit_demand,
    plan,
    read_demand,
    read_functions,
    replan,
    route,
    world_instance,
)
from edgefn.world import get_location

EXAMPLES = Path(__file__).parents[3] / "examples" / "plan"


def small() -> PlacementProblem:
    return world_instance(n_sites=20, n_functions=6, n_clients=40, seed=3)


def test_lagrangian_bound_brackets_the_milp_optimum() -> None:
    """The heuristic's proven bound never exceeds the exact optimum; its plan never beats it."""
    problem = world_instance(n_sites=30, n_functions=10, n_clients=60, seed=1)
    exact = plan(problem, method="milp")
    heur = plan(problem, method="lagrangian")
    assert exact.status == "optimal"
    assert heur.bound <= exact.objective * (1 + 1e-9)
    assert heur.objective >= exact.objective * (1 - 1e-9)
    assert heur.gap < 0.05
    assert exact.gap <= 1e-5


def test_plan_respects_replication_availability_and_sla() -> None:
    problem = small()
    result = plan(problem, method="milp")
    by_id = {s.id: s for s in problem.sites}
    for f in problem.functions:
        placed = result.placement[f.name]
        assert len(placed) >= f.replicas_min
        assert sum(by_id[s].nines for s in placed) >= f.nines_required - 1e-9
    unmet = set(result.unmet_sla)
    for (client, fn), entries in result.routing.routes.items():
        spec = next(f for f in problem.functions if f.name == fn)
        c = next(k for k, cl in enumerate(problem.clients) if cl.id == client)
        if spec.sla_ms is None or (client, fn) in unmet:
            continue
        for sid, _ in entries:
            i = next(k for k, s in enumerate(problem.sites) if s.id == sid)
            assert problem.latency_ms[c, i] <= spec.sla_ms


def _two_site_problem(capacity: float) -> PlacementProblem:
    sites = (
        Site("near", 0.0, 0.0, capacity, 0.1, 100.0),
        Site("far", 0.0, 30.0, 100.0, 0.1, 100.0),
    )
    clients = (Client("c", 0.0, 0.0),)
    functions = (FunctionSpec("fn", replicas_min=2, cpu_ms_per_request=100.0, memory_mb=0.0),)
    demand = np.array([[20.0]])  # 2 cores of load
    latency = np.array([[1.0, 50.0]])
    return PlacementProblem(functions, sites, clients, demand, latency, Weights())


def test_routing_lp_splits_when_the_nearest_site_is_full() -> None:
    problem = _two_site_problem(capacity=0.5)
    result = route(problem, {"fn": ["near", "far"]})
    assert result.status == "optimal"
    weights = dict(result.weights.get("c", "fn"))
    assert weights["near"] == pytest.approx(0.25)
    assert weights["far"] == pytest.approx(0.75)
    roomy = route(_two_site_problem(capacity=10.0), {"fn": ["near", "far"]})
    assert dict(roomy.weights.get("c", "fn")) == {"near": 1.0}


def test_routing_reports_infeasible_capacity() -> None:
    problem = _two_site_problem(capacity=0.5)
    result = route(problem, {"fn": ["near"]})
    assert result.status == "infeasible"
    with pytest.raises(PlanInputError, match="no placed location"):
        route(problem, {"fn": []})


def test_routing_weights_json_round_trip_and_errors() -> None:
    weights = RoutingWeights({("Lagos", "api"): (("los", 0.75), ("acc", 0.25))})
    data = json.loads(json.dumps(weights.to_json()))
    assert RoutingWeights.from_json(data) == weights
    assert list(weights) == [("Lagos", "api")]
    bad_sum = {"version": 1, "routes": [{"client": "a", "function": "f", "weights": [["x", 0.5]]}]}
    with pytest.raises(PlanInputError, match=r"sum to 0\.5") as info:
        RoutingWeights.from_json(bad_sum, source="w.json")
    assert info.value.key == "routes[0].weights"
    with pytest.raises(PlanInputError, match="version 1"):
        RoutingWeights.from_json({"routes": []})
    with pytest.raises(PlanInputError, match="client"):
        RoutingWeights.from_json({"version": 1, "routes": [{"function": "f"}]})
    with pytest.raises(PlanInputError, match="must be a list"):
        RoutingWeights.from_json({"version": 1, "routes": 3})
    bad_entry = {"version": 1, "routes": [{"client": "a", "function": "f", "weights": [[1, 2]]}]}
    with pytest.raises(PlanInputError, match="bad entry"):
        RoutingWeights.from_json(bad_entry)


def test_replan_does_not_thrash() -> None:
    """A costly move keeps the current replicas; a free move gives the fresh optimum."""
    problem = small()
    fresh = plan(problem, method="milp")
    same = replan(problem, fresh.placement, migration_cost=5.0, method="milp")
    assert same.placement == fresh.placement
    assert same.objective == pytest.approx(fresh.objective, rel=1e-6)
    # Start every function on the site that is worst for it, with one replica.
    current = {}
    for k, spec in enumerate(problem.functions):
        worst = int(np.argmax(problem.demand_rps[k] @ problem.latency_ms))
        current[spec.name] = (problem.sites[worst].id,)
    sticky = replan(problem, current, migration_cost=1e7, method="milp")
    for spec in problem.functions:
        sites = set(sticky.placement[spec.name])
        assert set(current[spec.name]) <= sites
        forced = max(spec.replicas_min, 2 if spec.availability_min > 0 else 1) - 1
        assert len(sites - set(current[spec.name])) <= forced
    assert any("replan:" in n for n in sticky.notes)
    free = replan(problem, current, migration_cost=0.0, method="milp")
    assert free.objective == pytest.approx(fresh.objective, rel=1e-6)
    with pytest.raises(PlanInputError, match=">= 0"):
        replan(problem, current, migration_cost=-1.0)
    with pytest.raises(PlanInputError, match="unknown location"):
        replan(problem, {"fn0000": ("nowhere",)}, migration_cost=1.0)


def test_budget_is_enforced_by_the_milp() -> None:
    base = small()
    loose = plan(base, method="milp")
    tight = PlacementProblem(base.functions, base.sites, base.clients, base.demand_rps,
                             base.latency_ms, base.weights, loose.cost_per_hour * 0.999)  # fmt: skip
    limited = plan(tight, method="milp")
    assert limited.status == "optimal"
    assert limited.cost_per_hour <= loose.cost_per_hour * 0.999 + 1e-6
    assert limited.objective >= loose.objective - 1e-6
    impossible = PlacementProblem(base.functions, base.sites, base.clients, base.demand_rps,
                                  base.latency_ms, base.weights, 0.0)  # fmt: skip
    assert plan(impossible, method="milp").status == "infeasible"


def test_demand_fit_recovers_geo_and_diurnal() -> None:
    offsets = {"tokyo": 9.0, "london": 0.0, "ny": -5.0}
    share = {"tokyo": 0.5, "london": 0.3, "ny": 0.2}
    curve = [0.5 + 0.5 * math.sin(2 * math.pi * (h - 6) / 24) + 0.5 for h in range(24)]
    mean = sum(curve) / 24
    curve = [c / mean for c in curve]
    obs = [
        Observation(r, h, 1000.0 * share[r] * curve[round(h + offsets[r]) % 24])
        for r in offsets
        for h in range(48)
    ]
    model = fit_demand(obs, offsets)
    for r in offsets:
        assert model.geo[r] == pytest.approx(share[r], rel=1e-6)
        assert model.predict(r, 13) == pytest.approx(
            1000.0 * share[r] * curve[round(13 + offsets[r]) % 24], rel=1e-6
        )
    assert max(model.diurnal) == pytest.approx(max(curve), rel=1e-6)
    with pytest.raises(PlanInputError, match="not in the fitted"):
        model.predict("paris", 0)
    with pytest.raises(PlanInputError, match="no UTC offset"):
        fit_demand([Observation("paris", 0, 1.0)], offsets)
    with pytest.raises(PlanInputError, match="negative"):
        fit_demand([Observation("ny", 0, -1.0)], offsets)
    with pytest.raises(PlanInputError, match="no requests"):
        fit_demand([], offsets)


def test_example_inputs_build_and_plan() -> None:
    spec = read_functions(EXAMPLES / "functions.toml")
    clients, demand = read_demand(EXAMPLES / "demand.csv", spec.functions)
    assert spec.budget_per_hour == 25.0
    assert {c.id for c in clients} >= {"London", "Tokyo", "40.42,-3.70"}
    locs = [get_location(i) for i in ("fra", "lhr", "iad", "sin", "gru", "syd")]
    problem = build_problem(spec.functions, locs, clients, demand, weights=spec.weights,
                            budget_per_hour=spec.budget_per_hour)  # fmt: skip
    result = plan(problem)
    assert result.status == "optimal"
    assert set(result.placement["eu-shop"]) <= {"fra", "lhr"}
    assert len(result.placement["api"]) >= 2
    assert result.cost_per_hour <= 25.0
    for entries in result.routing.routes.values():
        assert sum(w for _, w in entries) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("functions", "demand", "match", "key"),
    [
        ("x = 1\n", None, "no \\[\\[functions\\]\\]", "functions"),
        ('[[functions]]\nname = "a"\nbogus = 1\n', None, "unknown key", "functions[0].bogus"),
        ("[[functions]]\nname = 3\n", None, "non-empty string", "functions[0].name"),
        (
            '[[functions]]\nname = "a"\nreplicas_min = 0\n',
            None,
            "whole number",
            "functions[0].replicas_min",
        ),
        ('[[functions]]\nname = "a"\nsla_ms = -1\n', None, "number in", "functions[0].sla_ms"),
        ('[[functions]]\nname = "a"\n[[functions]]\nname = "a"\n', None, "duplicate", "functions"),
        ('[weights]\nspeed = 1\n[[functions]]\nname = "a"\n', None, "weights", "weights"),
        ('[[functions]]\nname = "a"\n', "client,fn,rps\n", "header", "line 1"),
        (
            '[[functions]]\nname = "a"\n',
            "client,function,rps\nLagos,b,1\n",
            "unknown function",
            "line 2",
        ),
        (
            '[[functions]]\nname = "a"\n',
            "client,function,rps\nLagos,a,x\n",
            "rps must be",
            "line 2",
        ),
        ('[[functions]]\nname = "a"\n', "client,function,rps\nLagos,a\n", "3 fields", "line 2"),
        (
            '[[functions]]\nname = "a"\n',
            "client,function,rps\nAtlantis,a,1\n",
            "unknown client",
            "line 2",
        ),
        ('[[functions]]\nname = "a"\n', "client,function,rps\n", "no demand", ""),
    ],
)
def test_input_errors(tmp_path: Path, functions: str, demand: str | None, match: str,
                      key: str) -> None:  # fmt: skip
    fpath = tmp_path / "functions.toml"
    fpath.write_text(functions)
    if demand is None:
        with pytest.raises(PlanInputError, match=match) as info:
            read_functions(fpath)
    else:
        spec = read_functions(fpath)
        dpath = tmp_path / "demand.csv"
        dpath.write_text(demand)
        with pytest.raises(PlanInputError, match=match) as info:
            read_demand(dpath, spec.functions)
    assert info.value.key == key


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(PlanInputError, match="file not found"):
        read_functions(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[functions\n")
    with pytest.raises(PlanInputError, match="not valid TOML"):
        read_functions(bad)
