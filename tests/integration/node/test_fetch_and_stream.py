"""Subrequests through the node (limits, egress) and streamed responses, over real HTTP."""

from __future__ import annotations

import time

import httpx
import pytest

from edgefn.edge import EdgeNode

pytestmark = pytest.mark.integration


async def _fetcher(node: EdgeNode, url: str, n: int = 1) -> httpx.Response:
    async with httpx.AsyncClient(base_url=node.url, timeout=20) as c:
        return await c.get("/", params={"url": url, "n": n}, headers={"host": "fetcher.localhost"})


async def test_fetch_reaches_local_server(node: EdgeNode, upstream: str) -> None:
    resp = await _fetcher(node, upstream + "/hello")
    assert resp.status_code == 200
    assert resp.json() == {"status": 200, "bodies": ["upstream saw /hello from fetcher"]}


async def test_subrequest_limit(node: EdgeNode, upstream: str) -> None:
    ok = await _fetcher(node, upstream + "/a", n=3)
    assert ok.status_code == 200
    over = await _fetcher(node, upstream + "/a", n=4)
    assert over.status_code == 502
    assert over.json()["error"] == "SubrequestLimitError"
    assert "more than 3 subrequests" in over.json()["message"]


async def test_egress_denied(node: EdgeNode, upstream: str) -> None:
    port = upstream.rsplit(":", 1)[1]
    resp = await _fetcher(node, f"http://localhost:{port}/x")
    assert resp.status_code == 502
    assert resp.json()["error"] == "EgressDeniedError"
    assert "not in [egress] allow" in resp.json()["message"]


async def test_streamed_response_arrives_in_pieces(node: EdgeNode) -> None:
    arrivals: list[tuple[float, bytes]] = []
    async with (
        httpx.AsyncClient(base_url=node.url, timeout=20) as c,
        c.stream("GET", "/", headers={"host": "streamer.localhost"}) as resp,
    ):
        t0 = time.monotonic()
        async for chunk in resp.aiter_raw():
            arrivals.append((time.monotonic() - t0, chunk))
    assert b"".join(c for _, c in arrivals) == b"chunk 0\nchunk 1\nchunk 2\n"
    assert len(arrivals) >= 2
    # The first piece arrives well before the function finishes (it sleeps 0.3 s between chunks).
    assert arrivals[0][1].startswith(b"chunk 0")
    assert arrivals[-1][0] - arrivals[0][0] > 0.3
