"""Request headers are bounded: more than MAX_REQUEST_HEADERS headers, or more than
MAX_REQUEST_HEADER_BYTES of them, is 431 headers_too_large and the node goes on serving."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest

from edgefn.edge import EdgeNode
from edgefn.edge.node import MAX_REQUEST_HEADER_BYTES, MAX_REQUEST_HEADERS
from edgefn.observe import JsonLog

pytestmark = pytest.mark.integration


async def test_too_many_or_too_large_headers_are_431(tmp_path: Path) -> None:
    fn = tmp_path / "hi"
    fn.mkdir()
    (fn / "edgefn.toml").write_text('name = "hi"\nmain = "main.py"\n')
    (fn / "main.py").write_text(
        "from edgefn import Response\n\nasync def fetch(request, env, ctx):\n"
        "    return Response.text('hi')\n"
    )
    node = EdgeNode("t", state_dir=tmp_path / "node", log=JsonLog(io.StringIO()))
    await node.start()
    try:
        await node.deploy_dir(fn)
        async with httpx.AsyncClient(base_url=node.url, headers={"host": "hi.localhost"}) as c:
            many = {f"x-h{i}": "v" for i in range(MAX_REQUEST_HEADERS + 1)}
            r = await c.get("/", headers=many, timeout=10)
            assert (r.status_code, r.json()["error"]) == (431, "headers_too_large")
            big = {f"x-b{i}": "v" * 8000 for i in range(MAX_REQUEST_HEADER_BYTES // 8000 + 1)}
            r = await c.get("/", headers=big, timeout=10)
            assert r.status_code == 431
            ok = await c.get("/", headers={f"x-h{i}": "v" for i in range(50)}, timeout=10)
            assert (ok.status_code, ok.text) == (200, "hi")
    finally:
        await node.stop()
