"""Ready means ready: a node that is still loading its functions answers health with 503 and a
request for a function it has not loaded yet with ``503 not_ready`` + Retry-After, never 404."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest

from edgefn.edge import EdgeNode
from edgefn.observe import JsonLog

pytestmark = pytest.mark.integration

HELLO = """
from edgefn import Response

async def fetch(request, env, ctx):
    return Response.text("hi")
"""


async def test_not_ready_until_marked_then_404_only_for_unknown(tmp_path: Path) -> None:
    fn = tmp_path / "hi"
    fn.mkdir()
    (fn / "edgefn.toml").write_text('name = "hi"\nmain = "main.py"\n')
    (fn / "main.py").write_text(HELLO)
    node = EdgeNode("t", state_dir=tmp_path / "node", log=JsonLog(io.StringIO()), ready=False)
    await node.start()
    try:
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as c:
            health = await c.get("/_edgefn/health")
            assert (health.status_code, health.json()["status"]) == (503, "starting")
            r = await c.get("/", headers={"host": "hi.localhost"})
            assert r.status_code == 503
            assert r.json()["error"] == "not_ready"
            assert r.headers["retry-after"] == "1"
            await node.deploy_dir(fn)
            # A loaded function is served even before the node as a whole is ready.
            assert (await c.get("/", headers={"host": "hi.localhost"})).text == "hi"
            node.mark_ready()
            assert (await c.get("/_edgefn/health")).status_code == 200
            other = await c.get("/", headers={"host": "nope.localhost"})
            assert (other.status_code, other.json()["error"]) == (404, "no_such_function")
    finally:
        await node.stop()
