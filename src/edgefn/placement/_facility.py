"""Facility location as a mixed-integer program, solved exactly by HiGHS.

A :class:`FacilityProblem` is the textbook capacitated facility-location problem (CFLP) with
splittable demand, which also covers the uncapacitated problem (``capacity=None``) and the
p-median problem (zero fixed costs, ``open_exactly=p``)::

    min  sum_i f_i y_i + sum_ij c_ij x_ij
    s.t. sum_i x_ij = 1                          every customer fully served
         sum_j d_j x_ij <= s_i y_i               capacity (CFLP only)
         x_ij <= y_i                             "disaggregated" linking
      or sum_j x_ij <= n y_i                     "aggregated" linking (weaker LP relaxation)
         sum_i s_i y_i >= sum_j d_j              valid inequality (CFLP only)
         sum_i y_i = p                           p-median only
         0 <= x_ij <= 1, y_i binary

``c_ij`` is the cost of serving *all* of customer j's demand from facility i (OR-Library's
convention). The model is built as sparse matrices and handed to ``scipy.optimize.milp`` (HiGHS
branch and cut) with a time limit; the result carries HiGHS's status, objective, dual bound and
gap. :func:`lp_bound` solves the LP relaxation of either formulation, to measure how much the
disaggregated linking tightens it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix, hstack, vstack

__all__ = ["FacilityProblem", "FacilityResult", "Formulation", "lp_bound", "solve_facility"]

Formulation = Literal["disaggregated", "aggregated"]
Method = Literal["auto", "milp", "lagrangian"]
Status = Literal["optimal", "feasible", "infeasible", "no_solution"]

_MAX_VARIABLES = 5_000_000
# "auto" takes the Lagrangian branch and bound for capacitated instances from this many
# assignment variables up (capa/capb/capc have 100,000; the cap4x-cap13x have at most 50,000 and
# HiGHS solves them in well under a second).
LAGRANGIAN_FROM = 60_000


@dataclass(frozen=True, slots=True)
class FacilityProblem:
    """m facilities, n customers. ``cost[i][j]``: serving all of j's demand from i."""

    fixed_cost: tuple[float, ...]
    demand: tuple[float, ...]
    cost: tuple[tuple[float, ...], ...]
    capacity: tuple[float, ...] | None = None
    open_exactly: int | None = None

    def __post_init__(self) -> None:
        m, n = len(self.fixed_cost), len(self.demand)
        assert m > 0, "no facilities"
        assert n > 0, "no customers"
        assert len(self.cost) == m, (len(self.cost), m)
        assert all(len(row) == n for row in self.cost)
        assert self.capacity is None or len(self.capacity) == m
        assert self.open_exactly is None or 1 <= self.open_exactly <= m
        assert (m + 1) * n <= _MAX_VARIABLES, "instance too large for the exact solver"

    @property
    def m(self) -> int:
        return len(self.fixed_cost)

    @property
    def n(self) -> int:
        return len(self.demand)

    def uncapacitated(self) -> FacilityProblem:
        return FacilityProblem(self.fixed_cost, self.demand, self.cost, None, self.open_exactly)


@dataclass(frozen=True, slots=True)
class FacilityResult:
    status: Status
    objective: float
    bound: float
    gap: float
    open: tuple[int, ...]  # 0-based facility indices
    assignment: tuple[tuple[tuple[int, float], ...], ...]  # per customer: (facility, fraction)
    method: str = "milp"  # "milp" (HiGHS branch and cut) or "lagrangian" (branch and bound)
    nodes: int = 0  # branch-and-bound nodes of the Lagrangian method (0 for the MILP)


def _build(problem: FacilityProblem, formulation: Formulation) -> tuple[Any, Any, Any, Any]:
    """Objective vector, constraints, integrality and bounds in scipy.optimize.milp's terms."""
    m, n = problem.m, problem.n
    nx = m * n  # x[i, j] at column i * n + j; y[i] at column nx + i
    c = np.concatenate([np.asarray(problem.cost, dtype=float).ravel(), problem.fixed_cost])
    eye_x = np.arange(nx)
    rows = []
    # Assignment: one row per customer j.
    assign = coo_matrix((np.ones(nx), (eye_x % n, eye_x)), shape=(n, nx + m))
    rows.append(LinearConstraint(assign, 1.0, 1.0))
    if formulation == "disaggregated":
        link_x = coo_matrix((np.ones(nx), (eye_x, eye_x)), shape=(nx, nx))
        link_y = coo_matrix((-np.ones(nx), (eye_x, eye_x // n)), shape=(nx, m))
        rows.append(LinearConstraint(hstack([link_x, link_y]), -np.inf, 0.0))
    else:
        link_x = coo_matrix((np.ones(nx), (eye_x // n, eye_x)), shape=(m, nx))
        link_y = coo_matrix(-float(n) * np.eye(m))
        rows.append(LinearConstraint(hstack([link_x, link_y]), -np.inf, 0.0))
    if problem.capacity is not None:
        d = np.tile(np.asarray(problem.demand, dtype=float), m)
        cap_x = coo_matrix((d, (eye_x // n, eye_x)), shape=(m, nx))
        cap_y = coo_matrix(-np.diag(np.asarray(problem.capacity, dtype=float)))
        rows.append(LinearConstraint(hstack([cap_x, cap_y]), -np.inf, 0.0))
        total = np.concatenate([np.zeros(nx), problem.capacity])
        rows.append(LinearConstraint(total[None, :], sum(problem.demand), np.inf))
    if problem.open_exactly is not None:
        card = np.concatenate([np.zeros(nx), np.ones(m)])
        rows.append(LinearConstraint(card[None, :], problem.open_exactly, problem.open_exactly))
    a = vstack([r.A for r in rows]).tocsr()
    lo = np.concatenate([np.broadcast_to(r.lb, (r.A.shape[0],)) for r in rows])
    hi = np.concatenate([np.broadcast_to(r.ub, (r.A.shape[0],)) for r in rows])
    integrality = np.concatenate([np.zeros(nx), np.ones(m)])
    return c, LinearConstraint(a, lo, hi), integrality, Bounds(0.0, 1.0)


def solve_facility(
    problem: FacilityProblem,
    *,
    time_limit_s: float = 60.0,
    formulation: Formulation = "disaggregated",
    rel_gap: float = 1e-9,
    method: Method = "auto",
) -> FacilityResult:
    """Solve exactly (up to ``rel_gap``) within ``time_limit_s``; report status, bound and gap.

    ``method``: ``milp`` (HiGHS branch and cut on the MILP), ``lagrangian`` (the branch and bound
    of :mod:`edgefn.placement._cflp_bb`, capacitated instances only, to at least ``1e-6``), or
    ``auto``: the Lagrangian one for capacitated instances of ``LAGRANGIAN_FROM`` assignment
    variables or more, the MILP otherwise."""
    assert time_limit_s > 0, time_limit_s
    if method == "lagrangian" or (
        method == "auto"
        and problem.capacity is not None
        and problem.open_exactly is None
        and problem.m * problem.n >= LAGRANGIAN_FROM
    ):
        # lazy: _cflp_bb builds on this module's FacilityProblem and FacilityResult (a cycle)
        from edgefn.placement._cflp_bb import solve_cflp_lagrangian

        result, _ = solve_cflp_lagrangian(
            problem, time_limit_s=time_limit_s, rel_gap=max(rel_gap, 1e-6)
        )
        return result
    c, cons, integrality, bounds = _build(problem, formulation)
    res = milp(
        c,
        constraints=cons,
        integrality=integrality,
        bounds=bounds,
        options={"time_limit": time_limit_s, "mip_rel_gap": rel_gap, "disp": False},
    )
    if res.x is None:
        status: Status = "infeasible" if res.status == 2 else "no_solution"
        return FacilityResult(status, float("inf"), float("-inf"), float("inf"), (), ())
    m, n = problem.m, problem.n
    x = np.asarray(res.x[: m * n]).reshape(m, n)
    y = np.asarray(res.x[m * n :])
    opened = tuple(int(i) for i in np.flatnonzero(y > 0.5))
    assignment = tuple(
        tuple((int(i), float(x[i, j])) for i in np.flatnonzero(x[:, j] > 1e-9)) for j in range(n)
    )
    objective = float(res.fun)
    bound = float(getattr(res, "mip_dual_bound", objective) or objective)
    bound = min(bound, objective)
    gap = (objective - bound) / abs(objective) if objective else 0.0
    return FacilityResult(
        "optimal" if res.status == 0 else "feasible", objective, bound, gap, opened, assignment
    )


def lp_bound(problem: FacilityProblem, *, formulation: Formulation = "disaggregated") -> float:
    """Optimal value of the LP relaxation (y continuous in [0, 1])."""
    c, cons, _, bounds = _build(problem, formulation)
    res = milp(c, constraints=cons, bounds=bounds, options={"disp": False})
    assert res.x is not None, res.message
    return float(res.fun)
