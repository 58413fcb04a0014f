"""Adaptive concurrency limits, after Netflix's concurrency-limits library.

A limit answers "how many requests may run at once here" and adapts it from the latency and outcome
of every completed request; :class:`~edgefn.routing.admission.AdmissionController` queues or
rejects what exceeds it. Two algorithms:

* :class:`Gradient2Limit` (Netflix ``Gradient2Limit``): compares a short-term latency (the last
  sample) with a long-term exponential average. ``gradient = clamp(tolerance * long / short, 0.5,
  1)``: 1 while latency is normal, below 1 once requests queue somewhere (CPU, a lock, a
  downstream) and latency rises. ``new = limit * gradient + queue_size``, smoothed by
  ``smoothing``. The limit only grows while at least half of it is in use, so an idle location does
  not inflate it. When the long average is more than twice the short one (load just dropped) it is
  pulled down 5% per sample so that the limit recovers quickly.
* :class:`AimdLimit`: additive increase (+1 per sample while at least half used), multiplicative
  decrease (``* backoff_ratio``) on a failed request or a latency above ``timeout_ms``.

Latencies given to ``update`` must be service times (from admission to completion), not including
time spent in the admission queue: the queue is ours, the limit measures the service.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["AimdLimit", "ConcurrencyLimit", "Gradient2Limit", "LimitConfig"]


@dataclass(frozen=True, slots=True)
class LimitConfig:
    """Shared knobs; the defaults are Netflix's."""

    initial_limit: int = 20
    min_limit: int = 4
    max_limit: int = 200
    smoothing: float = 0.2
    tolerance: float = 1.5
    long_window: int = 600
    warmup_samples: int = 10
    queue_size: int = 4
    backoff_ratio: float = 0.9
    timeout_ms: float = 5_000.0


class ConcurrencyLimit(Protocol):
    @property
    def limit(self) -> int: ...

    def update(
        self, latency_ms: float, inflight: int, ok: bool, *, saturated: bool = False
    ) -> None: ...


class Gradient2Limit:
    """Latency-gradient limit; see the module docstring."""

    def __init__(self, config: LimitConfig) -> None:
        self.config = config
        self._estimate = float(config.initial_limit)
        self._long_ms = 0.0
        self._samples = 0

    @property
    def limit(self) -> int:
        return int(self._estimate)

    @property
    def long_latency_ms(self) -> float:
        return self._long_ms

    def _add_long(self, latency_ms: float) -> float:
        # Netflix ExpAvgMeasurement: a plain mean during warm-up, then an EWMA of the window.
        self._samples += 1
        if self._samples <= self.config.warmup_samples:
            self._long_ms += (latency_ms - self._long_ms) / self._samples
        else:
            factor = 2.0 / (self.config.long_window + 1)
            self._long_ms += factor * (latency_ms - self._long_ms)
        return self._long_ms

    def update(
        self, latency_ms: float, inflight: int, ok: bool, *, saturated: bool = False
    ) -> None:
        # A failed request's latency says nothing about queueing (it may have failed fast).
        if not ok or latency_ms <= 0:
            return
        cfg = self.config
        short = latency_ms
        # Under sustained overload every sample is inflated; letting the long average follow them
        # makes the limit creep up without end (the gradient tolerates 1.5x of an ever higher
        # baseline). So while requests wait in our queue the baseline is frozen (after warm-up).
        frozen = saturated and self._samples >= cfg.warmup_samples
        long = self._long_ms if frozen else self._add_long(latency_ms)
        if long / short > 2.0:
            self._long_ms *= 0.95
        if inflight < self._estimate / 2:
            return
        gradient = max(0.5, min(1.0, cfg.tolerance * long / short))
        new = self._estimate * gradient + cfg.queue_size
        new = self._estimate * (1 - cfg.smoothing) + new * cfg.smoothing
        self._estimate = max(float(cfg.min_limit), min(float(cfg.max_limit), new))


class AimdLimit:
    """Additive-increase, multiplicative-decrease limit."""

    def __init__(self, config: LimitConfig) -> None:
        self.config = config
        self._limit = config.initial_limit

    @property
    def limit(self) -> int:
        return self._limit

    def update(
        self, latency_ms: float, inflight: int, ok: bool, *, saturated: bool = False
    ) -> None:
        cfg = self.config
        if not ok or latency_ms > cfg.timeout_ms:
            self._limit = max(cfg.min_limit, int(self._limit * cfg.backoff_ratio))
        elif inflight * 2 >= self._limit:
            self._limit = min(cfg.max_limit, self._limit + 1)
