"""Per-version latency percentiles: over the same recent time for every version, bounded memory."""

from __future__ import annotations

from edgefn.observe.version_stats import (
    SLICE_S,
    SLICE_SAMPLES,
    SLICES,
    WINDOW_S,
    VersionStatsTracker,
    weighted_percentiles,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_equal_weights_pick_the_same_samples_as_a_plain_sort() -> None:
    lat = [float(i) for i in range(100)]
    assert weighted_percentiles([(100, lat)], (0.5, 0.99)) == (50.0, 99.0)
    assert weighted_percentiles([(3, [3.0, 1.0, 2.0])], (0.5, 0.99)) == (2.0, 3.0)
    assert weighted_percentiles([], (0.5,)) == (0.0,)


def test_a_busy_versions_spike_counts_for_the_requests_it_slowed() -> None:
    """1,000 fast requests, then 20 slow ones (2%) in the next slice: p99 is slow, although the
    slow ones are a small share of the samples kept."""
    clock = Clock()
    t = VersionStatsTracker(clock=clock)
    for _ in range(1000):
        t.record("f", "v1", ok=True, latency_ms=10.0)
    clock.now += SLICE_S
    for _ in range(20):
        t.record("f", "v1", ok=True, latency_ms=300.0)
    requests, errors, p50, p99 = t.snapshot()["f"]["v1"]
    assert (requests, errors, p50, p99) == (1020, 0, 10.0, 300.0)


def test_old_latencies_leave_the_window_and_counts_stay() -> None:
    clock = Clock()
    t = VersionStatsTracker(clock=clock)
    for _ in range(50):
        t.record("f", "v1", ok=False, latency_ms=900.0)
    clock.now += WINDOW_S + SLICE_S
    assert t.snapshot()["f"]["v1"] == (50, 50, 0.0, 0.0)
    t.record("f", "v1", ok=True, latency_ms=5.0)
    assert t.snapshot()["f"]["v1"] == (51, 50, 5.0, 5.0)


def test_two_versions_side_by_side_see_the_same_slow_period() -> None:
    """A canary at 5% of the traffic and the version it may replace, through a slow period: both
    percentiles cover it (a ring of each version's last N samples would not for the busy one)."""
    clock = Clock()
    t = VersionStatsTracker(clock=clock)
    for second in range(30):
        slow = 10 <= second < 13
        for i in range(100):
            version = "canary" if i % 20 == 0 else "prev"
            t.record("f", version, ok=True, latency_ms=400.0 if slow else 20.0)
        clock.now += 1.0
    snap = t.snapshot()["f"]
    assert snap["prev"][3] == snap["canary"][3] == 400.0


def test_memory_is_bounded_however_busy() -> None:
    clock = Clock()
    t = VersionStatsTracker(clock=clock)
    for i in range(200_000):
        if i % 10_000 == 0:
            clock.now += 1.0
        t.record("f", "v1", ok=True, latency_ms=float(i % 97))
    stats = t._by_key[("f", "v1")]
    assert len(stats.slices) <= SLICES
    assert all(len(s.samples) <= SLICE_SAMPLES for s in stats.slices)
    assert stats.requests == 200_000
