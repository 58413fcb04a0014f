"""The local anycast entry: an HTTP reverse proxy that sends each request to the nearest healthy
location for the client's position (locally ``127.0.0.1:8787``; BGP anycast or GeoDNS in production).

Paths under ``/_edgefn/`` are never forwarded: the entry answers ``/_edgefn/health`` itself (its own
health) and every other one with 404 ``{"error": "not_found"}``, so nothing internal of a node (KV
endpoints, metrics) is reachable from the internet through it.

Per request: read ``x-edgefn-client-location`` (IATA code, city or ``lat,lon``; absent: the default
position; invalid: ``400 {"error": "bad_client_location"}``), rank healthy locations with the pure
:class:`~edgefn.planet._anycast_choice.AnycastChooser`, optionally wait the modelled client↔location
RTT (half before forwarding, half before answering), and stream the request to the first location
and its response back. Headers from outside that only edgefn may set (``x-edgefn-hop``,
``x-edgefn-forwarded-*``, ``x-edgefn-entry``) are dropped; ``x-edgefn-client-location`` is replaced
by the normalized ``lat,lon`` and ``x-edgefn-entry`` names the chosen location (on the request to
the location and on the response to the client). The Host header is kept: nodes route on it. With
the planet secret the entry also signs the client's socket address and the normalised location
(``x-edgefn-client-addr``/``-at``/``-sig``, :func:`~edgefn.routing.internal_auth.sign_client`);
nodes key per-client rate limits on that address. Copies of those headers from outside are dropped.
A client's W3C ``traceparent``/``tracestate`` pass on when valid and are dropped when not (the node
then starts a new trace; docs/design/0023-traces.md).

If connecting to the chosen location fails, it is marked unhealthy at once and the request is
retried once on the next-nearest healthy location (a connect failure happens before any of the
request body is read, so the retry sends the body whole). No healthy location: ``503`` with
``Retry-After``; the location failed after connecting: ``502``.

Health: every ``probe_interval_s`` one ``GET <url>/_edgefn/health`` (200 = healthy) to each
location that is due (:meth:`AnycastChooser.due`: every ``probe_interval_s`` while it serves
traffic or is suspect, every ``idle_probe_interval_s`` otherwise), feeding :class:`ProbeResult`
events; the location table can be replaced at run time with
:meth:`AnycastEntry.set_locations`. HTTP is served by uvicorn on a socket bound here; upstream
requests use one httpx client with a bounded connection pool.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from edgefn._internal_auth import wall_ms
from edgefn.errors import PlanetError, UsageError
from edgefn.observe.spans import parse_traceparent, valid_tracestate
from edgefn.planet._anycast_choice import (
    AnycastChooser,
    ConnectFailed,
    EntryLocation,
    HealthChanged,
    LocationHealth,
    LocationsReplaced,
    ProbeResult,
    Routed,
    client_point,
    format_point,
)
from edgefn.routing.internal_auth import CLIENT_HEADERS, sign_client
from edgefn.world import GeoPoint, LatencyModel

__all__ = ["IDLE_PROBE_FACTOR", "AnycastEntry", "AnycastStatistics", "EntryLocation"]

_log = logging.getLogger("edgefn.anycast")

CLIENT_LOCATION_HEADER = "x-edgefn-client-location"
ENTRY_HEADER = "x-edgefn-entry"
# Hop-by-hop headers (RFC 9110 §7.6.1) are never forwarded; the rest pass through unchanged.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Where a request without x-edgefn-client-location is taken to come from (Frankfurt).
DEFAULT_CLIENT = GeoPoint(50.1109, 8.6821)
_FROM_INSIDE_ONLY = frozenset(
    {"x-edgefn-hop", ENTRY_HEADER, CLIENT_LOCATION_HEADER, "x-edgefn-forward-sig", *CLIENT_HEADERS}
)

Scope = dict[str, Any]
Message = dict[str, Any]


@dataclass(frozen=True, slots=True)
class AnycastStatistics:
    requests_total: int
    requests_by_entry: tuple[tuple[str, int], ...]
    retries_total: int
    bad_client_location_total: int
    no_healthy_location_total: int
    upstream_errors_total: int
    requests_in_flight: int
    locations: tuple[LocationHealth, ...]
    internal_refused_total: int = 0


class _Body:
    """The client's request body as an async iterator that remembers whether it was started."""

    def __init__(self, receive: Any) -> None:
        self._receive = receive
        self.started = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                return
            chunk: bytes = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return


# The default idle probe interval, as a multiple of the probe interval.
IDLE_PROBE_FACTOR = 8


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class AnycastEntry:
    """The anycast reverse proxy. ``await start()``, then send HTTP to :attr:`url`."""

    def __init__(
        self,
        locations: Sequence[EntryLocation],
        *,
        host: str = "127.0.0.1",
        port: int = 8787,
        default_client: GeoPoint = DEFAULT_CLIENT,
        emulate_rtt: bool = False,
        model: LatencyModel | None = None,
        probe_interval_s: float = 0.25,
        idle_probe_interval_s: float | None = None,
        probe_timeout_s: float = 1.0,
        connect_timeout_s: float = 2.0,
        request_timeout_s: float = 60.0,
        max_connections: int = 256,
        secret: bytes | None = None,
    ) -> None:
        assert probe_interval_s > 0
        self._secret = secret
        assert max_connections > 0
        # Quiet, healthy locations are probed less often (by default every 2 s).
        idle_s = (
            idle_probe_interval_s
            if idle_probe_interval_s is not None
            else IDLE_PROBE_FACTOR * probe_interval_s
        )
        assert idle_s >= probe_interval_s
        self._chooser = AnycastChooser(
            locations,
            model=model,
            probe_interval_ms=max(1, round(probe_interval_s * 1000)),
            idle_probe_interval_ms=max(1, round(idle_s * 1000)),
        )
        self._host, self._port = host, port
        self._default_client = default_client
        self._emulate_rtt = emulate_rtt
        self._probe_interval_s = probe_interval_s
        self._probe_timeout_s = probe_timeout_s
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections // 4
            ),
            timeout=httpx.Timeout(request_timeout_s, connect=connect_timeout_s),
            follow_redirects=False,
            trust_env=False,
        )
        self._server: uvicorn.Server | None = None
        self._sock: socket.socket | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._url: str | None = None
        self._counts = {
            "requests": 0,
            "retries": 0,
            "bad": 0,
            "none": 0,
            "upstream": 0,
            "internal_refused": 0,
        }
        self._by_entry: dict[str, int] = {}
        self._in_flight = 0

    # -- control ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._url is not None, "start() the entry first"
        return self._url

    @property
    def started(self) -> bool:
        return self._url is not None

    def set_locations(self, locations: Sequence[EntryLocation]) -> None:
        """Replace the location table; unchanged locations keep their health."""
        self._chooser.handle(LocationsReplaced(tuple(locations)))

    def statistics(self) -> AnycastStatistics:
        return AnycastStatistics(
            requests_total=self._counts["requests"],
            requests_by_entry=tuple(sorted(self._by_entry.items())),
            retries_total=self._counts["retries"],
            bad_client_location_total=self._counts["bad"],
            no_healthy_location_total=self._counts["none"],
            upstream_errors_total=self._counts["upstream"],
            requests_in_flight=self._in_flight,
            locations=tuple(self._chooser.locations()),
            internal_refused_total=self._counts["internal_refused"],
        )

    async def wait_health(
        self, location_id: str, *, healthy: bool, timeout_s: float = 10.0
    ) -> None:
        """Wait until the entry considers ``location_id`` healthy (or unhealthy)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._chooser.is_healthy(location_id) != healthy:
            if loop.time() >= deadline:
                raise PlanetError(
                    f"anycast entry: location {location_id!r} did not become "
                    f"{'healthy' if healthy else 'unhealthy'} within {timeout_s:g}s",
                    hint="check the location's GET /_edgefn/health",
                )
            await asyncio.sleep(0.02)

    # -- lifecycle -------------------------------------------------------------------------------

    def bind(self) -> None:
        """Reserve the listening port now (idempotent); :meth:`start` serves on it later.

        The supervisor binds before it starts any other process: a planet starting makes
        hundreds of outbound connections whose ephemeral local ports could otherwise take a
        port picked a moment earlier, and a port already in use should fail the start at once.
        """
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError as err:
            sock.close()
            raise PlanetError(
                f"anycast entry cannot listen on {self._host}:{self._port}: {err.strerror}",
                hint="another planet or program holds the port; stop it or pick another port",
            ) from None
        self._sock = sock

    async def start(self) -> None:
        assert self._server is None, "already started"
        self.bind()
        sock = self._sock
        assert sock is not None
        config = uvicorn.Config(
            self._asgi,
            interface="asgi3",
            log_level="warning",
            lifespan="off",
            ws="none",
            access_log=False,
            proxy_headers=False,
            server_header=False,
        )
        self._server = uvicorn.Server(config)
        serve = asyncio.create_task(self._server.serve(sockets=[sock]))
        self._tasks = [serve, asyncio.create_task(self._probe_forever())]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while not self._server.started:
            if serve.done() or loop.time() > deadline:
                await self.close()
                raise PlanetError("anycast entry: the HTTP server did not start", hint="see log")
            await asyncio.sleep(0.01)
        self._url = f"http://{self._host}:{sock.getsockname()[1]}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        for task in self._tasks[1:]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()
        if self._sock is not None and self._server is None:
            self._sock.close()  # bound, never served
        self._sock = None

    async def __aenter__(self) -> AnycastEntry:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- health ----------------------------------------------------------------------------------

    def _apply(self, changes: list[HealthChanged]) -> None:
        for change in changes:
            _log.info(
                "location %s is now %s (%s)",
                change.location_id,
                "healthy" if change.healthy else "unhealthy",
                change.reason,
            )

    async def _probe_forever(self) -> None:
        async with httpx.AsyncClient(timeout=self._probe_timeout_s, trust_env=False) as client:
            while True:
                rows = self._chooser.due(_now_ms())
                results = await asyncio.gather(*(self._probe(client, loc) for loc in rows))
                for loc, ok in zip(rows, results, strict=True):
                    self._apply(self._chooser.handle(ProbeResult(loc.id, ok, _now_ms())))
                await asyncio.sleep(self._probe_interval_s)

    async def _probe(self, client: httpx.AsyncClient, location: EntryLocation) -> bool:
        try:
            resp = await client.get(f"{location.url.rstrip('/')}/_edgefn/health")
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    # -- proxy -----------------------------------------------------------------------------------

    async def _asgi(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # lifespan is off and websockets are disabled.
        self._counts["requests"] += 1
        path: str = scope["path"]
        if path.startswith("/_edgefn/") or path == "/_edgefn":
            await self._own(path, send)
            return
        self._in_flight += 1
        try:
            await self._proxy(scope, receive, send)
        finally:
            self._in_flight -= 1

    async def _own(self, path: str, send: Any) -> None:
        """The entry's own health; every other internal path is refused, never forwarded."""
        if path == "/_edgefn/health":
            healthy = sum(1 for h in self._chooser.locations() if h.healthy)
            await _json(send, 200, {"status": "ok", "role": "entry", "healthy": str(healthy)})
            return
        self._counts["internal_refused"] += 1
        await _json(send, 404, {"error": "not_found"})

    async def _proxy(self, scope: Scope, receive: Any, send: Any) -> None:
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        raw_location = next((v for k, v in headers if k == CLIENT_LOCATION_HEADER), None)
        try:
            point = client_point(raw_location, default=self._default_client)
        except UsageError as err:
            self._counts["bad"] += 1
            detail = f"{CLIENT_LOCATION_HEADER}: {err.message}; {err.hint}"
            await _json(send, 400, {"error": "bad_client_location", "detail": detail})
            return
        body = _Body(receive)
        tried: list[str] = []
        for _attempt in range(2):
            ranked = self._chooser.rank(point, exclude=tried)
            if not ranked:
                break
            target = ranked[0]
            tried.append(target.id)
            self._chooser.handle(Routed(target.id, _now_ms()))
            if await self._forward(scope, headers, body, point, target, send):
                return
            if body.started:
                break
            self._counts["retries"] += 1
        if len(tried) == 0:
            self._counts["none"] += 1
            await _json(
                send,
                503,
                {"error": "no_healthy_location", "detail": "no location passes its health check"},
                extra=((b"retry-after", b"1"),),
            )
            return
        self._counts["upstream"] += 1
        await _json(
            send,
            502,
            {"error": "bad_gateway", "detail": f"could not reach location(s) {', '.join(tried)}"},
        )

    async def _forward(
        self,
        scope: Scope,
        headers: list[tuple[str, str]],
        body: _Body,
        point: GeoPoint,
        target: EntryLocation,
        send: Any,
    ) -> bool:
        """Send the request to ``target``; False if it could not connect (nothing was sent)."""
        one_way_s = self._chooser.rtt_ms(point, target) / 2000 if self._emulate_rtt else 0.0
        out = _trace_context([(k, v) for k, v in headers if not _drop(k)])
        location = format_point(point)
        out += [(CLIENT_LOCATION_HEADER, location), (ENTRY_HEADER, target.id)]
        peer = scope.get("client")
        if self._secret is not None and peer:
            signed = sign_client(
                self._secret, addr=str(peer[0]), location=location, at_ms=wall_ms()
            )
            out += list(signed.items())
        url = target.url.rstrip("/") + scope["raw_path"].decode("latin-1")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        if one_way_s:
            await asyncio.sleep(one_way_s)
        request = self._client.build_request(scope["method"], url, headers=out, content=body)
        try:
            response = await self._client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as err:
            _log.warning("location %s: connect failed: %r", target.id, err)
            self._apply(self._chooser.handle(ConnectFailed(target.id, _now_ms())))
            return False
        except httpx.HTTPError as err:
            _log.warning("location %s: request failed: %r", target.id, err)
            self._counts["upstream"] += 1
            await _json(send, 502, {"error": "bad_gateway", "detail": f"{target.id}: {err!r}"})
            return True
        self._by_entry[target.id] = self._by_entry.get(target.id, 0) + 1
        try:
            await self._relay(response, target, send, one_way_s)
        finally:
            await response.aclose()
        return True

    async def _relay(
        self, response: httpx.Response, target: EntryLocation, send: Any, one_way_s: float
    ) -> None:
        if one_way_s:
            await asyncio.sleep(one_way_s)
        out = [
            (k.lower(), v)
            for k, v in response.headers.raw
            if k.lower().decode("latin-1") not in _HOP_BY_HOP
        ]
        if not any(k == ENTRY_HEADER.encode() for k, _ in out):
            out.append((ENTRY_HEADER.encode(), target.id.encode()))
        await send({"type": "http.response.start", "status": response.status_code, "headers": out})
        try:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.HTTPError as err:
            # Headers are gone already: all we can do is end the body early, and log why.
            _log.warning("location %s: response body failed: %r", target.id, err)
            self._counts["upstream"] += 1
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _trace_context(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """W3C trace context passes only when valid: an invalid ``traceparent`` (and its
    ``tracestate``) is dropped, so the node starts a new trace; never an error answer."""
    parent = next((v for k, v in headers if k == "traceparent"), None)
    state = next((v for k, v in headers if k == "tracestate"), None)
    if parent is None and state is None:
        return headers
    out = [(k, v) for k, v in headers if k not in ("traceparent", "tracestate")]
    if parent is not None and parse_traceparent(parent) is not None:
        out.append(("traceparent", parent))
        if valid_tracestate(state):
            out.append(("tracestate", valid_tracestate(state)))
    return out


def _drop(name: str) -> bool:
    return (
        name in _HOP_BY_HOP or name in _FROM_INSIDE_ONLY or name.startswith("x-edgefn-forwarded-")
    )


async def _json(
    send: Any, status: int, payload: dict[str, str], *, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    body = json.dumps(payload).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
