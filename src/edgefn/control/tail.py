"""The core's side of ``edgefn tail``: one tail session per HTTP client, over the core's NATS link.

:meth:`TailHub.open` draws a session id (16 hex digits), subscribes to
``tail_event_subject("*", session)`` and announces the session on ``TAIL_SESSIONS`` (the rules
and wire structs are in :mod:`edgefn.observe.tail`); a task renews the announcement every
``renew_s`` with ``ttl_ms`` (a few renewals' worth) while the stream is open. :meth:`TailHub.close`
stops renewing, unsubscribes and announces ``ttl_ms = 0`` so nodes stop at once; if that message is
lost, nodes stop when the last announcement expires.

Every event is decoded into a bounded :class:`~edgefn.observe.tail.TailEvent` and kept only if
its subject's location and session are the ones it names (NATS permissions bind the subject's
location to the publishing node) and it is about the session's function; anything else is
counted in ``rejected``. Kept events wait in a per-client queue of ``buffer_max``: a client that
reads too slowly loses events, counted and reported in the stream as a ``dropped`` line.

:meth:`TailHub.lines` is the NDJSON body: one ``session`` line first, then ``request`` lines, a
``dropped`` line after a loss, and a ``heartbeat`` line after ``heartbeat_s`` without events (so
a client can tell a quiet function from a dead core).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from nats.aio.client import Client

from edgefn.bus.subjects import TAIL_SESSIONS, tail_event_subject
from edgefn.control.errors import ControlError
from edgefn.observe.tail import TailAnnounce, TailEvent

__all__ = ["TailHub", "TailStream", "TooManyTails"]

RENEW_S: Final = 2.0
TTL_MS: Final = 6_000
BUFFER_MAX: Final = 1024
STREAMS_MAX: Final = 32
HEARTBEAT_S: Final = 5.0


class TooManyTails(ControlError):
    status = 503
    code = "too_many_tails"


@dataclass(slots=True)
class TailStream:
    """One open tail session of one HTTP client."""

    announce: TailAnnounce
    queue: asyncio.Queue[TailEvent]
    sub: Any = None
    renew: asyncio.Task[None] | None = None
    received: int = 0
    rejected: int = 0
    dropped: int = 0
    reported_dropped: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def session(self) -> str:
        return self.announce.session


class TailHub:
    """The core's open tail sessions (at most ``streams_max``)."""

    def __init__(
        self,
        nc: Client,
        *,
        renew_s: float = RENEW_S,
        ttl_ms: int = TTL_MS,
        buffer_max: int = BUFFER_MAX,
        streams_max: int = STREAMS_MAX,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        assert 0 < renew_s * 1000 < ttl_ms
        self._nc = nc
        self.renew_s, self.ttl_ms, self.buffer_max = renew_s, ttl_ms, buffer_max
        self.streams_max, self.heartbeat_s = streams_max, heartbeat_s
        self._streams: dict[str, TailStream] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def streams(self) -> int:
        return len(self._streams)

    async def open(
        self,
        function: str,
        *,
        status_class: int = 0,
        locations: tuple[str, ...] = (),
        search: str = "",
        sample: float = 1.0,
    ) -> TailStream:
        if len(self._streams) >= self.streams_max:
            raise TooManyTails(
                f"{self.streams_max} tail sessions are open at this core",
                hint="close another `edgefn tail` or try again later",
            )
        announce = TailAnnounce(
            session=os.urandom(8).hex(),
            function=function,
            ttl_ms=self.ttl_ms,
            status_class=status_class,
            locations=locations,
            search=search,
            sample=sample,
        )
        stream = TailStream(announce, asyncio.Queue(maxsize=self.buffer_max))
        self._streams[stream.session] = stream

        async def on_event(msg: Any) -> None:
            self._receive(stream, msg.subject, msg.data)

        stream.sub = await self._nc.subscribe(tail_event_subject("*", stream.session), cb=on_event)
        await self._announce(announce)
        stream.renew = asyncio.create_task(self._renew(stream), name="tail-renew")
        return stream

    def _receive(self, stream: TailStream, subject: str, data: bytes) -> None:
        try:
            event = msgspec.json.decode(data, type=TailEvent)
        except msgspec.DecodeError:
            stream.rejected += 1
            return
        parts = subject.split(".")
        if (
            len(parts) != 4
            or parts[2] != event.location
            or parts[3] != event.session
            or event.session != stream.session
            or event.function != stream.announce.function
        ):
            stream.rejected += 1
            return
        stream.received += 1
        try:
            stream.queue.put_nowait(event)
        except asyncio.QueueFull:
            stream.dropped += 1

    async def _announce(self, announce: TailAnnounce) -> None:
        await self._nc.publish(TAIL_SESSIONS, msgspec.json.encode(announce))

    async def _renew(self, stream: TailStream) -> None:
        while True:
            await asyncio.sleep(self.renew_s)
            with contextlib.suppress(Exception):  # a lost renewal: the next one may pass
                await self._announce(stream.announce)

    async def close(self, stream: TailStream) -> None:
        """Stop renewing, unsubscribe, and tell the nodes the session is over."""
        self._streams.pop(stream.session, None)
        if stream.renew is not None:
            stream.renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stream.renew
        with contextlib.suppress(Exception):
            if stream.sub is not None:
                await stream.sub.unsubscribe()
            await self._announce(msgspec.structs.replace(stream.announce, ttl_ms=0))

    def close_soon(self, stream: TailStream) -> None:
        """:meth:`close` in a task of its own (from a cancelled HTTP handler); frees the slot now."""
        self._streams.pop(stream.session, None)
        task = asyncio.get_running_loop().create_task(self.close(stream), name="tail-close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def lines(self, stream: TailStream) -> AsyncIterator[bytes]:
        """The NDJSON body of one client's tail (the caller closes the stream)."""
        enc = msgspec.json.Encoder()
        head = {"type": "session", "session": stream.session, "function": stream.announce.function}
        yield enc.encode(head) + b"\n"
        while True:
            try:
                event = await asyncio.wait_for(stream.queue.get(), timeout=self.heartbeat_s)
            except TimeoutError:
                yield b'{"type":"heartbeat"}\n'
                continue
            if stream.dropped > stream.reported_dropped:
                lost = stream.dropped - stream.reported_dropped
                stream.reported_dropped = stream.dropped
                yield enc.encode({"type": "dropped", "count": lost}) + b"\n"
            line = {"type": "request", **msgspec.structs.asdict(event)}
            del line["session"]
            yield enc.encode(line) + b"\n"
