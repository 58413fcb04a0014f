"""The Lagrangian lower bound of the decomposed placement problem, on flat arrays.

For one function's UFLP (replication ``>= r``), relaxing "every client fully served" with
multipliers ``v_c`` gives ``L(v) = sum_c v_c + min over open sets S with |S| >= r of
sum_{i in S} rho_i`` with ``rho_i = F_i - sum_c max(0, v_c - a_ci)``. Any ``v`` gives a valid
bound. Only each client's ``K`` cheapest sites are stored; clamping ``v_c`` to the (K+1)-th
cheapest cost keeps every excluded term at zero, so the bound stays valid.

:class:`LowerBound` holds the multipliers of many functions at once as flat arrays (one entry per
stored (client, site) pair) and improves them in two stages: a batched Erlenkotter dual ascent,
then Polyak subgradient steps towards each function's upper bound. It keeps, per function, the
best value seen and the open set that achieved it (the planner repairs those sets into
placements: the Lagrangian heuristic). ``run`` can be called again after the upper bounds
improve; the steps then aim at the better target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from edgefn.placement._model import PlacementProblem

__all__ = ["Candidates", "LowerBound", "candidates", "replication_for_bound"]

_MAX_ASCENT_ROUNDS = 15
_STALL_ITERATIONS = 8


@dataclass(frozen=True, slots=True)
class Candidates:
    """A function's clients restricted to their k cheapest sites, for the bound."""

    a: Any  # (clients, k) costs
    sites: Any  # (clients, k) site indices
    clamp: Any  # (clients,) the cheapest excluded cost: v_c may not exceed it
    start: Any  # (clients,) initial multipliers: the upper bound's assignment costs
    fixed: Any  # (sites,)
    ub: float


def candidates(a: Any, fixed: Any, opened: Sequence[int], kmax: int) -> Candidates:
    """Keep every site cheaper than 1.5x the client's assigned cost (4..kmax per client)."""
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
    ub = float(cur.sum() + fixed[list(opened)].sum())
    return Candidates(vals, idx, clamp, np.minimum(cur, clamp), fixed, ub)


class LowerBound:
    """Subgradient state for a batch of functions (see the module docstring)."""

    def __init__(self, cands: Sequence[Candidates], replicas: Sequence[int]) -> None:
        nf = len(cands)
        assert nf == len(replicas), (nf, len(replicas))
        ns = int(cands[0].fixed.size)
        self.nf, self.ns = nf, ns
        self.a_e = np.concatenate([c.a.ravel() for c in cands])
        site_e = np.concatenate([c.sites.ravel() for c in cands])
        self.cap_v = np.concatenate([c.clamp for c in cands])
        self.owner = np.concatenate([np.full(c.a.shape[0], f) for f, c in enumerate(cands)])
        width = np.concatenate([np.full(c.a.shape[0], c.a.shape[1]) for c in cands])
        self.f_fixed = np.stack([c.fixed for c in cands])
        self.ub = np.array([c.ub for c in cands])
        self.npairs = self.cap_v.size
        self.pair_e = np.repeat(np.arange(self.npairs), width)
        self.key_e = self.owner[self.pair_e] * ns + site_e
        self.starts = np.concatenate([[0], np.cumsum(width)[:-1]])
        self.r = np.minimum(np.array(replicas), ns)
        self.v = self._dual_ascent(np.concatenate([c.start for c in cands]))
        self.best = np.full(nf, -np.inf)
        self.best_set = np.zeros((nf, ns), dtype=bool)
        self.theta = np.ones(nf)
        self.stall = np.zeros(nf, dtype=int)
        self.iterations = 0

    def improve_upper(self, f: int, ub: float) -> None:
        """A cheaper placement of function ``f`` was found: aim the steps at it."""
        self.ub[f] = min(self.ub[f], ub)

    def gap(self) -> float:
        return float((self.ub - self.best).sum() / max(float(self.ub.sum()), 1e-12))

    def _dual_ascent(self, start: Any) -> Any:
        """Erlenkotter-style dual ascent, all clients at once: multipliers that start the steps.

        Every client starts at its cheapest cost and rises to its next cost breakpoint, scaled
        down so that no site's slack ``F_i - sum_c max(0, v_c - a_ci)`` turns negative; clients
        blocked by a tight site stop. A feasible dual gives ``L(v) = sum v``.
        """
        a_e, pair_e, key_e, starts = self.a_e, self.pair_e, self.key_e, self.starts
        fixed = self.f_fixed.ravel()
        v = np.minimum(a_e[starts], self.cap_v)
        for _ in range(_MAX_ASCENT_ROUNDS):
            vp = v[pair_e]
            nxt = np.minimum.reduceat(np.where(a_e > vp + 1e-12, a_e, np.inf), starts)
            delta = np.minimum(nxt, self.cap_v) - v
            delta = np.where(np.isfinite(delta), delta, 0.0)
            if not (delta > 1e-12).any():
                break
            cover = a_e <= vp
            slack = fixed - np.bincount(key_e, np.maximum(vp - a_e, 0.0), minlength=fixed.size)
            demand = np.bincount(key_e[cover], delta[pair_e[cover]], minlength=fixed.size)
            with np.errstate(over="ignore"):  # tiny demand: the ratio is +inf, as intended
                ratio = np.where(demand > 0, np.maximum(slack, 0.0) / np.maximum(demand, 1e-300),
                                 np.inf)  # fmt: skip
            frac = np.minimum.reduceat(np.where(cover, ratio[key_e], np.inf), starts)
            step = delta * np.minimum(frac, 1.0)
            if not (step > 1e-12).any():
                break
            v = v + step
        # The start (the upper bound's assignment costs) may already be a better point.
        return np.where(np.isfinite(v), v, start)

    def run(self, iterations: int, target_gap: float) -> None:
        """Up to ``iterations`` subgradient steps, stopping early at ``target_gap``."""
        assert 0 <= iterations <= 10_000, iterations
        nf, ns, r = self.nf, self.ns, self.r
        rmax = int(r.max())
        fs = np.arange(nf)
        cols = np.arange(rmax)[None, :]
        for _ in range(iterations):
            self.iterations += 1
            vp = self.v[self.pair_e]
            excess = np.bincount(self.key_e, np.maximum(vp - self.a_e, 0.0), minlength=nf * ns)
            rho = self.f_fixed - excess.reshape(nf, ns)
            neg = rho < 0
            nneg = neg.sum(axis=1)
            part = np.sort(np.partition(rho, rmax - 1, axis=1)[:, :rmax], axis=1)
            extra = (part * ((cols >= nneg[:, None]) & (cols < r[:, None]))).sum(axis=1)
            value = (np.bincount(self.owner, self.v, minlength=nf)
                     + np.where(neg, rho, 0.0).sum(axis=1) + extra)  # fmt: skip
            chosen = neg | ((nneg < r)[:, None] & (rho <= part[fs, r - 1][:, None]))
            self._record(value, chosen)
            if self.gap() <= target_gap:
                break
            self._step(value, vp, chosen)

    def _record(self, value: Any, chosen: Any) -> None:
        finite = np.isfinite(self.best)
        base = np.where(finite, self.best, 0.0)
        better = ~finite | (value > base + 1e-12 * np.abs(base))
        self.stall = np.where(better, 0, self.stall + 1)
        halve = self.stall >= _STALL_ITERATIONS
        self.theta = np.where(halve, self.theta / 2.0, self.theta)
        self.stall = np.where(halve, 0, self.stall)
        self.best = np.maximum(self.best, value)
        self.best_set[better] = chosen[better]

    def _step(self, value: Any, vp: Any, chosen: Any) -> None:
        served = chosen.ravel()[self.key_e] & (vp > self.a_e)
        g = 1.0 - np.bincount(self.pair_e, served, minlength=self.npairs)
        g = np.where((self.v >= self.cap_v) & (g > 0), 0.0, g)
        norm = np.bincount(self.owner, g * g, minlength=self.nf)
        active = (self.ub - self.best) > 1e-6 * np.abs(self.ub)
        step = np.where(active & (norm > 0),
                        self.theta * (self.ub - value) / np.maximum(norm, 1e-12), 0.0)  # fmt: skip
        self.v = np.minimum(self.v + step[self.owner] * g, self.cap_v)


def replication_for_bound(problem: PlacementProblem, functions: Sequence[int]) -> list[int]:
    """Per function, the fewest sites any feasible placement uses (a valid tightening of
    "at least r_f": see :meth:`PlacementProblem.replicas_needed`)."""
    return [problem.replicas_needed(f) for f in functions]
