"""Run independent simulation jobs on several cores with a process pool.

Jobs are independent by construction (each draws from its own seeded streams), so running them
in a pool changes nothing but the wall time: results come back in job order and are merged in
that order. With one worker, or one job, everything runs in this process (no pool start-up cost,
and tracebacks stay simple).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

__all__ = ["default_workers", "map_jobs"]

J = TypeVar("J")
R = TypeVar("R")


def default_workers() -> int:
    """CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def map_jobs(fn: Callable[[J], R], jobs: Sequence[J], *, workers: int = 0) -> list[R]:
    """``[fn(j) for j in jobs]``, on up to ``workers`` processes (0: all CPUs)."""
    n = min(workers or default_workers(), len(jobs))
    if n <= 1:
        return [fn(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=n) as pool:
        return list(pool.map(fn, jobs, chunksize=max(1, len(jobs) // (4 * n))))
