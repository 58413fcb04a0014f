"""``ctx.wait_until`` tasks keep KV and ``edgefn.fetch`` after the response has been sent (the
README's own example): the node keeps the request's context until the worker says they are done."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from tests.waiting import until

from edgefn.edge import EdgeNode
from edgefn.edge.node import RequestContext
from edgefn.observe import JsonLog
from edgefn.runtime import protocol as p

pytestmark = pytest.mark.integration

LATER = """
import asyncio

import edgefn
from edgefn import Response

async def later(env, url):
    await asyncio.sleep(0.3)  # well after the response went out
    await env.KV.put("after", "1")
    await edgefn.fetch(url + "/from-wait-until")

async def fetch(request, env, ctx):
    ctx.wait_until(later(env, request.query["upstream"]))
    return Response.text("sent")
"""


async def test_wait_until_tasks_use_kv_and_fetch_after_the_response(
    tmp_path: Path, upstream: str
) -> None:
    fn = tmp_path / "later"
    fn.mkdir()
    (fn / "edgefn.toml").write_text(
        'name = "later"\nmain = "main.py"\n[egress]\nallow_private = ["127.0.0.1"]\n'
        '[[kv_namespaces]]\nbinding = "KV"\nnamespace = "ns"\n'
    )
    (fn / "main.py").write_text(LATER)
    puts: list[tuple[str, str]] = []

    async def kv(ctx: RequestContext, call: p.KVCall) -> p.KVResult:
        puts.append((ctx.request_id, call.args["key"]))
        return p.KVResult(call.id, call.call_id, True, None)

    node = EdgeNode("test", state_dir=tmp_path / "node", log=JsonLog(io.StringIO()), kv_handler=kv)
    fetched: list[int] = []
    real_fetch = node.outbound.fetch

    async def counting_fetch(rid: str, call: p.FetchCall, rules: object) -> p.FetchResult:
        res = await real_fetch(rid, call, rules)  # type: ignore[arg-type]
        fetched.append(res.status)
        return res

    node.outbound.fetch = counting_fetch  # type: ignore[method-assign]
    await node.start()
    try:
        await node.deploy_dir(fn)
        async with httpx.AsyncClient(base_url=node.url, headers={"host": "later.localhost"}) as c:
            r = await c.get("/", params={"upstream": upstream}, timeout=10)
        assert (r.status_code, r.text) == (200, "sent")
        rid = r.headers["x-edgefn-request-id"]
        assert puts == []  # nothing yet: the task sleeps past the response
        await until(lambda: fetched, timeout_s=10, what="the background subrequest")
        assert puts == [(rid, "after")]
        assert fetched == [200]
        # BackgroundDone lets the node drop the request's context.
        await until(lambda: rid not in node._requests, timeout_s=5, what="the context dropped")
    finally:
        await node.stop()
