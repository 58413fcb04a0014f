"""Per-version request statistics that a node reports in its observed state.

Counts are cumulative since the version was activated. Latency percentiles cover the last
``WINDOW_S`` seconds, in ``SLICE_S`` slices of at most ``SLICE_SAMPLES`` samples each (a uniform
reservoir sample of the slice's requests, weighted by how many requests it stands for), so memory
stays fixed however busy or long-lived a version is, and two versions served side by side (a
canary and the version it may replace, at very different request rates) are measured over the
same time: a fault that slows every request for a while (a core server's leader dying) shows in
both, not only in the one whose last samples happen to cover it.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

SLICE_S = 5.0
SLICES = 6
WINDOW_S = SLICE_S * SLICES
SLICE_SAMPLES = 128


@dataclass(slots=True)
class _Slice:
    start: float
    seen: int = 0
    samples: list[float] = field(default_factory=list)


@dataclass(slots=True)
class _Stats:
    requests: int = 0
    errors: int = 0
    slices: deque[_Slice] = field(default_factory=lambda: deque(maxlen=SLICES))


def weighted_percentiles(
    slices: list[tuple[int, list[float]]], quantiles: tuple[float, ...]
) -> tuple[float, ...]:
    """Percentiles of the requests the slices' samples stand for: each ``(seen, samples)``
    slice's samples weigh ``seen / len(samples)``. With equal weights, ``q`` picks the sample at
    index ``int(n * q)`` of the sorted samples (0.0 for no samples)."""
    points = sorted(
        (ms, seen / len(samples)) for seen, samples in slices if samples for ms in samples
    )
    if not points:
        return tuple(0.0 for _ in quantiles)
    total = sum(w for _, w in points)
    out = []
    for q in quantiles:
        need, acc, value = q * total, 0.0, points[-1][0]
        for ms, w in points:
            acc += w
            if acc > need + 1e-9 * total:
                value = ms
                break
        out.append(value)
    return tuple(out)


class VersionStatsTracker:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic, seed: int = 0) -> None:
        self._by_key: dict[tuple[str, str], _Stats] = {}
        self._clock = clock
        self._rng = random.Random(seed)

    def record(self, function: str, version: str, *, ok: bool, latency_ms: float) -> None:
        s = self._by_key.get((function, version))
        if s is None:
            s = self._by_key[(function, version)] = _Stats()
        s.requests += 1
        if not ok:
            s.errors += 1
        now = self._clock()
        if not s.slices or now >= s.slices[-1].start + SLICE_S:
            s.slices.append(_Slice(start=now))
        current = s.slices[-1]
        current.seen += 1
        if len(current.samples) < SLICE_SAMPLES:
            current.samples.append(latency_ms)
        else:  # reservoir sampling: every request of the slice equally likely to be kept
            j = self._rng.randrange(current.seen)
            if j < SLICE_SAMPLES:
                current.samples[j] = latency_ms

    def snapshot(self) -> dict[str, dict[str, tuple[int, int, float, float]]]:
        """function → version → (requests, errors, p50 ms, p99 ms)."""
        out: dict[str, dict[str, tuple[int, int, float, float]]] = {}
        oldest = self._clock() - WINDOW_S
        for (fn, version), s in self._by_key.items():
            while s.slices and s.slices[0].start + SLICE_S <= oldest:
                s.slices.popleft()
            p50, p99 = weighted_percentiles([(sl.seen, sl.samples) for sl in s.slices], (0.5, 0.99))
            out.setdefault(fn, {})[version] = (s.requests, s.errors, round(p50, 3), round(p99, 3))
        return out

    def forget(self, function: str, keep: set[str]) -> None:
        for key in [k for k in self._by_key if k[0] == function and k[1] not in keep]:
            del self._by_key[key]
