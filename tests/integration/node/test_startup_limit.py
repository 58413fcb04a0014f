"""A module that never finishes importing fails its load after ``[limits] startup_ms`` (it used to
hold the loader forever), the worker is killed, and the node goes on installing later versions."""

from __future__ import annotations

import io
import time
from pathlib import Path

import httpx
import pytest

from edgefn.edge import EdgeNode
from edgefn.errors import ManifestError
from edgefn.observe import JsonLog

pytestmark = pytest.mark.integration


def _fn(root: Path, body: str, startup_ms: int = 500) -> Path:
    root.mkdir()
    (root / "edgefn.toml").write_text(
        f'name = "slowimport"\nmain = "main.py"\n[limits]\nstartup_ms = {startup_ms}\n'
    )
    (root / "main.py").write_text(body)
    return root


async def test_import_past_startup_ms_fails_and_the_node_goes_on(tmp_path: Path) -> None:
    node = EdgeNode("test", state_dir=tmp_path / "node", log=JsonLog(io.StringIO()))
    await node.start()
    try:
        looping = _fn(tmp_path / "v1", "while True:\n    pass\n")
        t0 = time.monotonic()
        with pytest.raises(ManifestError, match="startup_ms = 500"):
            await node.deploy_dir(looping)
        assert time.monotonic() - t0 < 10
        assert node.pool.statistics().killed.get("startup_timeout") == 1
        fine = _fn(
            tmp_path / "v2",
            "from edgefn import Response\n\nasync def fetch(request, env, ctx):\n"
            "    return Response.text('loaded')\n",
        )
        await node.deploy_dir(fine)
        async with httpx.AsyncClient(base_url=node.url) as c:
            r = await c.get("/", headers={"host": "slowimport.localhost"}, timeout=10)
        assert (r.status_code, r.text) == (200, "loaded")
    finally:
        await node.stop()
