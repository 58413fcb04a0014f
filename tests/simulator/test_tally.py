"""The tally's and histogram's fast arithmetic against the plain formulas they replace."""

from __future__ import annotations

import numpy as np
import pytest

from edgefn.sim._stats import LatencyHistogram
from edgefn.sim._tally import Tally, TallyShape


def _reference_counts(values: np.ndarray) -> tuple[np.ndarray, int]:
    pos = values > 0.0
    idx = np.floor(np.log10(np.maximum(values[pos], 1e-3) / 1e-3) * 100)
    return np.bincount(np.minimum(idx.astype(np.int64), 1099), minlength=1100), int((~pos).sum())


@pytest.mark.parametrize("zeros", [0.0, 0.5, 1.0])
def test_histogram_bins_match_the_log_formula(zeros: float) -> None:
    rng = np.random.default_rng(5)
    v = np.exp(rng.uniform(np.log(1e-5), np.log(1e9), 20_000))  # below 1 µs and past 10⁸ ms
    v[rng.random(len(v)) < zeros] = 0.0
    h = LatencyHistogram.empty()
    h.add(v)
    counts, nzero = _reference_counts(v)
    assert h.zeros == nzero
    assert np.array_equal(h.counts, counts)
    assert h.total == pytest.approx(float(v.sum()))
    w = v.copy()
    h.add(v)
    assert np.array_equal(v, w)


def _reference_tally(shape: TallyShape, a, w, r, busy, cold) -> Tally:  # type: ignore[no-untyped-def]
    t = Tally(shape)
    tl = np.minimum((a // shape.timeline_bin_ms).astype(np.int64), shape.timeline_bins - 1)
    t.timeline[:, 0] += np.bincount(tl, minlength=len(t.timeline))
    t.timeline[:, 1] += np.bincount(tl, weights=cold, minlength=len(t.timeline))
    keep = a >= shape.warmup_ms
    a, w, r, c, busy = a[keep], w[keep], r[keep], cold[keep], busy[keep]
    t.n, t.waited, t.cold = len(a), int((w > 0).sum()), int(c.sum())
    t.wait_sum, t.response_sum, t.busy_ms = float(w.sum()), float(r.sum()), float(busy.sum())
    span = (shape.duration_ms - shape.warmup_ms) / shape.batches
    b = np.minimum(((a - shape.warmup_ms) // span).astype(np.int64), shape.batches - 1)
    for col, weights in enumerate((None, w, r, w > 0, c)):
        t.batch[:, col] += np.bincount(b, weights=weights, minlength=shape.batches)
    return t


@pytest.mark.parametrize(("warmup_ms", "p_cold", "p_wait"), [(0.0, 0.0, 0.0), (500.0, 0.1, 0.3)])
def test_tally_add_matches_the_plain_sums(warmup_ms: float, p_cold: float, p_wait: float) -> None:
    rng = np.random.default_rng(9)
    n = 5_000
    shape = TallyShape(warmup_ms=warmup_ms, duration_ms=10_000.0, batches=7, timeline_bin_ms=300.0)
    a = np.sort(rng.uniform(0, 10_000, n))
    w = np.where(rng.random(n) < p_wait, rng.exponential(20.0, n), 0.0)
    busy = rng.exponential(50.0, n)
    cold = rng.random(n) < p_cold
    t = Tally(shape)
    t.add(a, w, w + busy, busy, cold)
    ref = _reference_tally(shape, a, w, w + busy, busy, cold)
    assert (t.n, t.waited, t.cold) == (ref.n, ref.waited, ref.cold)
    assert t.wait_sum == pytest.approx(ref.wait_sum)
    assert t.response_sum == pytest.approx(ref.response_sum)
    assert t.busy_ms == pytest.approx(ref.busy_ms)
    assert np.allclose(t.batch, ref.batch)
    assert np.array_equal(t.timeline, ref.timeline)
    assert np.array_equal(t.response.counts, _reference_counts((w + busy)[a >= warmup_ms])[0])
