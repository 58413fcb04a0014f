"""A node learns a deployer key registered after it started, even when the registry read fails
at first (CI once saw a rollout roll back: "no trusted key verifies it" right after `key add`)."""

from __future__ import annotations

import asyncio
import io
import shutil
import time
from pathlib import Path

import msgspec
import pytest
from tests.planet_helpers import REPO

from edgefn.bundle import build_bundle, load_or_create_signing_key
from edgefn.bus import NatsServer
from edgefn.bus.jetstream import connect, ensure_kv, jetstream
from edgefn.bus.subjects import DEPLOYER_KEYS_BUCKET
from edgefn.control.model import DesiredState, FunctionDesired, VersionWeight
from edgefn.edge import EdgeNode
from edgefn.observe import JsonLog
from edgefn.planet import node_agent
from edgefn.planet.node_agent import NodeAgent

pytestmark = pytest.mark.integration


def _desired(version: str, sha: str, sig: str) -> DesiredState:
    return DesiredState(
        generation=1,
        functions={"hello": FunctionDesired((VersionWeight(version, sha, 1.0),))},
        location="fra",
        signatures={sha: sig},
    )


async def _agent(core: NatsServer, tmp_path: Path) -> tuple[NodeAgent, EdgeNode, str, str]:
    fn = tmp_path / "hello"
    shutil.copytree(REPO / "examples" / "hello", fn)
    bundle = build_bundle(fn)
    node = EdgeNode("fra", state_dir=tmp_path / "node", log=JsonLog(io.StringIO()))
    agent = NodeAgent(
        node, nats_urls=[], region="eu-west", trusted_keys=[], state_dir=tmp_path / "agent"
    )
    (tmp_path / "agent" / "bundles" / f"{bundle.sha256}.bundle").write_bytes(bundle.data)
    agent.nc = await connect(core.client_url, name="agent-test")
    return agent, node, bundle.version_id, bundle.sha256


async def test_a_key_registered_while_the_registry_is_unreadable_is_learned(
    core: NatsServer, tmp_path: Path
) -> None:
    agent, node, version, sha = await _agent(core, tmp_path)
    key = load_or_create_signing_key(tmp_path / "acme.pem")
    await node.start()
    try:
        assert agent.nc is not None

        async def register_later() -> None:
            # The bucket does not exist yet: the node's first reads fail (as through a busy hub).
            # A schedule, not a wait for a condition: register the key 1 s into the node's retries.
            await asyncio.sleep(1.0)
            kv = await ensure_kv(jetstream(agent.nc), DEPLOYER_KEYS_BUCKET)
            doc = {"account": "acme", "public_key_pem": key.public_key_pem()}
            await kv.put(key.key_id(), msgspec.json.encode(doc))

        later = asyncio.create_task(register_later())
        await agent.apply(_desired(version, sha, key.sign(sha)))
        await later
        assert agent.errors == {}, agent.errors
        assert node.active_versions() == {"hello": [version]}
        assert key.public_key_pem() in agent.trusted_keys
    finally:
        await agent.nc.close()
        await node.stop()


async def test_a_key_nobody_registered_fails_after_the_bounded_wait(
    core: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_agent, "KEY_LEARN_DEADLINE_S", 1.5)
    agent, node, version, sha = await _agent(core, tmp_path)
    stranger = load_or_create_signing_key(tmp_path / "stranger.pem")
    await node.start()
    try:
        started = time.monotonic()
        await agent.apply(_desired(version, sha, stranger.sign(sha)))
        waited = time.monotonic() - started
        assert "signature mismatch" in agent.errors[version]
        assert node.active_versions() == {}
        assert 1.0 <= waited < 10.0, waited
    finally:
        assert agent.nc is not None
        await agent.nc.close()
        await node.stop()
