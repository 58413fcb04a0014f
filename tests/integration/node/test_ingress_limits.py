"""Connection-level ingress limits of a real node, spoken to over raw sockets on 127.0.0.1.

Idle keep-alive connections are closed after ``KEEPALIVE_IDLE_S``; a connection serves at most
``MAX_REQUESTS_PER_CONNECTION`` requests (the last answer says ``connection: close``); a request
whose Content-Length and Transfer-Encoding disagree is refused with 400 before it reaches a
function; headers must be complete within ``HEADER_TIMEOUT_S`` (408); and 200 clients trickling
headers or bodies byte by byte do not stop a normal client, while each of them is answered 408 or
closed at its deadline.
"""

from __future__ import annotations

import asyncio
import io
import json
import resource
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import edgefn.edge.listener as listener
import edgefn.edge.request_io as request_io
from edgefn.edge import EdgeNode
from edgefn.observe import JsonLog

pytestmark = pytest.mark.integration

HELLO = """
from edgefn import Response

async def fetch(request, env, ctx):
    return Response.text("hi " + str(len(await request.body())))
"""
GET = b"GET / HTTP/1.1\r\nHost: hi.localhost\r\n\r\n"


@pytest.fixture
async def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[EdgeNode]:
    monkeypatch.setattr(listener, "KEEPALIVE_IDLE_S", 1.0)
    monkeypatch.setattr(listener, "MAX_REQUESTS_PER_CONNECTION", 3)
    monkeypatch.setattr(listener, "HEADER_TIMEOUT_S", 2.0)
    monkeypatch.setattr(request_io, "BODY_GRACE_S", 2.0)
    fn = tmp_path / "hi"
    fn.mkdir()
    (fn / "edgefn.toml").write_text('name = "hi"\n[limits]\nmax_body_kb = 1\n')
    (fn / "main.py").write_text(HELLO)
    n = EdgeNode("test", state_dir=tmp_path / "node", log=JsonLog(io.StringIO()))
    await n.start()
    try:
        await n.deploy_dir(fn)
        yield n
    finally:
        await n.stop()


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def _closed(reader: asyncio.StreamReader, timeout_s: float) -> bool:
    async with asyncio.timeout(timeout_s):
        return await reader.read(1) == b""


async def test_idle_keep_alive_connection_is_closed(node: EdgeNode) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(GET)
        status, headers, body = await _response(reader)
        assert (status, body) == (200, b"hi 0")
        assert headers.get("connection") != "close"
        # Idle for KEEPALIVE_IDLE_S (1 s here): the node hangs up (bounded wait, not a sleep).
        assert await _closed(reader, timeout_s=10)
    finally:
        writer.close()


async def test_a_connection_serves_at_most_max_requests(node: EdgeNode) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        for i in range(3):
            writer.write(GET)
            status, headers, _ = await _response(reader)
            assert status == 200
            assert (headers.get("connection") == "close") == (i == 2), (i, headers)
        assert await _closed(reader, timeout_s=10)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        b"Content-Length: 5\r\nContent-Length: 6\r\n",
        b"Content-Length: 5, 6\r\n",
        b"Content-Length: -5\r\n",
        b"Transfer-Encoding: chunked, identity\r\n",
    ],
)
async def test_conflicting_body_framing_is_400(node: EdgeNode, framing: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(
            b"POST / HTTP/1.1\r\nHost: hi.localhost\r\n" + framing + b"\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        status, headers, body = await _response(reader)
        assert status == 400, body
        assert headers["content-type"] == "application/json"
        assert json.loads(body)["error"] == "bad_request"
        assert await _closed(reader, timeout_s=10)
    finally:
        writer.close()


async def _trickle(port: int, data: bytes, gap_s: float) -> bytes:
    """Send ``data`` a byte at a time; return what the node answered (b"" if it just closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for byte in data:
            if reader.at_eof() or writer.is_closing():
                break
            writer.write(bytes([byte]))
            try:
                async with asyncio.timeout(gap_s):
                    answer = await reader.read(4096)
                    return answer  # the node answered (or closed: b"") before we were done
            except TimeoutError:
                pass
        async with asyncio.timeout(30):
            return await reader.read(4096)
    except ConnectionError:
        return b""
    finally:
        writer.close()


async def test_200_slow_clients_do_not_stop_normal_traffic(node: EdgeNode) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Each slow client is two descriptors here (its socket and the node's end) plus the node's own.
    if soft < 1024:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    slow_headers = b"GET / HTTP/1.1\r\nHost: hi.localhost\r\nX-Pad: " + b"a" * 200 + b"\r\n\r\n"
    slow_body = (
        b"POST / HTTP/1.1\r\nHost: hi.localhost\r\nContent-Length: 1000\r\n\r\n" + b"b" * 1000
    )
    slow = [asyncio.ensure_future(_trickle(node.port, slow_headers, 0.25)) for _ in range(100)]
    # Body tricklers send their headers at once, then the body a byte at a time.
    slow += [asyncio.ensure_future(_body_trickle(node.port, slow_body)) for _ in range(100)]
    try:
        async with httpx.AsyncClient(base_url=node.url, headers={"host": "hi.localhost"}) as c:
            for _ in range(20):
                # Generous bound (the slow clients' deadlines are 2 s): an answer well inside it.
                ok = await c.post("/", content=b"12345", timeout=5)
                assert (ok.status_code, ok.text) == (200, "hi 5")
        answers = await asyncio.gather(*slow)
    finally:
        for task in slow:
            task.cancel()
    # Each was cut off at its deadline (2 s for headers; 2 s + 1 KiB at 64 KiB/s for the body),
    # not when it had finished trickling (200+ bytes at 4 per second would take over 50 s).
    header_answers, body_answers = answers[:100], answers[100:]
    assert all(a.startswith(b"HTTP/1.1 408") and b"header_timeout" in a for a in header_answers), {
        a[:80] for a in header_answers
    }
    assert all(a.startswith(b"HTTP/1.1 408") and b"body_timeout" in a for a in body_answers), {
        a[:80] for a in body_answers
    }


async def _body_trickle(port: int, request: bytes) -> bytes:
    head, _, body = request.partition(b"\r\n\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + b"\r\n\r\n")
        for byte in body:
            writer.write(bytes([byte]))
            try:
                async with asyncio.timeout(0.25):
                    return await reader.read(4096)
            except TimeoutError:
                pass
        return b"sent everything"
    except ConnectionError:
        return b""
    finally:
        writer.close()


async def test_an_endless_request_head_is_431_and_closed(node: EdgeNode) -> None:
    """Headers that never end are cut off at 128 KiB instead of being accumulated for ever."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: hi.localhost\r\n")
        for i in range(40):
            writer.write(f"x-h{i}: ".encode() + b"v" * 4096 + b"\r\n")
            if reader.at_eof():
                break
        status, _, body = await _response(reader)
        assert status == 431
        assert json.loads(body)["error"] == "headers_too_large"
        assert await _closed(reader, timeout_s=10)
    finally:
        writer.close()
