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

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.client import JetStreamContext
from nats.js.errors import Error as JsError

from edgefn.bus.errors import BusError
from edgefn.bus.jetstream import connect, jetstream
from edgefn.bus.subjects import traces_subject
from edgefn.edge.tracing import NodeTracer
from edgefn.observe import JsonLog
from edgefn.observe.spans import MAX_SPANS_PER_BATCH, TraceBatch, encode_batch

__all__ = ["INTERVAL_S", "TraceShipper"]

INTERVAL_S = 1.0
_PUBLISH_TIMEOUT_S = 3.0
_CONNECT_RETRY_S = 2.0
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
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._task: asyncio.Task[None] | None = None
        self.failures = 0
        self.bytes_sent = 0
        self.batches_sent = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"traces-{self.location}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, _STOP_WAIT_S)
        if self._js is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), _STOP_WAIT_S)
        if self._nc is not None:
            with contextlib.suppress(NatsError, OSError, TimeoutError):
                await asyncio.wait_for(self._nc.close(), _STOP_WAIT_S)

    async def _run(self) -> None:
        while self._js is None:
            try:
                self._nc = await connect(
                    self.nats_urls, name=f"traces-{self.location}", connect_deadline_s=5
                )
                self._js = jetstream(self._nc, timeout_s=_PUBLISH_TIMEOUT_S)
            except BusError:
                await asyncio.sleep(_CONNECT_RETRY_S)
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
        assert self._js is not None
        data = encode_batch(batch)
        try:
            await self._js.publish(
                self.subject,
                data,
                timeout=_PUBLISH_TIMEOUT_S,
                headers={"Nats-Msg-Id": batch.batch_id},
            )
        except (NatsError, JsError, OSError, TimeoutError) as err:
            self.failures += 1
            if self.failures % 20 == 1:  # one line per partition, not one per retry
                self._log.emit(
                    "warn",
                    event="traces_unsent",
                    error=f"{type(err).__name__}: {err}",
                    outbox=self.tracer.statistics().outbox_spans,
                )
            return False
        self.bytes_sent += len(data)
        self.batches_sent += 1
        return True
