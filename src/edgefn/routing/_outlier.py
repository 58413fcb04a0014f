"""Passive outlier detection from real request outcomes, in the style of Envoy's outlier detection.

Two signals eject a location:

* **consecutive errors**: ``consecutive_errors`` failed outcomes (5xx, connection errors, timeouts)
  in a row, counted as they arrive;
* **latency outliers**: every ``interval_ms``, among the locations with at least ``min_requests``
  outcomes in the interval, one whose latency EWMA exceeds ``latency_factor`` times the median of
  the others' EWMAs (and by at least ``latency_min_gap_ms``) is an outlier. The latency compared
  should be the service time the location reports, not the RTT to it, or far locations would look
  like outliers.

An ejection lasts ``base_ejection_ms * 2**(n-1)`` (capped at ``max_ejection_ms``) for the n-th
ejection in a row; every interval a location spends un-ejected decrements n again. At most
``max_ejection_percent`` of the tracked locations (but always at least one) are ejected at once, so
a planet-wide problem (a bad deploy everywhere) cannot eject everyone and leave nothing to serve.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

__all__ = ["OutlierConfig", "OutlierDetector"]


@dataclass(frozen=True, slots=True)
class OutlierConfig:
    consecutive_errors: int = 5
    interval_ms: int = 10_000
    min_requests: int = 20
    latency_factor: float = 3.0
    latency_min_gap_ms: float = 50.0
    ewma_alpha: float = 0.1
    base_ejection_ms: int = 30_000
    max_ejection_ms: int = 300_000
    max_ejection_percent: float = 50.0


@dataclass(slots=True)
class _Stats:
    consecutive_errors: int = 0
    latency_ewma_ms: float = 0.0
    interval_requests: int = 0
    ejected_until_ms: int | None = None
    ejection_reason: str = ""
    times_ejected: int = 0


class OutlierDetector:
    """Ejection state per location. Used by :class:`~edgefn.routing.health.HealthTable`."""

    def __init__(self, config: OutlierConfig) -> None:
        self.config = config
        self._stats: dict[str, _Stats] = {}
        self._next_check_ms: int | None = None
        self.ejections_total = 0

    def track(self, location: str) -> None:
        self._stats.setdefault(location, _Stats())

    def forget(self, location: str) -> None:
        self._stats.pop(location, None)

    def ejected(self, location: str) -> str:
        """The ejection reason, or '' when the location is not ejected."""
        stats = self._stats.get(location)
        if stats is None or stats.ejected_until_ms is None:
            return ""
        return stats.ejection_reason

    def ejected_count(self) -> int:
        return sum(1 for s in self._stats.values() if s.ejected_until_ms is not None)

    def _may_eject(self) -> bool:
        limit = int(len(self._stats) * self.config.max_ejection_percent / 100.0)
        return self.ejected_count() < max(1, limit)

    def _eject(self, stats: _Stats, reason: str, now_ms: int) -> bool:
        if stats.ejected_until_ms is not None or not self._may_eject():
            return False
        cfg = self.config
        stats.times_ejected += 1
        duration = min(
            cfg.base_ejection_ms * 2 ** min(stats.times_ejected - 1, 30), cfg.max_ejection_ms
        )
        stats.ejected_until_ms = now_ms + duration
        stats.ejection_reason = f"{reason}; ejected for {duration / 1000:g} s"
        stats.consecutive_errors = 0
        self.ejections_total += 1
        return True

    def outcome(self, location: str, ok: bool, latency_ms: float, now_ms: int) -> bool:
        """Record one request outcome; True if it ejected the location."""
        stats = self._stats.get(location)
        if stats is None:
            return False
        if ok:
            stats.consecutive_errors = 0
            alpha = self.config.ewma_alpha
            if stats.interval_requests == 0 and stats.latency_ewma_ms == 0.0:
                stats.latency_ewma_ms = latency_ms
            else:
                stats.latency_ewma_ms += alpha * (latency_ms - stats.latency_ewma_ms)
            stats.interval_requests += 1
            return False
        stats.consecutive_errors += 1
        if stats.consecutive_errors >= self.config.consecutive_errors:
            reason = f"{stats.consecutive_errors} consecutive failed requests"
            return self._eject(stats, reason, now_ms)
        return False

    def tick(self, now_ms: int) -> None:
        """Expire ejections; every interval, look for latency outliers and decay multipliers."""
        for stats in self._stats.values():
            if stats.ejected_until_ms is not None and now_ms >= stats.ejected_until_ms:
                stats.ejected_until_ms = None
                stats.ejection_reason = ""
        if self._next_check_ms is None:
            self._next_check_ms = now_ms + self.config.interval_ms
            return
        if now_ms < self._next_check_ms:
            return
        self._next_check_ms = now_ms + self.config.interval_ms
        self._check_latency(now_ms)
        for stats in self._stats.values():
            if stats.ejected_until_ms is None and stats.times_ejected > 0:
                stats.times_ejected -= 1
            stats.interval_requests = 0

    def _check_latency(self, now_ms: int) -> None:
        cfg = self.config
        busy = {
            loc: s
            for loc, s in self._stats.items()
            if s.interval_requests >= cfg.min_requests and s.ejected_until_ms is None
        }
        if len(busy) < 3:
            return  # With fewer than three peers, "slower than the others" means nothing.
        for loc in sorted(busy, key=lambda name: -busy[name].latency_ewma_ms):
            stats = busy[loc]
            others = [s.latency_ewma_ms for other, s in busy.items() if other != loc]
            median = statistics.median(others)
            slow = stats.latency_ewma_ms > cfg.latency_factor * median
            if slow and stats.latency_ewma_ms - median >= cfg.latency_min_gap_ms:
                reason = (
                    f"latency outlier: {stats.latency_ewma_ms:.0f} ms vs median "
                    f"{median:.0f} ms of the others"
                )
                self._eject(stats, reason, now_ms)

    def check_invariants(self) -> None:
        for loc, stats in self._stats.items():
            assert stats.consecutive_errors >= 0, loc
            assert stats.times_ejected >= 0, loc
            assert (stats.ejected_until_ms is None) == (stats.ejection_reason == ""), loc
