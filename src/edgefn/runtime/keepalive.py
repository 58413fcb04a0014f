"""Keep-alive policies: how long a function's sandbox stays loaded after it goes idle.

A policy watches the invocations of each function and, whenever an instance becomes idle, answers
with a :class:`KeepAliveDecision`: unload the instance now and load it again ``prewarm_after_ms``
later (0 means "keep it loaded right away"), then keep it loaded for ``keep_alive_ms``. An
invocation that arrives while the instance is loaded is warm; any other is a cold start. The rule
is :func:`is_warm`, shared by the sandbox pool and by the simulator so both apply the same policy.

Two policies:

* :class:`FixedKeepAlive` keeps every idle instance loaded for a fixed TTL (AWS Lambda ~10 min,
  Azure Functions 20 min).
* :class:`HybridHistogramPolicy` is the hybrid policy of Shahrad et al., "Serverless in the Wild"
  (USENIX ATC 2020). Per function it keeps a histogram of idle times (time from the end of one
  invocation to the start of the next) in fixed bins (1 min up to 4 h by default) and an
  out-of-bounds counter. When the histogram is representative (enough samples and a coefficient
  of variation of the bin counts at or above ``cv_threshold``), the pre-warm window is the
  ``head_percentile`` idle time minus a margin and the keep-alive window runs to the
  ``tail_percentile`` plus a margin. When most idle times fall beyond the histogram range, the
  next idle time is forecast (an exponentially weighted mean of the out-of-bounds idle times
  stands in for the paper's ARIMA model) and the instance is pre-warmed just before it, with a
  window of +/- ``margin`` of the forecast. Otherwise (too few samples, flat histogram) the
  policy falls back to a fixed keep-alive of ``fallback_keep_alive_ms`` (the histogram range,
  as in the paper).

Memory is bounded: fixed-size histograms, and at most ``max_functions`` functions are tracked;
the least recently seen one is forgotten first.

Both policies are pure: time arrives as ``now_ms``; they do no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "FixedKeepAlive",
    "HybridHistogramPolicy",
    "KeepAliveDecision",
    "KeepAlivePolicy",
    "KeepAliveStatistics",
    "is_warm",
]


@dataclass(frozen=True, slots=True)
class KeepAliveDecision:
    """Idle instance: unload, reload after ``prewarm_after_ms``, keep for ``keep_alive_ms``."""

    prewarm_after_ms: int
    keep_alive_ms: int

    def __post_init__(self) -> None:
        assert self.prewarm_after_ms >= 0, self.prewarm_after_ms
        assert self.keep_alive_ms >= 0, self.keep_alive_ms


@dataclass(frozen=True, slots=True)
class KeepAliveStatistics:
    """Resources a policy holds and how it has decided so far."""

    functions_tracked: int
    functions_max: int
    functions_forgotten: int
    decisions_histogram: int
    decisions_forecast: int
    decisions_fallback: int


class KeepAlivePolicy(Protocol):
    """What the sandbox pool and the simulator need from a keep-alive policy."""

    def on_invocation_start(self, function: str, now_ms: int) -> None:
        """An invocation of ``function`` started at ``now_ms``."""

    def on_invocation_end(self, function: str, now_ms: int) -> None:
        """An invocation of ``function`` ended at ``now_ms``."""

    def decision(self, function: str, now_ms: int) -> KeepAliveDecision:
        """How to treat ``function``'s instance once it is idle at ``now_ms``."""

    def statistics(self) -> KeepAliveStatistics:
        """Resources held and decisions taken."""

    def check_invariants(self) -> None:
        """Assert the policy's internal consistency."""


def is_warm(decision: KeepAliveDecision, idle_ms: float) -> bool:
    """True when an invocation arriving ``idle_ms`` after the instance went idle finds it loaded."""
    if decision.prewarm_after_ms == 0:
        return idle_ms <= decision.keep_alive_ms
    start = decision.prewarm_after_ms
    return start <= idle_ms <= start + decision.keep_alive_ms


class FixedKeepAlive:
    """Keep every idle instance loaded for ``keep_alive_ms`` (default 10 minutes, as AWS)."""

    def __init__(self, *, keep_alive_ms: int = 600_000) -> None:
        if keep_alive_ms < 0:
            raise ValueError(f"keep_alive_ms must be >= 0, got {keep_alive_ms}")
        self._decision = KeepAliveDecision(prewarm_after_ms=0, keep_alive_ms=keep_alive_ms)
        self._decisions = 0

    def on_invocation_start(self, function: str, now_ms: int) -> None:
        """Nothing to learn: the TTL is fixed."""

    def on_invocation_end(self, function: str, now_ms: int) -> None:
        """Nothing to learn: the TTL is fixed."""

    def decision(self, function: str, now_ms: int) -> KeepAliveDecision:
        """Always the same TTL, no pre-warming."""
        self._decisions += 1
        return self._decision

    def statistics(self) -> KeepAliveStatistics:
        """A fixed policy tracks no function."""
        return KeepAliveStatistics(0, 0, 0, 0, 0, self._decisions)

    def check_invariants(self) -> None:
        """The decision never changes."""
        assert self._decision.prewarm_after_ms == 0


class _History:
    """One function's idle-time histogram; ``last_end_ms`` is -1 before the first end."""

    __slots__ = ("bins", "forecast_ms", "in_flight", "last_end_ms", "oob", "samples", "sumsq")

    def __init__(self, n_bins: int) -> None:
        self.bins = [0] * n_bins
        self.sumsq = 0  # sum of squared bin counts, kept so the CV check is O(1)
        self.oob = 0
        self.samples = 0
        self.forecast_ms = 0.0
        self.last_end_ms = -1
        self.in_flight = 0


class HybridHistogramPolicy:
    """The hybrid histogram keep-alive policy of Shahrad et al. (ATC'20), with bounded memory."""

    def __init__(
        self,
        *,
        bin_ms: int = 60_000,
        range_ms: int = 4 * 3_600_000,
        head_percentile: float = 5.0,
        tail_percentile: float = 99.0,
        margin: float = 0.10,
        cv_threshold: float = 2.0,
        min_samples: int = 10,
        oob_threshold: float = 0.5,
        forecast_weight: float = 0.5,
        fallback_keep_alive_ms: int | None = None,
        max_functions: int = 100_000,
    ) -> None:
        _check_args(bin_ms, range_ms, head_percentile, tail_percentile, margin, max_functions)
        self._bin_ms = bin_ms
        self._n_bins = range_ms // bin_ms
        self._range_ms = self._n_bins * bin_ms
        self._head = head_percentile
        self._tail = tail_percentile
        self._margin = margin
        self._cv_threshold = cv_threshold
        self._min_samples = min_samples
        self._oob_threshold = oob_threshold
        self._forecast_weight = forecast_weight
        fallback = self._range_ms if fallback_keep_alive_ms is None else fallback_keep_alive_ms
        self._fallback = KeepAliveDecision(prewarm_after_ms=0, keep_alive_ms=fallback)
        self._max_functions = max_functions
        self._histories: OrderedDict[str, _History] = OrderedDict()
        self._forgotten = 0
        self._counts = [0, 0, 0]  # histogram, forecast, fallback

    def on_invocation_start(self, function: str, now_ms: int) -> None:
        """Record the idle time since the function's last end, if no invocation was in flight."""
        h = self._history(function)
        idle = h.in_flight == 0 and h.last_end_ms >= 0
        h.in_flight += 1
        if not idle:
            return
        idle_ms = max(now_ms - h.last_end_ms, 0)
        h.samples += 1
        if idle_ms >= self._range_ms:
            h.oob += 1
            w = self._forecast_weight
            h.forecast_ms = idle_ms if h.oob == 1 else w * idle_ms + (1.0 - w) * h.forecast_ms
        else:
            i = idle_ms // self._bin_ms
            h.sumsq += 2 * h.bins[i] + 1
            h.bins[i] += 1

    def on_invocation_end(self, function: str, now_ms: int) -> None:
        """One invocation ended; the instance is idle from ``now_ms`` once none is in flight."""
        h = self._history(function)
        h.in_flight = max(h.in_flight - 1, 0)
        h.last_end_ms = max(h.last_end_ms, now_ms)

    def decision(self, function: str, now_ms: int) -> KeepAliveDecision:
        """Pre-warm and keep-alive windows for ``function`` from its idle-time history."""
        h = self._histories.get(function)
        if h is None or h.samples < self._min_samples:
            return self._count(2, self._fallback)
        if h.oob > self._oob_threshold * h.samples:
            return self._count(1, self._forecast(h.forecast_ms))
        in_range = h.samples - h.oob
        if (
            in_range < self._min_samples
            or _cv(in_range, h.sumsq, self._n_bins) < self._cv_threshold
        ):
            return self._count(2, self._fallback)
        return self._count(0, self._from_histogram(h.bins, in_range))

    def statistics(self) -> KeepAliveStatistics:
        """Functions tracked (bounded by ``max_functions``) and decisions by kind."""
        return KeepAliveStatistics(
            functions_tracked=len(self._histories),
            functions_max=self._max_functions,
            functions_forgotten=self._forgotten,
            decisions_histogram=self._counts[0],
            decisions_forecast=self._counts[1],
            decisions_fallback=self._counts[2],
        )

    def check_invariants(self) -> None:
        """Histograms are fixed-size and their counts add up."""
        assert len(self._histories) <= self._max_functions
        for h in self._histories.values():
            assert len(h.bins) == self._n_bins
            assert sum(h.bins) + h.oob == h.samples, (sum(h.bins), h.oob, h.samples)
            assert sum(b * b for b in h.bins) == h.sumsq
            assert h.oob == 0 or h.forecast_ms >= self._range_ms
            assert h.in_flight >= 0

    def _history(self, function: str) -> _History:
        h = self._histories.get(function)
        if h is None:
            h = _History(self._n_bins)
            self._histories[function] = h
            if len(self._histories) > self._max_functions:
                self._histories.popitem(last=False)
                self._forgotten += 1
        else:
            self._histories.move_to_end(function)
        return h

    def _count(self, kind: int, decision: KeepAliveDecision) -> KeepAliveDecision:
        self._counts[kind] += 1
        return decision

    def _forecast(self, forecast_ms: float) -> KeepAliveDecision:
        prewarm = int(forecast_ms * (1.0 - self._margin))
        return KeepAliveDecision(prewarm, int(forecast_ms * 2.0 * self._margin))

    def _from_histogram(self, bins: list[int], total: int) -> KeepAliveDecision:
        head_bin = _percentile_bin(bins, total, self._head)
        tail_bin = _percentile_bin(bins, total, self._tail)
        # The head is the lower edge of its bin, the tail the upper edge of its bin.
        prewarm = int(head_bin * self._bin_ms * (1.0 - self._margin))
        tail = int((tail_bin + 1) * self._bin_ms * (1.0 + self._margin))
        if head_bin == 0:
            prewarm = 0
        return KeepAliveDecision(prewarm, max(tail - prewarm, self._bin_ms))


def _percentile_bin(bins: list[int], total: int, percentile: float) -> int:
    """Index of the bin holding the given percentile of ``total`` samples."""
    target = percentile / 100.0 * total
    acc = 0
    for i, count in enumerate(bins):
        acc += count
        if acc >= target and acc > 0:
            return i
    return len(bins) - 1


def _cv(total: int, sumsq: int, n_bins: int) -> float:
    """Coefficient of variation of ``n_bins`` bin counts from their sum and sum of squares."""
    if total == 0:
        return 0.0
    mean = total / n_bins
    var = max(sumsq / n_bins - mean * mean, 0.0)
    return float(var**0.5 / mean)


def _check_args(
    bin_ms: int, range_ms: int, head: float, tail: float, margin: float, max_functions: int
) -> None:
    if bin_ms <= 0 or range_ms < bin_ms:
        raise ValueError(f"need 0 < bin_ms <= range_ms, got bin_ms={bin_ms} range_ms={range_ms}")
    if not 0.0 <= head < tail <= 100.0:
        raise ValueError(f"need 0 <= head < tail <= 100, got head={head} tail={tail}")
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    if max_functions < 1:
        raise ValueError(f"max_functions must be >= 1, got {max_functions}")
