"""The core's end of tracing: the stream of node trace batches into the span store (and OTLP).

Nodes publish the spans of their kept traces on ``edgefn.traces.<location>``
(edgefn.edge.trace_ship); the ``EDGEFN_TRACES`` stream here captures them (a work queue, bounded
in bytes, a ``Nats-Msg-Id`` dedupe window of two minutes). This driver's durable consumer
``traces-core`` reads each batch as hostile (:func:`~edgefn.observe.spans.decode_batch` bounds
every field; the batch and each of its spans must name the location of the subject it came on,
which the bus lets only that location's node publish), stores it in the
:class:`~edgefn.observe.span_store.SpanStore` (which ignores a span it has) and only then
acknowledges. A bad batch is terminated (never redelivered) and counted. The new spans go on to
the :class:`~edgefn.control.otlp_export.OtlpExport` when a collector is configured. Compaction
(retention) runs every minute.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg

from edgefn._loop import cancel_and_wait
from edgefn.bus.node_stream import NodeStream, consume, settle, subject_location
from edgefn.bus.subjects import TRACES_ALL, TRACES_STREAM
from edgefn.control.otlp_export import OtlpExport
from edgefn.observe import JsonLog
from edgefn.observe.span_store import SpanStore
from edgefn.observe.spans import BadBatch, decode_batch

__all__ = ["TraceIngest", "TraceIngestStatistics"]

_STREAM = NodeStream(
    name=TRACES_STREAM,
    subjects=TRACES_ALL,
    durable="traces-core",
    max_bytes=128 * 1024 * 1024,
    duplicate_window_s=120.0,
    max_ack_pending=256,
)
_COMPACT_EVERY_S = 60.0


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class TraceIngestStatistics:
    received_total: int
    spans_stored_total: int
    rejected_total: int


class TraceIngest:
    """Consumes the traces stream into ``store``. ``await start()``, ``await stop()``."""

    def __init__(
        self,
        nc: Client,
        store: SpanStore,
        *,
        replicas: int = 1,
        export: OtlpExport | None = None,
        log: JsonLog | None = None,
    ) -> None:
        self._nc = nc
        self.store = store
        self.export = export
        self._replicas = replicas
        self._log = log or JsonLog(location="core")
        self._tasks: list[asyncio.Task[None]] = []
        self._received = 0
        self._stored = 0
        self._rejected = 0

    async def start(self) -> None:
        await consume(self._nc, _STREAM, replicas=self._replicas, cb=self._on_message)
        if self.export is not None:
            await self.export.start()
        self._tasks.append(asyncio.create_task(self._compact_loop(), name="traces-compact"))

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        if self.export is not None:
            await self.export.stop()

    async def _on_message(self, msg: Msg) -> None:
        self._received += 1
        location = subject_location(msg.subject)
        try:
            batch = decode_batch(msg.data)
            if batch.location != location:
                raise BadBatch(f"batch names {batch.location!r} but came on {msg.subject}")
        except BadBatch as err:
            self._rejected += 1
            self._log.emit("warn", event="traces_rejected", subject=msg.subject, error=str(err))
            await settle(msg, ok=False)
            return
        new = self.store.ingest(batch.spans, now_ms=_wall_ms())
        self._stored += len(new)
        if new and self.export is not None:
            self.export.offer(new)
        await settle(msg, ok=True)

    async def _compact_loop(self) -> None:
        while True:
            await asyncio.sleep(_COMPACT_EVERY_S)
            self.store.compact(now_ms=_wall_ms())

    def statistics(self) -> TraceIngestStatistics:
        return TraceIngestStatistics(
            received_total=self._received,
            spans_stored_total=self._stored,
            rejected_total=self._rejected,
        )
