"""A client that trickles its request body is answered 408 body_timeout and its admission slot is
freed; many of them at once do not stop normal requests."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import httpx
import pytest

import edgefn.edge.request_io as request_io
from edgefn.edge import EdgeNode
from edgefn.observe import JsonLog

pytestmark = pytest.mark.integration

ECHO = """
from edgefn import Response

async def fetch(request, env, ctx):
    return Response(await request.body())
"""


async def test_slow_uploads_time_out_and_normal_traffic_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(request_io, "BODY_GRACE_S", 1.0)
    fn = tmp_path / "echo"
    fn.mkdir()
    (fn / "edgefn.toml").write_text('name = "echo"\nmain = "main.py"\n[limits]\nmax_body_kb = 1\n')
    (fn / "main.py").write_text(ECHO)
    node = EdgeNode("test", state_dir=tmp_path / "node", log=JsonLog(io.StringIO()))
    await node.start()
    writers: list[asyncio.StreamWriter] = []
    try:
        await node.deploy_dir(fn)
        readers = []
        for _ in range(50):  # each announces 1000 bytes and sends 1
            reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
            writer.write(
                b"POST / HTTP/1.1\r\nHost: echo.localhost\r\nContent-Length: 1000\r\n\r\nx"
            )
            readers.append(reader)
            writers.append(writer)
        async with httpx.AsyncClient(base_url=node.url, headers={"host": "echo.localhost"}) as c:
            ok = await c.post("/", content=b"hello", timeout=10)
            assert (ok.status_code, ok.text) == (200, "hello")
        async with asyncio.timeout(15):
            answers = [await r.read(4096) for r in readers]
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[0][:200]
        assert all(b"body_timeout" in a for a in answers)
    finally:
        for w in writers:
            w.close()
        await node.stop()
