"""The phi-accrual failure detector (Hayashibara, Défago, Yared and Katayama, SRDS 2004).

Instead of a yes/no timeout, the detector outputs ``phi``: how surprising the current silence is,
given the inter-arrival times of recent heartbeats. ``phi = -log10(P(next heartbeat later than
now))`` where the inter-arrival time is modelled as a normal distribution with the window's mean
and standard deviation. ``phi = 1`` means a 10% chance the peer is merely slow, ``phi = 8`` one in
10^8. Like Akka's implementation, the normal CDF uses a logistic approximation (fast, monotonic, no
``erf`` overflow), the standard deviation is floored at ``min_std_ms`` (a perfectly regular
heartbeat would otherwise make any jitter look fatal) and ``acceptable_pause_ms`` is added to the
mean to tolerate known pauses.

The window of samples is bounded (a deque of ``window`` intervals, with running integer sums so
that each heartbeat and each phi costs O(1)). Before the first real interval the window is seeded
with ``first_interval_ms`` so that a peer that never speaks is still suspected.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["PhiAccrualDetector"]

_Y_CLAMP = 15.0  # keeps exp() finite; phi is already above 100 there


class PhiAccrualDetector:
    """Phi-accrual suspicion level for one peer. Times are integer milliseconds."""

    __slots__ = ("_acceptable_pause_ms", "_intervals", "_last_ms", "_min_std_ms", "_sum", "_sumsq")

    def __init__(
        self,
        *,
        now_ms: int,
        window: int = 100,
        min_std_ms: float = 100.0,
        acceptable_pause_ms: float = 0.0,
        first_interval_ms: int = 1_000,
    ) -> None:
        assert window >= 2, window
        assert first_interval_ms > 0, first_interval_ms
        self._intervals: deque[int] = deque(maxlen=window)
        self._sum = 0
        self._sumsq = 0
        self._min_std_ms = min_std_ms
        self._acceptable_pause_ms = acceptable_pause_ms
        self._last_ms = now_ms
        # Two seed samples at mean +- mean/4, as Akka does, give a plausible first distribution.
        for interval in (
            first_interval_ms - first_interval_ms // 4,
            first_interval_ms + first_interval_ms // 4,
        ):
            self._add(interval)

    def _add(self, interval_ms: int) -> None:
        if len(self._intervals) == self._intervals.maxlen:
            old = self._intervals[0]
            self._sum -= old
            self._sumsq -= old * old
        self._intervals.append(interval_ms)
        self._sum += interval_ms
        self._sumsq += interval_ms * interval_ms

    def heartbeat(self, now_ms: int) -> None:
        """Record a heartbeat; out-of-order (older) heartbeats are ignored."""
        if now_ms <= self._last_ms:
            return
        self._add(now_ms - self._last_ms)
        self._last_ms = now_ms

    @property
    def last_ms(self) -> int:
        return self._last_ms

    @property
    def samples(self) -> int:
        return len(self._intervals)

    def mean_ms(self) -> float:
        return self._sum / len(self._intervals)

    def std_ms(self) -> float:
        n = len(self._intervals)
        mean = self._sum / n
        variance = max(0.0, self._sumsq / n - mean * mean)
        return max(math.sqrt(variance), self._min_std_ms)

    def phi(self, now_ms: int) -> float:
        """Suspicion level now; 0 right after a heartbeat, growing with the silence."""
        elapsed = max(0, now_ms - self._last_ms)
        mean = self.mean_ms() + self._acceptable_pause_ms
        y = (elapsed - mean) / self.std_ms()
        y = min(max(y, -_Y_CLAMP), _Y_CLAMP)
        e = math.exp(-y * (1.5976 + 0.070566 * y * y))
        p_later = e / (1.0 + e) if elapsed > mean else 1.0 - 1.0 / (1.0 + e)
        return -math.log10(max(p_later, 1e-300))
