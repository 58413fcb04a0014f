"""The node's traffic driver: for each request, serve here, forward, or answer 429 / 503 itself.

One :class:`TrafficDriver` per edge node assembles the traffic parts and owns the per-request
flow; every decision in it is made by a pure machine of :mod:`edgefn.routing`:

* ``traffic_bus.py``: heartbeats and load beacons on NATS (:class:`~.traffic_bus.TrafficBus`) and
  what this node knows of the others (:class:`~.traffic_bus.PeerTable`);
* ``traffic_health.py``: phi heartbeats, active probes, request outcomes and suspicion, applied to
  the routing policy's view of health (:class:`~.traffic_health.HealthDriver`);
* ``routing/local_limits.py`` (pure): this location's share of ``[limits] requests_per_s`` and the
  per-client GCRA (:class:`~edgefn.routing.LocalRateLimits`);
* ``traffic_admission.py``: admit, queue (bounded wait) or shed
  (:class:`~.traffic_admission.AdmissionQueue`);
* ``traffic_failover.py``: forwarding with one failover (:class:`~.traffic_failover.FailoverForwarder`);
* ``traffic_gate.py``: the request's gate, its client identity, the driver's JSON replies.

**Per request** (:meth:`TrafficDriver.enter`, called by the node once the function is resolved,
with its manifest if it runs here): forwarding headers are verified with the planet secret (an
invalid set is counted) and stripped, verified or not; the client identity is kept if signed,
else replaced by the socket peer's. :meth:`TrafficDriver.route` then decides among this location
(if the function runs here) and the fresh peers running it, by
:class:`~edgefn.routing.RoutingPolicy` or, with ``smart_routing=False`` (the benchmark's
``--routing nearest`` baseline), :func:`~edgefn.routing.route_nearest`. No target: a function
nobody runs falls through (the node answers 404), else ``503 no_route``. Elsewhere: the failover
forwarder. Here: rate limits (``429``), then admission (``503 overloaded``, maybe after a bounded
wait); :meth:`TrafficDriver.leave` frees the admission slot.

**Periodic.** Every ``tick_interval_s`` the driver expires queued requests; every
``report_interval_s`` it closes the demand interval (new rate-limit shares), publishes its
heartbeat and beacon, and ticks the health table.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from edgefn.bundle.manifest import Manifest
from edgefn.edge._clock import mono_ms, wall_ms
from edgefn.edge.cron_policy import carbon_claim_delay_ms
from edgefn.edge.forward import Forwarder
from edgefn.edge.thermal import ThermalGovernor, ThermalSensor
from edgefn.edge.traffic_admission import AdmissionQueue
from edgefn.edge.traffic_bus import HeartbeatMsg, LoadBeacon, PeerTable, TrafficBus
from edgefn.edge.traffic_config import (
    LOCATIONS_FILE,
    SECRET_FILE,
    PeerLocation,
    TrafficConfig,
    TrafficOptions,
    load_traffic_config,
    write_planet_files,
)
from edgefn.edge.traffic_failover import FailoverForwarder
from edgefn.edge.traffic_gate import (
    Gate,
    Message,
    Receive,
    Send,
    client_identity,
    recording,
    reply,
    unsigned_for_function,
)
from edgefn.edge.traffic_health import HealthDriver
from edgefn.edge.traffic_stats import TrafficStatistics
from edgefn.routing import (
    IDEMPOTENT_METHODS,
    ForwardCheck,
    ForwardInfo,
    LoadReported,
    LocalRateLimits,
    Reject,
    RouteDecision,
    RouteRequest,
    RoutingPolicy,
    ThermalThrottle,
    affinity_key,
    inspect_forward,
    route_nearest,
    strip_forward_headers,
)
from edgefn.world import GeoPoint, rtt_ms

# The driver's public surface, with the configuration it is built from (its callers import both
# from here: planet/roles.py, cli/_roles.py, tests).
__all__ = [
    "IDEMPOTENT_METHODS",
    "LOCATIONS_FILE",
    "SECRET_FILE",
    "Gate",
    "LoadBeacon",
    "PeerLocation",
    "TrafficConfig",
    "TrafficDriver",
    "TrafficOptions",
    "TrafficStatistics",
    "load_traffic_config",
    "write_planet_files",
]


class TrafficDriver:
    """Routing, health, rate limits and admission for one node. ``await start(nats_urls)``."""

    def __init__(
        self,
        config: TrafficConfig,
        *,
        functions: Callable[[], frozenset[str]] = frozenset,
        thermal: ThermalSensor | None = None,
        seed: int = 0,
    ) -> None:
        self.config = config
        self.location = config.location
        self.url = ""
        # The functions this location runs, asked at every beacon (the node's function table).
        self.functions = functions
        self._coords = {p.id: GeoPoint(p.lat, p.lon) for p in config.locations}
        self._carbon = {p.id: p.carbon_g_per_kwh for p in config.locations}
        self.policy = RoutingPolicy(self._rtt_ms, config=config.routing, rng=random.Random(seed))
        self.peers = PeerTable(
            self.location,
            max_locations=config.routing.max_locations,
            max_functions=config.max_functions,
            fresh_ms=config.report_fresh_ms,
        )
        self.health = HealthDriver(config, policy=self.policy, peers=self.peers)
        self.admission = AdmissionQueue(config.admission)
        # A hot location takes less work and tells its peers (routing/thermal.py).
        self.thermal = ThermalGovernor(
            thermal or ThermalSensor(), ThermalThrottle(config.thermal), self.admission.set_capacity
        )
        self.limits = LocalRateLimits(
            self.location,
            client_rate_per_s=config.client_rate_per_s,
            client_burst=config.client_burst,
            max_functions=config.max_functions,
            client_key_max_chars=config.client_key_max_chars,
        )
        self.forwarder = Forwarder()
        self.failover = FailoverForwarder(
            config,
            forwarder=self.forwarder,
            peers=self.peers,
            health=self.health,
            rtt_ms=self._rtt_ms,
        )
        self.bus = TrafficBus(
            self.location,
            on_heartbeat=self._on_heartbeat,
            on_beacon=self._on_beacon,
            connect_deadline_s=config.bus_connect_deadline_s,
        )
        self._counts = dict.fromkeys(
            ("served_here", "rate_limited", "shed", "stripped", "no_route"), 0
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._draining = False

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, nats_urls: list[str], *, url: str) -> None:
        """Connect to the bus (in the background, retrying) and start the periodic loop."""
        self.url = url
        self.health.start()
        self._tasks = [
            asyncio.create_task(self.bus.connect(nats_urls), name="traffic-bus"),
            asyncio.create_task(self._tick_loop(), name="traffic-tick"),
        ]

    async def stop(self) -> None:
        """Tell the others this location is draining, then stop every task and connection."""
        self._draining = True
        with contextlib.suppress(Exception):
            await self._publish()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.health.aclose()
        await self.bus.close()
        await self.forwarder.aclose()

    # -- bus in ------------------------------------------------------------------------------
    def _on_heartbeat(self, beat: HeartbeatMsg) -> None:
        now = mono_ms()
        if self.peers.heard(beat, now):
            self.health.heartbeat(beat.location, now)

    def _on_beacon(self, beacon: LoadBeacon) -> None:
        report = self.peers.reported(beacon, mono_ms())
        if report is not None:
            self.policy.handle(LoadReported(report))

    # -- periodic ----------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        """Expire queued requests every tick while some wait; report every report interval.

        With nobody queued the loop sleeps until the next report (or until a request starts
        waiting) instead of ticking for nothing: an idle node wakes 4 times a second, not 20."""
        interval = self.config.report_interval_s
        step = min(self.config.tick_interval_s, interval)
        last = time.monotonic()
        while True:
            if self.admission.waiting:
                await asyncio.sleep(step)
            else:
                await self.admission.until_queued(max(step, last + interval - time.monotonic()))
            self.admission.expire()
            now = time.monotonic()
            if now - last >= interval:
                self.thermal.apply()
                self.limits.rebalance(now - last, now, self.peers.demand(mono_ms()))
                last = now
                with contextlib.suppress(Exception):
                    await self._publish()
                self.health.tick(mono_ms())

    async def _publish(self) -> None:
        await self.bus.publish(self.beacon())

    def beacon(self) -> LoadBeacon:
        """This location's current load report (what goes on the bus)."""
        report = self.admission.load_report(
            self.location, now_ms=mono_ms(), draining=self._draining, hot=self.thermal.state.hot
        )
        return LoadBeacon(
            location=self.location,
            url=self.url,
            concurrency=report.concurrency,
            queue_len=report.queue_len,
            limit=report.limit,
            service_ms_ewma=report.service_ms_ewma,
            overloaded=report.overloaded,
            draining=report.draining,
            hot=report.hot,
            functions=tuple(sorted(self.functions())),
            demand=self.limits.demand_per_s(),
        )

    # -- routing ------------------------------------------------------------------------------
    def _rtt_ms(self, a: str, b: str) -> float:
        pa, pb = self._coords.get(a), self._coords.get(b)
        if pa is None or pb is None:
            return self.config.unknown_rtt_ms
        return rtt_ms(pa, pb)

    def candidates(self, function: str, *, here: bool) -> list[str]:
        """Locations that run ``function`` and reported recently (this one first when ``here``)."""
        out = self.peers.running(function, mono_ms())
        return [self.location, *out] if here else out

    def claim_delay_ms(self, function: str) -> int:
        """``[triggers] prefer = "low_carbon"``: how long this location lets the cleaner ones
        that run ``function`` (fresh beacons) claim a tick first (cron_policy)."""
        running = self.candidates(function, here=True)
        return carbon_claim_delay_ms(self.location, {loc: self._carbon.get(loc) for loc in running})

    def route(
        self,
        function: str,
        *,
        here: bool,
        hop: int = 0,
        forwarded_from: tuple[str, ...] = (),
        affinity_key: str | None = None,
    ) -> RouteDecision:
        """Serve here or forward: the decision for one request (no I/O)."""
        now = mono_ms()
        here_report = self.admission.load_report(
            self.location, now_ms=now, hot=self.thermal.state.hot
        )
        self.policy.handle(LoadReported(here_report))
        request = RouteRequest(
            ingress=self.location,
            function=function,
            candidates=self.candidates(function, here=here),
            now_ms=now,
            hop=hop,
            forwarded_from=forwarded_from,
            affinity_key=affinity_key,
        )
        if not self.config.smart_routing:
            return route_nearest(
                request,
                rtt_ms=self.policy.rtt_ms,
                unhealthy=self.policy.unhealthy,
                config=self.policy.config,
            )
        return self.policy.decide(request)

    # -- per request --------------------------------------------------------------------------
    async def enter(
        self,
        scope: MutableMapping[str, Any],
        receive: Receive,
        send: Send,
        headers: list[tuple[str, str]],
        function: str | None,
        manifest: Manifest | None,
        request_id: str,
        tap: Callable[[Message], Message] | None = None,
    ) -> Gate:
        """Route, rate-limit and admit one request. ``gate.handled``: the response was sent.

        ``tap``: called with the response's start message (:func:`recording`)."""
        gate = await self._enter(scope, receive, send, headers, function, manifest, request_id, tap)
        if not gate.handled:
            gate.headers = unsigned_for_function(gate.headers)
        return gate

    async def _enter(
        self,
        scope: MutableMapping[str, Any],
        receive: Receive,
        send: Send,
        headers: list[tuple[str, str]],
        function: str | None,
        manifest: Manifest | None,
        request_id: str,
        tap: Callable[[Message], Message] | None,
    ) -> Gate:
        info, check = inspect_forward(self.config.secret, headers, now_ms=wall_ms())
        if check is not ForwardCheck.VALID and check is not ForwardCheck.ABSENT:
            self._counts["stripped"] += 1
        if info is not None:
            request_id = info.request_id
        # Verified or not, the function never sees forwarding headers: they are ours.
        headers = strip_forward_headers(headers)
        headers, client_key = client_identity(
            self.config.secret,
            headers,
            scope,
            now_ms=wall_ms(),
            location_max_chars=self.config.client_location_max_chars,
        )
        gate = Gate(request_id, headers, send, client_key=client_key)
        gate.send = recording(gate, send, tap)
        if function is None:
            return gate
        decision = self.route(
            function,
            here=manifest is not None,
            hop=info.hop if info else 0,
            forwarded_from=info.forwarded_by if info else (),
            affinity_key=affinity_key(manifest.placement.affinity, headers) if manifest else None,
        )
        if decision.target is None:
            await self._no_route(gate, function, manifest, info, decision)
        elif not decision.serve_here:
            retry_safe = bool(manifest is not None and manifest.placement.retry_safe)
            await self.failover.forward(gate, scope, receive, decision, info, retry_safe=retry_safe)
        else:
            assert manifest is not None, decision  # Serving here means the function runs here.
            await self._admit_here(gate, function, manifest)
        return gate

    async def _no_route(
        self,
        gate: Gate,
        function: str,
        manifest: Manifest | None,
        info: ForwardInfo | None,
        decision: RouteDecision,
    ) -> None:
        if manifest is None and not self.candidates(function, here=False) and info is None:
            return  # Nobody runs it: the node answers 404 as usual.
        self._counts["no_route"] += 1
        await reply(
            gate,
            self.location,
            503,
            "no_route",
            retry_after_s=self.config.no_route_retry_after_s,
            reason=decision.reason,
        )

    async def _admit_here(self, gate: Gate, function: str, manifest: Manifest) -> None:
        self.limits.arrived(function)
        denied = self.limits.check(
            function,
            manifest.limits.requests_per_s or 0.0,
            gate.client_key,
            time.monotonic(),
            members=lambda: self.candidates(function, here=True),
        )
        if denied is not None:
            self._counts["rate_limited"] += 1
            await reply(
                gate, self.location, 429, "rate_limited", retry_after_s=denied.retry_after_s
            )
            return
        admission_id, verdict = await self.admission.admit()
        if isinstance(verdict, Reject):
            self._counts["shed"] += 1
            await reply(gate, self.location, 503, "overloaded", retry_after_s=verdict.retry_after_s)
            return
        self._counts["served_here"] += 1
        gate.admission_id = admission_id
        gate.admitted_at = time.perf_counter()

    def leave(self, gate: Gate) -> None:
        """The node finished serving an admitted request: free its admission slot."""
        if gate.admission_id is None:
            return
        latency_ms = (time.perf_counter() - gate.admitted_at) * 1000
        admission_id, gate.admission_id = gate.admission_id, None
        self.admission.complete(admission_id, latency_ms=latency_ms, ok=0 < gate.status < 500)

    # -- introspection ------------------------------------------------------------------------
    def check_invariants(self) -> None:
        self.policy.check_invariants()
        self.health.check_invariants()
        self.admission.check_invariants()
        self.limits.check_invariants()

    def statistics(self) -> TrafficStatistics:
        adm = self.admission.statistics()
        fwd = self.failover.statistics()
        c = self._counts
        return TrafficStatistics(
            served_here=c["served_here"],
            forwarded=fwd.forwarded,
            failovers=fwd.failovers,
            forward_failed=fwd.forward_failed,
            rate_limited=c["rate_limited"],
            shed=c["shed"],
            stripped_headers=c["stripped"],
            no_route=c["no_route"],
            peers_known=len(self.peers),
            unhealthy=tuple(sorted(self.policy.unhealthy)),
            admission_limit=adm.limit,
            admission_inflight=adm.inflight,
            admission_queued=adm.queued,
            overloaded=adm.overloaded,
            celsius=self.thermal.state.celsius,
            hot=self.thermal.state.hot,
            capacity=self.thermal.state.capacity,
        )
