"""Summaries, confidence intervals and mergeable latency histograms.

Single-location runs summarise the exact per-request arrays (``numpy.percentile``). Planet runs
produce too many requests to keep, so each worker fills :class:`LatencyHistogram` objects (fixed
log-spaced bins, 100 per decade from 1 µs to 10⁸ ms, plus an exact-zero bin) that merge by
addition; their percentiles carry a relative error of at most one bin width (~2.3%).

Confidence intervals are Student-t intervals: over replication means when there are several
replications, otherwise over batch means of one run (the run is cut into ``batches`` consecutive
batches after the warm-up, the standard method for a single long steady-state run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import stdtrit

__all__ = [
    "LatencyHistogram",
    "batch_means_ci",
    "mean_ci",
    "summarize",
]

_LO_MS = 1e-3
_DECADES = 11
_PER_DECADE = 100
_NBINS = _DECADES * _PER_DECADE
_LOG_LO = -math.log10(_LO_MS)  # 3: log10(v / _LO_MS) = log10(v) + _LOG_LO


def summarize(values_ms: np.ndarray) -> dict[str, float]:
    """Mean and p50/p95/p99 of a sample, rounded to microseconds."""
    if len(values_ms) == 0:
        return {"mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0}
    p50, p95, p99 = np.percentile(values_ms, [50.0, 95.0, 99.0])
    return {
        "mean": round(float(np.mean(values_ms)), 3),
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "p99": round(float(p99), 3),
    }


def _t975(dof: int) -> float:
    # scipy.special.stdtrit is what scipy.stats.t.ppf computes, without the ~1.5 s import of
    # scipy.stats.
    return float(stdtrit(dof, 0.975))


def mean_ci(samples: list[float] | np.ndarray) -> dict[str, float]:
    """Mean and 95% Student-t half-width of independent samples (half-width 0 if fewer than 2)."""
    x = np.asarray(samples, dtype=float)
    if len(x) < 2:
        return {"mean": float(x.mean()) if len(x) else 0.0, "half_width": 0.0, "n": len(x)}
    hw = _t975(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return {"mean": float(x.mean()), "half_width": hw, "n": len(x)}


def batch_means_ci(values: np.ndarray, batches: int) -> dict[str, float]:
    """95% CI of the steady-state mean of a correlated sequence by non-overlapping batch means."""
    if batches < 2 or len(values) < batches:
        return mean_ci(values[:1] if len(values) else values)
    size = len(values) // batches
    means = values[: size * batches].reshape(batches, size).mean(axis=1)
    return mean_ci(means)


@dataclass(slots=True)
class LatencyHistogram:
    """Counts of latencies in fixed log bins; merge with ``+=``."""

    counts: np.ndarray
    zeros: int = 0
    total: float = 0.0

    @classmethod
    def empty(cls) -> LatencyHistogram:
        return cls(np.zeros(_NBINS, dtype=np.int64))

    def add(self, values_ms: np.ndarray) -> None:
        """Count a batch of latencies."""
        pos = values_ms > 0.0
        npos = int(np.count_nonzero(pos))
        self.zeros += len(values_ms) - npos
        self.total += float(values_ms.sum())
        if npos == 0:
            return
        # bin = floor(100·log10(max(v, 1 µs) / 1 µs)), in place on one copy (this runs over every
        # simulated request twice, so temporaries cost): log10(v / _LO_MS) = log10(v) + _LOG_LO, and the
        # value is >= 0, so truncation is the floor.
        v = values_ms[pos] if npos < len(values_ms) else values_ms.astype(np.float64, copy=True)
        np.maximum(v, _LO_MS, out=v)
        np.log10(v, out=v)
        v += _LOG_LO
        v *= _PER_DECADE
        idx = v.astype(np.int64)
        np.minimum(idx, _NBINS - 1, out=idx)
        self.counts += np.bincount(idx, minlength=_NBINS)

    def __iadd__(self, other: LatencyHistogram) -> LatencyHistogram:
        self.counts += other.counts
        self.zeros += other.zeros
        self.total += other.total
        return self

    @property
    def n(self) -> int:
        return int(self.counts.sum()) + self.zeros

    def quantile_ms(self, q: float) -> float:
        """The ``q`` quantile (0..1), at the geometric middle of its bin."""
        n = self.n
        if n == 0:
            return 0.0
        rank = q * n
        if rank <= self.zeros:
            return 0.0
        cum = np.cumsum(self.counts) + self.zeros
        i = int(np.searchsorted(cum, rank))
        return float(_LO_MS * 10.0 ** ((i + 0.5) / _PER_DECADE))

    def summary(self) -> dict[str, float]:
        """Mean (exact) and p50/p95/p99 (binned)."""
        n = self.n
        return {
            "mean": round(self.total / n, 3) if n else 0.0,
            "p50": round(self.quantile_ms(0.50), 3),
            "p95": round(self.quantile_ms(0.95), 3),
            "p99": round(self.quantile_ms(0.99), 3),
        }

    def cdf_points(self) -> tuple[np.ndarray, np.ndarray]:
        """(latency_ms, cumulative fraction) at bin upper edges, for plots."""
        n = max(self.n, 1)
        edges = _LO_MS * 10.0 ** (np.arange(1, _NBINS + 1) / _PER_DECADE)
        return edges, (np.cumsum(self.counts) + self.zeros) / n
