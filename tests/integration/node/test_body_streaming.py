"""Request and response bodies stream both ways in bounded chunks, with no frame-size cliff.

A real node (uvicorn, zygote, forked sandboxed workers) on 127.0.0.1. Bodies up to the largest
``max_body_kb`` (15 MiB) go up, 24 MiB come down; the function sees an upload in pieces of at most
one chunk and the node sends no more than a window ahead of the function's reading. Every way a body
can go wrong (over the limit mid-stream, the client leaving mid-body) frees the request's worker
slot, its context and its admission slot.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from tests.waiting import until

from edgefn.edge import EdgeNode, FunctionTable
from edgefn.edge.traffic import TrafficDriver
from edgefn.edge.traffic_config import PeerLocation, TrafficConfig
from edgefn.observe import JsonLog
from edgefn.runtime import protocol as p

pytestmark = pytest.mark.integration

FUNCTIONS = Path(__file__).parent / "functions"
HOST = {"host": "bodies.localhost"}
MiB = 1024 * 1024


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[EdgeNode]:
    table = FunctionTable()
    # Admission in the path, as on a planet node, so the tests can see its slots come back.
    traffic = TrafficDriver(
        TrafficConfig(
            location="test", secret=b"s" * 32, locations=(PeerLocation("test", "", 0, 0),)
        ),
        functions=lambda: frozenset(table.functions),
    )
    n = EdgeNode(
        "test",
        state_dir=tmp_path / "node",
        log=JsonLog(io.StringIO(), location="test"),
        table=table,
        traffic=traffic,
    )
    await n.start()
    try:
        await n.deploy_dir(FUNCTIONS / "bodies")
        small = tmp_path / "small"
        small.mkdir()
        (small / "edgefn.toml").write_text('name = "small"\n[limits]\nmax_body_kb = 100\n')
        (small / "main.py").write_text(
            "from edgefn import Response\n\n"
            "async def fetch(request, env, ctx):\n"
            "    return Response.json({'bytes': len(await request.body())})\n"
        )
        await n.deploy_dir(small)
        yield n
    finally:
        await n.stop()


def _busy(node: EdgeNode) -> dict[str, int]:
    """What a request holds while it runs; all zero when every request has let go."""
    assert node.traffic is not None
    return {
        "worker_slots": sum(len(w.inflight) for w in node.pool.workers.values()),
        "policy_inflight": node.pool.policy.statistics().inflight,
        "contexts": len(node._requests),
        "admission": node.traffic.statistics().admission_inflight,
    }


async def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """The shared poll (tests/waiting.py) with this module's default deadline."""
    await until(condition, timeout_s=timeout_s, what=what)


async def test_15_mib_goes_up_in_chunks_and_back_whole(node: EdgeNode) -> None:
    """The largest allowed body reaches the function intact in pieces of at most one chunk, and
    echoed whole (a 15 MiB `Response(bytes)`) comes back intact: no frame ever holds a body."""
    data = os.urandom(15 * MiB)
    async with httpx.AsyncClient(base_url=node.url, headers=HOST, timeout=60) as c:
        streamed = await c.post("/", params={"mode": "sha"}, content=data)
        assert streamed.status_code == 200, streamed.text
        assert streamed.json() == {
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "biggest_chunk": p.CHUNK_BYTES,
        }
        echoed = await c.post("/", params={"mode": "echo"}, content=data)
        assert echoed.status_code == 200, echoed.text[:200]
        assert len(echoed.content) == len(data)
        assert echoed.content == data
        parsed = await c.post("/", params={"mode": "json"}, json={"k": "v" * 200_000})
        assert parsed.json() == {"k": "v" * 200_000}
    assert _busy(node) == dict.fromkeys(_busy(node), 0)


async def test_24_mib_stream_comes_down(node: EdgeNode) -> None:
    block = bytes(range(256)) * 4096
    digest = hashlib.sha256()
    total = 0
    async with (
        httpx.AsyncClient(base_url=node.url, headers=HOST, timeout=60) as c,
        c.stream("GET", "/", params={"mode": "download", "mib": 24}) as resp,
    ):
        assert resp.status_code == 200
        async for piece in resp.aiter_bytes():
            digest.update(piece)
            total += len(piece)
    assert total == 24 * MiB
    assert digest.hexdigest() == hashlib.sha256(block * 24).hexdigest()


async def test_the_node_sends_no_more_than_a_window_ahead_of_the_function(node: EdgeNode) -> None:
    """The function stops reading after its first piece: the node stops at the credit window (the
    client's upload waits) instead of pushing all 8 MiB at the worker, then the rest follows."""
    data = os.urandom(8 * MiB)
    async with httpx.AsyncClient(base_url=node.url, headers=HOST, timeout=60) as c:
        upload = asyncio.ensure_future(c.post("/", params={"mode": "sha", "hold": 3}, content=data))

        def credits() -> list[int]:
            return [i.credit for w in node.pool.workers.values() for i in w.inflight.values()]

        await _wait_for(lambda: any(x < p.CHUNK_BYTES for x in credits()), "the window to fill")
        assert all(x >= 0 for x in credits())
        assert not upload.done()
        resp = await upload
    assert resp.json()["sha256"] == hashlib.sha256(data).hexdigest()


async def test_over_the_limit_mid_stream_is_413_and_frees_every_slot(node: EdgeNode) -> None:
    """A chunked upload (no Content-Length) that grows past max_body_kb while the function already
    runs: 413 body_too_large with the request id and what to do; nothing stays held."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"x" * 16384  # 1 MiB in all, the limit is 100 KiB

    small = {"host": "small.localhost"}
    async with httpx.AsyncClient(base_url=node.url, headers=small, timeout=20) as c:
        resp = await c.post("/", content=chunks())
        declared = await c.post("/", content=b"x" * 200_000)
        ok = await c.post("/", content=b"x" * 100 * 1024)
    for answer in (resp, declared):
        assert answer.status_code == 413
        body = answer.json()
        assert body["error"] == "body_too_large"
        assert body["request_id"] == answer.headers["x-edgefn-request-id"]
        assert "max_body_kb = 100" in body["hint"]
    assert ok.json() == {"bytes": 100 * 1024}
    await _wait_for(lambda: not any(_busy(node).values()), f"slots to be freed: {_busy(node)}")


async def test_a_client_leaving_mid_body_frees_every_slot(node: EdgeNode) -> None:
    """The client announces 4 MiB, sends 300 KiB (so the function is already reading it) and
    closes: the request is cancelled in the worker and every slot comes back; the worker serves on."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    writer.write(
        b"POST /?mode=sha HTTP/1.1\r\nHost: bodies.localhost\r\n"
        b"Content-Length: 4194304\r\n\r\n" + b"y" * 300 * 1024
    )
    await writer.drain()
    await _wait_for(lambda: _busy(node)["worker_slots"] == 1, "the function to start")
    writer.close()
    await writer.wait_closed()
    await _wait_for(lambda: not any(_busy(node).values()), f"slots to be freed: {_busy(node)}")
    async with httpx.AsyncClient(base_url=node.url, headers=HOST, timeout=20) as c:
        again = await c.post("/", params={"mode": "sha"}, content=b"z" * 200_000)
    assert json.loads(again.content)["bytes"] == 200_000
    del reader
