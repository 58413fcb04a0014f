"""``[placement] mode = "smart"`` end to end on one node and in ``edgefn dev``: placement is the
control plane's choice (docs/design/0029-smart-placement.md), so a node given the function runs
it like any other; a bad smart key is refused by the node and by ``edgefn dev``, naming the file
and the key. (On a planet: tests/integration/observe/test_smart_placement.py.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from edgefn.edge import EdgeNode
from edgefn.errors import ManifestError

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def _smart(tmp_path: Path, extra: str = "") -> Path:
    fn = tmp_path / "smart"
    shutil.copytree(REPO / "examples" / "hello", fn)
    with (fn / "edgefn.toml").open("a") as f:
        f.write(f'\n[placement]\nmode = "smart"\n{extra}')
    return fn


async def test_a_node_serves_a_smart_function(node: EdgeNode, tmp_path: Path) -> None:
    await node.deploy_dir(_smart(tmp_path, "min_replicas = 3\nmax_latency_ms = 60\n"))
    async with httpx.AsyncClient(base_url=node.url, headers={"host": "hello.localhost"}) as c:
        r = await c.get("/", timeout=10)
    assert r.status_code == 200, r.text


async def test_a_node_refuses_a_bad_smart_key(node: EdgeNode, tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"placement\.min_replicas.*out of range"):
        await node.deploy_dir(_smart(tmp_path, "min_replicas = 0\n"))
    assert "hello" not in node.table.functions  # nothing was activated


def test_edgefn_dev_refuses_a_bad_smart_key(tmp_path: Path) -> None:
    fn = _smart(tmp_path, "max_latency_ms = -5\n")
    res = subprocess.run(
        [sys.executable, "-m", "edgefn.cli.main", "dev", str(fn), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0
    assert "edgefn.toml: placement.max_latency_ms" in res.stderr
    assert "Traceback" not in res.stderr
