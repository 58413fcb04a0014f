"""The traffic driver without a bus: config files and their errors, the request body replay,
affinity keys, nearest-only routing, and enter()/leave() over a recorded ASGI exchange.

The pure decisions the driver carries out have their own tests in tests/unit/routing
(test_routing_nearest, test_routing_failover, test_routing_suspicion, test_routing_local_limits)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from edgefn.bundle.manifest import Limits, Manifest, Placement
from edgefn.edge._clock import mono_ms
from edgefn.edge.forward import ReplayableBody
from edgefn.edge.traffic import (
    LoadBeacon,
    PeerLocation,
    TrafficConfig,
    TrafficDriver,
    TrafficOptions,
    load_traffic_config,
    write_planet_files,
)
from edgefn.edge.traffic_bus import HeartbeatMsg
from edgefn.errors import ConfigError
from edgefn.routing import ThermalThrottle, affinity_key
from edgefn.world import spread

SECRET = b"0123456789abcdef0123456789abcdef"


def test_planet_files_round_trip(tmp_path: Path) -> None:
    locs = list(spread(3))
    secret, table = write_planet_files(tmp_path, locs, emulate_rtt=True)
    first = secret.read_text()
    write_planet_files(tmp_path, locs, emulate_rtt=True)
    assert secret.read_text() == first, "the secret must survive a restart"
    assert secret.stat().st_mode & 0o077 == 0
    config = load_traffic_config("x", "eu", TrafficOptions(secret, table, "nearest"))
    assert config.emulate_rtt
    assert not config.smart_routing
    assert [p.id for p in config.locations] == [loc.id for loc in locs]
    assert (config.thermal.soft_c, config.thermal.hard_c) == (80.0, 95.0)  # "x" is not listed


def test_each_node_throttles_on_its_own_thermal_budget(tmp_path: Path) -> None:
    """A topology's thermal_soft_c / thermal_hard_c reach the node of that location only."""
    locs = list(spread(2))
    locs[0] = dataclasses.replace(locs[0], thermal_soft_c=60.0, thermal_hard_c=70.0)
    secret, table = write_planet_files(tmp_path, locs, emulate_rtt=False)
    hot = load_traffic_config(locs[0].id, locs[0].region, TrafficOptions(secret, table))
    cool = load_traffic_config(locs[1].id, locs[1].region, TrafficOptions(secret, table))
    assert (hot.thermal.soft_c, hot.thermal.hard_c) == (60.0, 70.0)
    assert (cool.thermal.soft_c, cool.thermal.hard_c) == (80.0, 95.0)
    throttle = ThermalThrottle(hot.thermal)
    state = throttle.update(65.0)
    assert state.hot  # 65 °C is hot under this budget (not under the default's 80)
    assert state.capacity == pytest.approx(1.0 - 0.5 * (1.0 - hot.thermal.min_factor))


def test_config_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match="nope") as err:
        load_traffic_config("x", "", TrafficOptions(missing))
    assert "planet-secret" in err.value.hint
    short = tmp_path / "short"
    short.write_text("abc")
    with pytest.raises(ConfigError, match="3 bytes"):
        load_traffic_config("x", "", TrafficOptions(short))
    good = tmp_path / "secret"
    good.write_text(SECRET.decode())
    with pytest.raises(ConfigError, match="routing mode"):
        load_traffic_config("x", "", TrafficOptions(good, routing="fastest"))
    bad = tmp_path / "locations.json"
    bad.write_text('{"locations": [{"id": "a"}]}')
    with pytest.raises(ConfigError, match="malformed location table"):
        load_traffic_config("x", "", TrafficOptions(good, bad))
    bad.write_text('{"locations": [{"id": "a", "lat": 1, "lon": 2, "thermal_soft_c": 99}]}')
    with pytest.raises(ConfigError, match=r"soft_c 99\.0 must be below hard_c 95\.0") as err:
        load_traffic_config("a", "", TrafficOptions(good, bad))
    assert err.value.path == str(bad)
    with pytest.raises(ConfigError, match="cannot read the location table"):
        load_traffic_config("x", "", TrafficOptions(good, tmp_path / "absent.json"))


def _receive(chunks: list[bytes]) -> Any:
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return receive


async def test_body_replays_while_small_and_refuses_when_large() -> None:
    body = ReplayableBody(_receive([b"ab", b"cd"]), replay_limit_bytes=10)
    first = [c async for c in body.stream()]
    again = [c async for c in body.stream()]
    assert first == again == [b"ab", b"cd"]
    big = ReplayableBody(_receive([b"x" * 8, b"y" * 8]), replay_limit_bytes=10)
    assert b"".join([c async for c in big.stream()]) == b"x" * 8 + b"y" * 8
    assert not big.replayable


def test_affinity_key_from_header_or_cookie() -> None:
    header = Manifest(name="f", placement=Placement(affinity="header:x-user"))
    cookie = Manifest(name="f", placement=Placement(affinity="cookie:sid"))
    assert affinity_key(header.placement.affinity, [("x-user", "u1")]) == "u1"
    assert affinity_key(header.placement.affinity, []) is None
    assert affinity_key(cookie.placement.affinity, [("cookie", "a=1; sid=s9")]) == "s9"
    assert affinity_key(Manifest(name="f").placement.affinity, [("x-user", "u1")]) is None


def _driver(**kw: Any) -> TrafficDriver:
    peers = tuple(PeerLocation(loc.id, loc.region, loc.lat, loc.lon) for loc in spread(3))
    config = TrafficConfig(location=peers[0].id, secret=SECRET, locations=peers, **kw)
    return TrafficDriver(config, functions=lambda: frozenset({"f"}))


async def _call(driver: TrafficDriver, manifest: Manifest | None, headers: Any = ()) -> Any:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"method": "GET", "path": "/", "headers": [], "client": ("10.0.0.1", 1)}
    gate = await driver.enter(scope, _receive([b""]), send, list(headers), "f", manifest, "rid1")
    return gate, sent


async def test_rate_limit_then_admission_and_leave() -> None:
    driver = _driver()
    manifest = Manifest(name="f", limits=Limits(requests_per_s=2))
    statuses = []
    for _ in range(6):
        gate, sent = await _call(driver, manifest)
        statuses.append(sent[0]["status"] if gate.handled else 200)
        if not gate.handled:
            assert gate.admission_id is not None
            gate.status = 200
            driver.leave(gate)
    assert statuses[0] == 200
    assert statuses.count(429) >= 3, statuses
    stats = driver.statistics()
    assert stats.rate_limited == statuses.count(429)
    assert stats.admission_inflight == 0
    driver.check_invariants()
    await driver.forwarder.aclose()


async def test_unplaced_function_with_no_runner_falls_through_and_forged_headers_count() -> None:
    driver = _driver(smart_routing=False)
    gate, sent = await _call(driver, None, [("x-edgefn-hop", "1"), ("host", "f.localhost")])
    assert not gate.handled
    assert not sent
    # Forwarding headers stripped; the socket peer becomes the (verified) client address.
    assert gate.headers == [("host", "f.localhost"), ("x-edgefn-client-addr", "10.0.0.1")]
    assert driver.statistics().stripped_headers == 1
    decision = driver.route("f", here=False, hop=5)
    assert decision.target is None
    await driver.forwarder.aclose()


async def test_refused_peer_is_avoided_until_a_heartbeat_after_the_hold() -> None:
    """The health driver's wiring: a refused forward marks the peer unhealthy in the policy at
    once; a heartbeat within ``[suspicion] hold_ms`` keeps it so, a later one clears it."""
    driver = _driver()
    peer = driver.config.locations[1].id
    driver._on_heartbeat(HeartbeatMsg(peer, "http://127.0.0.1:9"))
    driver._on_beacon(LoadBeacon(peer, "http://127.0.0.1:9", functions=("f",)))
    assert driver.candidates("f", here=False) == [peer]
    now = mono_ms()
    driver.health.outcome(peer, ok=False, latency_ms=1.0, connect_failed=True, now_ms=now)
    assert peer in driver.policy.unhealthy
    driver.health.heartbeat(peer, now + driver.config.suspicion.hold_ms)
    assert peer in driver.policy.unhealthy
    driver.health.heartbeat(peer, now + driver.config.suspicion.hold_ms + 1)
    assert peer not in driver.policy.unhealthy
    driver.check_invariants()
    await driver.forwarder.aclose()


def test_unknown_positions_use_the_configured_rtt() -> None:
    """A location without a position is ``unknown_rtt_ms`` away, never 0 (which looks nearest)."""
    driver = _driver(unknown_rtt_ms=77.0)
    assert driver._rtt_ms(driver.location, "nowhere") == 77.0
    assert driver._rtt_ms(driver.location, driver.config.locations[1].id) > 0
