"""A planet node assembled by ``build_node``: every part holds the collaborators it was built with.

Real parts, none started (no sandbox pool, no listener, no bus): what is checked is the wiring
that ``edgefn node`` relies on, so a part built without its collaborator fails here rather than at
the first request of a planet.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from edgefn.bundle import load_manifest
from edgefn.edge import ActiveFunction, ActiveVersion
from edgefn.edge.outbound import SubrequestRules
from edgefn.edge.traffic import PeerLocation, TrafficOptions, write_planet_files
from edgefn.planet.assembly import AssembledNode, NodeConfig, build_node
from edgefn.runtime import protocol as p

BUS = "nats://127.0.0.1:4999"  # never connected to: nothing here starts


def _config(state_dir: Path, traffic: TrafficOptions | None, secret: bytes | None) -> NodeConfig:
    return NodeConfig(
        location="ams",
        region="eu",
        state_dir=state_dir,
        host="127.0.0.1",
        port=0,
        nats_urls=(BUS,),
        trusted_keys=(),
        traffic=traffic,
        secret=secret,
        metrics_token="m" * 32,
    )


async def _closed(assembled: AssembledNode) -> None:
    """Release what construction opened: the log file, HTTP client pools."""
    await assembled.stop()
    await assembled.node.outbound.aclose()
    if assembled.traffic is not None:
        await assembled.traffic.stop()


@pytest.fixture
async def planet_node(tmp_path: Path) -> AsyncIterator[AssembledNode]:
    locations = [PeerLocation("ams", "eu", 52.3, 4.9), PeerLocation("nrt", "ap", 35.8, 140.4)]
    secret_file, locations_file = write_planet_files(tmp_path, locations, emulate_rtt=False)
    options = TrafficOptions(secret_file, locations_file)
    secret = secret_file.read_text().strip().encode()
    assembled = build_node(_config(tmp_path / "node", options, secret))
    try:
        yield assembled
    finally:
        await _closed(assembled)


async def test_every_part_gets_its_collaborators(planet_node: AssembledNode) -> None:
    """The node answers worker KV calls and /_edgefn/kv* with the KV service the agent has."""
    node, kv = planet_node.node, planet_node.kv
    assert node.traffic is planet_node.traffic
    assert node.kv_handler == kv.handle_call
    assert node.kv_http == kv.asgi
    assert planet_node.agent.node is node
    assert planet_node.agent.kv is kv
    assert node.internal_secret is not None
    assert not node.ready  # the agent marks it ready once its functions are loaded


async def test_the_driver_advertises_the_node_s_own_table(
    planet_node: AssembledNode, tmp_path: Path
) -> None:
    """A function activated on the node is one the traffic driver reports running here."""
    assert planet_node.traffic is not None
    assert planet_node.traffic.functions() == frozenset()
    fn_dir = tmp_path / "hello"
    fn_dir.mkdir()
    (fn_dir / "edgefn.toml").write_text('name = "hello"\nmain = "main.py"\n')
    (fn_dir / "main.py").write_text("async def fetch(request, env, ctx): ...\n")
    manifest = load_manifest(fn_dir)
    spec = planet_node.node.spec_for(manifest, "v1", fn_dir)
    planet_node.node.table.activate(
        ActiveFunction("hello", (ActiveVersion("v1", 1.0, spec, manifest),))
    )
    assert planet_node.traffic.functions() == frozenset({"hello"})


async def test_the_bus_is_never_a_subrequest_target(planet_node: AssembledNode) -> None:
    """Even a function that opened loopback for itself cannot reach the node's own bus."""
    call = p.FetchCall(1, 1, "http://127.0.0.1:4999/", "GET", [], b"", 1000)
    rules = SubrequestRules(10, None, ("127.0.0.1",))
    result = await planet_node.node.outbound.fetch("r1", call, rules)
    assert result.status == 0
    assert result.error_kind == "egress_denied", result.error_message


async def test_secrets_stay_out_of_the_config_repr(tmp_path: Path) -> None:
    """The planet secret and the metrics token are config fields, never printed with it."""
    config = _config(tmp_path, None, b"s" * 32)
    assert "ssss" not in repr(config)
    assert "m" * 32 not in repr(config)


async def test_a_node_without_traffic_options_serves_every_request_itself(
    tmp_path: Path,
) -> None:
    """No planet secret: no traffic driver and no internal listener, but KV still wired."""
    assembled = build_node(_config(tmp_path / "node", None, None))
    try:
        assert assembled.traffic is None
        assert assembled.node.traffic is None
        assert assembled.node.internal_secret is None
        assert assembled.node.kv_handler == assembled.kv.handle_call
    finally:
        await _closed(assembled)


async def test_a_node_without_telemetry_records_and_tails_nothing(tmp_path: Path) -> None:
    """``telemetry=False`` (``edgefn node --no-telemetry``, the baseline of ``edgefn bench
    observe``): the request path gets neither the accumulator nor the tail publisher; the
    default node gets both. (That the shipper does not connect: the bench checks the hub.)"""
    on = build_node(_config(tmp_path / "on", None, None))
    off = build_node(replace(_config(tmp_path / "off", None, None), telemetry=False))
    try:
        assert on.node._path.telemetry is not None
        assert on.node._path.tail is on.tail
        assert off.node._path.telemetry is None
        assert off.node._path.tail is None
    finally:
        await _closed(on)
        await _closed(off)
