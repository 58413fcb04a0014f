"""Shipping a node's telemetry rollups to the core, acknowledged, through a partition.

Every ``interval_s`` the shipper cuts the node's :class:`~edgefn.observe.rollup.Accumulator` and
queues the rollup in a :class:`~edgefn.observe.rollup.RollupBuffer` (an hour of 5 s rollups;
beyond that the oldest never-sent ones are merged, not dropped). It then publishes the oldest
buffered rollups (at most ``window`` at a time) on ``edgefn.telemetry.<location>`` as JetStream
publishes with ``Nats-Msg-Id`` = the rollup id: the core's ``EDGEFN_TELEMETRY`` stream captures
them and answers with an acknowledgement once the message is stored; only then does a rollup
leave the buffer. A publish that times out (the hub is cut off, the core is down) is retried
later with the same id and content, so the stream's duplicate window and the store's
``(location, epoch, seq)`` dedupe make a lost acknowledgement harmless: at-least-once delivery,
counted exactly once.

The connection is the node's own (``telemetry-<location>``), reconnecting forever; the region hub
relays the messages, it does not merge them (docs/design/0019-telemetry.md says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from edgefn.bus.node_stream import StreamPublisher
from edgefn.bus.subjects import telemetry_subject
from edgefn.observe import JsonLog
from edgefn.observe.rollup import Accumulator, Rollup, RollupBuffer, encode_rollup

__all__ = ["ShipperStatistics", "TelemetryShipper", "new_accumulator"]

INTERVAL_S = 5.0
_STOP_WAIT_S = 3.0


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def new_accumulator(location: str) -> Accumulator:
    """A node's accumulator: a random epoch per process, so a restarted node's sequence numbers
    never collide with those of its previous life."""
    return Accumulator(location=location, epoch=os.urandom(6).hex(), start_ms=_wall_ms())


@dataclass(frozen=True, slots=True)
class ShipperStatistics:
    connected: bool
    buffered: int
    requests_buffered: int
    merged_total: int
    acked_total: int
    publish_failures_total: int
    bytes_sent_total: int
    rollups_sent_total: int


class TelemetryShipper:
    """Cuts and ships one node's rollups. ``await start()``, ``await stop()`` (flushes once)."""

    def __init__(
        self,
        accumulator: Accumulator,
        *,
        nats_urls: list[str],
        log: JsonLog,
        interval_s: float = INTERVAL_S,
        buffer: RollupBuffer | None = None,
        clock_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        self.accumulator = accumulator
        self.location = accumulator.location
        self.subject = telemetry_subject(accumulator.location)
        self.nats_urls = nats_urls
        self.interval_s = interval_s
        self.buffer = buffer or RollupBuffer()
        self._log = log
        self._clock_ms = clock_ms
        self._out = StreamPublisher(
            nats_urls, name=f"telemetry-{accumulator.location}", subject=self.subject, log=log
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"telemetry-{self.location}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, _STOP_WAIT_S)
        if self._out.ready:
            # One last cut and a short try to send it: a clean stop loses nothing it can help.
            self._cut()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), _STOP_WAIT_S)
        await self._out.close()

    async def _run(self) -> None:
        await self._out.connect()
        while True:
            await asyncio.sleep(self.interval_s)
            self._cut()
            await self.flush()

    def _cut(self) -> None:
        rollup = self.accumulator.cut(self._clock_ms())
        if rollup is not None:
            self.buffer.push(rollup)

    async def flush(self) -> None:
        """Send buffered rollups, oldest first, until one fails or the buffer is empty."""
        while batch := self.buffer.take():
            results = await asyncio.gather(*(self._publish(r) for r in batch))
            if not all(results):
                return

    async def _publish(self, rollup: Rollup) -> bool:
        ok = await self._out.publish(
            encode_rollup(rollup),
            rollup.rollup_id,
            event="telemetry_unsent",
            context=lambda: {"buffered": self.buffer.statistics().buffered},
        )
        if ok:
            self.buffer.acked(rollup.rollup_id)
        return ok

    def statistics(self) -> ShipperStatistics:
        b = self.buffer.statistics()
        return ShipperStatistics(
            connected=self._out.connected,
            buffered=b.buffered,
            requests_buffered=b.requests_buffered,
            merged_total=b.merged_total,
            acked_total=b.acked_total,
            publish_failures_total=self._out.failures,
            bytes_sent_total=self._out.bytes_sent,
            rollups_sent_total=self._out.sent,
        )
