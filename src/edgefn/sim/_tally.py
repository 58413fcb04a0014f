"""Mergeable per-location results: sums, histograms, batch sums and a cold-start timeline.

Each location (in any worker process) fills one :class:`Tally`; tallies add up with ``+=`` in
location order, so the merged result does not depend on how locations were spread over
processes. Requests that arrive during the warm-up are served (they load the queue) but not
counted. ``batches`` splits the measured period into equal time slices for batch-means
confidence intervals; ``timeline`` counts requests and cold starts per ``timeline_bin_ms``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgefn.sim._pool import PoolTally
from edgefn.sim._stats import LatencyHistogram, batch_means_ci, mean_ci

__all__ = ["Tally", "TallyShape"]


@dataclass(frozen=True, slots=True)
class TallyShape:
    """Where measurement starts and how the period is sliced."""

    warmup_ms: float
    duration_ms: float
    batches: int
    timeline_bin_ms: float

    @property
    def timeline_bins(self) -> int:
        return max(1, int(np.ceil(self.duration_ms / self.timeline_bin_ms)))


@dataclass(slots=True)
class Tally:
    """Counts and sums of one or more locations."""

    shape: TallyShape
    n: int = 0
    failed: int = 0
    wait_sum: float = 0.0
    response_sum: float = 0.0
    busy_ms: float = 0.0
    waited: int = 0
    cold: int = 0
    wait: LatencyHistogram = field(default_factory=LatencyHistogram.empty)
    response: LatencyHistogram = field(default_factory=LatencyHistogram.empty)
    batch: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))
    timeline: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    pool: PoolTally | None = None  # instance-pool meters (scenarios with instance_concurrency)

    def __post_init__(self) -> None:
        if len(self.batch) == 0:
            self.batch = np.zeros((self.shape.batches, 5))
            self.timeline = np.zeros((self.shape.timeline_bins, 2))

    def add(
        self,
        arrival_ms: np.ndarray,
        wait_ms: np.ndarray,
        response_ms: np.ndarray,
        busy_ms: np.ndarray,
        cold: np.ndarray,
    ) -> None:
        """Count one batch of served requests (arrays aligned by request)."""
        sh = self.shape
        nt = len(self.timeline)
        tl = self._bins(arrival_ms, 0.0, sh.timeline_bin_ms, nt)
        any_cold = bool(cold.any())
        self.timeline[:, 0] += np.bincount(tl, minlength=nt)
        if any_cold:
            self.timeline[:, 1] += np.bincount(tl, weights=cold, minlength=nt)
        if sh.warmup_ms > 0.0:
            keep = arrival_ms >= sh.warmup_ms
            if not keep.all():
                arrival_ms, wait_ms = arrival_ms[keep], wait_ms[keep]
                response_ms, busy_ms, cold = response_ms[keep], busy_ms[keep], cold[keep]
        a, w, r, c = arrival_ms, wait_ms, response_ms, cold
        self.n += len(a)
        self.response_sum += float(r.sum())
        self.busy_ms += float(busy_ms.sum())
        waited = w > 0.0
        n_waited = int(np.count_nonzero(waited))
        self.waited += n_waited
        self.cold += int(np.count_nonzero(c)) if any_cold else 0
        self.wait_sum += float(w.sum())
        self.wait.add(w)
        self.response.add(r)
        nb = sh.batches
        span = (sh.duration_ms - sh.warmup_ms) / nb
        bins = self._bins(a, sh.warmup_ms, span, nb)
        self.batch[:, 0] += np.bincount(bins, minlength=nb)
        self.batch[:, 2] += np.bincount(bins, weights=r, minlength=nb)
        if n_waited:  # only requests that waited add to the wait sums and counts
            bw = bins[waited] if n_waited < len(bins) else bins
            self.batch[:, 1] += np.bincount(bw, weights=w[waited], minlength=nb)
            self.batch[:, 3] += np.bincount(bw, minlength=nb)
        if any_cold:
            self.batch[:, 4] += np.bincount(bins, weights=c, minlength=nb)

    @staticmethod
    def _bins(t_ms: np.ndarray, origin_ms: float, width_ms: float, n: int) -> np.ndarray:
        """``min((t - origin) // width, n - 1)`` as int64, with one temporary."""
        x = t_ms - origin_ms if origin_ms else t_ms.copy()
        np.floor_divide(x, width_ms, out=x)
        idx = x.astype(np.int64)
        np.minimum(idx, n - 1, out=idx)
        return idx

    def add_failed(self, count: int) -> None:
        """Requests that found no reachable location."""
        self.failed += count

    def __iadd__(self, other: Tally) -> Tally:
        self.n += other.n
        self.failed += other.failed
        self.wait_sum += other.wait_sum
        self.response_sum += other.response_sum
        self.busy_ms += other.busy_ms
        self.waited += other.waited
        self.cold += other.cold
        self.wait += other.wait
        self.response += other.response
        self.batch += other.batch
        self.timeline += other.timeline
        if other.pool is not None:
            if self.pool is None:
                self.pool = other.pool.copy()
            else:
                self.pool += other.pool
        return self

    def summary(self, servers: int) -> dict[str, object]:
        """The per-scope JSON block: requests, latencies, p_wait, utilisation, cold starts."""
        measured_ms = self.shape.duration_ms - self.shape.warmup_ms
        n = max(self.n, 1)
        out: dict[str, object] = {
            "requests": self.n,
            "failed": self.failed,
            "wait_ms": self.wait.summary(),
            "response_ms": self.response.summary(),
            "p_wait": round(self.waited / n, 6),
            "cold_start_fraction": round(self.cold / n, 6),
        }
        if servers:  # client regions have no servers of their own
            out["utilization"] = round(self.busy_ms / (servers * measured_ms), 6)
        if self.pool is not None:
            out.update(self.pool.summary(self.n, self.cold, self.batch[:, 0], self.batch[:, 4]))
        return out

    def batch_ci(self) -> dict[str, dict[str, float]]:
        """95% batch-means intervals of the means that matter."""
        counts = np.maximum(self.batch[:, 0], 1.0)
        out = {}
        for name, col in (("wait_ms_mean", 1), ("response_ms_mean", 2), ("p_wait", 3)):
            out[name] = batch_means_ci(self.batch[:, col] / counts, len(counts))
        out["cold_start_fraction"] = batch_means_ci(self.batch[:, 4] / counts, len(counts))
        for v in out.values():
            v["method"] = "batch_means"  # type: ignore[assignment]
        return out


def replication_ci(values: dict[str, list[float]]) -> dict[str, dict[str, object]]:
    """95% intervals across replications."""
    out: dict[str, dict[str, object]] = {}
    for name, xs in values.items():
        ci: dict[str, object] = dict(mean_ci(xs))
        ci["method"] = "replications"
        out[name] = ci
    return out
