"""The node's live-tail driver: session announcements in, sampled request events out.

:class:`TailPublisher` carries out a :class:`~edgefn.observe.tail.TailTap` (the pure part: sessions,
filters, sampling, the bounded queue; see that module for the rules). It holds its own NATS
connection (``tail-<location>``), subscribes to ``TAIL_SESSIONS`` and feeds every announcement that
decodes into a bounded :class:`~edgefn.observe.tail.TailAnnounce` to the tap; anything else is
dropped (NATS permissions let only the core's ``control`` user publish there). Console lines go
through the node log's redactor before the tap keeps them. The request path calls :meth:`watching` (a dict lookup) on every request and
:meth:`offer` only for a watched function; :meth:`offer` queues in the tap and wakes the publish
loop, which sends queued events on ``tail_event_subject(location, session)`` in batches of at most
``BATCH`` and expires sessions every ``EXPIRE_S``. Nothing here blocks the request path: a full
queue drops (and counts) in the tap, and publishing happens in the loop's own task.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import Any, Final

import msgspec

from edgefn.edge._clock import mono_ms, wall_ms
from edgefn.observe.tail import TailAnnounce, TailBudget, TailRequest, TailStatistics, TailTap

__all__ = ["TailPublisher"]

BATCH: Final = 256
EXPIRE_S: Final = 0.5
CONNECT_RETRY_S: Final = 1.0


class TailPublisher:
    """One node's tail: ``await start(nats_urls)``; ``watching``/``offer``/``log``; ``await stop()``."""

    def __init__(
        self,
        location: str,
        *,
        budget: TailBudget | None = None,
        seed: int = 0,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self.location = location
        # The node log's redactor: secret values never leave the node in a console line.
        self._redact = redact
        self.tap = TailTap(location, budget=budget or TailBudget(), rng=random.Random(seed))
        self._wake = asyncio.Event()
        self._nc: Any = None
        self._task: asyncio.Task[None] | None = None
        self.rejected_announcements = 0
        self.lost_disconnected = 0

    # -- the request path's side -----------------------------------------------------------
    def watching(self, function: str) -> bool:
        return self.tap.watching(function)

    def offer(self, req: TailRequest) -> None:
        if self.tap.offer(req, mono_ms()):
            self._wake.set()

    def log(self, function: str, request_id: str, level: str, message: str) -> None:
        # Redacted before the tap cuts the line short, so no part of a value slips through.
        text = self._redact(message) if self._redact is not None else message
        self.tap.log(function, request_id, level, text)

    @staticmethod
    def stamp() -> int:
        """The wall-clock time an event carries (ms)."""
        return wall_ms()

    def statistics(self) -> TailStatistics:
        return self.tap.statistics()

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, nats_urls: list[str]) -> None:
        """Connect in the background (retrying) and run the publish loop."""
        self._task = asyncio.create_task(self._run(nats_urls), name="tail-publisher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.close()

    async def _run(self, nats_urls: list[str]) -> None:
        # lazy: edgefn.bus (NATS client) costs ~0.2 s at start; see edgefn.edge.traffic_bus.
        from edgefn.bus.jetstream import connect
        from edgefn.bus.subjects import TAIL_SESSIONS

        while self._nc is None:
            try:
                self._nc = await connect(nats_urls, name=f"tail-{self.location}")
            except Exception:  # keep serving; a tail is not worth failing the node for
                await asyncio.sleep(CONNECT_RETRY_S)
        await self._nc.subscribe(TAIL_SESSIONS, cb=self._on_announce)
        await self._publish_loop()

    async def _on_announce(self, msg: Any) -> None:
        try:
            announce = msgspec.json.decode(msg.data, type=TailAnnounce)
        except msgspec.DecodeError:
            self.rejected_announcements += 1
            return
        self.tap.announce(announce, mono_ms())

    async def _publish_loop(self) -> None:
        # lazy: as in _run.
        from edgefn.bus.subjects import tail_event_subject

        encoder = msgspec.json.Encoder()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=EXPIRE_S)
            self._wake.clear()
            self.tap.expire(mono_ms())
            while batch := self.tap.take(BATCH):
                if not self._nc.is_connected:
                    # Cut off from the hub: these are lost (a tail is live, not a log).
                    self.lost_disconnected += len(batch)
                    continue
                for event in batch:
                    subject = tail_event_subject(self.location, event.session)
                    await self._nc.publish(subject, encoder.encode(event))
