"""OTLP/HTTP export of the stored spans to a configured collector (``--otlp-endpoint URL``).

The span ingest hands every newly stored span to :meth:`OtlpExport.offer`, which queues it
(bounded: ``QUEUE_MAX`` spans; beyond that the oldest are dropped and counted, the span store
keeps them anyway). Every ``interval_s`` up to ``BATCH_MAX`` spans become OpenTelemetry SDK
``ReadableSpan`` objects, one resource per location (``service.name = edgefn``,
``edgefn.location``), and go to the collector through the SDK's ``OTLPSpanExporter``
(protobuf ``ExportTraceServiceRequest`` over HTTP POST). The exporter is blocking (``requests``)
so it runs in a worker thread; a failed export (the collector is down) is counted and its spans
are dropped: OTLP export is a copy, the span store at the core is the record.
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

__all__ = ["BATCH_MAX", "QUEUE_MAX", "ExportStatistics", "OtlpExport", "check_endpoint"]

QUEUE_MAX = 50_000
BATCH_MAX = 512
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
    failed_total: int
    dropped_total: int


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
        self, endpoint: str, *, log: JsonLog | None = None, interval_s: float = 1.0
    ) -> None:
        self.endpoint = check_endpoint(endpoint)
        self.interval_s = interval_s
        self._log = log or JsonLog(location="core")
        self._exporter = OTLPSpanExporter(endpoint=self.endpoint, timeout=_TIMEOUT_S)
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
            await asyncio.sleep(self.interval_s)
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(BATCH_MAX, len(self._queue)))]
                if not await self.export(batch):
                    break

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
        )
