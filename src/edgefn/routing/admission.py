"""Admission control at one location: an adaptive concurrency limit, a bounded queue, early 503s.

:class:`AdmissionController` is a pure machine fed by the node (or the simulator):

* ``Arrived(req_id)`` -> ``Admit`` if fewer than ``limit`` requests run and nobody waits; else
  ``Queue`` if the queue has room and the predicted wait (``(queued + 1) * service_ms / limit``)
  fits in ``queue_timeout_ms``; else ``Reject(503, retry_after_s)`` at once. Rejecting early,
  instead of queueing a request that will time out anyway, is what keeps admitted latency bounded
  under overload: the queue never holds more than about ``queue_timeout_ms`` of work.
* ``Completed(req_id, latency_ms, ok)`` -> updates the limit (:mod:`._limits`) and the service-time
  EWMA, then ``Admit``s queued requests (FIFO) while there is room; one that waited longer than
  ``queue_timeout_ms`` is rejected instead.
* ``Cancelled(req_id)`` (the client went away) frees its slot or queue place without a sample.
* ``AdmissionTick`` rejects queued requests that waited past ``queue_timeout_ms``.

``overloaded`` is true while the queue is at least half full or a request was rejected in the last
``overload_hold_ms``; the node advertises it in its :class:`~edgefn.routing.policy.LoadReport` so
ingress locations spill traffic elsewhere. ``retry_after_s`` estimates when the queue will have
drained (at least ``min_retry_after_s``). Everything is bounded: at most ``max_limit`` running, at
most ``max_queue`` waiting, and unknown request ids are ignored and counted.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum

from edgefn.routing._errors import RoutingConfigError, require_positive
from edgefn.routing._limits import AimdLimit, ConcurrencyLimit, Gradient2Limit, LimitConfig
from edgefn.routing.policy import LoadReport

__all__ = [
    "AdmissionConfig",
    "AdmissionController",
    "AdmissionEvent",
    "AdmissionInstruction",
    "AdmissionStatistics",
    "AdmissionTick",
    "Admit",
    "Arrived",
    "Cancelled",
    "CapacityChanged",
    "Completed",
    "LimitConfig",
    "Queue",
    "Reject",
    "RejectReason",
]


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    algorithm: str = "gradient2"
    limit: LimitConfig = field(default_factory=LimitConfig)
    max_queue: int = 100
    queue_timeout_ms: int = 1_000
    initial_service_ms: float = 50.0
    service_ewma_alpha: float = 0.1
    overload_hold_ms: int = 1_000
    min_retry_after_s: float = 1.0

    def __post_init__(self) -> None:
        if self.algorithm not in ("gradient2", "aimd"):
            raise RoutingConfigError(
                f"unknown algorithm {self.algorithm!r}",
                key="[admission] algorithm",
                hint='use "gradient2" or "aimd"',
            )
        lim = self.limit
        if not 1 <= lim.min_limit <= lim.initial_limit <= lim.max_limit:
            raise RoutingConfigError(
                f"needs 1 <= min_limit <= initial_limit <= max_limit, got {lim.min_limit}, "
                f"{lim.initial_limit}, {lim.max_limit}",
                key="[admission] limit",
                hint="for example min_limit = 4, initial_limit = 20, max_limit = 200",
            )
        require_positive("[admission] max_queue", self.max_queue, allow_zero=True)
        for key in ("queue_timeout_ms", "initial_service_ms", "service_ewma_alpha"):
            require_positive(f"[admission] {key}", getattr(self, key))
        require_positive("[admission] overload_hold_ms", self.overload_hold_ms, allow_zero=True)
        require_positive("[admission] min_retry_after_s", self.min_retry_after_s, allow_zero=True)


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arrived:
    req_id: int
    now_ms: int


@dataclass(frozen=True, slots=True)
class Completed:
    """``latency_ms`` is the service time, from ``Admit`` to completion."""

    req_id: int
    latency_ms: float
    ok: bool
    now_ms: int


@dataclass(frozen=True, slots=True)
class Cancelled:
    req_id: int
    now_ms: int


@dataclass(frozen=True, slots=True)
class AdmissionTick:
    now_ms: int


@dataclass(frozen=True, slots=True)
class CapacityChanged:
    """Scale the concurrency limit by ``factor`` in (0, 1]: a thermally throttled location
    (:mod:`edgefn.routing.thermal`). Admitted requests keep running; a rise admits queued ones."""

    factor: float
    now_ms: int


AdmissionEvent = Arrived | Completed | Cancelled | AdmissionTick | CapacityChanged

# -- instructions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admit:
    req_id: int
    waited_ms: int = 0


@dataclass(frozen=True, slots=True)
class Queue:
    req_id: int


class RejectReason(StrEnum):
    QUEUE_FULL = "queue-full"
    PREDICTED_WAIT = "predicted-wait"
    QUEUE_TIMEOUT = "queue-timeout"
    DUPLICATE_ID = "duplicate-id"


@dataclass(frozen=True, slots=True)
class Reject:
    req_id: int
    reason: RejectReason
    retry_after_s: float
    status: int = 503


AdmissionInstruction = Admit | Queue | Reject


@dataclass(frozen=True, slots=True)
class AdmissionStatistics:
    limit: int
    inflight: int
    queued: int
    admitted: int
    queued_total: int
    rejected: int
    expired: int
    unknown_ids: int
    service_ms_ewma: float
    overloaded: bool


class AdmissionController:
    """Concurrency limit + bounded FIFO queue for one location. Change it only through handle()."""

    def __init__(self, config: AdmissionConfig | None = None) -> None:
        self.config = config or AdmissionConfig()
        self._limiter: ConcurrencyLimit = (
            Gradient2Limit(self.config.limit)
            if self.config.algorithm == "gradient2"
            else AimdLimit(self.config.limit)
        )
        self._inflight: dict[int, int] = {}  # req_id -> admitted at ms
        self._queue: OrderedDict[int, int] = OrderedDict()  # req_id -> arrived at ms, FIFO
        self._service_ms = self.config.initial_service_ms
        self._capacity = 1.0
        self._now_ms = 0
        self._last_reject_ms: int | None = None
        self._admitted = 0
        self._queued_total = 0
        self._rejected = 0
        self._expired = 0
        self._unknown = 0

    @property
    def limit(self) -> int:
        """The concurrency limit in force: the adaptive limit times the capacity factor."""
        if self._capacity >= 1.0:
            return self._limiter.limit
        return max(1, int(self._limiter.limit * self._capacity))

    @property
    def service_ms_ewma(self) -> float:
        return self._service_ms

    @property
    def overloaded(self) -> bool:
        if len(self._queue) * 2 >= max(1, self.config.max_queue):
            return True
        last = self._last_reject_ms
        return last is not None and self._now_ms - last < self.config.overload_hold_ms

    def handle(self, event: AdmissionEvent) -> list[AdmissionInstruction]:
        self._now_ms = max(self._now_ms, event.now_ms)
        if isinstance(event, Arrived):
            return [self._arrived(event.req_id, event.now_ms)]
        if isinstance(event, Completed):
            return self._completed(event)
        if isinstance(event, Cancelled):
            return self._cancelled(event)
        if isinstance(event, CapacityChanged):
            self._capacity = min(1.0, max(0.01, event.factor))
            return self._drain(event.now_ms)
        return self._expire(event.now_ms)

    def retry_after_s(self) -> float:
        """When a request rejected now should come back: about when the queue will have drained."""
        drain_ms = (len(self._queue) + 1) * self._service_ms / max(1, self.limit)
        return max(self.config.min_retry_after_s, drain_ms / 1000.0)

    def _reject(self, req_id: int, reason: RejectReason, now_ms: int) -> Reject:
        self._rejected += 1
        self._last_reject_ms = now_ms
        return Reject(req_id, reason, self.retry_after_s())

    def _arrived(self, req_id: int, now_ms: int) -> AdmissionInstruction:
        if req_id in self._inflight or req_id in self._queue:
            return self._reject(req_id, RejectReason.DUPLICATE_ID, now_ms)
        if not self._queue and len(self._inflight) < self.limit:
            self._inflight[req_id] = now_ms
            self._admitted += 1
            return Admit(req_id)
        if len(self._queue) >= self.config.max_queue:
            return self._reject(req_id, RejectReason.QUEUE_FULL, now_ms)
        predicted_wait_ms = (len(self._queue) + 1) * self._service_ms / max(1, self.limit)
        if predicted_wait_ms > self.config.queue_timeout_ms:
            return self._reject(req_id, RejectReason.PREDICTED_WAIT, now_ms)
        self._queue[req_id] = now_ms
        self._queued_total += 1
        return Queue(req_id)

    def _completed(self, event: Completed) -> list[AdmissionInstruction]:
        if self._inflight.pop(event.req_id, None) is None:
            self._unknown += 1
            return []
        inflight_before = len(self._inflight) + 1
        self._limiter.update(event.latency_ms, inflight_before, event.ok, saturated=self.overloaded)
        if event.ok and event.latency_ms > 0:
            alpha = self.config.service_ewma_alpha
            self._service_ms += alpha * (event.latency_ms - self._service_ms)
        return self._drain(event.now_ms)

    def _cancelled(self, event: Cancelled) -> list[AdmissionInstruction]:
        if self._queue.pop(event.req_id, None) is not None:
            return []
        if self._inflight.pop(event.req_id, None) is None:
            self._unknown += 1
            return []
        return self._drain(event.now_ms)

    def _drain(self, now_ms: int) -> list[AdmissionInstruction]:
        """Admit queued requests while there is room; reject those that waited too long."""
        out: list[AdmissionInstruction] = []
        while self._queue and len(self._inflight) < self.limit:
            req_id, arrived_ms = self._queue.popitem(last=False)
            waited_ms = now_ms - arrived_ms
            if waited_ms > self.config.queue_timeout_ms:
                self._expired += 1
                out.append(self._reject(req_id, RejectReason.QUEUE_TIMEOUT, now_ms))
                continue
            self._inflight[req_id] = now_ms
            self._admitted += 1
            out.append(Admit(req_id, waited_ms))
        return out

    def _expire(self, now_ms: int) -> list[AdmissionInstruction]:
        out: list[AdmissionInstruction] = []
        timeout_ms = self.config.queue_timeout_ms
        while self._queue:
            req_id, arrived_ms = next(iter(self._queue.items()))
            if now_ms - arrived_ms <= timeout_ms:
                break
            del self._queue[req_id]
            self._expired += 1
            out.append(self._reject(req_id, RejectReason.QUEUE_TIMEOUT, now_ms))
        return out

    def load_report(
        self, location: str, *, now_ms: int, draining: bool = False, hot: bool = False
    ) -> LoadReport:
        """This location's load, for the routing policy of every ingress."""
        return LoadReport(
            location=location,
            concurrency=len(self._inflight),
            queue_len=len(self._queue),
            limit=self.limit,
            service_ms_ewma=self._service_ms,
            overloaded=self.overloaded,
            draining=draining,
            at_ms=now_ms,
            hot=hot,
        )

    def check_invariants(self) -> None:
        cfg = self.config
        assert len(self._queue) <= cfg.max_queue, len(self._queue)
        assert len(self._inflight) <= cfg.limit.max_limit, len(self._inflight)
        assert cfg.limit.min_limit <= self._limiter.limit <= cfg.limit.max_limit, (
            self._limiter.limit
        )
        assert 1 <= self.limit <= self._limiter.limit, (self.limit, self._capacity)
        assert not (self._queue.keys() & self._inflight.keys()), "request both queued and running"
        if self._queue:
            assert len(self._inflight) >= self.limit, "queued while below the limit"
        assert self._service_ms > 0, self._service_ms

    def statistics(self) -> AdmissionStatistics:
        return AdmissionStatistics(
            limit=self.limit,
            inflight=len(self._inflight),
            queued=len(self._queue),
            admitted=self._admitted,
            queued_total=self._queued_total,
            rejected=self._rejected,
            expired=self._expired,
            unknown_ids=self._unknown,
            service_ms_ewma=self._service_ms,
            overloaded=self.overloaded,
        )
