"""Routing weights over a placement, and the routing LP that computes them.

:class:`RoutingWeights` is what a routing policy loads: for each (client region, function) a list
of ``(location_id, weight)`` with weights summing to 1 — the fraction of that region's requests for
that function to send to each location. It round-trips through JSON (``to_json``/``from_json``).

:func:`route` solves, for a fixed placement, the transportation LP::

    min  sum a_fci x_fci                          a = the plan's per-pair cost (latency + CPU price)
    s.t. sum_i x_fci = 1                          for every (f, c) with demand
         sum_fc load_fc x_fci <= cpu_capacity_i   load = demand * cpu_ms / 1000 cores
         x_fci = 0 unless i hosts f and (i meets f's SLA for c, or no placed site does)

It first sends everything to the cheapest placed site; when that already fits the capacities it is
the LP optimum (it is optimal for the LP without capacity rows), so the LP is only built when some
site would overflow. Then HiGHS (``scipy.optimize.linprog``) solves it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix

from edgefn.errors import PlanInputError

if TYPE_CHECKING:
    from edgefn.placement._model import FloatArray, PlacementProblem

__all__ = ["RouteResult", "RoutingWeights", "route"]

_WEIGHT_TOLERANCE = 1e-6
# Past this the LP is reported as not solved (status 'infeasible' with nearest routing): a
# planning run must not hang on one LP.
_LP_TIME_LIMIT_S = 60.0
_MAX_LP_VARIABLES = 3_000_000


@dataclass(frozen=True, slots=True)
class RoutingWeights:
    """``routes[(client, function)] = ((location_id, weight), ...)``, weights summing to 1."""

    routes: Mapping[tuple[str, str], tuple[tuple[str, float], ...]]

    def __post_init__(self) -> None:
        for key, entries in self.routes.items():
            total = sum(w for _, w in entries)
            assert entries, key
            assert abs(total - 1.0) <= _WEIGHT_TOLERANCE, (key, total)

    def __len__(self) -> int:
        return len(self.routes)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.routes)

    def get(self, client: str, function: str) -> tuple[tuple[str, float], ...]:
        return self.routes.get((client, function), ())

    def to_json(self) -> dict[str, Any]:
        rows = [
            {"client": c, "function": f, "weights": [[loc, w] for loc, w in entries]}
            for (c, f), entries in sorted(self.routes.items())
        ]
        return {"version": 1, "routes": rows}

    @classmethod
    def from_json(cls, data: Any, *, source: str = "<json>") -> RoutingWeights:
        """Validate and load; errors name the source and the offending route."""
        if not isinstance(data, dict) or data.get("version") != 1:
            raise PlanInputError(
                "not a routing-weights document (expected version 1)",
                path=source,
                key="version",
                hint="produce it with `edgefn plan ... --json` (its `routing` field)",
            )
        rows = data.get("routes")
        if not isinstance(rows, list):
            raise PlanInputError("`routes` must be a list", path=source, key="routes")
        routes: dict[tuple[str, str], tuple[tuple[str, float], ...]] = {}
        for k, row in enumerate(rows):
            key = _route_key(row, source, k)
            routes[key] = _route_entries(row, source, k)
        return cls(routes)


def _route_key(row: Any, source: str, k: int) -> tuple[str, str]:
    if not isinstance(row, dict) or not isinstance(row.get("client"), str):
        raise PlanInputError("needs string `client`", path=source, key=f"routes[{k}].client")
    if not isinstance(row.get("function"), str):
        raise PlanInputError("needs string `function`", path=source, key=f"routes[{k}].function")
    return row["client"], row["function"]


def _route_entries(row: dict[str, Any], source: str, k: int) -> tuple[tuple[str, float], ...]:
    key = f"routes[{k}].weights"
    raw = row.get("weights")
    if not isinstance(raw, list) or not raw:
        raise PlanInputError("needs a non-empty list of [location, weight]", path=source, key=key)
    out: list[tuple[str, float]] = []
    for entry in raw:
        ok = isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
        if not ok or not isinstance(entry[1], int | float) or not 0 <= entry[1] <= 1:
            raise PlanInputError(
                f"bad entry {entry!r}: expected [location, weight in 0..1]", path=source, key=key
            )
        out.append((entry[0], float(entry[1])))
    total = sum(w for _, w in out)
    if not math.isclose(total, 1.0, abs_tol=_WEIGHT_TOLERANCE):
        raise PlanInputError(f"weights sum to {total:g}, not 1", path=source, key=key)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class RouteResult:
    status: str  # "optimal" or "infeasible" (capacity cannot hold the demand; nearest used)
    weights: RoutingWeights
    x: Mapping[int, tuple[FloatArray, FloatArray, FloatArray]]  # f -> (clients, sites, fraction)


def route(problem: PlacementProblem, placement: Mapping[str, Sequence[str]]) -> RouteResult:
    """Optimal routing weights for ``placement`` (function name -> site ids)."""
    site_index = {s.id: k for k, s in enumerate(problem.sites)}
    cand: dict[int, tuple[Any, Any, Any]] = {}  # f -> (clients, cost over placed sites, sites)
    nearest: dict[int, tuple[Any, Any, Any]] = {}
    load = np.zeros(len(problem.sites))
    for f, spec in enumerate(problem.functions):
        placed = np.array(sorted(site_index[s] for s in placement.get(spec.name, ())), dtype=int)
        if placed.size == 0:
            raise PlanInputError(
                f"function {spec.name!r} has no placed location", key=spec.name,
                hint="place every function with demand on at least one location",
            )  # fmt: skip
        clients, a, allowed = problem.assign_cost(f)
        ok: Any = allowed[:, placed]
        ok = ok | ~ok.any(axis=1)[:, None]  # no placed site meets the SLA: any may serve
        sub = np.where(ok, a[:, placed], np.inf)
        cand[f] = (clients, sub, placed)
        best = np.argmin(sub, axis=1)
        nearest[f] = (clients, placed[best], np.ones(clients.size))
        np.add.at(
            load, placed[best], problem.demand_rps[f, clients] * spec.cpu_ms_per_request / 1e3
        )
    capacity = np.array([s.capacity for s in problem.sites])
    if np.all(load <= capacity + 1e-9):
        return RouteResult("optimal", _weights(problem, nearest), nearest)
    solved = _solve_lp(problem, cand, capacity)
    if solved is None:
        return RouteResult("infeasible", _weights(problem, nearest), nearest)
    return RouteResult("optimal", _weights(problem, solved), solved)


def _solve_lp(
    problem: PlacementProblem, cand: Mapping[int, tuple[Any, Any, Any]], capacity: Any
) -> dict[int, tuple[Any, Any, Any]] | None:
    costs, pair_rows, site_cols, loads, owners = [], [], [], [], []
    pair = 0
    for f, (clients, sub, placed) in cand.items():
        spec = problem.functions[f]
        ok_c, ok_k = np.nonzero(np.isfinite(sub))
        costs.append(sub[ok_c, ok_k])
        pair_rows.append(pair + ok_c)
        site_cols.append(placed[ok_k])
        loads.append(problem.demand_rps[f, clients[ok_c]] * spec.cpu_ms_per_request / 1e3)
        owners.append(np.full(ok_c.size, f))
        pair += clients.size
    c = np.concatenate(costs)
    nvar = c.size
    assert nvar <= _MAX_LP_VARIABLES, f"routing LP too large ({nvar} variables)"
    rows, sites = np.concatenate(pair_rows), np.concatenate(site_cols)
    cols = np.arange(nvar)
    a_eq = coo_matrix((np.ones(nvar), (rows, cols)), shape=(pair, nvar)).tocsr()
    a_ub = coo_matrix((np.concatenate(loads), (sites, cols)), shape=(len(capacity), nvar)).tocsr()
    res = linprog(c, A_ub=a_ub, b_ub=capacity, A_eq=a_eq, b_eq=np.ones(pair),
                  bounds=(0, None), method="highs",
                  options={"time_limit": _LP_TIME_LIMIT_S})  # fmt: skip
    if res.status != 0:
        return None
    owner = np.concatenate(owners)
    out: dict[int, tuple[Any, Any, Any]] = {}
    offset = 0
    for f, (clients, _, _) in cand.items():
        mask = (owner == f) & (res.x > 1e-9)
        local = rows[mask] - offset
        out[f] = (clients[local], sites[mask], res.x[mask])
        offset += clients.size
    return out


def _weights(problem: PlacementProblem, x: Mapping[int, tuple[Any, Any, Any]]) -> RoutingWeights:
    routes: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for f, (clients, sites, frac) in x.items():
        name = problem.functions[f].name
        for c, i, w in zip(clients.tolist(), sites.tolist(), frac.tolist(), strict=True):
            routes.setdefault((problem.clients[c].id, name), []).append((problem.sites[i].id, w))
    normalised = {}
    for key, entries in routes.items():
        total = sum(w for _, w in entries)
        normalised[key] = tuple((loc, w / total) for loc, w in entries)
    return RoutingWeights(normalised)
