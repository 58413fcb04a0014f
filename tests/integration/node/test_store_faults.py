"""A 503 the replicated store caused is not held against the version by the deploy gates; a
worker that only claims one (raises ``KVUnavailable`` itself) is."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest

from edgefn.edge import EdgeNode
from edgefn.edge.node import RequestContext
from edgefn.observe import JsonLog
from edgefn.runtime import protocol as p

pytestmark = pytest.mark.integration

MAIN = """
from edgefn import KVUnavailable, Response

async def fetch(request, env, ctx):
    if request.path == "/claim":
        raise KVUnavailable("not really: the store was never asked")
    if request.path == "/crash":
        raise RuntimeError("a bug")
    await env.KV.get("k", consistency="strong")
    return Response("ok")
"""


async def test_only_the_stores_own_failures_are_left_out_of_the_gate(tmp_path: Path) -> None:
    fn = tmp_path / "fn"
    fn.mkdir()
    (fn / "edgefn.toml").write_text(
        'name = "fn"\nmain = "main.py"\n[[kv_namespaces]]\nbinding = "KV"\nnamespace = "ns"\n'
    )
    (fn / "main.py").write_text(MAIN)

    async def home_down(_ctx: RequestContext, call: p.KVCall) -> p.KVResult:
        # The KV home's leader is gone: strong reads cannot be served here now.
        return p.KVResult(call.id, call.call_id, False, None, "unavailable", "no home leader")

    node = EdgeNode(
        "test", state_dir=tmp_path / "node", log=JsonLog(io.StringIO()), kv_handler=home_down
    )
    await node.start()
    try:
        version = await node.deploy_dir(fn)
        async with httpx.AsyncClient(base_url=node.url, headers={"host": "fn.localhost"}) as c:
            for path in ("/", "/", "/claim", "/crash"):
                r = await c.get(path, timeout=10)
                assert r.status_code in (503, 500), r.text
            assert (await c.get("/", timeout=10)).json()["error"] == "consistency_unavailable"
            claimed = await c.get("/claim", timeout=10)
            assert claimed.json()["error"] == "consistency_unavailable"
        requests, errors, _, _ = node.version_stats.snapshot()["fn"][version]
        # The three real store faults are out; the claimed ones and the bug are errors.
        assert (requests, errors) == (3, 3)
    finally:
        await node.stop()
