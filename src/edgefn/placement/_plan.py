"""Planning entry points: :func:`plan` and :func:`replan`, and the evaluation of a placement.

``plan`` picks the exact MILP when the instance is small enough (``MAX_MILP_VARIABLES``) and the
Lagrangian heuristic otherwise (or as asked), routes the result with the routing LP under the real
capacities, and evaluates everything the same way whichever solver ran: objective, cost, carbon,
latency per client region, the proven lower bound and the gap.

``replan`` adds ``migration_cost`` (objective units) to every replica that the current placement
does not already have, so a new placement must save more than it costs to move; keeping what is in
place is free. The reported objective includes the migration cost paid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from edgefn.errors import PlanInputError
from edgefn.placement._lagrange import Mapper, Progress, solve_lagrangian
from edgefn.placement._milp import MAX_MILP_VARIABLES, milp_variable_count, solve_milp
from edgefn.placement._model import _WATTS_PER_CORE, _WATTS_PER_GB, PlacementPlan
from edgefn.placement._routing import RoutingWeights, route

if TYPE_CHECKING:
    from edgefn.placement._model import FloatArray, PlacementProblem

__all__ = ["Method", "plan", "replan"]

Method = Literal["auto", "milp", "lagrangian"]


def plan(
    problem: PlacementProblem,
    *,
    method: Method = "auto",
    time_limit_s: float = 30.0,
    extra_fixed: FloatArray | None = None,
    progress: Progress | None = None,
    mapper: Mapper | None = None,
    chunks: int = 1,
) -> PlacementPlan:
    """Best placement of every function, its routing weights and its evaluation.

    ``mapper``/``chunks``: the Lagrangian path solves ``chunks`` groups of functions through
    ``mapper`` (e.g. a process pool's ``map``); the result does not depend on the mapper.
    """
    nvars = milp_variable_count(problem)
    use_milp = method == "milp" or (method == "auto" and nvars <= MAX_MILP_VARIABLES)
    notes: list[str] = []
    if use_milp:
        res = solve_milp(problem, extra_fixed=extra_fixed, time_limit_s=time_limit_s)
        if not res.placement:
            return _empty(problem, res.status, "milp")
        placement, bound, status = res.placement, res.bound, res.status
        notes.append(f"milp: {nvars} variables")
    else:
        lag = solve_lagrangian(problem, extra_fixed=extra_fixed, progress=progress,
                               mapper=mapper, chunks=chunks)  # fmt: skip
        placement, bound, status = lag.placement, lag.bound, "feasible"
        notes.append(
            f"lagrangian: {lag.iterations} subgradient iterations, {lag.capacity_rounds} "
            f"capacity-pricing rounds, {lag.improved} placements improved by the Lagrangian "
            f"heuristic, {lag.capacity_moves} replicas added to fit capacity"
        )
    names = {
        problem.functions[f].name: tuple(problem.sites[i].id for i in sites)
        for f, sites in placement.items()
    }
    routed = route(problem, names)
    if routed.status != "optimal":
        status = "infeasible"
        notes.append("site capacities cannot hold the demand; routed to the nearest replica")
    return _evaluate(problem, placement, routed, bound, status, "milp" if use_milp else
                     "lagrangian", extra_fixed, notes)  # fmt: skip


def replan(
    problem: PlacementProblem,
    current: Mapping[str, Sequence[str]],
    *,
    migration_cost: float,
    method: Method = "auto",
    time_limit_s: float = 30.0,
    progress: Progress | None = None,
    mapper: Mapper | None = None,
    chunks: int = 1,
) -> PlacementPlan:
    """The best next placement given ``current`` (function -> site ids) and a cost per new replica."""
    if migration_cost < 0:
        raise PlanInputError(f"migration cost must be >= 0, got {migration_cost}",
                             key="migration_cost")  # fmt: skip
    site_index = {s.id: k for k, s in enumerate(problem.sites)}
    extra = np.full((len(problem.functions), len(problem.sites)), float(migration_cost))
    for f, spec in enumerate(problem.functions):
        for sid in current.get(spec.name, ()):
            if sid not in site_index:
                raise PlanInputError(f"current placement names unknown location {sid!r}",
                                     key=spec.name, hint="use ids of the topology's locations")  # fmt: skip
            extra[f, site_index[sid]] = 0.0
    result = plan(problem, method=method, time_limit_s=time_limit_s, extra_fixed=extra,
                  progress=progress, mapper=mapper, chunks=chunks)  # fmt: skip
    moves = sum(
        len(set(sites) - set(current.get(name, ()))) for name, sites in result.placement.items()
    )
    return _with_note(result, f"replan: {moves} new replicas at {migration_cost:g} each")


def _with_note(p: PlacementPlan, note: str) -> PlacementPlan:
    return replace(p, notes=(*p.notes, note))


def _empty(problem: PlacementProblem, status: str, method: str) -> PlacementPlan:
    return PlacementPlan(status, method, float("inf"), float("-inf"), float("inf"), {},
                         RoutingWeights({}), 0.0, 0.0, 0.0, {}, problem.unmet_sla(),
                         ("no feasible placement: check replicas, capacities and budget",))  # fmt: skip


def _evaluate(
    problem: PlacementProblem,
    placement: Mapping[int, tuple[int, ...]],
    routed: Any,
    bound: float,
    status: str,
    method: str,
    extra_fixed: FloatArray | None,
    notes: list[str],
) -> PlacementPlan:
    fixed = problem.fixed_cost() + (extra_fixed if extra_fixed is not None else 0.0)
    price = np.array([s.cost_per_hour for s in problem.sites])
    carbon = np.array([s.carbon_g_per_kwh for s in problem.sites])
    core_obj = problem.price_per_core()
    w = problem.weights
    objective = dollars = kg = 0.0
    lat_sum = np.zeros(len(problem.clients))
    dem_sum = np.zeros(len(problem.clients))
    for f, sites in placement.items():
        spec = problem.functions[f]
        idx = np.array(sites, dtype=int)
        gb = spec.memory_mb / 1024.0
        objective += float(fixed[f, idx].sum())
        dollars += gb * float(price[idx].sum())
        kg += gb * _WATTS_PER_GB / 1e6 * float(carbon[idx].sum())
        clients, where, frac = routed.x[f]
        d = problem.demand_rps[f, clients] * frac
        lat = problem.latency_ms[clients, where]
        cores = d * spec.cpu_ms_per_request / 1e3
        objective += float(w.latency * (d * lat).sum() + (cores * core_obj[where]).sum())
        dollars += float((cores * price[where]).sum())
        kg += float((cores * _WATTS_PER_CORE / 1e6 * carbon[where]).sum())
        np.add.at(lat_sum, clients, d * lat)
        np.add.at(dem_sum, clients, d)
    served = dem_sum > 0
    by_client = {
        problem.clients[c].id: float(lat_sum[c] / dem_sum[c]) for c in np.flatnonzero(served)
    }
    mean = float(lat_sum.sum() / dem_sum.sum()) if dem_sum.sum() > 0 else 0.0
    bound = min(bound, objective)
    gap = (objective - bound) / objective if objective > 0 else 0.0
    names = {
        problem.functions[f].name: tuple(problem.sites[i].id for i in sites)
        for f, sites in sorted(placement.items())
    }
    if problem.budget_per_hour is not None and dollars > problem.budget_per_hour * (1 + 1e-6):
        status = "over_budget"
        notes.append(f"cost {dollars:.2f}/h exceeds the budget {problem.budget_per_hour:.2f}/h")
    return PlacementPlan(status, method, objective, bound, gap, names, routed.weights, dollars, kg,
                         mean, by_client, problem.unmet_sla(), tuple(notes))  # fmt: skip
