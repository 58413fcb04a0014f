"""A function cannot make the node hold unbounded work: at most MAX_SIDE_CALLS subrequests and KV
calls of one worker are in flight at the node; the rest fail at once with a limit error, and the
node goes on serving."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import httpx
import pytest
from tests.waiting import until

from edgefn.edge import EdgeNode
from edgefn.edge.node import RequestContext
from edgefn.observe import JsonLog
from edgefn.runtime import protocol as p
from edgefn.runtime.sandbox import MAX_SIDE_CALLS

pytestmark = pytest.mark.integration

GATHER = """
import asyncio
from edgefn import Response

async def fetch(request, env, ctx):
    n = int(request.query.get("n", "1"))
    results = await asyncio.gather(*(env.KV.get(str(i)) for i in range(n)), return_exceptions=True)
    kinds = {}
    for r in results:
        kind = type(r).__name__ if isinstance(r, Exception) else "ok"
        kinds[kind] = kinds.get(kind, 0) + 1
    return Response.json(kinds)
"""


async def test_a_flood_of_kv_calls_is_bounded(tmp_path: Path) -> None:
    fn = tmp_path / "gather"
    fn.mkdir()
    (fn / "edgefn.toml").write_text(
        'name = "gather"\nmain = "main.py"\n[limits]\ntimeout_ms = 20000\n'
        '[[kv_namespaces]]\nbinding = "KV"\nnamespace = "ns"\n'
    )
    (fn / "main.py").write_text(GATHER)
    in_flight = peak = 0
    release = asyncio.Event()

    async def slow_kv(_ctx: RequestContext, call: p.KVCall) -> p.KVResult:
        # A KV store that answers only when told: every call the node accepted is in flight.
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await release.wait()
        in_flight -= 1
        return p.KVResult(call.id, call.call_id, True, None)

    node = EdgeNode(
        "test", state_dir=tmp_path / "node", log=JsonLog(io.StringIO()), kv_handler=slow_kv
    )
    await node.start()
    try:
        await node.deploy_dir(fn)
        async with httpx.AsyncClient(base_url=node.url, headers={"host": "gather.localhost"}) as c:
            request = asyncio.ensure_future(c.get("/", params={"n": "3000"}, timeout=30))
            # Until the node has held MAX_SIDE_CALLS and refused every other call at once.
            await until(
                lambda: (
                    request.done()
                    or sum(w.side_calls_refused for w in node.pool.workers.values())
                    >= 3000 - MAX_SIDE_CALLS
                ),
                timeout_s=20,
                interval_s=0.01,
                what="every call over the bound refused",
            )
            release.set()
            r = await request
            assert r.status_code == 200, r.text
            assert r.json() == {"ok": MAX_SIDE_CALLS, "KVLimitError": 3000 - MAX_SIDE_CALLS}
            assert peak == MAX_SIDE_CALLS
            ok = await c.get("/", params={"n": "3"}, timeout=10)
            assert ok.json() == {"ok": 3}
    finally:
        await node.stop()
