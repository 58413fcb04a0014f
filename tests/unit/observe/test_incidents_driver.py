"""The incident driver on its own: rollups in, incidents in SQLite, webhooks to a real local
HTTP receiver (127.0.0.1) with retries and backoff; ack/resolve; a restart keeps the incidents."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgefn.control.events import LocationStatus
from edgefn.control.incidents_driver import IncidentsDriver, IncidentStore, Webhooks
from edgefn.errors import IncidentError
from edgefn.observe.incident_routes import Routes
from edgefn.observe.rollup import Accumulator, Rollup

T0 = 1_700_000_000_000


@dataclass
class Receiver:
    """A tiny HTTP server: answers the next ``statuses`` in turn (then 200), records bodies."""

    statuses: list[int] = field(default_factory=list)
    bodies: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        path = lines[0].split()[1]
        length = next(int(h.split(":")[1]) for h in lines if h.lower().startswith("content-length"))
        body = await reader.readexactly(length)
        self.bodies.append((path, json.loads(body)))
        status = self.statuses.pop(0) if self.statuses else 200
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    server = await asyncio.start_server(r.handle, "127.0.0.1", 0)
    r.port = server.sockets[0].getsockname()[1]
    try:
        yield r
    finally:
        server.close()
        await server.wait_closed()


async def _until(cond: object, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_webhooks_retry_with_backoff_and_give_up_on_a_refusal(receiver: Receiver) -> None:
    hooks = Webhooks(attempts=4, backoff_s=0.01, backoff_max_s=0.02)
    hooks.start()
    try:
        receiver.statuses = [503, 500, 200, 400]
        hooks.send(receiver.url("/a"), b'{"n": 1}')
        await _until(lambda: hooks.statistics().delivered_total == 1)
        assert [p for p, _ in receiver.bodies] == ["/a", "/a", "/a"]
        assert hooks.statistics().retries_total == 2
        hooks.send(receiver.url("/b"), b'{"n": 2}')
        await _until(lambda: hooks.statistics().failed_total == 1)
        assert [p for p, _ in receiver.bodies][3:] == ["/b"]  # a 400 is not tried again
        hooks.send("http://127.0.0.1:1/closed", b"{}")  # nothing listens: every attempt fails
        await _until(lambda: hooks.statistics().failed_total == 2)
        assert hooks.statistics().retries_total == 2 + 3
    finally:
        await hooks.stop()


def test_the_webhook_queue_is_bounded() -> None:
    hooks = Webhooks(queue_max=2)
    for i in range(5):
        hooks.send("http://127.0.0.1:1/", str(i).encode())
    assert (hooks.statistics().queued, hooks.statistics().dropped_total) == (2, 3)


def _failing_rollups(loc: str, ends_ms: list[int]) -> list[Rollup]:
    acc = Accumulator(location=loc, epoch="e", start_ms=ends_ms[0] - 5000)
    out = []
    for end_ms in ends_ms:
        for _ in range(30):
            acc.record("checkout", "v7", 500, "eu-west", 3.0)
        rollup = acc.cut(end_ms)
        assert rollup is not None
        out.append(rollup)
    return out


async def test_driver_opens_notifies_persists_and_takes_ack_and_resolve(
    receiver: Receiver, tmp_path: Path
) -> None:
    clock = [T0]
    seen = {"fra": T0, "ams": T0}
    regions = {"fra": "eu-west", "ams": "eu-west"}

    def locations() -> list[LocationStatus]:
        return [LocationStatus(k, regions[k], "", 1, 1, v, ()) for k, v in seen.items()]

    routes = Routes(default=receiver.url("/default"), regions={"eu-west": receiver.url("/eu")})
    db = tmp_path / "incidents.sqlite"
    driver = IncidentsDriver(
        IncidentStore(db),
        routes=routes,
        locations=locations,
        now_ms=lambda: clock[0],
        webhooks=Webhooks(backoff_s=0.01),
        tick_s=3600,  # the test ticks by hand
    )
    await driver.start()
    try:
        driver.tick()
        ends = [T0 + 5000, T0 + 10_000, T0 + 15_000]
        rollups = {loc: _failing_rollups(loc, ends) for loc in ("fra", "ams")}
        for i, end in enumerate(ends):
            clock[0] = end
            for loc in ("fra", "ams"):
                driver.on_rollup(rollups[loc][i])
        (inc,) = driver.store.recent()
        assert (inc.locations, inc.regions, inc.state) == (("ams", "fra"), ("eu-west",), "open")
        clock[0] += 7000
        seen = dict.fromkeys(seen, clock[0])
        driver.tick()
        await _until(lambda: len(receiver.bodies) == 1)
        path, body = receiver.bodies[0]
        assert (path, body["event"]) == ("/eu", "opened")
        assert body["incident"]["locations"] == ["ams", "fra"]  # type: ignore[index]
        # fra stops reporting: a connectivity incident, in its region's route too.
        clock[0] += 20_000
        seen["ams"] = clock[0]
        driver.tick()
        clock[0] += 7000
        seen["ams"] = clock[0]
        driver.tick()
        conn = driver.store.recent(limit=1)[0]
        assert (conn.kind, conn.locations) == ("connectivity", ("fra",))
        await _until(lambda: len(receiver.bodies) == 2)
        acked = driver.acknowledge(inc.id, by="ops (1)")
        assert acked.state == "acknowledged"
        with pytest.raises(IncidentError):
            driver.acknowledge(inc.id, by="ops (1)")
        assert driver.resolve(inc.id, by="ops (1)").state == "resolved"
        assert driver.store.get(inc.id).state == "resolved"  # type: ignore[union-attr]
    finally:
        await driver.stop()
        driver.store.close()
    # A restarted core: the unresolved incident is live again, ids continue.
    again = IncidentsDriver(IncidentStore(db), routes=routes, locations=list)
    assert [i.id for i in again.book.unresolved()] == [conn.id]
    assert again.book.next_id == conn.id + 1
    again.store.close()
