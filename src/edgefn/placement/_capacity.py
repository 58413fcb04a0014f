"""Capacity repair: add replicas until nearest routing fits every site's CPU and memory.

The Lagrangian path prices capacity (``lam``, ``mu``) for a few rounds, which is enough when
capacity is loose. When many functions crowd the same few sites (small PoPs next to big cities)
the prices do not converge in a few rounds, and the routing LP can only split a function's demand
over the sites it already runs at, so it may find no feasible routing at all.

:func:`fit_capacity` repairs such a placement greedily. Each move takes the most overloaded site,
its largest user f, and opens f at the site that serves the clients f sends there most cheaply
among the sites with CPU room for that load and memory room for a replica; f's clients then go to
their cheapest replica. Moves stop when every site fits, when no site has room, or after
``max_moves``. Adding a replica never breaks replication, availability or SLA constraints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edgefn.placement._model import PlacementProblem

__all__ = ["fit_capacity"]


def _routed(problem: PlacementProblem, f: int, sites: tuple[int, ...]) -> tuple[Any, Any, Any]:
    """(clients, their cheapest placed site, their CPU load) for function f, as route() does."""
    spec = problem.functions[f]
    clients, a, allowed = problem.assign_cost(f)
    idx = np.array(sites, dtype=int)
    ok = allowed[:, idx]
    ok = ok | ~ok.any(axis=1)[:, None]
    where = idx[np.argmin(np.where(ok, a[:, idx], np.inf), axis=1)]
    load = problem.demand_rps[f, clients] * spec.cpu_ms_per_request / 1e3
    return clients, where, load


def fit_capacity(
    problem: PlacementProblem, placement: dict[int, tuple[int, ...]], *, max_moves: int
) -> tuple[dict[int, tuple[int, ...]], int]:
    """The repaired placement and the number of replicas added (see the module docstring)."""
    assert 0 <= max_moves <= 1_000_000, max_moves
    nf, ns = len(problem.functions), len(problem.sites)
    cap = np.array([s.capacity for s in problem.sites])
    mem_cap = cap * 1024.0
    per_fn = np.zeros((nf, ns))
    used_mem = np.zeros(ns)
    for f, sites in placement.items():
        _, where, load = _routed(problem, f, sites)
        per_fn[f] = np.bincount(where, load, minlength=ns)
        used_mem[list(sites)] += problem.functions[f].memory_mb
    load = per_fn.sum(axis=0)
    out = dict(placement)
    moves = 0
    while moves < max_moves:
        over = load - cap
        i = int(np.argmax(over))
        if over[i] <= 1e-9 * max(1.0, cap[i]):
            break
        f = int(np.argmax(per_fn[:, i]))
        j = _best_new_site(problem, f, out[f], i, load, cap, used_mem, mem_cap)
        if j is None:
            break
        out[f] = tuple(sorted((*out[f], j)))
        used_mem[j] += problem.functions[f].memory_mb
        load -= per_fn[f]
        _, where, fl = _routed(problem, f, out[f])
        per_fn[f] = np.bincount(where, fl, minlength=ns)
        load += per_fn[f]
        moves += 1
    return out, moves


def _best_new_site(
    problem: PlacementProblem,
    f: int,
    sites: tuple[int, ...],
    hot: int,
    load: Any,
    cap: Any,
    used_mem: Any,
    mem_cap: Any,
) -> int | None:
    """Cheapest site for f's clients now at ``hot`` with room for their load and a replica."""
    _, where, _ = _routed(problem, f, sites)
    _, a, allowed = problem.assign_cost(f)
    at_hot = where == hot
    cost = np.where(allowed[at_hot], a[at_hot], np.inf).sum(axis=0)
    # Any CPU room will do: a site that overflows in turn becomes the next move's hot site.
    room = (cap - load > 1e-6 * cap) & (used_mem + problem.functions[f].memory_mb <= mem_cap)
    room[list(sites)] = False
    if not room.any():
        return None
    cost = np.where(room, cost, np.inf)
    j = int(np.argmin(cost))
    return j if np.isfinite(cost[j]) else int(np.flatnonzero(room)[0])
