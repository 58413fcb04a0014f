"""Arrival processes: Poisson, diurnal by time zone, bursts, and their shared sampler.

Non-homogeneous processes are piecewise constant: the rate is fixed within each bin (one minute
by default), so a bin's count is Poisson with mean ``rate × bin`` and its arrivals are uniform in
the bin. That is an exact sample of the piecewise-constant process, and fully vectorised.

The diurnal curve is ``1 + A cos(2π (local_hour - peak_hour) / 24)`` with
``A = (peak_to_trough - 1) / (peak_to_trough + 1)``; its daily mean is 1, so ``rate_per_s`` stays
the average rate whatever the curve.
"""

from __future__ import annotations

import numpy as np

from edgefn.sim._scenario import WorkloadSpec

__all__ = ["PEAK_HOUR", "diurnal_factor", "piecewise_poisson_ms", "workload_arrivals_ms"]

PEAK_HOUR = 14.0  # local time of the daily peak (afternoon, as in most web traffic curves)


def diurnal_factor(local_hour: np.ndarray, peak_to_trough: float) -> np.ndarray:
    """Rate multiplier at ``local_hour`` (0..24); averages 1 over a day."""
    amp = (peak_to_trough - 1.0) / (peak_to_trough + 1.0)
    return np.asarray(1.0 + amp * np.cos(2.0 * np.pi * (local_hour - PEAK_HOUR) / 24.0))


def piecewise_poisson_ms(
    rate_per_s: np.ndarray, bin_ms: float, rng: np.random.Generator, *, start_ms: float = 0.0
) -> np.ndarray:
    """Sorted arrival times (ms) of a Poisson process with rate ``rate_per_s[k]`` in bin ``k``."""
    counts = rng.poisson(np.asarray(rate_per_s) * bin_ms / 1000.0)
    total = int(counts.sum())
    base = np.repeat(start_ms + np.arange(len(counts)) * bin_ms, counts)
    times = base + rng.random(total) * bin_ms
    # Times within a bin are unordered; bins are already in order, so one sort suffices.
    times.sort(kind="stable")
    return times


def workload_arrivals_ms(
    w: WorkloadSpec, duration_ms: float, share: float, rng: np.random.Generator
) -> np.ndarray:
    """Arrivals of a queue scenario's location that receives ``share`` of the workload."""
    rate = w.rate_per_s * share
    if w.arrivals == "poisson":
        n = int(rng.poisson(rate * duration_ms / 1000.0))
        times = rng.random(n) * duration_ms
        times.sort()
        return times
    bin_ms = 60_000.0
    bins = max(1, int(np.ceil(duration_ms / bin_ms)))
    mid_h = (np.arange(bins) + 0.5) * bin_ms / 3_600_000.0
    if w.arrivals == "diurnal":
        rates = rate * diurnal_factor((mid_h + w.utc_offset_h) % 24.0, w.peak_to_trough)
    else:  # bursty: the base rate, times burst_factor during each burst window
        phase_s = (np.arange(bins) * bin_ms / 1000.0) % w.burst_every_s
        rates = np.where(phase_s < w.burst_duration_s, rate * w.burst_factor, rate)
    times = piecewise_poisson_ms(rates, bin_ms, rng)
    return times[times < duration_ms]
