"""The node's traffic driver: routing, health, rate limits and admission for one location.

One :class:`TrafficDriver` per edge node holds the pure machines of :mod:`edgefn.routing`
(``RoutingPolicy``, ``HealthTable``, ``AdmissionController``, per-function ``GlobalRateShare`` +
``TokenBucket``, per-client ``Gcra``) and carries out what they decide with real I/O.

**Bus.** Every ``report_interval_s`` the driver publishes a heartbeat on ``health_subject(self)``
and a :class:`LoadBeacon` (admission state, functions served here, per-function demand, URL) on
``load_report_subject(self)``; it subscribes to ``HEALTH_ALL`` and ``LOAD_REPORT_ALL``. Plain NATS
pub/sub crosses the hubs' leafnodes, so every node hears every other. A report is stamped with the
*receiver's* clock (``at_ms`` = arrival), so clock skew between hosts cannot make it stale or fresh.

**Health.** Heartbeats feed the phi-accrual detector; active probes (``GET /_edgefn/health``) answer
the table's ``SendProbe``; outcomes of forwarded requests feed passive outlier detection. A
connection refused by a forward target marks it unhealthy in the routing policy at once (it is
cleared by the next heartbeat from it), because waiting for phi to rise would cost requests.

**Per request** (:meth:`TrafficDriver.enter`, called by the node right after the function is
resolved): forwarding headers are verified with the planet secret, and anything not VALID is
stripped (never trusted). The routing policy picks serve-here or a target among the fresh
locations that run the function (affinity key from ``[placement] affinity``). A forward goes through
:class:`~edgefn.edge.forward.Forwarder` with signed hop headers; if the target fails before
answering, the request is retried once at the next alternate when nothing reached the target
(connect failure) or the method is idempotent or the manifest says ``retry_safe``. Serving here:
``[limits] requests_per_s`` (this location's share, a token bucket) and the per-client GCRA answer
429 with ``Retry-After``. The per-client key is the client address the anycast entry saw, taken
only from its signed ``x-edgefn-client-addr`` (:func:`~edgefn.routing.internal_auth.verify_client`);
an unsigned, forged or stale copy is stripped and the ingress signs its own socket peer instead, so
a forwarded request keeps the client's address and no client-supplied header is ever a key; then admission answers at once (admit), later (queued, bounded wait) or
503 with ``Retry-After``. :meth:`TrafficDriver.leave` reports the completion to admission.

With ``smart_routing=False`` (the benchmark's baseline, ``--routing nearest``) a request is served
where it arrives when the function runs there, else forwarded to the nearest healthy location.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from edgefn.edge.forward import Forwarder, ForwardOutcome, ReplayableBody
from edgefn.edge.traffic_config import (
    LOCATIONS_FILE,
    SECRET_FILE,
    PeerLocation,
    TrafficConfig,
    TrafficOptions,
    load_traffic_config,
    write_planet_files,
)
from edgefn.routing import (
    AdmissionController,
    AdmissionTick,
    Admit,
    Arrived,
    Cancelled,
    Completed,
    DemandReport,
    ForwardCheck,
    Gcra,
    GlobalRateShare,
    HealthChanged,
    HealthTable,
    HealthTick,
    Heartbeat,
    LoadReport,
    LoadReported,
    MarkHealthy,
    MarkUnhealthy,
    ProbeResult,
    RateDecision,
    Reject,
    RequestOutcome,
    RouteDecision,
    RouteReason,
    RouteRequest,
    RoutingPolicy,
    SendProbe,
    SharesChanged,
    ShareTick,
    TokenBucket,
    inspect_forward,
    next_forward,
    retry_after_header,
    sign_forward,
    strip_forward_headers,
)
from edgefn.routing.headers import REQUEST_ID_HEADER
from edgefn.routing.internal_auth import (
    CLIENT_AT_HEADER,
    CLIENT_HEADERS,
    CLIENT_LOCATION_HEADER,
    CLIENT_SIG_HEADER,
    sign_client,
    verify_client,
)
from edgefn.world import GeoPoint, rtt_ms

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

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_JSON = [(b"content-type", b"application/json")]


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
    functions: tuple[str, ...] = ()
    demand: dict[str, float] = {}


class _HeartbeatMsg(msgspec.Struct, frozen=True):
    location: str
    url: str


@dataclass(slots=True)
class _Peer:
    url: str = ""
    functions: frozenset[str] = frozenset()
    demand: dict[str, float] = field(default_factory=dict)
    heard_ms: int = 0
    report_ms: int = -(10**12)
    suspect_since_ms: int | None = None


@dataclass(slots=True)
class Gate:
    """One request's passage through the driver; the node passes it back to :meth:`leave`."""

    request_id: str
    headers: list[tuple[str, str]]
    send: Send
    handled: bool = False
    status: int = 0
    admission_id: int | None = None
    admitted_at: float = 0.0
    client_key: str = "unknown"


@dataclass(frozen=True, slots=True)
class TrafficStatistics:
    served_here: int
    forwarded: int
    failovers: int
    forward_failed: int
    rate_limited: int
    shed: int
    stripped_headers: int
    no_route: int
    peers_known: int
    unhealthy: tuple[str, ...]
    admission_limit: int
    admission_inflight: int
    admission_queued: int
    overloaded: bool


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _mono_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def _from_itself(subject: str, location: str) -> bool:
    """Whether a beacon names the location its subject does.

    NATS permissions let node X publish only ``edgefn.health.X`` / ``edgefn.load.X``
    (edgefn.bus.permissions), so the subject is authenticated and a beacon claiming another
    location (another location's URL, to draw its traffic) is dropped.
    """
    return subject.rsplit(".", 1)[-1] == location


class TrafficDriver:
    """Routing, health, rate limits and admission for one node. ``await start(nats_urls)``."""

    def __init__(self, config: TrafficConfig, *, seed: int = 0) -> None:
        self.config = config
        self.location = config.location
        self.url = ""
        self.functions: Callable[[], frozenset[str]] = frozenset
        self._coords = {p.id: GeoPoint(p.lat, p.lon) for p in config.locations}
        self.policy = RoutingPolicy(self._rtt_ms, config=config.routing, rng=random.Random(seed))
        self.health = HealthTable(config=config.health, self_location=self.location)
        self.admission = AdmissionController(config.admission)
        self.forwarder = Forwarder()
        self._peers: dict[str, _Peer] = {}
        self._shares: dict[str, tuple[float, GlobalRateShare, TokenBucket]] = {}
        self._clients = (
            Gcra(rate_per_s=config.client_rate_per_s, burst=config.client_burst)
            if config.client_rate_per_s > 0
            else None
        )
        self._demand: dict[str, int] = {}
        self._last_demand: dict[str, float] = {}
        self._waiting: dict[int, asyncio.Future[Admit | Reject]] = {}
        self._ids = itertools.count(1)
        self._counts = dict.fromkeys(
            (
                "served_here",
                "forwarded",
                "failovers",
                "forward_failed",
                "rate_limited",
                "shed",
                "stripped",
                "no_route",
            ),
            0,
        )
        self._nc: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._probe_client: Any = None
        self._draining = False

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, nats_urls: list[str], *, url: str) -> None:
        """Connect to the bus (in the background, retrying) and start the report loop."""
        import httpx

        self.url = url
        self._probe_client = httpx.AsyncClient(timeout=self.config.probe_timeout_s, trust_env=False)
        self._tasks = [
            asyncio.create_task(self._connect(nats_urls), name="traffic-bus"),
            asyncio.create_task(self._tick_loop(), name="traffic-tick"),
        ]

    async def stop(self) -> None:
        self._draining = True
        with contextlib.suppress(Exception):
            await self._publish()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.close()
        await self.forwarder.aclose()
        if self._probe_client is not None:
            await self._probe_client.aclose()

    async def _connect(self, nats_urls: list[str]) -> None:
        from edgefn.bus.jetstream import connect
        from edgefn.bus.subjects import HEALTH_ALL, LOAD_REPORT_ALL

        self._nc = await connect(
            nats_urls, name=f"traffic-{self.location}", connect_deadline_s=3600
        )
        await self._nc.subscribe(HEALTH_ALL, cb=self._on_heartbeat)
        await self._nc.subscribe(LOAD_REPORT_ALL, cb=self._on_report)

    # -- bus in ------------------------------------------------------------------------------
    def _peer(self, location: str, url: str) -> _Peer | None:
        if location == self.location or not location:
            return None
        peer = self._peers.get(location)
        if peer is None:
            if len(self._peers) >= self.config.routing.max_locations:
                return None
            peer = self._peers[location] = _Peer()
        if url:
            peer.url = url
        return peer

    async def _on_heartbeat(self, msg: Any) -> None:
        try:
            beat = msgspec.json.decode(msg.data, type=_HeartbeatMsg)
        except msgspec.DecodeError:
            return
        if not _from_itself(msg.subject, beat.location):
            return
        peer = self._peer(beat.location, beat.url)
        if peer is None:
            return
        now = _mono_ms()
        peer.heard_ms = now
        self._apply_health(self.health.handle(Heartbeat(beat.location, now)))
        if peer.suspect_since_ms is not None and now - peer.suspect_since_ms > 250:
            peer.suspect_since_ms = None
            if self.health.is_healthy(beat.location):
                self.policy.handle(HealthChanged(beat.location, True))

    async def _on_report(self, msg: Any) -> None:
        try:
            beacon = msgspec.json.decode(msg.data, type=LoadBeacon)
        except msgspec.DecodeError:
            return
        if not _from_itself(msg.subject, beacon.location):
            return
        peer = self._peer(beacon.location, beacon.url)
        if peer is None:
            return
        now = _mono_ms()
        peer.functions = frozenset(beacon.functions[: self.config.max_functions])
        peer.demand = {
            k: v for k, v in list(beacon.demand.items())[: self.config.max_functions] if v >= 0
        }
        peer.report_ms = now
        report = LoadReport(
            beacon.location,
            max(0, beacon.concurrency),
            max(0, beacon.queue_len),
            max(1, beacon.limit),
            beacon.service_ms_ewma if math.isfinite(beacon.service_ms_ewma) else 0.0,
            beacon.overloaded,
            beacon.draining,
            now,
        )
        self.policy.handle(LoadReported(report))

    def _apply_health(self, instructions: list[Any]) -> None:
        for ins in instructions:
            if isinstance(ins, MarkUnhealthy):
                self.policy.handle(HealthChanged(ins.location, False))
            elif isinstance(ins, MarkHealthy):
                peer = self._peers.get(ins.location)
                if peer is None or peer.suspect_since_ms is None:
                    self.policy.handle(HealthChanged(ins.location, True))
            elif isinstance(ins, SendProbe):
                self._tasks = [t for t in self._tasks if not t.done()]
                if len(self._tasks) < 256:
                    self._tasks.append(asyncio.create_task(self._probe(ins)))

    async def _probe(self, ins: SendProbe) -> None:
        peer = self._peers.get(ins.location)
        t0 = time.perf_counter()
        ok = False
        if peer is not None and peer.url and self._probe_client is not None:
            with contextlib.suppress(Exception):
                response = await self._probe_client.get(peer.url + "/_edgefn/health")
                ok = response.status_code == 200
        latency_ms = (time.perf_counter() - t0) * 1000
        event = ProbeResult(ins.location, ok, latency_ms, _mono_ms(), ins.probe_id)
        self._apply_health(self.health.handle(event))

    # -- bus out / periodic ------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        interval = self.config.report_interval_s
        last = time.monotonic()
        while True:
            await asyncio.sleep(min(0.05, interval))
            self._expire_queue()
            now = time.monotonic()
            if now - last >= interval:
                self._rebalance(now - last)
                last = now
                with contextlib.suppress(Exception):
                    await self._publish()
                self._apply_health(self.health.handle(HealthTick(_mono_ms())))

    def _expire_queue(self) -> None:
        self._resolve(self.admission.handle(AdmissionTick(_mono_ms())))

    def beacon(self) -> LoadBeacon:
        """This location's current load report (what goes on the bus)."""
        report = self.admission.load_report(
            self.location, now_ms=_mono_ms(), draining=self._draining
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
            functions=tuple(sorted(self.functions())),
            demand=dict(self._last_demand),
        )

    def _rebalance(self, elapsed_s: float) -> None:
        self._last_demand = {
            name: n / max(elapsed_s, 1e-3) for name, n in sorted(self._demand.items())
        }
        self._demand = {}
        now_s = time.monotonic()
        for name, (_, share, bucket) in self._shares.items():
            share.handle(DemandReport(self.location, self._last_demand.get(name, 0.0), now_s))
            for loc, peer in self._peers.items():
                if name in peer.functions and self._fresh(peer):
                    share.handle(DemandReport(loc, peer.demand.get(name, 0.0), now_s))
            for change in share.handle(ShareTick(now_s)):
                self._set_share(bucket, change, now_s)

    def _set_share(self, bucket: TokenBucket, change: SharesChanged, now_s: float) -> None:
        rate = change.as_dict().get(self.location, 0.0)
        bucket.set_rate(rate, now_s, capacity=max(1.0, rate))

    async def _publish(self) -> None:
        from edgefn.bus.subjects import health_subject, load_report_subject

        if self._nc is None or not self._nc.is_connected:
            return
        beat = _HeartbeatMsg(self.location, self.url)
        await self._nc.publish(health_subject(self.location), msgspec.json.encode(beat))
        await self._nc.publish(
            load_report_subject(self.location), msgspec.json.encode(self.beacon())
        )

    # -- routing ------------------------------------------------------------------------------
    def _rtt_ms(self, a: str, b: str) -> float:
        pa, pb = self._coords.get(a), self._coords.get(b)
        if pa is None or pb is None:
            return 50.0  # Unknown position: a typical continental RTT rather than a guess of 0.
        return rtt_ms(pa, pb)

    def _fresh(self, peer: _Peer) -> bool:
        return bool(peer.url) and _mono_ms() - peer.report_ms <= self.config.report_fresh_ms

    def candidates(self, function: str, *, here: bool) -> list[str]:
        """Locations that run ``function`` and reported recently (this one when ``here``)."""
        out = [
            loc
            for loc, peer in self._peers.items()
            if function in peer.functions and self._fresh(peer)
        ]
        return [self.location, *out] if here else out

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
        now = _mono_ms()
        self.policy.handle(LoadReported(self.admission.load_report(self.location, now_ms=now)))
        candidates = self.candidates(function, here=here)
        if not self.config.smart_routing:
            return self._nearest(candidates, here=here, hop=hop, forwarded_from=forwarded_from)
        request = RouteRequest(
            ingress=self.location,
            function=function,
            candidates=candidates,
            now_ms=now,
            hop=hop,
            forwarded_from=forwarded_from,
            affinity_key=affinity_key,
        )
        return self.policy.decide(request)

    def _nearest(
        self, candidates: list[str], *, here: bool, hop: int, forwarded_from: tuple[str, ...]
    ) -> RouteDecision:
        if here:
            return RouteDecision(self.location, RouteReason.LOCAL_BEST, serve_here=True)
        if hop >= self.config.routing.max_hops:
            return RouteDecision(None, RouteReason.HOP_LIMIT)
        unhealthy = self.policy.unhealthy
        ranked = sorted(
            (self._rtt_ms(self.location, c), c)
            for c in candidates
            if c not in unhealthy and c not in forwarded_from
        )
        if not ranked:
            return RouteDecision(None, RouteReason.NO_CANDIDATE)
        names = tuple(c for _, c in ranked)
        return RouteDecision(names[0], RouteReason.FORWARD_BETTER, names[1:3], ranked[0][0])

    # -- per request --------------------------------------------------------------------------
    async def enter(
        self,
        scope: MutableMapping[str, Any],
        receive: Receive,
        send: Send,
        headers: list[tuple[str, str]],
        function: str | None,
        manifest: Any,
        request_id: str,
    ) -> Gate:
        """Route, rate-limit and admit one request. ``gate.handled``: the response was sent."""
        gate = await self._enter(scope, receive, send, headers, function, manifest, request_id)
        if not gate.handled:
            # What the node serves may read x-edgefn-client-addr, never the signature (a
            # function could replay it to be keyed as someone else).
            gate.headers = [
                (k, v) for k, v in gate.headers if k not in (CLIENT_AT_HEADER, CLIENT_SIG_HEADER)
            ]
        return gate

    async def _enter(
        self,
        scope: MutableMapping[str, Any],
        receive: Receive,
        send: Send,
        headers: list[tuple[str, str]],
        function: str | None,
        manifest: Any,
        request_id: str,
    ) -> Gate:
        info, check = inspect_forward(self.config.secret, headers, now_ms=_wall_ms())
        if check is not ForwardCheck.VALID and check is not ForwardCheck.ABSENT:
            self._counts["stripped"] += 1
        if info is not None:
            request_id = info.request_id
        # Verified or not, the function never sees forwarding headers: they are ours.
        headers = strip_forward_headers(headers)
        headers, client_key = self._client_identity(headers, scope)
        gate = Gate(request_id, headers, send, client_key=client_key)
        gate.send = self._recording(gate, send)
        if function is None:
            return gate
        here = manifest is not None
        affinity = _affinity_key(manifest, headers) if here else None
        decision = self.route(
            function,
            here=here,
            hop=info.hop if info else 0,
            forwarded_from=info.forwarded_by if info else (),
            affinity_key=affinity,
        )
        if decision.target is None:
            if not here and not self.candidates(function, here=False) and info is None:
                return gate  # Nobody runs it: the node answers 404 as usual.
            self._counts["no_route"] += 1
            await self._reply(gate, 503, "no_route", retry_after_s=1.0, reason=decision.reason)
            return gate
        if not decision.serve_here:
            retry_safe = bool(manifest is not None and manifest.placement.retry_safe)
            await self._forward(gate, scope, receive, decision, info, retry_safe)
            return gate
        await self._admit_here(gate, function, manifest)
        return gate

    def _client_identity(
        self, headers: list[tuple[str, str]], scope: MutableMapping[str, Any]
    ) -> tuple[list[tuple[str, str]], str]:
        """The headers with a trustworthy client identity, and the per-client rate-limit key.

        A set the entry (or an earlier hop) signed is kept. Anything else is stripped, and this
        ingress signs its own socket peer so a forward keeps the client's address.
        """
        now = _wall_ms()
        addr = verify_client(self.config.secret, headers, now_ms=now)
        if addr is not None:
            return headers, addr
        headers = [(k, v) for k, v in headers if k not in CLIENT_HEADERS]
        peer = scope.get("client")
        if not peer:
            return headers, "unknown"
        addr = str(peer[0])
        location = next((v for k, v in headers if k == CLIENT_LOCATION_HEADER), "")
        if len(location) > 256 or not addr:
            return headers, addr or "unknown"
        signed = sign_client(self.config.secret, addr=addr, location=location.strip(), at_ms=now)
        return [*headers, *signed.items()], addr

    def leave(self, gate: Gate) -> None:
        """The node finished serving an admitted request: free its admission slot."""
        if gate.admission_id is None:
            return
        latency_ms = (time.perf_counter() - gate.admitted_at) * 1000
        ok = 0 < gate.status < 500
        event = Completed(gate.admission_id, latency_ms, ok, _mono_ms())
        gate.admission_id = None
        self._resolve(self.admission.handle(event))

    @staticmethod
    def _recording(gate: Gate, send: Send) -> Send:
        """``send`` that remembers the response status in ``gate`` (for admission and health)."""

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                gate.status = int(message["status"])
            await send(message)

        return recording_send

    async def _admit_here(self, gate: Gate, function: str, manifest: Any) -> None:
        self._demand[function] = self._demand.get(function, 0) + 1
        denied = self._rate_check(function, manifest, gate.client_key)
        if denied is not None:
            self._counts["rate_limited"] += 1
            await self._reply(gate, 429, "rate_limited", retry_after_s=denied.retry_after_s)
            return
        admission_id = next(self._ids)
        verdict = self.admission.handle(Arrived(admission_id, _mono_ms()))[0]
        if not isinstance(verdict, Admit | Reject):
            verdict = await self._wait_queue(admission_id)
        if isinstance(verdict, Reject):
            self._counts["shed"] += 1
            await self._reply(gate, 503, "overloaded", retry_after_s=verdict.retry_after_s)
            return
        self._counts["served_here"] += 1
        gate.admission_id = admission_id
        gate.admitted_at = time.perf_counter()

    async def _wait_queue(self, admission_id: int) -> Admit | Reject:
        future: asyncio.Future[Admit | Reject] = asyncio.get_running_loop().create_future()
        self._waiting[admission_id] = future
        try:
            return await future
        except asyncio.CancelledError:
            self._waiting.pop(admission_id, None)
            self._resolve(self.admission.handle(Cancelled(admission_id, _mono_ms())))
            raise

    def _resolve(self, instructions: list[Any]) -> None:
        for ins in instructions:
            future = self._waiting.pop(ins.req_id, None)
            if future is not None and not future.done():
                future.set_result(ins)
            elif isinstance(ins, Admit):
                # Its waiter is gone (client left): give the slot back at once.
                self._resolve(self.admission.handle(Cancelled(ins.req_id, _mono_ms())))

    def _rate_check(self, function: str, manifest: Any, key: str) -> RateDecision | None:
        now_s = time.monotonic()
        limit = manifest.limits.requests_per_s
        if limit:
            bucket = self._bucket(function, float(limit), now_s)
            decision = bucket.take(now_s)
            if not decision.allowed:
                return decision
        if self._clients is not None:
            decision = self._clients.check(f"{function}|{key[:128]}", now_s)
            if not decision.allowed:
                return decision
        return None

    def _bucket(self, function: str, limit: float, now_s: float) -> TokenBucket:
        entry = self._shares.get(function)
        if entry is None or entry[0] != limit:
            if len(self._shares) >= self.config.max_functions:
                self._shares.pop(next(iter(self._shares)))
            members = self.candidates(function, here=True)
            share = GlobalRateShare(limit_per_s=limit, locations=members)
            initial = limit / max(1, len(members))
            bucket = TokenBucket(rate_per_s=initial, capacity=max(1.0, initial), now_s=now_s)
            for change in share.handle(ShareTick(now_s)):
                self._set_share(bucket, change, now_s)
            entry = self._shares[function] = (limit, share, bucket)
        return entry[2]

    async def _forward(
        self,
        gate: Gate,
        scope: MutableMapping[str, Any],
        receive: Receive,
        decision: RouteDecision,
        info: Any,
        retry_safe: bool,
    ) -> None:
        assert decision.target is not None
        body = ReplayableBody(receive, replay_limit_bytes=self.config.replay_limit_bytes)
        method = str(scope["method"]).upper()
        targets = [decision.target, *decision.alternates[:1]]
        self._counts["forwarded"] += 1
        outcome: ForwardOutcome | None = None
        target = decision.target
        for attempt, target in enumerate(targets):
            if attempt:
                self._counts["failovers"] += 1
            outcome = await self._attempt(gate, scope, body, target, info)
            if outcome.responded:
                return
            retry = outcome.connect_failed or method in IDEMPOTENT_METHODS or retry_safe
            if not (retry and body.replayable):
                break
        self._counts["forward_failed"] += 1
        detail = outcome.error if outcome else ""
        await self._reply(gate, 502, "forward_failed", location=target, detail=detail[:200])

    async def _attempt(
        self,
        gate: Gate,
        scope: MutableMapping[str, Any],
        body: ReplayableBody,
        target: str,
        info: Any,
    ) -> ForwardOutcome:
        peer = self._peers.get(target)
        url = peer.url if peer is not None else ""
        fields = next_forward(
            info, location=self.location, request_id=gate.request_id, now_ms=_wall_ms()
        )
        headers = [(k, v) for k, v in gate.headers if k != REQUEST_ID_HEADER]
        headers += list(sign_forward(self.config.secret, fields).items())
        one_way_s = self._rtt_ms(self.location, target) / 2000 if self.config.emulate_rtt else 0.0
        outcome = await self.forwarder.forward(
            base_url=url,
            scope=scope,
            headers=headers,
            body=body,
            send=gate.send,
            extra_response_headers=[(b"x-edgefn-via", self.location.encode())],
            one_way_s=one_way_s,
        )
        if outcome.responded:
            gate.handled = True
            gate.status = outcome.status
        now = _mono_ms()
        ok = outcome.responded and outcome.status < 500 and not outcome.error
        self._apply_health(self.health.handle(RequestOutcome(target, ok, outcome.latency_ms, now)))
        if outcome.connect_failed and peer is not None:
            peer.suspect_since_ms = now
            self.policy.handle(HealthChanged(target, False))
        return outcome

    async def _reply(
        self,
        gate: Gate,
        status: int,
        error: str,
        *,
        retry_after_s: float | None = None,
        **detail: Any,
    ) -> None:
        import json

        headers = [
            *_JSON,
            (b"x-edgefn-location", self.location.encode()),
            (b"x-edgefn-request-id", gate.request_id.encode()),
        ]
        if retry_after_s is not None:
            headers.append((b"retry-after", retry_after_header(retry_after_s).encode()))
        body = {"error": error, "request_id": gate.request_id, "location": self.location}
        body.update({k: str(v) for k, v in detail.items()})
        gate.handled = True
        gate.status = status
        await gate.send({"type": "http.response.start", "status": status, "headers": headers})
        await gate.send({"type": "http.response.body", "body": json.dumps(body).encode()})

    # -- introspection ------------------------------------------------------------------------
    def check_invariants(self) -> None:
        self.policy.check_invariants()
        self.health.check_invariants()
        self.admission.check_invariants()
        assert len(self._waiting) <= self.admission.config.max_queue + 1, len(self._waiting)
        assert len(self._shares) <= self.config.max_functions, len(self._shares)

    def statistics(self) -> TrafficStatistics:
        adm = self.admission.statistics()
        c = self._counts
        return TrafficStatistics(
            served_here=c["served_here"],
            forwarded=c["forwarded"],
            failovers=c["failovers"],
            forward_failed=c["forward_failed"],
            rate_limited=c["rate_limited"],
            shed=c["shed"],
            stripped_headers=c["stripped"],
            no_route=c["no_route"],
            peers_known=len(self._peers),
            unhealthy=tuple(sorted(self.policy.unhealthy)),
            admission_limit=adm.limit,
            admission_inflight=adm.inflight,
            admission_queued=adm.queued,
            overloaded=adm.overloaded,
        )


def _affinity_key(manifest: Any, headers: list[tuple[str, str]]) -> str | None:
    """The request's affinity key from ``[placement] affinity`` (header:<name> / cookie:<name>)."""
    spec: str | None = manifest.placement.affinity
    if not spec:
        return None
    kind, _, name = spec.partition(":")
    name = name.strip().lower()
    if kind == "header":
        return next((v for k, v in headers if k == name), None)
    for k, v in headers:
        if k != "cookie":
            continue
        for part in v.split(";"):
            key, _, value = part.strip().partition("=")
            if key.lower() == name:
                return value
    return None
