"""Placement at scale: decomposition by function, greedy + local search, Lagrangian lower bound.

Functions only interact through site capacities. Relaxing the CPU and memory rows with prices
``lam[i]`` (per core) and ``mu[i]`` (per MB) splits the problem into one uncapacitated facility
location problem (UFLP) per function, with replication ``>= r_f``:

1. Upper bound. Each UFLP is solved by greedy addition (open the site with the largest saving,
   forced until ``r_f`` sites and the availability target are met), then alternating drop/add
   passes until no move improves. Sites that overflow get their price raised and only the
   functions using them are re-solved (``capacity_rounds`` times).
2. Lower bound (:mod:`edgefn.placement._bound`): the Lagrangian relaxation of each UFLP's
   assignment rows, improved by dual ascent and subgradient steps, all functions of a chunk at
   once. ``sum_f L_f - lam . cpu_capacity - mu . mem_capacity`` bounds the whole problem;
   dropping the availability rows only loosens it.
3. Lagrangian heuristic. Half-way through the subgradient and at its end, the open set that gave
   each function its best bound is repaired (greedy addition from it, then drop/add passes) and
   kept when cheaper than the current placement; the better upper bound also sharpens the
   remaining subgradient steps. This matters most under tight SLAs, where greedy addition acts
   like set cover and opens far too many sites. If the changed placements would overflow a site,
   they are all reverted (the capacity prices were fitted to the greedy placements).

Functions are split into ``chunks`` that are solved independently by ``mapper`` (the CLI passes a
process pool: this module stays pure). The bound of the whole problem is the sum of the chunks'.
The routing LP then assigns clients exactly under the real capacities (see ``_plan``).

SLA: disallowed pairs cost a large finite penalty, so the bound stays one of a relaxation while the
heuristic never uses such a pair when an allowed site can be opened.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgefn.placement._bound import LowerBound, candidates, replication_for_bound
from edgefn.placement._capacity import fit_capacity

if TYPE_CHECKING:
    from edgefn.placement._model import FloatArray, PlacementProblem

__all__ = ["LagrangianResult", "Mapper", "Progress", "solve_lagrangian"]

Progress = Callable[[str, int, int], None]
Mapper = Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]

_MAX_PASSES = 20
_MAX_CHUNKS = 64
# Second pass (see _refine): functions whose bound is this far below their upper bound get
# this many candidate sites per client and this many subgradient steps.
_REFINE_GAP = 0.15
_REFINE_SITES = 96
_REFINE_ITERATIONS = 80
_MAX_CAPACITY_MOVES_PER_SITE = 20


@dataclass(frozen=True, slots=True)
class LagrangianResult:
    placement: dict[int, tuple[int, ...]]
    bound: float
    iterations: int
    capacity_rounds: int
    improved: int = 0
    capacity_moves: int = 0


@dataclass(slots=True)
class _Sub:
    """One function's UFLP under the current prices."""

    a: Any  # (clients, sites) assignment cost, penalised where the SLA forbids
    fixed: Any  # (sites,)
    replicas: int
    need_nines: float


@dataclass(frozen=True, slots=True)
class _Job:
    """What a chunk's worker needs; pickled to the worker when ``mapper`` is a process pool."""

    problem: PlacementProblem
    functions: tuple[int, ...]
    fixed: Any
    lam: Any
    mu: Any
    placement: tuple[tuple[int, ...], ...] = ()
    iterations: int = 0
    candidates: int = 32
    target_gap: float = 0.0


def _greedy(sub: _Sub, nines: Any, start: list[int] | None = None) -> list[int]:
    """Greedy addition then drop/add passes, from ``start`` (a Lagrangian open set) or empty."""
    a, fixed = sub.a, sub.fixed
    opened = list(start) if start else [int(np.argmin(a.sum(axis=0) + fixed))]
    cur = a[:, opened].min(axis=1)
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
    spec = problem.functions[f]
    clients, a, allowed = problem.assign_cost(f)
    load = problem.demand_rps[f, clients] * spec.cpu_ms_per_request / 1e3
    a = a + load[:, None] * lam[None, :]
    f_row = fixed[f] + spec.memory_mb * mu
    penalty = 10.0 * (float(a.max()) + float(f_row.max())) + 1.0
    a = np.where(allowed, a, a + penalty)
    return clients, _Sub(a, f_row, problem.replicas_needed(f), spec.nines_required)


def solve_lagrangian(
    problem: PlacementProblem,
    *,
    extra_fixed: FloatArray | None = None,
    iterations: int = 120,
    candidates: int = 32,
    capacity_rounds: int = 4,
    target_gap: float = 0.002,
    progress: Progress | None = None,
    mapper: Mapper | None = None,
    chunks: int = 1,
) -> LagrangianResult:
    """Heuristic placement with a proven lower bound (see the module docstring)."""
    assert 1 <= iterations <= 10_000, iterations
    assert candidates >= 1, candidates
    assert 0 <= capacity_rounds <= 50, capacity_rounds
    assert 1 <= chunks <= _MAX_CHUNKS, chunks
    run: Mapper = mapper if mapper is not None else _serial
    nf, ns = len(problem.functions), len(problem.sites)
    fixed = problem.fixed_cost() + (extra_fixed if extra_fixed is not None else 0.0)
    cap = np.array([s.capacity for s in problem.sites])
    mem_cap = cap * 1024.0
    cpu = np.array([f.cpu_ms_per_request / 1e3 for f in problem.functions])
    mem = np.array([f.memory_mb for f in problem.functions])
    lam, mu = np.zeros(ns), np.zeros(ns)
    placement: dict[int, tuple[int, ...]] = {}
    todo = list(range(nf))
    rounds = 0
    for rounds in range(capacity_rounds + 1):
        jobs = [_Job(problem, part, fixed, lam, mu) for part in _split(todo, chunks)]
        for part_result in run(_place_chunk, jobs):
            placement.update(part_result)
        if progress is not None:
            progress("place", rounds + 1, capacity_rounds + 1)
        load, used_mem = _loads(problem, placement, cpu, mem)
        over_cpu, over_mem = load > cap * (1 + 1e-9), used_mem > mem_cap * (1 + 1e-9)
        if not (over_cpu.any() or over_mem.any()) or rounds == capacity_rounds:
            break
        unit = _mean_cost_per_core(problem, placement, fixed, lam, mu, load)
        lam = lam + 0.5 * unit * np.maximum(load / np.maximum(cap, 1e-9) - 1.0, 0.0)
        mu = mu + 0.5 * unit / 1024.0 * np.maximum(used_mem / np.maximum(mem_cap, 1e-9) - 1.0, 0)
        hot = set(np.flatnonzero(over_cpu | over_mem).tolist())
        todo = [f for f in range(nf) if set(placement[f]) & hot]
    parts = _split(list(range(nf)), chunks)
    jobs = [
        _Job(problem, part, fixed, lam, mu, tuple(placement[f] for f in part), iterations,
             candidates, target_gap)
        for part in parts
    ]  # fmt: skip
    bound, its, improved = 0.0, 0, placement.copy()
    for k, (b, n, better) in enumerate(run(_bound_chunk, jobs)):
        bound, its = bound + b, max(its, n)
        improved.update(better)
        if progress is not None:
            progress("bound", k + 1, len(jobs))
    load, used_mem = _loads(problem, improved, cpu, mem)
    fits = bool((load <= cap * (1 + 1e-9)).all() and (used_mem <= mem_cap * (1 + 1e-9)).all())
    changed = sum(improved[f] != placement[f] for f in range(nf)) if fits else 0
    bound -= float(lam @ cap + mu @ mem_cap)
    final, added = improved if fits else placement, 0
    if not fits:
        final, added = fit_capacity(problem, final, max_moves=_MAX_CAPACITY_MOVES_PER_SITE * ns)
    return LagrangianResult(final, bound, its, rounds, changed, added)


def _serial(fn: Callable[[Any], Any], jobs: Sequence[Any]) -> list[Any]:
    return [fn(j) for j in jobs]


def _split(items: list[int], chunks: int) -> list[tuple[int, ...]]:
    """Round-robin split: heavy and light functions spread evenly over the chunks."""
    n = max(1, min(chunks, len(items)))
    return [tuple(items[k::n]) for k in range(n) if items[k::n]]


def _nines(problem: PlacementProblem) -> Any:
    return np.array([s.nines for s in problem.sites])


def _place_chunk(job: _Job) -> dict[int, tuple[int, ...]]:
    nines = _nines(job.problem)
    out: dict[int, tuple[int, ...]] = {}
    for f in job.functions:
        _, sub = _subproblem(job.problem, f, job.fixed, job.lam, job.mu)
        out[f] = tuple(_greedy(sub, nines))
    return out


def _bound_chunk(job: _Job) -> tuple[float, int, dict[int, tuple[int, ...]]]:
    """Bound of a chunk, with the Lagrangian heuristic half-way and at the end."""
    fs, problem = job.functions, job.problem
    nines = _nines(problem)
    placement = dict(zip(fs, job.placement, strict=True))
    cands = []
    for f in fs:
        _, sub = _subproblem(problem, f, job.fixed, job.lam, job.mu)
        cands.append(candidates(sub.a, sub.fixed, placement[f], job.candidates))
    lb = LowerBound(cands, replication_for_bound(problem, fs))
    half = job.iterations // 2
    for its in (half, job.iterations - half):
        lb.run(its, job.target_gap)
        _repair(job, lb, placement, nines)
        if lb.gap() <= job.target_gap:
            break
    best = lb.best.copy()
    _refine(job, lb, placement, best)
    return float(best.sum()), lb.iterations, placement


def _refine(job: _Job, lb: LowerBound, placement: dict[int, tuple[int, ...]], best: Any) -> None:
    """Re-bound the functions still far from their upper bound with wider candidate rows.

    These are global functions with few replicas: their far-served clients have more than
    ``candidates`` sites nearer than their replica, and the clamp holds their multipliers down.
    Only a few dozen functions qualify, so wide rows for them cost about as much as the rest.
    """
    hard = np.flatnonzero(lb.ub - lb.best > _REFINE_GAP * np.abs(lb.ub))
    if hard.size == 0 or job.candidates >= _REFINE_SITES:
        return
    fs = [job.functions[k] for k in hard]
    cands = []
    for f in fs:
        _, sub = _subproblem(job.problem, f, job.fixed, job.lam, job.mu)
        cands.append(candidates(sub.a, sub.fixed, placement[f], _REFINE_SITES))
    wide = LowerBound(cands, [int(x) for x in lb.r[hard]])
    wide.ub[:] = lb.ub[hard]
    wide.run(_REFINE_ITERATIONS, job.target_gap)
    best[hard] = np.maximum(best[hard], wide.best)


def _repair(job: _Job, lb: LowerBound, placement: dict[int, tuple[int, ...]], nines: Any) -> None:
    """The Lagrangian heuristic (module docstring, step 3) for the chunk's open gaps."""
    for k, f in enumerate(job.functions):
        if lb.ub[k] - lb.best[k] <= 1e-6 * abs(lb.ub[k]):
            continue
        start = np.flatnonzero(lb.best_set[k]).tolist()
        if not start or start == list(placement[f]):
            continue
        _, sub = _subproblem(job.problem, f, job.fixed, job.lam, job.mu)
        cand = _greedy(sub, nines, start)
        cost = float(sub.a[:, cand].min(axis=1).sum() + sub.fixed[cand].sum())
        if cost < lb.ub[k] - 1e-9 * abs(lb.ub[k]):
            placement[f] = tuple(cand)
            lb.improve_upper(k, cost)


def _loads(
    problem: PlacementProblem, placement: dict[int, tuple[int, ...]], cpu: Any, mem: Any
) -> tuple[Any, Any]:
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
