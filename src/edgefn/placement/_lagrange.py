"""Placement at scale: decomposition by function, greedy + local search, Lagrangian lower bound.

Functions only interact through site capacities. Relaxing the CPU and memory rows with prices
``lam[i]`` (per core) and ``mu[i]`` (per MB) splits the problem into one uncapacitated facility
location problem (UFLP) per function, with replication ``>= r_f``:

1. Upper bound. Each UFLP is solved by greedy addition (open the site with the largest saving,
   forced until ``r_f`` sites and the availability target are met), then alternating drop/add
   passes until no move improves. Sites that overflow get their price raised and only the
   functions using them are re-solved (``capacity_rounds`` times). The routing LP then assigns
   clients exactly under the real capacities.
2. Lower bound. For each UFLP, relaxing "every client fully served" with multipliers ``v_c`` gives
   ``L_f(v) = sum_c v_c + min over open sets S with |S| >= r_f of sum_{i in S} rho_i`` with
   ``rho_i = F_i - sum_c max(0, v_c - a_ci)``; any ``v`` gives a valid bound, and subgradient ascent
   (Polyak steps towards the function's upper bound) tightens it. Only each client's ``K``
   cheapest sites are stored; clamping ``v_c`` to the (K+1)-th cheapest cost keeps the excluded
   terms at zero, so the bound stays valid. All functions iterate together on flat arrays.
   ``sum_f L_f - lam . cpu_capacity - mu . mem_capacity`` bounds the whole problem; dropping the
   availability rows only loosens it.

SLA: disallowed pairs cost a large finite penalty, so the bound stays one of a relaxation while the
heuristic never uses such a pair when an allowed site can be opened.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgefn.placement._model import FloatArray, PlacementProblem

__all__ = ["LagrangianResult", "Progress", "solve_lagrangian"]

Progress = Callable[[str, int, int], None]

_MAX_PASSES = 20
_MAX_ASCENT_ROUNDS = 60


@dataclass(frozen=True, slots=True)
class LagrangianResult:
    placement: dict[int, tuple[int, ...]]
    bound: float
    iterations: int
    capacity_rounds: int


@dataclass(slots=True)
class _Sub:
    """One function's UFLP under the current prices."""

    a: Any  # (clients, sites) assignment cost, penalised where the SLA forbids
    fixed: Any  # (sites,)
    replicas: int
    need_nines: float


def _greedy(sub: _Sub, nines: Any) -> list[int]:
    import numpy as np

    a, fixed = sub.a, sub.fixed
    first = int(np.argmin(a.sum(axis=0) + fixed))
    opened = [first]
    cur = a[:, first].copy()
    for _ in range(_MAX_PASSES):
        changed = False
        while len(opened) < a.shape[1]:
            gain = np.maximum(cur[:, None] - a, 0.0).sum(axis=0) - fixed
            gain[opened] = -np.inf
            j = int(np.argmax(gain))
            short = len(opened) < sub.replicas or nines[opened].sum() < sub.need_nines - 1e-9
            if gain[j] <= 0 and not short:
                break
            opened.append(j)
            cur = np.minimum(cur, a[:, j])
            changed = True
        dropped = _drop_one(sub, nines, opened)
        if dropped is None and not changed:
            break
        if dropped is not None:
            opened.remove(dropped)
            cur = a[:, opened].min(axis=1)
    return sorted(opened)


def _drop_one(sub: _Sub, nines: Any, opened: list[int]) -> int | None:
    import numpy as np

    if len(opened) <= max(1, sub.replicas):
        return None
    cols = sub.a[:, opened]
    order = np.argsort(cols, axis=1)
    rows = np.arange(cols.shape[0])
    best, second = cols[rows, order[:, 0]], cols[rows, order[:, 1]]
    increase = np.bincount(order[:, 0], weights=second - best, minlength=len(opened))
    saving = sub.fixed[opened] - increase
    k = int(np.argmax(saving))
    if saving[k] <= 0 or nines[opened].sum() - nines[opened[k]] < sub.need_nines - 1e-9:
        return None
    return opened[k]


def _subproblem(
    problem: PlacementProblem, f: int, fixed: Any, lam: Any, mu: Any
) -> tuple[Any, _Sub]:
    import numpy as np

    spec = problem.functions[f]
    clients, a, allowed = problem.assign_cost(f)
    load = problem.demand_rps[f, clients] * spec.cpu_ms_per_request / 1e3
    a = a + load[:, None] * lam[None, :]
    f_row = fixed[f] + spec.memory_mb * mu
    penalty = 10.0 * (float(a.max()) + float(f_row.max())) + 1.0
    a = np.where(allowed, a, a + penalty)
    return clients, _Sub(a, f_row, spec.replicas_min, spec.nines_required)


def solve_lagrangian(
    problem: PlacementProblem,
    *,
    extra_fixed: FloatArray | None = None,
    iterations: int = 120,
    candidates: int = 32,
    capacity_rounds: int = 4,
    target_gap: float = 0.002,
    progress: Progress | None = None,
) -> LagrangianResult:
    """Heuristic placement with a proven lower bound (see the module docstring)."""
    import numpy as np

    assert 1 <= iterations <= 10_000, iterations
    assert candidates >= 1, candidates
    assert 0 <= capacity_rounds <= 50, capacity_rounds
    nf, ns = len(problem.functions), len(problem.sites)
    fixed = problem.fixed_cost() + (extra_fixed if extra_fixed is not None else 0.0)
    nines = np.array([s.nines for s in problem.sites])
    cap = np.array([s.capacity for s in problem.sites])
    mem_cap = cap * 1024.0
    cpu = np.array([f.cpu_ms_per_request / 1e3 for f in problem.functions])
    mem = np.array([f.memory_mb for f in problem.functions])
    lam, mu = np.zeros(ns), np.zeros(ns)
    placement: dict[int, tuple[int, ...]] = {}
    cands: dict[int, _Cand] = {}
    todo = list(range(nf))
    rounds = 0
    for rounds in range(capacity_rounds + 1):
        for k, f in enumerate(todo):
            _, sub = _subproblem(problem, f, fixed, lam, mu)
            placement[f] = tuple(_greedy(sub, nines))
            cands[f] = _candidates(sub, placement[f], candidates)
            if progress is not None and k % 50 == 0:
                progress("place", k, len(todo))
        load, used_mem = _loads(problem, placement, cpu, mem)
        over_cpu, over_mem = load > cap * (1 + 1e-9), used_mem > mem_cap * (1 + 1e-9)
        if not (over_cpu.any() or over_mem.any()) or rounds == capacity_rounds:
            break
        unit = _mean_cost_per_core(problem, placement, fixed, lam, mu, load)
        lam = lam + 0.5 * unit * np.maximum(load / np.maximum(cap, 1e-9) - 1.0, 0.0)
        mu = mu + 0.5 * unit / 1024.0 * np.maximum(used_mem / np.maximum(mem_cap, 1e-9) - 1.0, 0)
        hot = np.flatnonzero(over_cpu | over_mem)
        todo = [f for f in range(nf) if set(placement[f]) & set(hot.tolist())]
    if rounds > 0:  # prices moved: every function's bound must use the final prices
        for f in range(nf):
            _, sub = _subproblem(problem, f, fixed, lam, mu)
            cands[f] = _candidates(sub, placement[f], candidates)
    bound, its = _lower_bound(problem, cands, iterations, target_gap, progress)
    bound -= float(lam @ cap + mu @ mem_cap)
    return LagrangianResult(placement, bound, its, rounds)


def _loads(
    problem: PlacementProblem, placement: dict[int, tuple[int, ...]], cpu: Any, mem: Any
) -> tuple[Any, Any]:
    import numpy as np

    ns = len(problem.sites)
    load, used = np.zeros(ns), np.zeros(ns)
    for f, sites in placement.items():
        idx = np.array(sites)
        used[idx] += mem[f]
        clients = np.flatnonzero(problem.demand_rps[f] > 0)
        near = idx[np.argmin(problem.latency_ms[np.ix_(clients, idx)], axis=1)]
        np.add.at(load, near, problem.demand_rps[f, clients] * cpu[f])
    return load, used


def _mean_cost_per_core(problem: PlacementProblem, placement: Any, fixed: Any, lam: Any,
                        mu: Any, load: Any) -> float:  # fmt: skip
    total = sum(float(fixed[f, list(s)].sum()) for f, s in placement.items())
    return max(total / max(float(load.sum()), 1e-9), 1e-6) + float(lam.max())


@dataclass(frozen=True, slots=True)
class _Cand:
    """A function's clients restricted to their k cheapest sites, for the bound."""

    a: Any  # (clients, k) costs
    sites: Any  # (clients, k) site indices
    clamp: Any  # (clients,) the cheapest excluded cost: v_c may not exceed it
    start: Any  # (clients,) initial multipliers: the upper bound's assignment costs
    fixed: Any  # (sites,)
    ub: float


def _candidates(sub: _Sub, opened: tuple[int, ...], kmax: int) -> _Cand:
    """Keep every site cheaper than 1.5x the client's assigned cost (4..kmax per client)."""
    import numpy as np

    a = sub.a
    n, ns = a.shape
    cur = a[:, list(opened)].min(axis=1)
    need = int((a <= 1.5 * cur[:, None]).sum(axis=1).max())
    k = max(min(need, kmax, ns), min(4, ns))
    if k < ns:
        idx = np.argpartition(a, k, axis=1)[:, : k + 1]
        rows = np.arange(n)[:, None]
        vals = a[rows, idx]
        order = np.argsort(vals, axis=1)
        idx, vals = idx[rows, order], vals[rows, order]
        clamp = vals[:, k]
        idx, vals = idx[:, :k], vals[:, :k]
    else:
        idx = np.argsort(a, axis=1)
        vals = np.take_along_axis(a, idx, axis=1)
        clamp = np.full(n, np.inf)
    ub = float(cur.sum() + sub.fixed[list(opened)].sum())
    return _Cand(vals, idx, clamp, np.minimum(cur, clamp), sub.fixed, ub)


def _dual_ascent(
    start: Any, clamp: Any, a_e: Any, pair_e: Any, key_e: Any, f_fixed: Any, starts: Any
) -> Any:
    """Erlenkotter-style dual ascent, all clients at once: multipliers that start the subgradient.

    Every client starts at its cheapest cost and rises to its next cost breakpoint, scaled down so
    that no site's slack ``F_i - sum_c max(0, v_c - a_ci)`` turns negative; clients blocked by a
    tight site stop. A feasible dual gives ``L(v) = sum v`` and is usually close to the LP bound.
    """
    import numpy as np

    fixed = f_fixed.ravel()
    v = np.minimum(a_e[starts], clamp)
    for _ in range(_MAX_ASCENT_ROUNDS):
        vp = v[pair_e]
        nxt = np.minimum.reduceat(np.where(a_e > vp + 1e-12, a_e, np.inf), starts)
        delta = np.minimum(nxt, clamp) - v
        delta = np.where(np.isfinite(delta), delta, 0.0)
        if not (delta > 1e-12).any():
            break
        cover = a_e <= vp
        slack = fixed - np.bincount(key_e, np.maximum(vp - a_e, 0.0), minlength=fixed.size)
        demand = np.bincount(key_e[cover], delta[pair_e[cover]], minlength=fixed.size)
        ratio = np.where(demand > 0, np.maximum(slack, 0.0) / np.maximum(demand, 1e-300), np.inf)
        frac = np.minimum.reduceat(np.where(cover, ratio[key_e], np.inf), starts)
        step = delta * np.minimum(frac, 1.0)
        if not (step > 1e-12).any():
            break
        v = v + step
    # The start (the upper bound's assignment costs) may already be a better point.
    return np.where(np.isfinite(v), v, start)


def _lower_bound(
    problem: PlacementProblem,
    cands: dict[int, _Cand],
    iterations: int,
    target_gap: float,
    progress: Progress | None,
) -> tuple[float, int]:
    import numpy as np

    nf, ns = len(problem.functions), len(problem.sites)
    order = range(nf)
    a_e = np.concatenate([cands[f].a.ravel() for f in order])
    site_e = np.concatenate([cands[f].sites.ravel() for f in order])
    v = np.concatenate([cands[f].start for f in order])
    cap_v = np.concatenate([cands[f].clamp for f in order])
    owner = np.concatenate([np.full(cands[f].a.shape[0], f) for f in order])
    width = np.concatenate([np.full(cands[f].a.shape[0], cands[f].a.shape[1]) for f in order])
    f_fixed = np.stack([cands[f].fixed for f in order])
    ub = np.array([cands[f].ub for f in order])
    npairs = v.size
    pair_e = np.repeat(np.arange(npairs), width)
    key_e = owner[pair_e] * ns + site_e
    # Any feasible open set also has enough sites to meet the availability target, even if
    # each were the most available site: a valid tightening of "at least r_f".
    best_nines = max(s.nines for s in problem.sites)
    r = np.array(
        [
            max(f.replicas_min, math.ceil(f.nines_required / best_nines - 1e-9))
            for f in problem.functions
        ]
    )
    r = np.minimum(r, ns)
    rmax = int(r.max())
    starts = np.concatenate([[0], np.cumsum(width)[:-1]])
    v = _dual_ascent(v, cap_v, a_e, pair_e, key_e, f_fixed, starts)
    best = np.full(nf, -np.inf)
    theta = np.full(nf, 1.0)
    stall = np.zeros(nf, dtype=int)
    fs = np.arange(nf)
    done = 0
    for done in range(1, iterations + 1):
        vp = v[pair_e]
        rho = f_fixed - np.bincount(key_e, np.maximum(vp - a_e, 0.0), minlength=nf * ns).reshape(
            nf, ns
        )
        neg = rho < 0
        nneg = neg.sum(axis=1)
        part = np.sort(np.partition(rho, rmax - 1, axis=1)[:, :rmax], axis=1)
        cols = np.arange(rmax)[None, :]
        extra = (part * ((cols >= nneg[:, None]) & (cols < r[:, None]))).sum(axis=1)
        value = np.bincount(owner, v, minlength=nf) + np.where(neg, rho, 0.0).sum(axis=1) + extra
        finite = np.isfinite(best)
        better = ~finite | (
            value > np.where(finite, best, 0.0) + 1e-12 * np.abs(np.where(finite, best, 0.0))
        )
        stall = np.where(better, 0, stall + 1)
        theta = np.where(stall >= 8, theta / 2.0, theta)
        stall = np.where(stall >= 8, 0, stall)
        best = np.maximum(best, value)
        gap = (ub - best).sum() / max(ub.sum(), 1e-12)
        if progress is not None and done % 10 == 0:
            progress("bound", done, iterations)
        if gap <= target_gap:
            break
        thr = part[fs, r - 1]
        chosen = neg | ((nneg < r)[:, None] & (rho <= thr[:, None]))
        served = chosen.ravel()[key_e] & (vp > a_e)
        g = 1.0 - np.bincount(pair_e, served, minlength=npairs)
        g = np.where((v >= cap_v) & (g > 0), 0.0, g)
        norm = np.bincount(owner, g * g, minlength=nf)
        active = (ub - best) > 1e-6 * np.abs(ub)
        step = np.where(active & (norm > 0), theta * (ub - value) / np.maximum(norm, 1e-12), 0.0)
        v = np.minimum(v + step[owner] * g, cap_v)
    return float(best.sum()), done
