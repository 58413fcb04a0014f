"""placement = "planner": the simulator solves the scenario with edgefn.placement and routes with
the platform's RoutingPolicy loaded with the planner's routing weights."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgefn.sim import build_planet, parse_scenario, simulate
from edgefn.world import cities


def _doc(**policies: Any) -> dict[str, Any]:
    return {
        "run": {"duration_s": 86_400, "seed": 5},
        "world": {"pops": 20, "servers": 8, "requests_per_day": 100_000, "functions": 30},
        "service": {"distribution": "lognormal", "mean_ms": 100, "scv": 2.0},
        "cold_start": {"enabled": True, "mean_ms": 300},
        "policies": {"placement": "planner", "min_replicas": 2} | policies,
    }


def test_planner_placement_honours_replicas_and_routes_by_its_weights() -> None:
    """Every function gets >= min_replicas PoPs; every flow goes to a PoP the plan weights."""
    m = build_planet(parse_scenario(_doc()))
    assert m.placement.source == "planner"
    assert m.placement.summary is not None
    assert m.placement.summary["status"] in ("optimal", "feasible")
    assert (m.placement.mask.sum(axis=1) >= 2).all()
    assert m.placement.mask.sum() < m.placement.mask.size  # not everywhere
    weights = m.placement.weights
    assert weights is not None
    ids = [p.id for p in m.pops]
    names = [c.name for c in cities()]
    assign = m.assignment[0]
    for c in range(0, len(names), 7):
        for f, fn in enumerate(m.function_names):
            target = assign[c, f]
            assert target >= 0
            assert m.placement.mask[f, target]
            weighted = dict(weights[(names[c], fn)])
            assert weighted.get(ids[target], 0.0) > 0.0


def test_planner_routing_avoids_a_down_pop() -> None:
    """A PoP the plan uses goes down: the policy falls back to another placed PoP, never to it."""
    first = build_planet(parse_scenario(_doc()))
    busiest = int(first.placement.mask.sum(axis=0).argmax())
    pop = first.pops[busiest].id
    doc = _doc()
    doc["faults"] = [{"kind": "location_down", "location": pop, "start_s": 0, "end_s": 86_400}]
    m = build_planet(parse_scenario(doc))
    assert np.array_equal(m.placement.mask, first.placement.mask)  # planned once, up front
    assign = m.assignment[0]
    assert not (assign == busiest).any()
    moved = first.assignment[0] == busiest
    assert moved.any()
    rows, fns = np.nonzero(moved)
    assert (assign[rows, fns] >= 0).all()
    assert m.placement.mask[fns, assign[rows, fns]].all()


def test_planner_day_uses_fewer_replicas_and_fewer_cold_starts_than_everywhere() -> None:
    """At this light load the planner keeps each function on its minimum replica count, so its
    instances stay warm: fewer replicas and fewer cold starts than placing everything everywhere.
    The result reports the plan."""
    planned = simulate(parse_scenario(_doc()), workers=1)
    everywhere = simulate(parse_scenario(_doc(placement="everywhere")), workers=1)

    def replicas(r: dict[str, Any]) -> int:
        return sum(loc["functions_placed"] for loc in r["locations"].values())

    assert planned["requests"] > 0
    assert abs(planned["requests"] - everywhere["requests"]) < 0.05 * everywhere["requests"]
    assert replicas(planned) == 2 * 30
    assert replicas(everywhere) == 20 * 30
    assert planned["cold_start_fraction"] < everywhere["cold_start_fraction"]
    assert planned["placement"]["source"] == "planner"
    assert planned["placement"]["plan"]["replicas"] == 60
