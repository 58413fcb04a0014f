"""The anycast entry in front of real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from anycast_fakes import FakeLocation, StartLocation

from edgefn.bus import free_port
from edgefn.errors import PlanetError
from edgefn.planet._anycast_choice import EntryLocation
from edgefn.planet.anycast import AnycastEntry

pytestmark = pytest.mark.integration

FRA = (50.0333, 8.5706)
NRT = (35.7647, 140.386)
IAD = (38.9445, -77.4558)


def entry_row(location: FakeLocation, lat_lon: tuple[float, float]) -> EntryLocation:
    return EntryLocation(location.name, lat_lon[0], lat_lon[1], location.url)


@pytest.fixture
async def three(start_location: StartLocation) -> dict[str, FakeLocation]:
    return {name: await start_location(name) for name in ("fra", "nrt", "iad")}


@pytest.fixture
async def entry(three: dict[str, FakeLocation]) -> AsyncIterator[AnycastEntry]:
    rows = [
        entry_row(three["fra"], FRA),
        entry_row(three["nrt"], NRT),
        entry_row(three["iad"], IAD),
    ]
    proxy = AnycastEntry(rows, port=0, probe_interval_s=0.05)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


async def get(entry: AnycastEntry, path: str = "/x", **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        return await client.get(entry.url + path, headers=headers)


@pytest.mark.parametrize(
    ("where", "expected"),
    [("NRT", "nrt"), ("Tokyo", "nrt"), ("40.7,-74.0", "iad"), ("Paris", "fra"), (None, "fra")],
)
async def test_each_client_goes_to_its_nearest_location(
    entry: AnycastEntry, where: str | None, expected: str
) -> None:
    headers = {} if where is None else {"x-edgefn-client-location": where}
    resp = await get(entry, **headers)
    assert resp.status_code == 200
    assert resp.json()["location"] == expected
    assert resp.headers["x-edgefn-entry"] == expected


async def test_request_headers_are_cleaned_and_annotated(
    entry: AnycastEntry, three: dict[str, FakeLocation]
) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        resp = await client.get(
            f"{entry.url}/some/path?a=1&b=2",
            headers={
                "host": "hello.localhost",
                "x-edgefn-client-location": "40.7,-74",
                "x-edgefn-hop": "3",
                "x-edgefn-forwarded-for": "evil",
                "x-edgefn-entry": "spoofed",
                "x-custom": "kept",
            },
        )
    seen = resp.json()
    assert (seen["path"], seen["query"]) == ("/some/path", "a=1&b=2")
    headers = seen["headers"]
    assert headers["host"] == "hello.localhost"
    assert headers["x-edgefn-client-location"] == "40.7000,-74.0000"
    assert headers["x-edgefn-entry"] == "iad"
    assert headers["x-custom"] == "kept"
    assert "x-edgefn-hop" not in headers
    assert "x-edgefn-forwarded-for" not in headers
    assert resp.headers["x-edgefn-location"] == "iad"  # The location's own headers come back.


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("sent", "passed"),
    [
        ({"traceparent": TRACEPARENT, "tracestate": "a=b"}, {"traceparent": TRACEPARENT,
                                                            "tracestate": "a=b"}),
        ({"traceparent": TRACEPARENT, "tracestate": "no good"}, {"traceparent": TRACEPARENT}),
        ({"traceparent": "00-nothex-01", "tracestate": "a=b"}, {}),
        ({"tracestate": "a=b"}, {}),
    ],
)  # fmt: skip
async def test_trace_context_passes_only_when_valid(
    entry: AnycastEntry, sent: dict[str, str], passed: dict[str, str]
) -> None:
    """A valid traceparent (and well-formed tracestate) reaches the location; an invalid one is
    dropped (the node starts a new trace), and the request is answered as usual."""
    resp = await get(entry, **sent)
    assert resp.status_code == 200
    headers = resp.json()["headers"]
    assert {k: headers[k] for k in ("traceparent", "tracestate") if k in headers} == passed


async def test_bad_client_location_is_a_400_with_json(entry: AnycastEntry) -> None:
    for bad in ("Atlantis", "91,0", "12,abc,3"):
        resp = await get(entry, **{"x-edgefn-client-location": bad})
        assert resp.status_code == 400, bad
        body = resp.json()
        assert body["error"] == "bad_client_location"
        assert "x-edgefn-client-location" in body["detail"]
    assert entry.statistics().bad_client_location_total == 3


async def test_unhealthy_location_is_skipped_until_it_recovers(
    entry: AnycastEntry, three: dict[str, FakeLocation]
) -> None:
    three["fra"].healthy = False
    await entry.wait_health("fra", healthy=False)
    resp = await get(entry)  # Default client: Frankfurt; next nearest is iad.
    assert resp.json()["location"] == "iad"
    three["fra"].healthy = True
    await entry.wait_health("fra", healthy=True)
    assert (await get(entry)).json()["location"] == "fra"


async def test_no_healthy_location_is_a_503_with_retry_after(
    entry: AnycastEntry, three: dict[str, FakeLocation]
) -> None:
    for location in three.values():
        location.healthy = False
    for name in three:
        await entry.wait_health(name, healthy=False)
    resp = await get(entry)
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "1"
    assert resp.json()["error"] == "no_healthy_location"


async def test_connect_failure_retries_once_on_the_next_nearest(
    three: dict[str, FakeLocation],
) -> None:
    dead = EntryLocation("par", 48.86, 2.35, f"http://127.0.0.1:{free_port()}")
    rows = [dead, entry_row(three["fra"], FRA), entry_row(three["iad"], IAD)]
    # Probes far apart, so the request (not a probe) discovers that par is down.
    async with AnycastEntry(rows, port=0, probe_interval_s=30) as proxy:
        resp = await get(proxy, **{"x-edgefn-client-location": "Paris"})
        assert resp.status_code == 200
        assert resp.json()["location"] == "fra"
        stats = proxy.statistics()
        assert stats.retries_total == 1
        assert dict(stats.requests_by_entry) == {"fra": 1}
        assert not next(h for h in stats.locations if h.location.id == "par").healthy


async def test_two_failed_connects_are_a_502(start_location: StartLocation) -> None:
    rows = [
        EntryLocation("par", 48.86, 2.35, f"http://127.0.0.1:{free_port()}"),
        EntryLocation("ams", 52.31, 4.76, f"http://127.0.0.1:{free_port()}"),
    ]
    async with AnycastEntry(rows, port=0, probe_interval_s=30) as proxy:
        resp = await get(proxy)
        assert resp.status_code == 502
        assert resp.json()["error"] == "bad_gateway"
        assert "par" in resp.json()["detail"]


async def test_bodies_stream_through_both_ways(entry: AnycastEntry) -> None:
    blob = os.urandom(3 * 1024 * 1024)

    async def chunks() -> AsyncIterator[bytes]:
        for offset in range(0, len(blob), 256 * 1024):
            yield blob[offset : offset + 256 * 1024]

    async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
        resp = await client.post(f"{entry.url}/upload", content=chunks())
        assert resp.json()["size"] == len(blob)
        assert resp.json()["sha256"] == hashlib.sha256(blob).hexdigest()
        async with client.stream("GET", f"{entry.url}/download?chunks=200") as stream:
            got = b"".join([chunk async for chunk in stream.aiter_bytes()])
    assert got == b"".join(i.to_bytes(4, "big") * 4096 for i in range(200))


async def test_locations_can_be_replaced_at_run_time(
    entry: AnycastEntry, three: dict[str, FakeLocation]
) -> None:
    entry.set_locations([entry_row(three["nrt"], NRT)])
    assert (await get(entry)).json()["location"] == "nrt"
    entry.set_locations([entry_row(three["iad"], IAD), entry_row(three["nrt"], NRT)])
    assert (await get(entry)).json()["location"] == "iad"


async def test_emulated_rtt_delays_the_request(three: dict[str, FakeLocation]) -> None:
    rows = [entry_row(three["nrt"], NRT)]
    async with AnycastEntry(rows, port=0, emulate_rtt=True, probe_interval_s=30) as proxy:
        loop = asyncio.get_running_loop()
        start = loop.time()
        resp = await get(proxy, **{"x-edgefn-client-location": "fra"})
        elapsed_ms = (loop.time() - start) * 1000
        assert resp.json()["location"] == "nrt"
        # Frankfurt to Tokyo is modelled at well over 100 ms.
        assert elapsed_ms >= 100
        assert elapsed_ms < 5000


async def test_a_taken_port_is_a_clear_error(three: dict[str, FakeLocation]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        proxy = AnycastEntry([entry_row(three["fra"], FRA)], port=holder.getsockname()[1])
        with pytest.raises(PlanetError, match="cannot listen") as info:
            await proxy.start()
        assert "port" in info.value.hint
        await proxy.close()
