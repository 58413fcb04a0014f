"""``placement = "planner"``: the simulator asks the platform's planner where functions run.

:func:`plan_placement` turns a planet scenario into an :class:`edgefn.placement.PlacementProblem`
and solves it with :func:`edgefn.placement.plan` (the same code as ``edgefn plan``):

* sites are the scenario's PoPs, each with ``_UTILISATION_TARGET × servers`` capacity units (a
  unit is one worker, i.e. one request in service at a time; the headroom keeps queues short),
  priced and carbon-rated as in the world model;
* clients are the world's cities; demand of (city, function) is the city's *peak* rate:
  ``requests_per_day / 86400 × peak_factor × city population share × function weight``. A
  plan made for the daily mean overloads the PoPs that serve a region at its evening peak (the
  first planet-day run did exactly that: queues of hours), so the plan is sized for the peak;
* a request of function f holds a worker for its mean service time (``cpu_ms_per_request``) and a
  replica reserves its ``memory_mb``; ``replicas_min`` is ``policies.min_replicas`` or the
  function's explicit ``replicas``;
* latency is the simulator's own city × PoP RTT matrix, so the planner optimises exactly the
  delay the simulation charges.

The plan's routing weights (the routing LP's split of each (city, function) over PoPs) are fed
to :class:`edgefn.routing.RoutingPolicy` through ``WeightsChanged`` by :class:`PlannerRouter`;
per epoch the policy picks one PoP per flow (weighted choice among the reachable weighted PoPs,
RTT scoring when a fault took them all away). One PoP per flow per epoch is the simulator's
granularity: a flow the LP splits goes, for that epoch, to one of its PoPs drawn by weight.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgefn.routing import RouteRequest, RoutingPolicy, WeightsChanged
from edgefn.world import City, Location

__all__ = ["PlannedPlacement", "PlannerRouter", "plan_placement"]

_ROUTING_SEED = 0x5EED
_UTILISATION_TARGET = 0.7


@dataclass(frozen=True, slots=True)
class PlannedPlacement:
    """The planner's mask (functions × PoPs), its routing weights and its summary."""

    mask: np.ndarray
    weights: Mapping[tuple[str, str], tuple[tuple[str, float], ...]]
    summary: Mapping[str, Any]


def plan_placement(
    *,
    pops: Sequence[Location],
    servers: np.ndarray,
    cities: Sequence[City],
    rtt_ms: np.ndarray,
    function_names: Sequence[str],
    function_weight: np.ndarray,
    service_mean_ms: Sequence[float],
    memory_mb: np.ndarray,
    replicas_min: np.ndarray,
    requests_per_day: float,
    peak_factor: float,
) -> PlannedPlacement:
    """Build the placement problem of a planet scenario and solve it (see the module docstring)."""
    # lazy: edgefn.placement imports scipy (~1 s); only scenarios with placement = "planner" solve.
    from edgefn.placement import Client, FunctionSpec, PlacementProblem, Site, plan

    sites = tuple(
        Site(p.id, p.lat, p.lon, _UTILISATION_TARGET * n, p.cost_per_hour, p.carbon_g_per_kwh)
        for p, n in zip(pops, servers.tolist(), strict=True)
    )
    clients = tuple(Client(c.name, c.lat, c.lon, c.utc_offset_h) for c in cities)
    functions = tuple(
        FunctionSpec(name, replicas_min=max(1, min(int(r), len(pops))),
                     cpu_ms_per_request=float(ms), memory_mb=float(mem))
        for name, ms, mem, r in zip(function_names, service_mean_ms, memory_mb.tolist(),
                                    replicas_min.tolist(), strict=True)
    )  # fmt: skip
    share = np.array([float(c.population) for c in cities])
    share /= share.sum()
    assert peak_factor >= 1.0, peak_factor
    demand = requests_per_day / 86_400.0 * peak_factor * np.outer(function_weight, share)
    problem = PlacementProblem(functions, sites, clients, demand, np.asarray(rtt_ms, float))
    result = plan(problem)
    index = {p.id: i for i, p in enumerate(pops)}
    mask = np.zeros((len(functions), len(pops)), dtype=bool)
    for f, spec in enumerate(functions):
        mask[f, [index[i] for i in result.placement[spec.name]]] = True
    summary = {
        "status": result.status,
        "method": result.method,
        "objective": result.objective,
        "gap": result.gap,
        "cost_per_hour": result.cost_per_hour,
        "mean_latency_ms": result.mean_latency_ms,
        "replicas": int(mask.sum()),
    }
    return PlannedPlacement(mask, result.routing.routes, summary)


@dataclass(frozen=True, slots=True)
class PlannerRouter:
    """The platform's :class:`edgefn.routing.RoutingPolicy`, loaded with the planner's weights.

    Each client enters at its nearest reachable PoP; the policy chooses among the reachable PoPs
    running the function, by the planner's weight for (city, function). The client's RTT is then
    counted to the chosen PoP directly (as in :class:`edgefn.sim.EdgefnRouter`).
    """

    rtt_ms: np.ndarray  # cities × PoPs
    pop_rtt_ms: np.ndarray  # PoPs × PoPs
    pop_ids: tuple[str, ...]
    city_ids: tuple[str, ...]
    function_names: tuple[str, ...]
    weights: Mapping[tuple[str, str], tuple[tuple[str, float], ...]]

    def assign(self, placement: np.ndarray, reachable: np.ndarray) -> np.ndarray:
        index = {p: i for i, p in enumerate(self.pop_ids)}
        policy = RoutingPolicy(
            lambda a, b: float(self.pop_rtt_ms[index[a], index[b]]),
            rng=random.Random(_ROUTING_SEED),
        )
        policy.handle(WeightsChanged(self.weights))
        out = np.full((self.rtt_ms.shape[0], placement.shape[0]), -1, dtype=np.int32)
        ingress = np.where(reachable, self.rtt_ms, np.inf).argmin(axis=1)
        placed = [np.flatnonzero(row) for row in placement]
        # With at most one weighted PoP the decision is a function of (ingress, candidates,
        # weights) alone (no load reports in an epoch), so equal requests share one decision.
        memo: dict[tuple[Any, ...], str | None] = {}
        for c, city in enumerate(self.city_ids):
            if not reachable[c].any():
                continue
            entry = self.pop_ids[ingress[c]]
            for f, fn in enumerate(self.function_names):
                cands = tuple(self.pop_ids[i] for i in placed[f] if reachable[c, i])
                if not cands:
                    continue
                entries = self.weights.get((city, fn), ())
                key = (entry, fn, cands, tuple(entries))
                if len(entries) > 1 or key not in memo:
                    request = RouteRequest(entry, fn, cands, now_ms=0, client_region=city)
                    memo[key] = policy.decide(request).target
                target = memo[key]
                if target is not None:
                    out[c, f] = index[target]
        policy.check_invariants()
        return out
