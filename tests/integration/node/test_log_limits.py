"""A function that floods its console cannot flood the node's log: lines beyond its budget are
dropped and counted in one ``log_dropped`` record, and the node keeps serving."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest

from edgefn.edge import EdgeNode
from edgefn.observe import JsonLog

pytestmark = pytest.mark.integration

FLOOD = """
async def fetch(request, env, ctx):
    for i in range(int(request.query.get("n", "1"))):
        print("flood line", i)
    return Response.text("done")
"""


async def test_console_flood_is_bounded(tmp_path: Path) -> None:
    fn = tmp_path / "flood"
    fn.mkdir()
    (fn / "edgefn.toml").write_text('name = "flood"\nmain = "main.py"\n')
    (fn / "main.py").write_text("from edgefn import Response\n" + FLOOD)
    out = io.StringIO()
    node = EdgeNode("test", state_dir=tmp_path / "node", log=JsonLog(out, location="test"))
    await node.start()
    try:
        await node.deploy_dir(fn)
        async with httpx.AsyncClient(base_url=node.url, headers={"host": "flood.localhost"}) as c:
            r = await c.get("/", params={"n": "5000"}, timeout=30)
            assert r.status_code == 200
            # Past the report window the next line brings the count of dropped ones.
            node.log_limiter.limits = type(node.log_limiter.limits)(report_ms=0)
            assert (await c.get("/", params={"n": "1"}, timeout=30)).status_code == 200
    finally:
        await node.stop()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    lines = [r for r in records if r["kind"] == "function" and r["function"] == "flood"]
    dropped = [r for r in records if r["kind"] == "log_dropped"]
    assert 0 < len(lines) <= node.log_limiter.limits.lines_burst + 50
    assert dropped
    assert sum(r["lines"] for r in dropped) + len(lines) >= 5000
