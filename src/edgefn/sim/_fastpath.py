"""The fast path: the same location model as :mod:`edgefn.sim._location`, without an event heap.

For a FIFO queue with ``c`` workers the Kiefer–Wolfowitz recursion needs only the sorted vector
of times at which each worker becomes free: request ``n`` starts at ``max(arrival_n, min(free))``
and that worker is then free at ``start_n + busy_n``. Kept as a binary heap this is one
``heapreplace`` per request on plain Python floats, about ten times faster than dispatching
events. With one worker and no cold starts it becomes Lindley's recursion, which numpy solves
without a Python loop: with ``u_n = S_{n-1} - (A_n - A_{n-1})`` and ``P = cumsum(u)``,
``W_n = P_n - min(0, min_{k<=n} P_k)``.

Cold starts follow the exact path's rule: an invocation is warm while an earlier invocation of
the same function is still in flight (the latest end time is after its arrival) or when its idle
time since that end falls in the keep-alive window. With a :class:`FixedKeepAlive` the window is
a constant; with any other policy the loop replays each function's starts and ends to the
policy in time order (ends are delivered lazily, just before the function's next start) so the
policy sees exactly what it sees on the exact path. A memory budget needs LRU eviction across
functions, which only the exact path models; :func:`run_fast` refuses it.

Given identical request arrays, both paths return identical start times and cold flags (up to
ties at equal timestamps); tests check that.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

import numpy as np

from edgefn.runtime.keepalive import FixedKeepAlive, KeepAlivePolicy, is_warm
from edgefn.sim._requests import LocationOutcome, RequestArrays

__all__ = ["lindley_start_ms", "run_fast"]


def run_fast(
    requests: RequestArrays,
    *,
    servers: int,
    keep_alive: KeepAlivePolicy | None,
    function_names: Sequence[str],
    memory_budget_mb: float = math.inf,
) -> LocationOutcome:
    """Start times and cold flags of every request of one location."""
    if memory_budget_mb != math.inf:
        raise ValueError("the fast path has no memory budget; use the exact path")
    assert servers >= 1
    n = len(requests)
    if n == 0:
        return LocationOutcome(np.empty(0), np.zeros(0, dtype=bool))
    if keep_alive is None:
        if servers == 1:
            start = lindley_start_ms(requests.arrival_ms, requests.service_ms)
        else:
            start = _fifo(requests.arrival_ms, requests.service_ms, servers)
        return LocationOutcome(start, np.zeros(n, dtype=bool))
    if isinstance(keep_alive, FixedKeepAlive):
        d = keep_alive.decision("", 0)
        lo, hi = float(d.prewarm_after_ms), float(d.prewarm_after_ms + d.keep_alive_ms)
        start, cold = _fifo_fixed_window(requests, servers, len(function_names), lo, hi)
    else:
        start, cold = _fifo_policy(requests, servers, keep_alive, function_names)
    return LocationOutcome(start, cold)


def lindley_start_ms(arrival_ms: np.ndarray, service_ms: np.ndarray) -> np.ndarray:
    """Start times of a FIFO single-server queue, vectorised (Lindley's recursion)."""
    u = np.empty(len(arrival_ms))
    u[0] = 0.0
    np.subtract(service_ms[:-1], np.diff(arrival_ms), out=u[1:])
    p = np.cumsum(u)
    wait = p - np.minimum.accumulate(np.minimum(p, 0.0))
    return np.asarray(arrival_ms + np.maximum(wait, 0.0))


def _fifo(arrival_ms: np.ndarray, busy_ms: np.ndarray, servers: int) -> np.ndarray:
    heap = [-math.inf] * servers
    replace = heapq.heapreplace
    out: list[float] = []
    put = out.append
    for x, y in zip(arrival_ms.tolist(), busy_ms.tolist(), strict=True):
        h = heap[0]
        st = x if x > h else h
        replace(heap, st + y)
        put(st)
    return np.array(out)


def _fifo_fixed_window(
    r: RequestArrays, servers: int, functions: int, lo: float, hi: float
) -> tuple[np.ndarray, np.ndarray]:
    heap = [-math.inf] * servers
    last_end = [-math.inf] * functions
    replace = heapq.heapreplace
    starts: list[float] = []
    colds: list[bool] = []
    put, put_cold = starts.append, colds.append
    cols = (r.arrival_ms.tolist(), r.function.tolist(), r.service_ms.tolist(), r.cold_ms.tolist())
    for x, f, y, z in zip(*cols, strict=True):
        le = last_end[f]
        cold = x >= le and not lo <= x - le <= hi
        if cold:
            y += z
        h = heap[0]
        st = x if x > h else h
        e = st + y
        replace(heap, e)
        if e > le:
            last_end[f] = e
        put(st)
        put_cold(cold)
    return np.array(starts), np.array(colds, dtype=bool)


def _fifo_policy(
    r: RequestArrays, servers: int, policy: KeepAlivePolicy, names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    heap = [-math.inf] * servers
    last_end = [-math.inf] * len(names)
    pending: list[list[float]] = [[] for _ in names]  # ends not yet told to the policy
    starts: list[float] = []
    colds: list[bool] = []
    cols = (r.arrival_ms.tolist(), r.function.tolist(), r.service_ms.tolist(), r.cold_ms.tolist())
    for x, f, y, z in zip(*cols, strict=True):
        name = names[f]
        pend = pending[f]
        while pend and pend[0] <= x:
            policy.on_invocation_end(name, int(heapq.heappop(pend)))
        le = last_end[f]
        if x < le:
            cold = False
        elif le == -math.inf:
            cold = True
        else:
            cold = not is_warm(policy.decision(name, int(le)), x - le)
        policy.on_invocation_start(name, int(x))
        if cold:
            y += z
        h = heap[0]
        st = x if x > h else h
        e = st + y
        heapq.heapreplace(heap, e)
        heapq.heappush(pend, e)
        if e > le:
            last_end[f] = e
        starts.append(st)
        colds.append(cold)
    return np.array(starts), np.array(colds, dtype=bool)
