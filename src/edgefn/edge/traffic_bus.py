"""What a location tells the others on the bus, and what it knows about them from what it hears.

**Wire.** Every report interval each node publishes a :class:`LoadBeacon` (admission state,
functions served, demand per function, public URL) on ``load_report_subject(location)``,
JSON-encoded; it is the location's heartbeat too. :class:`TrafficBus` connects in the
background, subscribes to ``LOAD_REPORT_ALL`` (plain NATS pub/sub crosses the hubs' leafnodes, so
every node hears every other; ``no_echo``, so not itself) and hands each beacon that decodes and
comes from the location it names (:func:`from_itself`) to the driver as a heartbeat
(:class:`HeartbeatMsg`: location and URL) and as a beacon. Anything else is dropped. (A separate
heartbeat message on ``health_subject`` doubled every node's deliveries, N(N-1) per interval,
for nothing a beacon does not say.)

**Peers.** :class:`PeerTable` is what this location knows of the others: URL, functions, demand
and when it last heard from each. It holds at most ``max_locations`` peers and at most
``max_functions`` functions per beacon; never this location itself. Times are stamped with the
*receiver's* monotonic clock (arrival), so clock skew between hosts cannot make a report stale
or fresh. A peer is *fresh* while it has a URL and its last beacon is at most ``fresh_ms`` old;
only fresh peers are routing candidates and count in rate-limit shares.
:meth:`PeerTable.reported` also turns a beacon into the routing policy's
:class:`~edgefn.routing.policy.LoadReport`, clamping numbers a peer could get wrong.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from edgefn.routing import LoadReport, PeerDemand

__all__ = [
    "HeartbeatMsg",
    "LoadBeacon",
    "Peer",
    "PeerTable",
    "TrafficBus",
    "from_itself",
]


class LoadBeacon(msgspec.Struct, frozen=True):
    """What a location publishes every report interval (JSON on the bus)."""

    location: str
    url: str
    concurrency: int = 0
    queue_len: int = 0
    limit: int = 1
    service_ms_ewma: float = 0.0
    overloaded: bool = False
    draining: bool = False
    hot: bool = False
    functions: tuple[str, ...] = ()
    demand: dict[str, float] = {}


class HeartbeatMsg(msgspec.Struct, frozen=True):
    """A location's heartbeat: it is alive and answers at ``url``."""

    location: str
    url: str


def from_itself(subject: str, location: str) -> bool:
    """Whether a beacon names the location its subject does.

    NATS permissions let node X publish only ``edgefn.health.X`` / ``edgefn.load.X``
    (edgefn.bus.permissions), so the subject is authenticated and a beacon claiming another
    location (another location's URL, to draw its traffic) is dropped.
    """
    return subject.rsplit(".", 1)[-1] == location


@dataclass(slots=True)
class Peer:
    """What this location knows of another one."""

    url: str = ""
    functions: frozenset[str] = frozenset()
    demand: dict[str, float] = field(default_factory=dict)
    heard_ms: int = 0
    report_ms: int = -(10**12)  # Never reported: stale at any monotonic time.


class PeerTable:
    """The other locations this one has heard from (bounded)."""

    def __init__(
        self, location: str, *, max_locations: int, max_functions: int, fresh_ms: int
    ) -> None:
        self.location = location
        self.max_locations = max_locations
        self.max_functions = max_functions
        self.fresh_ms = fresh_ms
        self._peers: dict[str, Peer] = {}

    def __len__(self) -> int:
        return len(self._peers)

    def get(self, location: str) -> Peer | None:
        return self._peers.get(location)

    def url(self, location: str) -> str:
        peer = self._peers.get(location)
        return peer.url if peer is not None else ""

    def _touch(self, location: str, url: str) -> Peer | None:
        """The peer ``location``, added if there is room; None for this location or no room."""
        if location == self.location or not location:
            return None
        peer = self._peers.get(location)
        if peer is None:
            if len(self._peers) >= self.max_locations:
                return None
            peer = self._peers[location] = Peer()
        if url:
            peer.url = url
        return peer

    def heard(self, beat: HeartbeatMsg, now_ms: int) -> bool:
        """Record a heartbeat; False if it is not about a peer this table keeps."""
        peer = self._touch(beat.location, beat.url)
        if peer is None:
            return False
        peer.heard_ms = now_ms
        return True

    def reported(self, beacon: LoadBeacon, now_ms: int) -> LoadReport | None:
        """Record a beacon; the load report it implies, or None if the peer is not kept."""
        peer = self._touch(beacon.location, beacon.url)
        if peer is None:
            return None
        cap = self.max_functions
        peer.functions = frozenset(beacon.functions[:cap])
        peer.demand = {k: v for k, v in list(beacon.demand.items())[:cap] if v >= 0}
        peer.report_ms = now_ms
        return LoadReport(
            beacon.location,
            max(0, beacon.concurrency),
            max(0, beacon.queue_len),
            max(1, beacon.limit),
            beacon.service_ms_ewma if math.isfinite(beacon.service_ms_ewma) else 0.0,
            beacon.overloaded,
            beacon.draining,
            now_ms,
            hot=beacon.hot,
        )

    def fresh(self, peer: Peer, now_ms: int) -> bool:
        return bool(peer.url) and now_ms - peer.report_ms <= self.fresh_ms

    def running(self, function: str, now_ms: int) -> list[str]:
        """Fresh peers that run ``function``, in the order they were first heard."""
        return [
            loc
            for loc, peer in self._peers.items()
            if function in peer.functions and self.fresh(peer, now_ms)
        ]

    def demand(self, now_ms: int) -> list[PeerDemand]:
        """What every fresh peer published: (location, functions, demand per second)."""
        return [
            (loc, peer.functions, peer.demand)
            for loc, peer in self._peers.items()
            if self.fresh(peer, now_ms)
        ]


class TrafficBus:
    """This location's NATS connection for heartbeats and beacons."""

    def __init__(
        self,
        location: str,
        *,
        on_heartbeat: Callable[[HeartbeatMsg], None],
        on_beacon: Callable[[LoadBeacon], None],
        connect_deadline_s: float,
    ) -> None:
        self.location = location
        self._on_heartbeat = on_heartbeat
        self._on_beacon = on_beacon
        self._connect_deadline_s = connect_deadline_s
        self._nc: Any = None

    async def connect(self, nats_urls: list[str]) -> None:
        """Connect (retrying until the deadline) and subscribe to every node's reports."""
        # lazy: edgefn.bus (NATS client, server supervision) costs ~0.2 s at every node start, and
        # a node without a planet (edgefn dev, edgefn.testing) never connects.
        from edgefn.bus.jetstream import connect
        from edgefn.bus.subjects import LOAD_REPORT_ALL

        self._nc = await connect(
            nats_urls,
            name=f"traffic-{self.location}",
            connect_deadline_s=self._connect_deadline_s,
            no_echo=True,
        )
        await self._nc.subscribe(LOAD_REPORT_ALL, cb=self._beacon_msg)

    async def _beacon_msg(self, msg: Any) -> None:
        try:
            beacon = msgspec.json.decode(msg.data, type=LoadBeacon)
        except msgspec.DecodeError:
            return
        if from_itself(msg.subject, beacon.location):
            self._on_heartbeat(HeartbeatMsg(beacon.location, beacon.url))
            self._on_beacon(beacon)

    async def publish(self, beacon: LoadBeacon) -> None:
        """Send this location's beacon (its heartbeat too); nothing while not connected."""
        # lazy: for the reason given in connect().
        from edgefn.bus.subjects import load_report_subject

        if self._nc is None or not self._nc.is_connected:
            return
        await self._nc.publish(load_report_subject(self.location), msgspec.json.encode(beacon))

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.close()
