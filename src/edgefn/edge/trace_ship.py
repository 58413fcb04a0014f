"""Shipping a node's kept traces to the core, acknowledged, like its telemetry rollups.

Every ``interval_s`` the shipper takes up to ``MAX_SPANS_PER_BATCH`` spans out of the
:class:`~edgefn.edge.tracing.NodeTracer`'s outbox (bounded there: the oldest unsent spans are
dropped and counted when it is full), and publishes them as one
:class:`~edgefn.observe.spans.TraceBatch` on ``edgefn.traces.<location>`` as a JetStream publish
with ``Nats-Msg-Id`` = the batch id. The core's ``EDGEFN_TRACES`` stream captures it and the
node gets an acknowledgement once it is stored; a publish that fails (cut off from the hub, the
core down) gives its spans back to the front of the outbox and is retried with a new batch id:
the span store's ``(trace_id, span_id)`` key makes a duplicate harmless.

The connection is the node's own (``traces-<location>``); the bus lets it publish only its own
location's subject (edgefn.bus.permissions), and the ingest checks that every span names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from edgefn.bus.node_stream import StreamPublisher
from edgefn.bus.subjects import traces_subject
from edgefn.edge.tracing import NodeTracer
from edgefn.observe import JsonLog
from edgefn.observe.spans import MAX_SPANS_PER_BATCH, TraceBatch, encode_batch

__all__ = ["INTERVAL_S", "TraceShipper"]

INTERVAL_S = 1.0
_STOP_WAIT_S = 3.0
# Batches sent back to back per interval before the shipper yields again (bounded work a tick).
_BATCHES_PER_TICK = 8


class TraceShipper:
    """Ships one node's kept spans. ``await start()``, ``await stop()`` (flushes once)."""

    def __init__(
        self,
        tracer: NodeTracer,
        *,
        nats_urls: list[str],
        log: JsonLog,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self.tracer = tracer
        self.location = tracer.location
        self.subject = traces_subject(tracer.location)
        self.nats_urls = nats_urls
        self.interval_s = interval_s
        self._log = log
        self._epoch = os.urandom(6).hex()
        self._seq = 0
        self._out = StreamPublisher(
            nats_urls, name=f"traces-{tracer.location}", subject=self.subject, log=log
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def failures(self) -> int:
        return self._out.failures

    @property
    def bytes_sent(self) -> int:
        return self._out.bytes_sent

    @property
    def batches_sent(self) -> int:
        return self._out.sent

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"traces-{self.location}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, _STOP_WAIT_S)
        if self._out.ready:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), _STOP_WAIT_S)
        await self._out.close()

    async def _run(self) -> None:
        await self._out.connect()
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()

    async def flush(self) -> None:
        """Publish kept spans, a batch at a time, until one fails or the outbox is empty."""
        for _ in range(_BATCHES_PER_TICK):
            spans = self.tracer.drain(MAX_SPANS_PER_BATCH)
            if not spans:
                return
            self._seq += 1
            batch = TraceBatch(self.location, f"{self.location}.{self._epoch}.{self._seq}", spans)
            if not await self._publish(batch):
                self.tracer.requeue(spans)
                return

    async def _publish(self, batch: TraceBatch) -> bool:
        return await self._out.publish(
            encode_batch(batch),
            batch.batch_id,
            event="traces_unsent",
            context=lambda: {"outbox": self.tracer.statistics().outbox_spans},
        )
