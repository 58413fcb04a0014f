"""Fuzz the node's HTTP ingress with raw malformed requests over a real socket.

Every request must get a 4xx answer or a closed connection (never a 5xx or a hang), and the node
must still serve a normal request afterwards.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefn.edge import EdgeNode
from edgefn.observe import JsonLog

pytestmark = pytest.mark.integration

FUNCTIONS = Path(__file__).parent.parent / "integration" / "node" / "functions"
OK = b"GET /echo HTTP/1.1\r\nhost: errors.localhost\r\ncontent-length: 0\r\n\r\n"

MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET / HTTP/9.9\r\nhost: errors.localhost\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\nhost: errors.localhost\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: errors.localhost\r\nx-big: " + b"a" * 200_000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: errors.localhost\r\n" + b"x: y\r\n" * 5000 + b"\r\n",
    b"GET / HTTP/1.1\r\nhost: errors.localhost\r\nbad header\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: errors.localhost\r\nx-ctl: a\x01\x7fb\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: errors.localhost\r\n\xff\xfe: \xc0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nhost: errors.localhost\r\ncontent-length: 5\r\n"
    b"content-length: 7\r\n\r\nhello",
    b"POST /echo HTTP/1.1\r\nhost: errors.localhost\r\ncontent-length: 5\r\n"
    b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nhost: errors.localhost\r\ntransfer-encoding: chunked\r\n\r\n"
    b"zz\r\nhello\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nhost: errors.localhost\r\ntransfer-encoding: chunked\r\n\r\n"
    b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nhost: errors.localhost\r\ncontent-length: -1\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nhost: errors.localhost\r\ncontent-length: 99999999999999999999\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nhost: errors.localhost\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: \xff\xfe.localhost\r\n\r\n",
    b"GET http://errors.localhost/echo HTTP/1.1\r\nhost: other\r\n\r\n",
    b"\r\n\r\n\r\n",
]


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[EdgeNode]:
    n = EdgeNode("test", state_dir=tmp_path / "node", log=JsonLog(io.StringIO(), location="test"))
    await n.start()
    await n.deploy_dir(FUNCTIONS / "errors")
    try:
        yield n
    finally:
        await n.stop()


async def _exchange(node: EdgeNode, raw: bytes) -> bytes:
    """Send ``raw``, half-close, and return what the node answered (b"" if it just closed)."""
    reader, writer = await asyncio.open_connection(node.host, node.port)
    try:
        writer.write(raw)
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        return await asyncio.wait_for(reader.read(65536), timeout=10)
    except ConnectionError:
        return b""
    finally:
        writer.close()


def _assert_no_server_error(answer: bytes) -> None:
    if not answer:
        return  # closed: fine
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 "), answer[:200]
    status = int(status_line.split()[1])
    assert status < 500, answer[:500]
    if status >= 400 and b"application/json" in answer.lower():
        assert b'"error"' in answer


async def _still_serves(node: EdgeNode) -> None:
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as c:
        resp = await c.get("/", headers={"host": "errors.localhost"})
    assert resp.status_code == 200
    assert resp.json()["ok"] is True


async def test_malformed_requests_get_4xx_or_close(node: EdgeNode) -> None:
    """One node for the whole corpus (a node per case costs a zygote start each)."""
    for raw in MALFORMED:
        _assert_no_server_error(await _exchange(node, raw))
        await _still_serves(node)
    await _still_serves(node)


PARTS = st.sampled_from([
    b"GET", b"POST", b"G\x00T", b" ", b"/", b"/echo", b"/%ff", b"HTTP/1.1", b"HTTP/1.0", b"\r\n",
    b"\n", b"host: errors.localhost", b"host:", b"content-length: 3", b"content-length: x",
    b"transfer-encoding: chunked", b"3\r\nabc", b"0\r\n\r\n", b":", b"\xff", b"\r\n\r\n",
])  # fmt: skip


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(PARTS | st.binary(max_size=16), max_size=14))
async def test_fuzzed_requests_get_4xx_or_close(node: EdgeNode, parts: list[bytes]) -> None:
    _assert_no_server_error(await _exchange(node, b"".join(parts)))
    await _still_serves(node)
