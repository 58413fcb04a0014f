"""The two ends of a stream of per-node reports to the core (telemetry rollups, trace batches).

A node publishes on ``<prefix>.<its location>`` (the bus lets it publish only its own location's
subject) as JetStream publishes with a ``Nats-Msg-Id``; the core's stream captures them (a work
queue, bounded in bytes, with a dedupe window) and acknowledges once stored. The core's durable
consumer reads every message as hostile, checks that it names its subject's location, stores it
and only then acknowledges; a bad message is terminated (never redelivered).

:class:`StreamPublisher` is the node's end (its own named connection, made in the background until
it is up, and a publish that answers True or False: the caller keeps what failed and retries).
:class:`NodeStream`, :func:`consume`, :func:`subject_location` and :func:`settle` are the core's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import ConsumerConfig, DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError
from nats.js.errors import Error as JsError

from edgefn.bus.errors import BusError
from edgefn.bus.jetstream import connect, jetstream

__all__ = ["NodeStream", "StreamPublisher", "consume", "settle", "subject_location"]

PUBLISH_TIMEOUT_S = 3.0
CONNECT_RETRY_S = 2.0
CLOSE_WAIT_S = 3.0
# A failed publish is logged once per this many (one line per partition, not one per retry).
LOG_EVERY_FAILURES = 20


class _Log(Protocol):  # edgefn.observe.JsonLog (the bus layer does not import observe)
    def emit(self, kind: str, **fields: Any) -> None: ...


class StreamPublisher:
    """A node's acknowledged publisher to one core stream, on a connection named ``name``."""

    def __init__(self, nats_urls: list[str], *, name: str, subject: str, log: _Log) -> None:
        self.nats_urls = nats_urls
        self.name = name
        self.subject = subject
        self._log = log
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self.failures = 0
        self.bytes_sent = 0
        self.sent = 0

    @property
    def ready(self) -> bool:
        """Connected once (a publish may still fail while cut off)."""
        return self._js is not None

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def connect(self) -> None:
        """Until the connection is up (retried every ``CONNECT_RETRY_S``)."""
        while self._js is None:
            try:
                self._nc = await connect(self.nats_urls, name=self.name, connect_deadline_s=5)
                self._js = jetstream(self._nc, timeout_s=PUBLISH_TIMEOUT_S)
            except BusError:
                await asyncio.sleep(CONNECT_RETRY_S)

    async def publish(
        self, data: bytes, msg_id: str, *, event: str, context: Callable[[], dict[str, Any]]
    ) -> bool:
        """Publish ``data`` with ``msg_id``: True once the stream stored it. A failure is counted
        and logged as ``event`` (with ``context()``) once per ``LOG_EVERY_FAILURES``."""
        assert self._js is not None, "publish before connect"
        try:
            await self._js.publish(
                self.subject, data, timeout=PUBLISH_TIMEOUT_S, headers={"Nats-Msg-Id": msg_id}
            )
        except (NatsError, JsError, OSError, TimeoutError) as err:
            self.failures += 1
            if self.failures % LOG_EVERY_FAILURES == 1:
                self._log.emit(
                    "warn", event=event, error=f"{type(err).__name__}: {err}", **context()
                )
            return False
        self.bytes_sent += len(data)
        self.sent += 1
        return True

    async def close(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(NatsError, OSError, TimeoutError):
                await asyncio.wait_for(self._nc.close(), CLOSE_WAIT_S)


@dataclass(frozen=True, slots=True)
class NodeStream:
    """A core stream of node reports: its subjects (``<prefix>.*``), the core's durable consumer,
    its bounds."""

    name: str
    subjects: str
    durable: str
    max_bytes: int
    duplicate_window_s: float
    max_ack_pending: int


async def consume(
    nc: Client, stream: NodeStream, *, replicas: int, cb: Callable[[Msg], Awaitable[None]]
) -> None:
    """Make ``stream`` (if a restarted core has it already, keep it) and consume it with ``cb``
    (manual acks: ``cb`` calls :func:`settle`)."""
    js = jetstream(nc)
    config = StreamConfig(
        name=stream.name,
        subjects=[stream.subjects],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        max_bytes=stream.max_bytes,
        discard=DiscardPolicy.OLD,
        duplicate_window=stream.duplicate_window_s,
        num_replicas=replicas,
    )
    with contextlib.suppress(BadRequestError):  # exists already (a restarted core)
        await js.add_stream(config)
    await js.subscribe(
        stream.subjects,
        durable=stream.durable,
        stream=stream.name,
        cb=cb,
        manual_ack=True,
        config=ConsumerConfig(ack_wait=30.0, max_ack_pending=stream.max_ack_pending),
    )


def subject_location(subject: str) -> str:
    """The location a node report came from: its subject's last token (which only that node may
    publish)."""
    return subject.rsplit(".", 1)[-1]


async def settle(msg: Msg, *, ok: bool) -> None:
    """Acknowledge a stored message, or terminate a bad one (never redelivered). A lost ack is a
    redelivery, which the store refuses as a duplicate."""
    with contextlib.suppress(NatsError):
        await (msg.ack() if ok else msg.term())
