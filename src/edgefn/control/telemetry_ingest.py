"""The core's end of the telemetry hierarchy: the stream of node rollups into the store.

Nodes publish rollups on ``edgefn.telemetry.<location>`` (edgefn.edge.telemetry_ship); the
``EDGEFN_TELEMETRY`` stream here captures them (a work queue: a message leaves the stream once
this consumer acknowledged it; bounded in bytes; a ``Nats-Msg-Id`` dedupe window of 10 minutes)
and the node gets its acknowledgement when the message is stored in the stream. This driver's
durable consumer ``telemetry-core`` reads them, treats each as hostile
(:func:`~edgefn.observe.rollup.decode_rollup` bounds every field, and the rollup must name the
location of the subject it came on, which the bus lets only that location's node publish),
stores it in the :class:`~edgefn.observe.telemetry_store.TelemetryStore` (which refuses a
``(location, epoch, seq)`` it has) and only then acknowledges. A bad message is terminated (never
redelivered) and counted. Compaction of the store's tiers runs every minute. ``on_stored`` is
called with every rollup stored (the incident detector, control/incidents_driver.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg

from edgefn._loop import cancel_and_wait
from edgefn.bus.node_stream import NodeStream, consume, settle, subject_location
from edgefn.bus.subjects import TELEMETRY_ALL, TELEMETRY_STREAM
from edgefn.observe import JsonLog
from edgefn.observe.rollup import BadRollup, Rollup, decode_rollup
from edgefn.observe.telemetry_store import TelemetryStore

__all__ = ["IngestStatistics", "TelemetryIngest"]

_STREAM = NodeStream(
    name=TELEMETRY_STREAM,
    subjects=TELEMETRY_ALL,
    durable="telemetry-core",
    max_bytes=256 * 1024 * 1024,
    duplicate_window_s=600.0,
    max_ack_pending=1024,
)
_COMPACT_EVERY_S = 60.0


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class IngestStatistics:
    received_total: int
    stored_total: int
    duplicates_total: int
    rejected_total: int
    bytes_by_location: dict[str, int]


class TelemetryIngest:
    """Consumes the telemetry stream into ``store``. ``await start()``, ``await stop()``."""

    def __init__(
        self,
        nc: Client,
        store: TelemetryStore,
        *,
        replicas: int = 1,
        log: JsonLog | None = None,
        on_stored: Callable[[Rollup], None] | None = None,
    ) -> None:
        self._nc = nc
        self._on_stored = on_stored
        self.store = store
        self._replicas = replicas
        self._log = log or JsonLog(location="core")
        self._tasks: list[asyncio.Task[None]] = []
        self._received = 0
        self._stored = 0
        self._duplicates = 0
        self._rejected = 0
        self._bytes: dict[str, int] = {}

    async def start(self) -> None:
        await consume(self._nc, _STREAM, replicas=self._replicas, cb=self._on_message)
        self._tasks.append(asyncio.create_task(self._compact_loop(), name="telemetry-compact"))

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)

    async def _on_message(self, msg: Msg) -> None:
        self._received += 1
        location = subject_location(msg.subject)
        try:
            rollup = decode_rollup(msg.data)
            if rollup.location != location:
                raise BadRollup(f"rollup names {rollup.location!r} but came on {msg.subject}")
        except BadRollup as err:
            self._rejected += 1
            self._log.emit("warn", event="telemetry_rejected", subject=msg.subject, error=str(err))
            await settle(msg, ok=False)
            return
        if self.store.ingest(rollup, now_ms=_wall_ms()):
            self._stored += 1
            self._bytes[location] = self._bytes.get(location, 0) + len(msg.data)
            if self._on_stored is not None:
                try:
                    self._on_stored(rollup)
                except Exception as err:  # stored already: a detector fault must not block acks
                    self._log.emit("error", event="telemetry_hook_failed", error=repr(err))
        else:
            self._duplicates += 1
        await settle(msg, ok=True)

    async def _compact_loop(self) -> None:
        while True:
            await asyncio.sleep(_COMPACT_EVERY_S)
            self.store.compact(now_ms=_wall_ms())

    def statistics(self) -> IngestStatistics:
        return IngestStatistics(
            received_total=self._received,
            stored_total=self._stored,
            duplicates_total=self._duplicates,
            rejected_total=self._rejected,
            bytes_by_location=dict(self._bytes),
        )
