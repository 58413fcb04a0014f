"""Exact placement: one MILP over all functions, solved by HiGHS.

Variables ``x[f, c, i]`` (share of client c's requests for f served at site i; only for pairs the
SLA allows) and binary ``y[f, i]`` (f has a replica at i). Linking is disaggregated
(``x_fci <= y_fi``), which :mod:`edgefn.placement._facility` measured to tighten the LP relaxation
sharply (design record 0003). Rows: assignment, linking, replication, availability (sum of site
"nines" >= required nines), CPU and memory capacity, and the budget. Instances above
``MAX_MILP_VARIABLES`` go to the Lagrangian heuristic instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix, vstack

if TYPE_CHECKING:
    from edgefn.placement._model import FloatArray, PlacementProblem

__all__ = ["MAX_MILP_VARIABLES", "MilpResult", "milp_variable_count", "solve_milp"]

MAX_MILP_VARIABLES = 200_000


@dataclass(frozen=True, slots=True)
class MilpResult:
    status: str
    objective: float
    bound: float
    placement: dict[int, tuple[int, ...]]
    x: dict[int, tuple[Any, Any, Any]]  # f -> (clients, sites, fraction)


def milp_variable_count(problem: PlacementProblem) -> int:
    return int((problem.demand_rps > 0).sum()) * len(problem.sites) + problem.demand_rps.size


def solve_milp(
    problem: PlacementProblem, *, extra_fixed: FloatArray | None = None, time_limit_s: float = 30.0
) -> MilpResult:
    """Solve the placement MILP; ``extra_fixed[f, i]`` adds to replica costs (re-planning)."""
    nf, ns = len(problem.functions), len(problem.sites)
    fixed = problem.fixed_cost() + (extra_fixed if extra_fixed is not None else 0.0)
    xc, xf, xs, xcost, xload, xprice = [], [], [], [], [], []
    pair_of: list[Any] = []
    npairs = 0
    price = np.array([s.cost_per_hour for s in problem.sites])
    for f, spec in enumerate(problem.functions):
        clients, a, allowed = problem.assign_cost(f)
        cc, ii = np.nonzero(allowed)
        xc.append(clients[cc])
        xf.append(np.full(cc.size, f))
        xs.append(ii)
        xcost.append(a[cc, ii])
        load = problem.demand_rps[f, clients[cc]] * spec.cpu_ms_per_request / 1e3
        xload.append(load)
        xprice.append(load * price[ii])
        pair_of.append(npairs + cc)
        npairs += clients.size
    fx, sx, cx = np.concatenate(xf), np.concatenate(xs), np.concatenate(xc)
    nx = fx.size
    ny = nf * ns
    ycol = nx + fx * ns + sx  # the y column each x links to
    cols = np.arange(nx)
    obj = np.concatenate([np.concatenate(xcost), fixed.ravel()])
    n = nx + ny
    blocks: list[tuple[Any, Any, Any]] = []

    def add(mat: Any, lo: Any, hi: Any) -> None:
        blocks.append((mat, lo, hi))

    pairs = np.concatenate(pair_of)
    add(coo_matrix((np.ones(nx), (pairs, cols)), shape=(npairs, n)), 1.0, 1.0)
    link = coo_matrix(
        (np.concatenate([np.ones(nx), -np.ones(nx)]),
         (np.concatenate([cols, cols]), np.concatenate([cols, ycol]))),
        shape=(nx, n),
    )  # fmt: skip
    add(link, -np.inf, 0.0)
    yf = np.repeat(np.arange(nf), ns)
    ys = np.tile(np.arange(ns), nf)
    ycols = nx + np.arange(ny)
    add(coo_matrix((np.ones(ny), (yf, ycols)), shape=(nf, n)),
        np.array([f.replicas_min for f in problem.functions], dtype=float), np.inf)  # fmt: skip
    nines = np.array([s.nines for s in problem.sites])
    need = np.array([f.nines_required for f in problem.functions])
    add(coo_matrix((nines[ys], (yf, ycols)), shape=(nf, n)), need, np.inf)
    cap = np.array([s.capacity for s in problem.sites])
    add(coo_matrix((np.concatenate(xload), (sx, cols)), shape=(ns, n)), -np.inf, cap)
    mem = np.array([f.memory_mb for f in problem.functions])
    add(coo_matrix((mem[yf], (ys, ycols)), shape=(ns, n)), -np.inf, cap * 1024.0)
    if problem.budget_per_hour is not None:
        yprice = (mem[yf] / 1024.0) * price[ys]
        row = np.concatenate([np.concatenate(xprice), yprice])
        add(coo_matrix(row[None, :]), -np.inf, problem.budget_per_hour)
    a_all = vstack([b[0] for b in blocks]).tocsr()
    lo = np.concatenate([np.broadcast_to(b[1], (b[0].shape[0],)) for b in blocks])
    hi = np.concatenate([np.broadcast_to(b[2], (b[0].shape[0],)) for b in blocks])
    integrality = np.concatenate([np.zeros(nx), np.ones(ny)])
    res = milp(
        obj,
        constraints=LinearConstraint(a_all, lo, hi),
        integrality=integrality,
        bounds=Bounds(0.0, 1.0),
        options={"time_limit": time_limit_s, "mip_rel_gap": 1e-6, "disp": False},
    )
    if res.x is None:
        return MilpResult("infeasible" if res.status == 2 else "no_solution",
                          float("inf"), float("-inf"), {}, {})  # fmt: skip
    y = res.x[nx:].reshape(nf, ns) > 0.5
    xv = res.x[:nx]
    keep = xv > 1e-9
    x = {f: (cx[keep & (fx == f)], sx[keep & (fx == f)], xv[keep & (fx == f)]) for f in range(nf)}
    placement = {f: tuple(int(i) for i in np.flatnonzero(y[f])) for f in range(nf)}
    objective = float(res.fun)
    bound = min(objective, float(getattr(res, "mip_dual_bound", objective) or objective))
    status = "optimal" if res.status == 0 else "feasible"
    return MilpResult(status, objective, bound, placement, x)
