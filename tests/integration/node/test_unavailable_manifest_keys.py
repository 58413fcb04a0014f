"""A manifest key works end to end or is refused: ``placement.mode = "smart"`` (the planner does not
drive deploys yet) is refused by a real node and by ``edgefn dev``, naming the file and the key."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgefn.edge import EdgeNode
from edgefn.errors import ManifestError

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def _smart(tmp_path: Path) -> Path:
    fn = tmp_path / "smart"
    shutil.copytree(REPO / "examples" / "hello", fn)
    with (fn / "edgefn.toml").open("a") as f:
        f.write('\n[placement]\nmode = "smart"\n')
    return fn


async def test_a_node_refuses_placement_mode_smart(node: EdgeNode, tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"placement\.mode.*not available yet"):
        await node.deploy_dir(_smart(tmp_path))
    assert "hello" not in node.table.functions  # nothing was activated


def test_edgefn_dev_refuses_placement_mode_smart(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "edgefn.cli.main", "dev", str(_smart(tmp_path)), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0
    assert "edgefn.toml: placement.mode" in res.stderr
    assert "Traceback" not in res.stderr
