"""``[runtime] preload`` works end to end: each worker of the function imports the listed modules
(from the bundle or installed) inside the sandbox before the main module, so a lazily imported
module is already there at the first request; a module that cannot be imported fails the deploy
with an error naming the manifest key."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from edgefn.edge import EdgeNode
from edgefn.errors import ManifestError
from edgefn.observe import JsonLog

pytestmark = pytest.mark.integration

MAIN = """
import sys

from edgefn import Response

async def fetch(request, env, ctx):
    seen = {name: name in sys.modules for name in ("helper", "xml.dom.minidom")}
    import helper  # lazily, as code that avoids a slow import at start-up would

    return Response.json({"before_request": seen, "loads": helper.LOADS})
"""


def _function(root: Path, name: str, preload: list[str], helper: str = "LOADS = 1\n") -> Path:
    d = root / name
    d.mkdir()
    toml = f'name = "{name}"\n'
    if preload:
        toml += f"[runtime]\npreload = {preload!r}\n".replace("'", '"')
    (d / "edgefn.toml").write_text(toml)
    (d / "main.py").write_text(MAIN)
    (d / "helper.py").write_text(helper)
    return d


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[EdgeNode]:
    n = EdgeNode("test", state_dir=tmp_path / "node", log=JsonLog(io.StringIO()))
    await n.start()
    try:
        yield n
    finally:
        await n.stop()


async def test_preloaded_modules_are_imported_before_the_first_request(
    node: EdgeNode, tmp_path: Path
) -> None:
    await node.deploy_dir(_function(tmp_path, "pre", ["helper", "xml.dom.minidom"]))
    await node.deploy_dir(_function(tmp_path, "plain", []))
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as c:
        pre = (await c.get("/", headers={"host": "pre.localhost"})).json()
        plain = (await c.get("/", headers={"host": "plain.localhost"})).json()
    assert pre == {"before_request": {"helper": True, "xml.dom.minidom": True}, "loads": 1}
    # The same code without preload imports them during its first request.
    assert plain == {"before_request": {"helper": False, "xml.dom.minidom": False}, "loads": 1}


@pytest.mark.parametrize(
    ("module", "helper", "reason"),
    [
        ("no_such_module_for_edgefn", "LOADS = 1\n", "ModuleNotFoundError"),
        ("helper", "raise RuntimeError('broken at import')\n", "broken at import"),
    ],
)
async def test_a_preload_that_cannot_be_imported_fails_the_load(
    node: EdgeNode, tmp_path: Path, module: str, helper: str, reason: str
) -> None:
    fn = _function(tmp_path, "broken", [module], helper)
    with pytest.raises(ManifestError) as failed:
        await node.deploy_dir(fn)
    text = str(failed.value)
    assert f"runtime.preload[0] = {module!r} cannot be imported" in text, text
    assert reason in text
    assert str(fn / "edgefn.toml") in text
    assert "broken" not in node.table.functions
