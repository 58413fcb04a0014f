"""The core's tail sessions (edgefn.control.tail) on a fake bus: announce, renew, check, close."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from tests.waiting import until

from edgefn.bus.subjects import TAIL_SESSIONS, tail_event_subject
from edgefn.control.tail import TailHub, TooManyTails
from edgefn.observe.tail import TailAnnounce, TailEvent


class FakeSub:
    def __init__(self, bus: FakeBus, subject: str) -> None:
        self.bus, self.subject = bus, subject

    async def unsubscribe(self) -> None:
        self.bus.subs.pop(self.subject, None)


class FakeBus:
    """Records publishes; hands a test's messages to the one subscriber of a subject."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.subs: dict[str, Any] = {}

    async def subscribe(self, subject: str, cb: Any) -> FakeSub:
        self.subs[subject] = cb
        return FakeSub(self, subject)

    async def publish(self, subject: str, data: bytes) -> None:
        self.published.append((subject, data))

    def announcements(self) -> list[TailAnnounce]:
        return [
            msgspec.json.decode(d, type=TailAnnounce)
            for s, d in self.published
            if s == TAIL_SESSIONS
        ]


class Msg:
    def __init__(self, subject: str, data: bytes) -> None:
        self.subject, self.data = subject, data


def _event(session: str, location: str = "fra", function: str = "hello") -> bytes:
    return msgspec.json.encode(
        TailEvent(
            session=session,
            request_id="r1",
            ts_ms=1,
            location=location,
            function=function,
            version="v1",
            method="GET",
            path="/",
            status=200,
            duration_ms=1.0,
            cold=False,
            client="",
            sample=1.0,
        )
    )


async def _lines(hub: TailHub, stream: Any, n: int) -> list[dict[str, Any]]:
    out = []
    gen = hub.lines(stream)
    async for line in gen:
        out.append(json.loads(line))
        if len(out) == n:
            break
    await gen.aclose()
    return out


async def test_a_session_is_announced_renewed_and_closed() -> None:
    bus = FakeBus()
    hub = TailHub(bus, renew_s=0.01, ttl_ms=1000)  # type: ignore[arg-type]
    stream = await hub.open("hello", status_class=5, locations=("fra",), search="pay", sample=0.5)
    await until(lambda: len(bus.announcements()) >= 3, timeout_s=10, what="two renewals")
    first, *renewals = bus.announcements()
    assert (first.function, first.status_class, first.locations, first.search, first.sample) == (
        "hello",
        5,
        ("fra",),
        "pay",
        0.5,
    )
    assert renewals
    assert all(a == first for a in renewals)
    assert tail_event_subject("*", stream.session) in bus.subs
    await hub.close(stream)
    assert bus.announcements()[-1].ttl_ms == 0
    assert not bus.subs
    assert hub.streams() == 0


async def test_events_are_checked_against_their_subject_and_session() -> None:
    bus = FakeBus()
    hub = TailHub(bus)  # type: ignore[arg-type]
    stream = await hub.open("hello")
    cb = bus.subs[tail_event_subject("*", stream.session)]
    s = stream.session
    await cb(Msg(tail_event_subject("ams", s), _event(s, location="fra")))  # claims another place
    await cb(Msg(tail_event_subject("fra", s), _event("f" * 16)))  # another session's
    await cb(Msg(tail_event_subject("fra", s), _event(s, function="other")))
    await cb(Msg(tail_event_subject("fra", s), b'{"session": 1}'))
    await cb(Msg(tail_event_subject("fra", s), _event(s)))
    assert (stream.received, stream.rejected) == (1, 4)
    head, event = await _lines(hub, stream, 2)
    assert head == {"type": "session", "session": s, "function": "hello"}
    assert event["type"] == "request"
    assert event["location"] == "fra"
    assert "session" not in event
    await hub.close(stream)


async def test_a_slow_client_loses_events_and_is_told() -> None:
    bus = FakeBus()
    hub = TailHub(bus, buffer_max=2)  # type: ignore[arg-type]
    stream = await hub.open("hello")
    cb = bus.subs[tail_event_subject("*", stream.session)]
    for _ in range(5):
        await cb(Msg(tail_event_subject("fra", stream.session), _event(stream.session)))
    lines = await _lines(hub, stream, 4)
    assert [line["type"] for line in lines] == ["session", "dropped", "request", "request"]
    assert lines[1]["count"] == 3
    await hub.close(stream)


async def test_a_quiet_stream_sends_heartbeats() -> None:
    hub = TailHub(FakeBus(), heartbeat_s=0.01)  # type: ignore[arg-type]
    stream = await hub.open("hello")
    assert [line["type"] for line in await _lines(hub, stream, 2)] == ["session", "heartbeat"]
    await hub.close(stream)


async def test_open_sessions_are_bounded() -> None:
    bus = FakeBus()
    hub = TailHub(bus, streams_max=1)  # type: ignore[arg-type]
    stream = await hub.open("hello")
    with pytest.raises(TooManyTails, match="1 tail sessions are open"):
        await hub.open("hello")
    hub.close_soon(stream)
    assert hub.streams() == 0  # at once: a new client may open right away
    await until(lambda: bus.announcements()[-1].ttl_ms == 0, timeout_s=10, what="the goodbye")
    assert not bus.subs
