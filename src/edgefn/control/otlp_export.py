"""OTLP/HTTP export of the stored spans to a configured collector (``--otlp-endpoint URL``).

The span ingest hands every newly stored span to :meth:`OtlpExport.offer`, which queues it
(bounded: ``QUEUE_MAX`` spans; beyond that the oldest are dropped and counted, the span store
keeps them anyway). Every ``interval_s`` up to ``BATCH_MAX`` spans become OpenTelemetry SDK
``ReadableSpan`` objects, one resource per location (``service.name = edgefn``,
``edgefn.location``), and go to the collector through the SDK's ``OTLPSpanExporter``
(protobuf ``ExportTraceServiceRequest`` over HTTP POST). The exporter is blocking (``requests``)
so it runs in a worker thread.

A collector that is down or overloaded loses nothing within bounds. The SDK's exporter retries
one export itself (connection errors, 429 and 5xx, honouring ``Retry-After``) until its
``timeout_s``; when it still fails, the batch goes back to the front of the queue and the next
attempt waits ``interval_s`` doubled per consecutive failure, up to ``BACKOFF_MAX_S``. A batch
that fails ``MAX_ATTEMPTS`` times in a row (a collector that refuses it, e.g. 400) is dropped and
counted as ``abandoned``, so one bad batch cannot stop the rest. The queue's bound still holds: an
outage longer than ``QUEUE_MAX`` spans drops the oldest. The span store at the core is the
record either way.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from edgefn._loop import cancel_and_wait
from edgefn.errors import UsageError
from edgefn.observe import JsonLog
from edgefn.observe.spans import SpanRecord

__all__ = [
    "BACKOFF_MAX_S",
    "BATCH_MAX",
    "MAX_ATTEMPTS",
    "QUEUE_MAX",
    "ExportStatistics",
    "OtlpExport",
    "check_endpoint",
]

QUEUE_MAX = 50_000
BATCH_MAX = 512
MAX_ATTEMPTS = 6
BACKOFF_MAX_S = 30.0
_TIMEOUT_S = 10.0
_SCOPE = InstrumentationScope("edgefn")
_KINDS = {0: SpanKind.INTERNAL, 1: SpanKind.SERVER, 2: SpanKind.CLIENT, 3: SpanKind.PRODUCER,
          4: SpanKind.CONSUMER}  # fmt: skip
_STATUS = {0: StatusCode.UNSET, 1: StatusCode.OK, 2: StatusCode.ERROR}


def check_endpoint(url: str) -> str:
    """The collector's traces URL (``http(s)://host:port/v1/traces``); a clear error if not."""
    if not url.startswith(("http://", "https://")) or len(url) > 2048 or " " in url:
        raise UsageError(
            f"--otlp-endpoint {url!r} is not an http(s) URL",
            hint="give the collector's OTLP/HTTP traces URL, e.g. http://127.0.0.1:4318/v1/traces",
        )
    return url


@dataclass(frozen=True, slots=True)
class ExportStatistics:
    queued: int
    exported_total: int
    failed_total: int  # spans in failed attempts (retried, or abandoned after MAX_ATTEMPTS)
    dropped_total: int  # spans dropped from a full queue
    abandoned_total: int = 0  # spans dropped after MAX_ATTEMPTS failed attempts


def readable_span(s: SpanRecord, resource: Resource) -> ReadableSpan:
    """The OpenTelemetry SDK span of a stored one (with the sampling probability it was kept at)."""
    flags = TraceFlags(TraceFlags.SAMPLED)
    context = SpanContext(int(s.trace_id, 16), int(s.span_id, 16), is_remote=False,
                          trace_flags=flags)  # fmt: skip
    parent = None
    if s.parent_id:
        parent = SpanContext(int(s.trace_id, 16), int(s.parent_id, 16),
                             is_remote=s.remote_parent, trace_flags=flags)  # fmt: skip
    attributes: dict[str, str | int | float | bool] = {
        **s.attributes,
        "edgefn.location": s.location,
        "edgefn.sampling.probability": s.probability,
        "edgefn.sampling.reason": s.reason,
    }
    if s.function:
        attributes["edgefn.function"] = s.function
    return ReadableSpan(
        name=s.name,
        context=context,
        parent=parent,
        resource=resource,
        attributes=attributes,
        kind=_KINDS.get(s.kind, SpanKind.INTERNAL),
        status=Status(_STATUS.get(s.status, StatusCode.UNSET)),
        start_time=s.start_ns,
        end_time=s.end_ns,
        instrumentation_scope=_SCOPE,
    )


class OtlpExport:
    """Queues stored spans and exports them to ``endpoint``. ``start``, ``offer``, ``stop``."""

    def __init__(
        self,
        endpoint: str,
        *,
        log: JsonLog | None = None,
        interval_s: float = 1.0,
        timeout_s: float = _TIMEOUT_S,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        self.endpoint = check_endpoint(endpoint)
        self.interval_s = interval_s
        self.backoff_max_s = max(backoff_max_s, interval_s)
        self._log = log or JsonLog(location="core")
        self._exporter = OTLPSpanExporter(endpoint=self.endpoint, timeout=timeout_s)
        self._attempts = 0  # consecutive failed attempts of the batch at the queue's front
        self._abandoned = 0
        self._queue: deque[SpanRecord] = deque()
        self._resources: dict[str, Resource] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._exported = 0
        self._failed = 0
        self._dropped = 0

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run(), name="otlp-export"))

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        await asyncio.to_thread(self._exporter.shutdown)

    def offer(self, spans: list[SpanRecord]) -> None:
        for s in spans:
            if len(self._queue) >= QUEUE_MAX:
                self._queue.popleft()
                self._dropped += 1
            self._queue.append(s)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.retry_delay_s())
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(BATCH_MAX, len(self._queue)))]
                if await self.export(batch):
                    self._attempts = 0
                    continue
                self._attempts += 1
                if self._attempts >= MAX_ATTEMPTS:
                    self._abandoned += len(batch)
                    self._attempts = 0
                    self._log.emit("warn", event="otlp_batch_abandoned", spans=len(batch),
                                   attempts=MAX_ATTEMPTS)  # fmt: skip
                else:
                    self._requeue(batch)
                break

    def retry_delay_s(self) -> float:
        """The wait before the next attempt: the interval, doubled per consecutive failure."""
        return min(self.backoff_max_s, self.interval_s * 2.0**self._attempts)

    def _requeue(self, batch: list[SpanRecord]) -> None:
        # Back at the front, in order; a full queue keeps its newest spans, as offer() does.
        room = QUEUE_MAX - len(self._queue)
        if room < len(batch):
            self._dropped += len(batch) - max(room, 0)
            batch = batch[len(batch) - max(room, 0) :]
        self._queue.extendleft(reversed(batch))

    async def export(self, batch: list[SpanRecord]) -> bool:
        spans = [readable_span(s, self._resource(s.location)) for s in batch]
        try:
            result = await asyncio.to_thread(self._exporter.export, spans)
        except Exception as err:  # the exporter's transport: never let it end the loop
            result = SpanExportResult.FAILURE
            self._log.emit("warn", event="otlp_export_failed", error=repr(err))
        if result is SpanExportResult.SUCCESS:
            self._exported += len(spans)
            return True
        self._failed += len(spans)
        return False

    def _resource(self, location: str) -> Resource:
        res = self._resources.get(location)
        if res is None:
            if len(self._resources) > 4096:
                self._resources.clear()
            res = Resource.create({"service.name": "edgefn", "edgefn.location": location})
            self._resources[location] = res
        return res

    def statistics(self) -> ExportStatistics:
        return ExportStatistics(
            queued=len(self._queue),
            exported_total=self._exported,
            failed_total=self._failed,
            dropped_total=self._dropped,
            abandoned_total=self._abandoned,
        )
