"""Tail-based adaptive trace sampling for one location (pure: time arrives as data).

A node records every span of every request; once a trace's local root span ends, the node asks
:meth:`TailSampler.handle` whether to keep it. The rules, in order:

1. **Errors and slow requests are kept** (reason ``error`` / ``slow``, probability 1.0): a 5xx
   status or a failure, or a root at least ``slow_ms`` long, or — per function — at least the
   function's own recent ``slow_quantile`` (p99) latency here once it has served
   ``slow_min_requests`` requests, and never below ``slow_floor_ms``. So "slow" for a 5 ms
   function is its slowest 1 %, not the same second as for a 600 ms one. The quantile is a
   frugal streaming estimate (one comparison and one multiply per request: up by a factor
   ``exp(step·q)`` when a request is slower, down by ``exp(-step·(1-q))`` when not, which settles
   where a share ``1 - q`` of requests is slower). "Always" has one ceiling, so an error
   storm (or a location shedding load with 503s) cannot flood the bus: at most
   ``always_spans_per_s`` (1,000) spans per second (a token bucket of ``burst_s`` seconds);
   beyond it a trace is dropped as ``over_ceiling`` and counted.
2. **Others are sampled within the location's budget** of ``budget_spans_per_s``. The target
   probability is ``base_probability``, or ``anomalous_probability`` while the function is
   anomalous here (below); it is lowered to ``budget / arrival rate`` when the spans arriving
   (all traces, kept or not, over the last ``rate_window_ms``) would exceed the budget. That
   effective probability is what a kept trace records, so a reader can scale counts up by
   ``1 / probability``. A trace is kept if its id's hash is below the probability (the low 56
   bits of the trace id, random by W3C Level 2: two locations with the same probability make the
   same choice for a forwarded trace, and a lower probability keeps a subset of a higher one's
   traces), and then only if the budget's token bucket holds its spans (``over_budget`` else).
   Kept errors use budget tokens too (never below zero), so sampled traces back off in a storm.
3. **Anomalous** means: over the current and the previous ``anomaly_window_ms`` window, the
   function had at least ``anomaly_min_requests`` requests here and a share of errors of at least
   ``anomaly_error_rate``. The node knows this from its own traffic, so it reacts within one
   window and needs no message from the core (docs/design/0023-traces.md says why).

Bounded: at most ``max_functions`` functions are tracked (the oldest is forgotten first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import msgspec

__all__ = ["Decision", "SamplerStatistics", "SamplingConfig", "TailSampler", "TraceEnded"]

_HASH_BITS = 56
_HASH_MASK = (1 << _HASH_BITS) - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class SamplingConfig:
    budget_spans_per_s: float = 200.0
    always_spans_per_s: float = 1000.0
    burst_s: float = 2.0
    base_probability: float = 0.1
    anomalous_probability: float = 1.0
    slow_ms: float = 1000.0
    slow_quantile: float = 0.99  # per-function slow threshold (0: only slow_ms)
    slow_floor_ms: float = 20.0
    slow_min_requests: int = 100
    slow_step: float = 0.05
    rate_window_ms: int = 1000
    anomaly_window_ms: int = 10_000
    anomaly_min_requests: int = 20
    anomaly_error_rate: float = 0.05
    max_functions: int = 1024

    def __post_init__(self) -> None:
        for name in ("base_probability", "anomalous_probability", "anomaly_error_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"sampling {name} = {value} must be within 0..1")
        for name in ("budget_spans_per_s", "always_spans_per_s", "burst_s", "slow_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"sampling {name} must be positive")
        if not 0.0 <= self.slow_quantile < 1.0:
            raise ValueError(f"sampling slow_quantile = {self.slow_quantile} must be within 0..1")
        if self.slow_floor_ms < 0 or self.slow_min_requests < 1 or not 0 < self.slow_step < 1:
            raise ValueError(
                "sampling slow_floor_ms, slow_min_requests and slow_step are out of range"
            )
        if self.rate_window_ms <= 0 or self.anomaly_window_ms <= 0 or self.max_functions < 1:
            raise ValueError("sampling windows and max_functions must be positive")


class TraceEnded(msgspec.Struct, frozen=True):
    """A trace's local root ended: what the decision needs of it (a Struct: made per request,
    and a frozen dataclass's ``__init__`` costs several times as much)."""

    trace_id: str
    function: str
    status: int
    error: bool
    duration_ms: float
    spans: int
    now_ms: int


class Decision(msgspec.Struct, frozen=True):
    keep: bool
    probability: float
    reason: str


@dataclass(frozen=True, slots=True)
class SamplerStatistics:
    decided: int
    kept: dict[str, int]
    dropped: dict[str, int]
    anomalous: tuple[str, ...]
    arrival_spans_per_s: float


@dataclass(slots=True)
class _Window:
    start_ms: int
    requests: int = 0
    errors: int = 0
    prev_requests: int = 0
    prev_errors: int = 0
    seen: int = 0  # requests ever, capped at slow_min_requests
    slow_q_ms: float = 0.0  # streaming estimate of the slow_quantile latency


@dataclass(slots=True)
class _Bucket:
    rate: float
    capacity: float
    tokens: float
    at_ms: int

    def refill(self, now_ms: int) -> None:
        if now_ms > self.at_ms:
            self.tokens = min(self.capacity, self.tokens + self.rate * (now_ms - self.at_ms) / 1e3)
            self.at_ms = now_ms


@dataclass(slots=True)
class TailSampler:
    """One location's tail sampler. Change it only through :meth:`handle`."""

    config: SamplingConfig = field(default_factory=SamplingConfig)
    _windows: dict[str, _Window] = field(default_factory=dict)
    _budget: _Bucket | None = None
    _ceiling: _Bucket | None = None
    _rate_start_ms: int = 0
    _rate_spans: int = 0
    _rate_prev: float = 0.0
    _decided: int = 0
    _kept: dict[str, int] = field(default_factory=dict)
    _dropped: dict[str, int] = field(default_factory=dict)
    _not_sampled: int = 0  # drops as not_sampled, counted apart on the hot path
    _last_p: float = 0.0
    _q_up: float = 1.0
    _q_down: float = 1.0

    def __post_init__(self) -> None:
        q, step = self.config.slow_quantile, self.config.slow_step
        self._q_up, self._q_down = math.exp(step * q), math.exp(-step * (1.0 - q))

    def slow_threshold_ms(self, function: str) -> float:
        """The latency at or above which ``function``'s next trace here counts as slow."""
        cfg = self.config
        w = self._windows.get(function)
        if cfg.slow_quantile <= 0.0 or w is None or w.seen < cfg.slow_min_requests:
            return cfg.slow_ms
        return min(cfg.slow_ms, max(cfg.slow_floor_ms, w.slow_q_ms))

    def handle(self, ended: TraceEnded) -> Decision:
        """Keep or drop one trace whose local root ended."""
        decision = self.decide(
            ended.trace_id,
            ended.function,
            ended.status,
            ended.error,
            ended.duration_ms,
            ended.spans,
            ended.now_ms,
        )
        return decision if decision is not None else Decision(False, self._last_p, "not_sampled")

    def decide(
        self,
        trace_id: str,
        function: str,
        status: int,
        error: bool,
        duration_ms: float,
        spans: int,
        now_ms: int,
    ) -> Decision | None:
        """:meth:`handle` without the event object, for the node's hot path: the common
        outcome, not sampled, is None (its probability is :attr:`_last_p`) and touches no
        token bucket."""
        cfg = self.config
        self._decided += 1
        failed = error or status >= 500
        # The function's error window (anomaly), inline: this runs once per request.
        w = self._windows.get(function)
        if w is None:
            if len(self._windows) >= cfg.max_functions:
                del self._windows[next(iter(self._windows))]
            w = self._windows[function] = _Window(now_ms)
        elif now_ms - w.start_ms >= cfg.anomaly_window_ms:
            self._roll(w, now_ms)
        w.requests += 1
        w.errors += failed
        slow = duration_ms >= cfg.slow_ms
        if cfg.slow_quantile > 0.0:
            q = w.slow_q_ms
            if w.seen < cfg.slow_min_requests:
                w.seen += 1
            elif duration_ms >= q and duration_ms >= cfg.slow_floor_ms:
                slow = True
            if q <= 0.0:
                w.slow_q_ms = duration_ms
            else:
                w.slow_q_ms = q * (self._q_up if duration_ms > q else self._q_down)
        # The arrival rate in spans per second: the last full window's, or this one's so far.
        if now_ms - self._rate_start_ms >= cfg.rate_window_ms:
            elapsed = now_ms - self._rate_start_ms
            self._rate_prev = (
                self._rate_spans * 1e3 / elapsed if elapsed < 2 * cfg.rate_window_ms else 0.0
            )
            self._rate_start_ms, self._rate_spans = now_ms, 0
        self._rate_spans += spans
        arrival = max(self._rate_prev, self._rate_spans * 1e3 / cfg.rate_window_ms)
        if failed or slow:
            budget, ceiling = self._buckets(now_ms)
            reason = "error" if failed else "slow"
            if ceiling.tokens < spans:
                return self._drop("over_ceiling", 1.0)
            ceiling.tokens -= spans
            budget.tokens = max(0.0, budget.tokens - spans)
            return self._keep(reason, 1.0)
        requests = w.requests + w.prev_requests
        anomalous = (
            requests >= cfg.anomaly_min_requests
            and w.errors + w.prev_errors >= cfg.anomaly_error_rate * requests
        )
        target = cfg.anomalous_probability if anomalous else cfg.base_probability
        probability = min(target, cfg.budget_spans_per_s / arrival) if arrival > 0 else target
        if probability < 1.0 and (int(trace_id[-14:], 16) & _HASH_MASK) >= probability * (
            1 << _HASH_BITS
        ):
            self._not_sampled += 1
            self._last_p = probability
            return None
        budget, _ = self._buckets(now_ms)
        if budget.tokens < spans:
            return self._drop("over_budget", probability)
        budget.tokens -= spans
        return self._keep("anomalous" if anomalous else "sampled", probability)

    def anomalous(self, function: str, now_ms: int) -> bool:
        w = self._windows.get(function)
        if w is None:
            return False
        self._roll(w, now_ms)
        requests, errors = w.requests + w.prev_requests, w.errors + w.prev_errors
        cfg = self.config
        return requests >= cfg.anomaly_min_requests and errors >= cfg.anomaly_error_rate * requests

    def _roll(self, w: _Window, now_ms: int) -> None:
        span = self.config.anomaly_window_ms
        if now_ms - w.start_ms < span:
            return
        # One window on: the current becomes the previous; more than one: both are stale.
        adjacent = now_ms - w.start_ms < 2 * span
        w.prev_requests, w.prev_errors = (w.requests, w.errors) if adjacent else (0, 0)
        w.requests = w.errors = 0
        w.start_ms = now_ms - (now_ms - w.start_ms) % span

    def _buckets(self, now_ms: int) -> tuple[_Bucket, _Bucket]:
        cfg = self.config
        if self._budget is None or self._ceiling is None:
            b, c = cfg.budget_spans_per_s, cfg.always_spans_per_s
            self._budget = _Bucket(b, b * cfg.burst_s, b * cfg.burst_s, now_ms)
            self._ceiling = _Bucket(c, c * cfg.burst_s, c * cfg.burst_s, now_ms)
        self._budget.refill(now_ms)
        self._ceiling.refill(now_ms)
        return self._budget, self._ceiling

    def _keep(self, reason: str, probability: float) -> Decision:
        self._kept[reason] = self._kept.get(reason, 0) + 1
        return Decision(True, probability, reason)

    def _drop(self, reason: str, probability: float) -> Decision:
        self._dropped[reason] = self._dropped.get(reason, 0) + 1
        return Decision(False, probability, reason)

    def _drops(self) -> dict[str, int]:
        out = dict(self._dropped)
        if self._not_sampled:
            out["not_sampled"] = self._not_sampled
        return out

    def check_invariants(self) -> None:
        assert len(self._windows) <= self.config.max_functions, len(self._windows)
        for bucket in (self._budget, self._ceiling):
            if bucket is not None:
                assert 0.0 <= bucket.tokens <= bucket.capacity, bucket
        dropped = sum(self._dropped.values()) + self._not_sampled
        assert sum(self._kept.values()) + dropped == self._decided
        for w in self._windows.values():
            assert 0 <= w.errors <= w.requests, w
            assert 0 <= w.prev_errors <= w.prev_requests, w

    def statistics(self, now_ms: int) -> SamplerStatistics:
        anomalous = tuple(sorted(f for f in list(self._windows) if self.anomalous(f, now_ms)))
        return SamplerStatistics(
            decided=self._decided,
            kept=dict(self._kept),
            dropped=self._drops(),
            anomalous=anomalous,
            arrival_spans_per_s=self._rate_prev,
        )
