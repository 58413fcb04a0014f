"""Whatever a worker sends, a client gets a well-formed response: a hostile function that writes
raw frames (bypassing the SDK) with an impossible status, a header that would split the response,
an invalid name, non-latin-1 text or a lying Content-Length gets ``500 bad_response``, and the
node goes on serving."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from edgefn.edge import EdgeNode
from edgefn.observe import JsonLog

pytestmark = pytest.mark.integration

HOSTILE = """
import asyncio
import gc

from edgefn import Response
from edgefn.runtime import protocol as p
from edgefn.runtime import worker as w

CASES = {
    "status": (99999, []),
    "informational": (101, []),
    "split": (200, [("x-a", "1\\r\\nset-cookie: evil=1")]),
    "name": (200, [("bad name", "1")]),
    "latin": (200, [("x-a", "\\u65e5\\u672c")]),
    "many": (200, [(f"x-{i}", "v") for i in range(500)]),
    "huge": (200, [("x-a", "v" * 100_000)]),
}


async def fetch(request, env, ctx):
    kind = request.query.get("kind", "")
    if kind == "length":
        return Response("short", headers={"content-length": "999", "x-edgefn-location": "fake"})
    if kind not in CASES:
        return Response.text("fine")
    wk = next(o for o in gc.get_objects() if isinstance(o, w.Worker))
    status, headers = CASES[kind]
    wk.send(p.Respond(w.current_invoke_id.get(), status, headers, b"body"))
    raise asyncio.CancelledError
"""


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[EdgeNode]:
    fn = tmp_path / "hostile"
    fn.mkdir()
    (fn / "edgefn.toml").write_text('name = "hostile"\nmain = "main.py"\n')
    (fn / "main.py").write_text(HOSTILE)
    n = EdgeNode("test", state_dir=tmp_path / "node", log=JsonLog(io.StringIO()))
    await n.start()
    await n.deploy_dir(fn)
    try:
        yield n
    finally:
        await n.stop()


@pytest.mark.parametrize(
    "kind", ["status", "informational", "split", "name", "latin", "many", "huge"]
)
async def test_a_malformed_response_is_500_bad_response(node: EdgeNode, kind: str) -> None:
    async with httpx.AsyncClient(base_url=node.url, headers={"host": "hostile.localhost"}) as c:
        r = await c.get("/", params={"kind": kind}, timeout=10)
        assert r.status_code == 500
        assert r.json()["error"] == "bad_response"
        assert "set-cookie" not in r.headers
        ok = await c.get("/", timeout=10)
        assert ok.status_code == 200
        assert ok.text == "fine"


async def test_framing_and_platform_headers_come_from_the_node(node: EdgeNode) -> None:
    # A raw connection: httpx would hide which framing headers were on the wire.
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    writer.write(b"GET /?kind=length HTTP/1.1\r\nHost: hostile.localhost\r\n\r\n")
    raw = b""
    async with asyncio.timeout(10):
        while b"short" not in raw:
            chunk = await reader.read(65536)
            assert chunk
            raw += chunk
    writer.close()
    head = raw.split(b"\r\n\r\n", 1)[0].lower()
    assert b"content-length: 5\r\n" in head + b"\r\n"
    assert b"content-length: 999" not in head
    assert b"x-edgefn-location: test" in head
    assert b"x-edgefn-location: fake" not in head
