"""A client connected only to a regional hub (no JetStream there) uses the core's JetStream.

Edge nodes and the region bundle cache depend on this: desired state is a KV bucket watched through
the hub, and bundles are objects fetched through the hub.
"""

from __future__ import annotations

import json
import os

import httpx
import pytest
from tests.waiting import until

from edgefn.bus import (
    BUNDLES_OBJECT_STORE,
    DESIRED_BUCKET,
    NatsServer,
    connect,
    ensure_kv,
    ensure_object_store,
    jetstream,
)

pytestmark = pytest.mark.integration


async def _leafnode_count(server: NatsServer) -> int:
    async with httpx.AsyncClient(timeout=2.0) as client:
        resp = await client.get(f"{server.monitor_url}/leafz")
    return len(json.loads(resp.text).get("leafs") or [])


async def _wait_leafnode(server: NatsServer, *, count: int, timeout_s: float = 10.0) -> None:
    async def has_count() -> bool:
        return await _leafnode_count(server) == count

    await until(has_count, timeout_s=timeout_s, what=f"{server.name} to have {count} leafnode(s)")


async def test_hub_client_uses_core_kv_put_get_watch(core: NatsServer, hub: NatsServer) -> None:
    """Put through the hub, read it back at the core and the hub, and watch it through the hub."""
    await _wait_leafnode(core, count=1)
    at_hub = await connect(hub.client_url, name="node-fra")
    at_core = await connect(core.client_url, name="control")
    try:
        kv_hub = await ensure_kv(jetstream(at_hub), DESIRED_BUCKET, history=5)
        kv_core = await jetstream(at_core).key_value(DESIRED_BUCKET)
        watcher = await kv_hub.watch("fra.>")
        initial = await watcher.updates(timeout=5.0)
        assert initial is None  # The watcher reports "no initial values" with a None marker.

        revision = await kv_hub.put("fra.hello", b"v1")
        assert (await kv_core.get("fra.hello")).value == b"v1"
        await kv_core.put("fra.hello", b"v2")
        assert (await kv_hub.get("fra.hello")).value == b"v2"

        first = await watcher.updates(timeout=5.0)
        second = await watcher.updates(timeout=5.0)
        assert (first.key, first.value, first.revision) == ("fra.hello", b"v1", revision)
        assert (second.key, second.value) == ("fra.hello", b"v2")
        await watcher.stop()
        # The hub itself stores nothing: JetStream is disabled there.
        async with httpx.AsyncClient(timeout=2.0) as client:
            jsz = await client.get(f"{hub.monitor_url}/jsz")
        info = json.loads(jsz.text)
        assert info["streams"] == 0
        assert info["config"]["max_storage"] == 0
    finally:
        await at_hub.close()
        await at_core.close()


async def test_hub_client_uses_core_object_store(core: NatsServer, hub: NatsServer) -> None:
    """A bundle-sized object put at the core is read in full through the hub, and vice versa."""
    await _wait_leafnode(core, count=1)
    at_hub = await connect(hub.client_url, name="hub-cache")
    at_core = await connect(core.client_url, name="control")
    try:
        store_core = await ensure_object_store(jetstream(at_core), BUNDLES_OBJECT_STORE)
        store_hub = await ensure_object_store(jetstream(at_hub), BUNDLES_OBJECT_STORE)
        blob = os.urandom(300_000)  # Spans several 128 KiB chunks.
        await store_core.put("sha256-abc", blob)
        got = await store_hub.get("sha256-abc")
        assert got.data == blob
        await store_hub.put("sha256-def", b"from the hub")
        assert (await store_core.get("sha256-def")).data == b"from the hub"
    finally:
        await at_hub.close()
        await at_core.close()
