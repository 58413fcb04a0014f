"""The node agent opens only the secrets sealed for it, gives them to the function, redacts logs."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from edgefn.bundle import build_bundle, load_or_create_signing_key
from edgefn.control.model import DesiredState, FunctionDesired, VersionWeight
from edgefn.edge import EdgeNode
from edgefn.observe import JsonLog
from edgefn.planet.node_agent import NODE_KEY_FILE, NodeAgent
from edgefn.secrets import REDACTED, NodeKey, Redactor, seal_for_node

pytestmark = pytest.mark.integration  # real worker processes

SECRET = "s3cr3t-value-for-fra"
MAIN = """\
from edgefn import Response

async def fetch(request, env, ctx):
    print("the key is", env.API_KEY)
    return Response(env.API_KEY)
"""


@pytest.fixture
def log() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def redactor() -> Redactor:
    return Redactor()


@pytest.fixture
async def node(tmp_path: Path, log: io.StringIO, redactor: Redactor) -> AsyncIterator[EdgeNode]:
    n = EdgeNode("fra", state_dir=tmp_path / "node", log=JsonLog(log, redact=redactor.redact))
    await n.start()
    try:
        yield n
    finally:
        await n.stop()


def _desired(gen: int, bundle: object, sig: str, secrets_gen: int, box: str) -> DesiredState:
    version, sha = bundle.version_id, bundle.sha256  # type: ignore[attr-defined]
    fd = FunctionDesired((VersionWeight(version, sha, 1.0),), secrets_gen, box)
    return DesiredState(gen, {"api": fd}, "fra", {sha: sig})


def _seal(key: NodeKey, values: dict[str, str], gen: int, location: str = "fra") -> str:
    return seal_for_node(
        json.dumps(values).encode(),
        node_public_b64=key.public_b64(),
        location=location,
        function="api",
        generation=gen,
    )


async def test_secrets_reach_the_function_only_through_this_nodes_key(
    node: EdgeNode, tmp_path: Path, log: io.StringIO, redactor: Redactor
) -> None:
    signing = load_or_create_signing_key(tmp_path / "key.pem")
    fn = tmp_path / "api"
    fn.mkdir()
    (fn / "edgefn.toml").write_text('name = "api"\n', "utf-8")
    (fn / "main.py").write_text(MAIN, "utf-8")
    bundle = build_bundle(fn)
    state = tmp_path / "agent"
    agent = NodeAgent(
        node,
        nats_urls=[],
        region="eu",
        trusted_keys=[signing.public_key_pem()],
        state_dir=state,
        redactor=redactor,
    )
    (state / "bundles" / f"{bundle.sha256}.bundle").write_bytes(bundle.data)
    sig = signing.sign(bundle.sha256)
    assert agent.observed().secrets_key == agent.secrets_key.public_b64()
    assert (state / NODE_KEY_FILE).stat().st_mode & 0o077 == 0

    # Sealed for another node's key, or for another location: refused, nothing served.
    other = NodeKey.generate()
    await agent.apply(_desired(1, bundle, sig, 1, _seal(other, {"API_KEY": SECRET}, 1)))
    assert "not sealed for" in agent.errors[bundle.version_id]
    box_ams = _seal(agent.secrets_key, {"API_KEY": SECRET}, 1, location="ams")
    await agent.apply(_desired(2, bundle, sig, 1, box_ams))
    assert "not sealed for" in agent.errors[bundle.version_id]
    await agent.apply(_desired(3, bundle, sig, 1, ""))
    assert "no secrets sealed" in agent.errors[bundle.version_id]
    assert node.active_versions() == {}

    await agent.apply(_desired(4, bundle, sig, 1, _seal(agent.secrets_key, {"API_KEY": SECRET}, 1)))
    assert agent.errors == {}
    async with httpx.AsyncClient(base_url=node.url) as c:
        r = await c.get("/", headers={"host": "api.localhost"})
        assert r.text == SECRET
        # A new generation replaces the workers: the new value is served at once.
        box = _seal(agent.secrets_key, {"API_KEY": "rotated-value"}, 2)
        await agent.apply(_desired(5, bundle, sig, 2, box))
        r = await c.get("/", headers={"host": "api.localhost"})
        assert r.text == "rotated-value"
    # Clear values never reach disk or the log (the function printed both).
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET.encode() not in data, path
            assert b"rotated-value" not in data, path
    text = log.getvalue()
    assert SECRET not in text
    assert "rotated-value" not in text
    assert f"the key is {REDACTED}" in text
