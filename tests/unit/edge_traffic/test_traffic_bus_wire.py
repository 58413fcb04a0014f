"""What a node makes of a message on the traffic bus: a beacon is the peer's heartbeat too."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from edgefn.edge.traffic_bus import HeartbeatMsg, LoadBeacon, TrafficBus


@dataclass
class _Msg:  # the two fields of a nats-py Msg the bus reads
    subject: str
    data: bytes


def _bus() -> tuple[TrafficBus, list[object]]:
    heard: list[object] = []
    bus = TrafficBus(
        "fra", on_heartbeat=heard.append, on_beacon=heard.append, connect_deadline_s=1.0
    )
    return bus, heard


async def test_a_beacon_is_heard_as_the_peers_heartbeat_and_its_load() -> None:
    bus, heard = _bus()
    beacon = LoadBeacon("ams", "http://127.0.0.1:9", concurrency=3, functions=("hello",))
    await bus._beacon_msg(_Msg("edgefn.load.ams", msgspec.json.encode(beacon)))
    assert heard == [HeartbeatMsg("ams", "http://127.0.0.1:9"), beacon]


async def test_a_beacon_about_another_location_or_not_decoding_is_dropped() -> None:
    bus, heard = _bus()
    forged = LoadBeacon("ams", "http://127.0.0.1:9")
    await bus._beacon_msg(_Msg("edgefn.load.cdg", msgspec.json.encode(forged)))
    await bus._beacon_msg(_Msg("edgefn.load.ams", b"{not json"))
    await bus._beacon_msg(_Msg("edgefn.load.ams", b'{"location": "ams"}'))  # no url
    assert heard == []
