"""The node agent refuses tampered or badly signed bundles, serves good ones, restores from disk."""

from __future__ import annotations

import io
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tests.planet_helpers import REPO

from edgefn.bundle import build_bundle, load_or_create_signing_key
from edgefn.control.model import DesiredState, FunctionDesired, VersionWeight
from edgefn.edge import EdgeNode
from edgefn.observe import JsonLog
from edgefn.planet.node_agent import NodeAgent

pytestmark = pytest.mark.integration  # real worker processes


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[EdgeNode]:
    n = EdgeNode("fra", state_dir=tmp_path / "node", log=JsonLog(io.StringIO()))
    await n.start()
    try:
        yield n
    finally:
        await n.stop()


def _desired(gen: int, version: str, sha: str, sig: str) -> DesiredState:
    return DesiredState(
        generation=gen,
        functions={"hello": FunctionDesired((VersionWeight(version, sha, 1.0),))},
        location="fra",
        signatures={sha: sig},
    )


async def test_refuses_bad_bundles_and_serves_good_ones(node: EdgeNode, tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path / "key.pem")
    fn = tmp_path / "hello"
    shutil.copytree(REPO / "examples" / "hello", fn)
    bundle = build_bundle(fn)
    state = tmp_path / "agent"
    agent = NodeAgent(
        node, nats_urls=[], region="eu-west", trusted_keys=[key.public_key_pem()], state_dir=state
    )
    bundles = state / "bundles"

    # Tampered: the bytes on disk do not hash to the sha256 in the desired state.
    (bundles / f"{bundle.sha256}.bundle").write_bytes(bundle.data[:-8] + b"tampered")
    await agent.apply(_desired(1, bundle.version_id, bundle.sha256, key.sign(bundle.sha256)))
    assert "sha256" in agent.errors[bundle.version_id] or "hash" in agent.errors[bundle.version_id]
    assert node.active_versions() == {}

    # Good bytes, but signed by a key the node does not trust.
    (bundles / f"{bundle.sha256}.bundle").write_bytes(bundle.data)
    other = load_or_create_signing_key(tmp_path / "other.pem")
    await agent.apply(_desired(2, bundle.version_id, bundle.sha256, other.sign(bundle.sha256)))
    assert "signature mismatch" in agent.errors[bundle.version_id]
    assert agent.observed().errors == agent.errors

    await agent.apply(_desired(3, bundle.version_id, bundle.sha256, key.sign(bundle.sha256)))
    assert agent.errors == {}
    async with httpx.AsyncClient(base_url=node.url) as c:
        r = await c.get("/", headers={"host": "hello.localhost"})
    assert r.status_code == 200
    assert r.headers["x-edgefn-version"] == bundle.version_id
    assert (state / "desired.json").exists()


async def test_restores_from_disk_without_a_hub(node: EdgeNode, tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path / "key.pem")
    fn = tmp_path / "hello"
    shutil.copytree(REPO / "examples" / "hello", fn)
    bundle = build_bundle(fn)
    state = tmp_path / "agent"
    first = NodeAgent(
        node, nats_urls=[], region="r", trusted_keys=[key.public_key_pem()], state_dir=state
    )
    (state / "bundles" / f"{bundle.sha256}.bundle").write_bytes(bundle.data)
    await first.apply(_desired(5, bundle.version_id, bundle.sha256, key.sign(bundle.sha256)))
    node.deactivate("hello")
    assert node.active_versions() == {}

    # A new agent (a restarted node) with an unreachable hub serves from disk at once.
    second = NodeAgent(
        node,
        nats_urls=["nats://127.0.0.1:1"],
        region="r",
        trusted_keys=[key.public_key_pem()],
        state_dir=state,
    )
    await second._restore()
    assert second.applied.generation == 5
    assert node.active_versions() == {"hello": [bundle.version_id]}
