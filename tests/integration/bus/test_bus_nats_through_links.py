"""NATS over emulated links: a planet's core, hub and node, cut apart and healed via the API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.waiting import until

from edgefn.bus import (
    BusError,
    HubConfig,
    LinkControlClient,
    LinkEmulatorGroup,
    LinkTableError,
    NatsServer,
    connect,
    ensure_kv,
    free_port,
    jetstream,
)

pytestmark = pytest.mark.integration


async def _jetstream_answers(nc: Any) -> bool:
    try:
        await jetstream(nc).account_info()
    except Exception:
        return False
    return True


async def _hub_remote_port(hub: NatsServer) -> int | None:
    """The port of the hub's one leafnode connection; None while the hub has not (yet) one."""
    async with httpx.AsyncClient(timeout=2.0) as client:
        resp = await client.get(f"{hub.monitor_url}/leafz")
    leafs = json.loads(resp.text)["leafs"]
    return int(leafs[0]["port"]) if len(leafs) == 1 else None


async def _leafnodes_are(server: NatsServer, count: int) -> bool:
    return await leafnodes(server) == count


async def leafnodes(server: NatsServer) -> int:
    async with httpx.AsyncClient(timeout=2.0) as client:
        resp = await client.get(f"{server.monitor_url}/leafz")
    return len(json.loads(resp.text).get("leafs") or [])


@pytest.fixture
async def group() -> AsyncIterator[LinkEmulatorGroup]:
    links = LinkEmulatorGroup()
    await links.start_control()
    try:
        yield links
    finally:
        await links.close()


async def test_client_through_a_link_sees_disconnect_on_cut_and_reconnects_on_heal(
    core: NatsServer, group: LinkEmulatorGroup
) -> None:
    port = int(core.client_url.rsplit(":", 1)[1])
    link = await group.add_link(
        "loc-fra~core", "loc-fra", "core", target_host="127.0.0.1", target_port=port, rtt_ms=10
    )
    events: list[str] = []

    async def on_disconnect() -> None:
        events.append("disconnected")

    async def on_reconnect() -> None:
        events.append("reconnected")

    nc = await connect(
        f"nats://127.0.0.1:{link.port}",
        name="node-fra",
        reconnect_time_wait_s=0.1,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    )
    direct = await connect(core.client_url, name="observer")
    try:
        sub = await direct.subscribe("edgefn.test")
        await direct.flush()
        await nc.publish("edgefn.test", b"before")
        assert (await sub.next_msg(timeout=5)).data == b"before"

        cut, separating = group.partition(["loc-fra"])
        assert cut == separating == ["loc-fra~core"]
        await until(lambda: "disconnected" in events, timeout_s=15)
        await until(lambda: link.statistics().connections_refused >= 2, timeout_s=15)
        assert "reconnected" not in events

        assert group.heal() == ["loc-fra~core"]
        await until(lambda: "reconnected" in events, timeout_s=15)
        await nc.publish("edgefn.test", b"after")
        assert (await sub.next_msg(timeout=5)).data == b"after"
    finally:
        await nc.close()
        await direct.close()


async def test_hub_leafnode_through_a_link_partition_and_heal_via_control_api(
    core: NatsServer, group: LinkEmulatorGroup, tmp_path: Path
) -> None:
    """Cut the core~hub link with POST /partition: the leafnode drops; /heal brings KV back."""
    leaf_port = int(core.leafnode_url.rsplit(":", 1)[1])
    uplink = await group.add_link(
        "hub-eu~core", "hub-eu", "core", target_host="127.0.0.1", target_port=leaf_port, rtt_ms=20
    )
    hub = NatsServer(
        HubConfig(name="hub-eu", core_leafnode_urls=(f"nats-leaf://127.0.0.1:{uplink.port}",)),
        work_dir=tmp_path / "hub",
    )
    await hub.start()
    api = LinkControlClient(group.control_url)
    nc = await connect(hub.client_url, name="node-fra", reconnect_time_wait_s=0.1)
    try:
        await until(lambda: _leafnodes_are(core, 1), timeout_s=15, what="the hub's leafnode")
        # The core's JetStream API is reachable through the hub a moment after the leafnode is
        # listed (its interest crosses the link after the connection): until then a request has
        # no responders.
        await until(lambda: _jetstream_answers(nc), timeout_s=15, what="JetStream via the hub")
        kv = await ensure_kv(jetstream(nc), "edgefn-test")
        await kv.put("k", b"1")

        result = await asyncio.to_thread(api.partition, ["hub-eu"])
        assert result == {"cut": ["hub-eu~core"], "separating": ["hub-eu~core"]}
        await until(lambda: _leafnodes_are(core, 0), timeout_s=15, what="the leafnode to drop")
        rows = await asyncio.to_thread(api.links)
        assert [(r["name"], r["a"], r["b"], r["cut"]) for r in rows] == [
            ("hub-eu~core", "hub-eu", "core", True)
        ]

        assert await asyncio.to_thread(api.heal) == ["hub-eu~core"]
        await until(lambda: _leafnodes_are(core, 1), timeout_s=15, what="the leafnode back")
        # Through the link, never around it: the core does not advertise its own leafnode address
        # (a hub that learnt it reconnected directly, and a cut link stopped nothing).
        # The core lists the leafnode a moment before the hub does: wait for the hub's own view.
        port = await until(lambda: _hub_remote_port(hub), timeout_s=15, what="the hub's leafnode")
        assert port == uplink.port
        # Interest crosses the new leafnode connection a moment after it is up: retry briefly.

        async def value_is_back() -> bool:
            try:
                return bool((await kv.get("k")).value == b"1")
            except Exception:
                return False

        await until(value_is_back, timeout_s=15, what="the value through the healed link")
        await kv.put("k", b"2")

        assert await asyncio.to_thread(api.delay, "core", "hub-eu", 90) == "hub-eu~core"
        assert uplink.rtt_ms == 90
    finally:
        await nc.close()
        await hub.stop()


async def test_control_api_rejects_bad_requests(group: LinkEmulatorGroup) -> None:
    await group.add_link("a~b", "a", "b", target_host="127.0.0.1", target_port=9, rtt_ms=1)
    await group.add_link("c~d", "c", "d", target_host="127.0.0.1", target_port=9, rtt_ms=1)
    api = LinkControlClient(group.control_url)
    with pytest.raises(LinkTableError, match="unknown endpoint") as info:
        await asyncio.to_thread(api.partition, ["zzz"])
    assert info.value.hint == "known endpoints: a, b, c, d"
    with pytest.raises(LinkTableError, match="no link joins"):
        await asyncio.to_thread(api.delay, "a", "c", 5)
    with pytest.raises(BusError, match="400"):
        await asyncio.to_thread(api.delay, "a", "b", -3)
    async with httpx.AsyncClient() as client:
        for path, body in [
            ("/partition", b"{}"),
            ("/partition", b"nope"),
            ("/delay", b"[1]"),
            ("/delay", b'{"a": "a", "b": "b", "rtt_ms": "9"}'),
            ("/delay", b'{"a": 1, "b": "b", "rtt_ms": 9}'),
        ]:
            resp = await client.post(f"{group.control_url}{path}", content=body)
            assert resp.status_code == 400, (path, body)
            assert resp.json()["error"] == "bad_request"
    stats = group.statistics()
    assert (stats.links_cut, stats.partitions_total) == (0, 0)


def test_control_client_reports_an_unreachable_api() -> None:
    api = LinkControlClient(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(BusError, match="unreachable") as info:
        api.links()
    assert "edgefn up" in info.value.hint
