"""A client that stops reading a streamed response cannot make the node buffer without bound: the
node stops reading the worker past a high-water mark (backpressure) and cuts the client off after
a stall, and the worker and node go on serving."""

from __future__ import annotations

import asyncio
import io
import socket
from pathlib import Path

import httpx
import pytest
from tests.waiting import until

import edgefn.edge.request_path as request_path
from edgefn.edge import EdgeNode
from edgefn.observe import JsonLog
from edgefn.runtime.sandbox import STREAM_HIGH_BYTES

pytestmark = pytest.mark.integration

ENDLESS = """
from edgefn import Response

async def fetch(request, env, ctx):
    if request.query.get("small"):
        return Response.text("ok")
    async def chunks():
        block = b"x" * 65536
        while True:
            yield block
    return Response(chunks(), headers={"content-type": "application/octet-stream"})
"""


async def test_slow_reader_is_bounded_then_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(request_path, "STREAM_STALL_S", 1.5)
    fn = tmp_path / "endless"
    fn.mkdir()
    (fn / "edgefn.toml").write_text(
        'name = "endless"\nmain = "main.py"\n[limits]\ntimeout_ms = 60000\n'
    )
    (fn / "main.py").write_text(ENDLESS)
    node = EdgeNode("test", state_dir=tmp_path / "node", log=JsonLog(io.StringIO()))
    await node.start()
    try:
        await node.deploy_dir(fn)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", node.port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: endless.localhost\r\n\r\n")
        peak = 0
        for _ in range(40):  # 1 s of watching while the client reads nothing
            await asyncio.sleep(0.025)
            for w in node.pool.workers.values():
                for inf in w.inflight.values():
                    peak = max(peak, inf.buffered)
        # One socket read (up to 256 KiB) may land after the pause: a small, fixed overshoot.
        assert 0 < peak <= STREAM_HIGH_BYTES + 512 * 1024
        await until(
            lambda: node.pool.slow_clients_cut, timeout_s=10, what="the slow client cut off"
        )
        sock.close()
        async with httpx.AsyncClient(base_url=node.url) as c:
            r = await c.get("/?small=1", headers={"host": "endless.localhost"}, timeout=10)
        assert r.status_code == 200
        assert r.text == "ok"
        assert node.pool.statistics().killed == {}
    finally:
        await node.stop()
