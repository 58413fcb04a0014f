"""The edge node: one location's HTTP ingress, function table, sandbox pool and telemetry.

Two listeners. The **public** one (``url``) serves functions and ``/_edgefn/health``; every other
``/_edgefn/*`` path answers 404 ``{"error": "not_found"}``, except ``/_edgefn/metrics`` with the
metrics token (``authorization: Bearer <token>``) or a planet-internal signature. The **internal**
one (``internal_url``, its own port on the loopback address; only when the node has the planet
secret) serves ``/_edgefn/kv*``, ``/_edgefn/kvstate/*``, health and metrics, and lets nothing in
without a valid ``x-edgefn-internal-auth`` signature (:class:`~edgefn._internal_auth.InternalGuard`).

Request path: ASGI ``http`` scope → the function table (Host header or manifest route) → body read with the ``max_body_kb`` cap → a version picked →
``SandboxPool.invoke`` → the response streamed back with ``x-edgefn-location``, ``x-edgefn-version``,
``x-edgefn-request-id`` and ``x-edgefn-cold: 1`` on a cold start. Every failure becomes a JSON body
``{"error": kind, "request_id": ...}``; exception text and tracebacks go only to the log.

The node runs its ASGI app on uvicorn inside the caller's event loop (``start``/``stop``), so a test,
``edgefn dev`` or a planet node process can embed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import random
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from edgefn._internal_auth import InternalGuard, request_target, wall_ms
from edgefn.bundle import Manifest, build_bundle, extract_bundle
from edgefn.edge._ingress import IngressLimits, ingress_protocol
from edgefn.edge.functions import ActiveFunction, ActiveVersion, FunctionTable
from edgefn.edge.outbound import Outbound, SubrequestRules
from edgefn.edge.response_check import BadResponse, check_response
from edgefn.edge.traffic import TrafficDriver
from edgefn.errors import ManifestError
from edgefn.observe import JsonLog, LogLimiter, NodeMetrics
from edgefn.observe.version_stats import VersionStatsTracker
from edgefn.routing.internal_auth import INTERNAL_AUTH_HEADER, AuthCheck, InternalVerifier
from edgefn.runtime import pool_policy as pp
from edgefn.runtime import protocol as p
from edgefn.runtime.sandbox import (
    BACKGROUND_MAX_S,
    STREAM_STALL_S,
    Host,
    Invocation,
    InvokeFailed,
    Isolation,
    LoadSpec,
    SandboxPool,
    failure,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]


@dataclass(slots=True)
class RequestContext:
    """What the node knows about one in-flight request (for KV calls, subrequests, headers).

    ``response_headers`` collects headers that host services (the KV binding's session token,
    for example) add to the response while the function runs.
    """

    request_id: str
    function: str
    version: str
    key: str
    manifest: Manifest
    headers: list[tuple[str, str]]
    response_headers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


KVHandler = Callable[[RequestContext, p.KVCall], Awaitable[p.KVResult]]


SERVE_START_TIMEOUT_S = 30.0  # how long an HTTP listener may take to bind and start
# Request headers a node accepts (count and total bytes); more is 431 headers_too_large.
MAX_REQUEST_HEADERS = 100
MAX_REQUEST_HEADER_BYTES = 64 * 1024
# A request body must arrive within BODY_GRACE_S plus its size limit at BODY_MIN_BYTES_PER_S.
BODY_GRACE_S = 10.0
BODY_MIN_BYTES_PER_S = 64 * 1024
# Connection limits of every listener (edgefn.edge._ingress): headers complete within
# HEADER_TIMEOUT_S (408), idle keep-alive closed after KEEPALIVE_IDLE_S, at most
# MAX_REQUESTS_PER_CONNECTION requests on one connection.
HEADER_TIMEOUT_S = 10.0
KEEPALIVE_IDLE_S = 5.0
MAX_REQUESTS_PER_CONNECTION = 1000


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    """The client disconnected before its request body was complete."""


class EdgeNode:
    """One location. ``await node.start()``; ``node.url``; ``await node.stop()``."""

    def __init__(
        self,
        location: str = "local",
        *,
        region: str = "",
        host: str = "127.0.0.1",
        port: int = 0,
        state_dir: Path | None = None,
        log: JsonLog | None = None,
        pool_config: pp.PoolConfig | None = None,
        preload: tuple[str, ...] = (),
        isolation: Isolation = "strict",
        sandbox_host_layers: bool = True,
        ready: bool = True,
        access_log: bool = True,
        seed: int = 0,
        outbound: Outbound | None = None,
        internal_secret: bytes | None = None,
        internal_host: str = "127.0.0.1",
        internal_port: int = 0,
        metrics_token: str | None = None,
    ) -> None:
        self.location = location
        self.region = region
        self.host = host
        self.port = port
        # The internal listener exists only with the planet secret: nothing unsigned may reach it.
        self.internal_secret = internal_secret
        self.internal_host = internal_host
        self.internal_port = internal_port
        self._metrics_token = metrics_token
        self._metrics_verifier = InternalVerifier(internal_secret) if internal_secret else None
        self.state_dir = state_dir
        self.log = log or JsonLog(location=location)
        # Function console output is bounded per function (lines and bytes per second).
        self.log_limiter = LogLimiter()
        self.access_log = access_log
        self.metrics = NodeMetrics(location)
        self.version_stats = VersionStatsTracker()
        self.on_change: Callable[[], None] | None = None
        self.table = FunctionTable()
        self.outbound = outbound or Outbound()
        # Routing, rate limits and admission (edgefn.edge.traffic); None serves every request here.
        self.traffic: TrafficDriver | None = None
        self.kv_handler: KVHandler | None = None
        # Internal KV endpoints /_edgefn/kv* (edgefn.edge.kv_binding.KVService.asgi).
        self.kv_http: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None
        self.started_at = time.monotonic()
        # Not ready: health answers 503 and a request for a function not (yet) loaded gets
        # 503 not_ready + Retry-After, never 404 (a node restoring its functions from disk, or
        # `edgefn dev` before its first load). Whoever loads the functions calls mark_ready().
        self._ready = ready
        self._rng = random.Random(seed)
        self._rules: dict[str, SubrequestRules] = {}
        self._requests: dict[str, RequestContext] = {}
        self.pool = SandboxPool(
            Host(self._on_fetch, self._on_kv, self._on_log, self._on_background_done),
            config=pool_config,
            preload=preload,
            isolation=isolation,
            host_layers=sandbox_host_layers,
        )
        self._server: uvicorn.Server | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self._internal_server: uvicorn.Server | None = None
        self._internal_task: asyncio.Task[None] | None = None
        self._tmp_dirs: list[Path] = []

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._ready

    def mark_ready(self) -> None:
        if not self._ready:
            self._ready = True
            self.log.emit("node", event="ready", functions=self.active_versions())

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def internal_url(self) -> str:
        """The internal listener's URL; empty when the node has no planet secret."""
        if self._internal_server is None:
            return ""
        return f"http://{self.internal_host}:{self.internal_port}"

    async def start(self) -> None:
        await self.pool.start(versions_dir=str(self._versions_dir()))
        self._server, self._serve_task, self.port = await serve_asgi(self, self.host, self.port)
        if self.internal_secret is not None:
            guarded = InternalGuard(self._internal_app, self.internal_secret)
            server, task, port = await serve_asgi(guarded, self.internal_host, self.internal_port)
            self._internal_server, self._internal_task, self.internal_port = server, task, port
        self.log.emit("node", event="started", url=self.url, internal_url=self.internal_url)

    async def stop(self) -> None:
        for server in (self._server, self._internal_server):
            if server is not None:
                server.should_exit = True
        for task in (self._serve_task, self._internal_task):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.pool.stop()
        await self.outbound.aclose()
        for d in self._tmp_dirs:
            shutil.rmtree(d, ignore_errors=True)

    # -- functions -------------------------------------------------------------------------
    def _versions_dir(self) -> Path:
        if self.state_dir is None:
            import tempfile

            self.state_dir = Path(tempfile.mkdtemp(prefix="edgefn-node-"))
            self._tmp_dirs.append(self.state_dir)
        d = self.state_dir / "versions"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def spec_for(self, manifest: Manifest, version: str, code_dir: Path) -> LoadSpec:
        return LoadSpec(
            function=manifest.name,
            version=version,
            code_dir=str(code_dir),
            main=manifest.main,
            vars=dict(manifest.vars),
            memory_mb=manifest.limits.memory_mb,
            cpu_ms=manifest.limits.cpu_ms,
            bindings=tuple(ns.binding for ns in manifest.kv_namespaces),
            scratch_mb=manifest.limits.scratch_mb,
            startup_ms=manifest.limits.startup_ms,
            preload=manifest.runtime.preload,
        )

    async def install_bundle(
        self, data: bytes, sha256: str, version: str
    ) -> tuple[Manifest, LoadSpec]:
        """Verify and unpack a bundle; check that it loads in a worker. Raises on any problem."""
        dest = self._versions_dir() / version
        if dest.exists():
            shutil.rmtree(dest)
        manifest = extract_bundle(data, dest, expected_sha256=sha256)
        spec = self.spec_for(manifest, version, dest)
        loaded = await self.pool.check_load(spec)
        if not loaded.ok:
            # A preload failure is the manifest's; anything else the main module's.
            culprit = "edgefn.toml" if loaded.error.startswith("runtime.preload") else manifest.main
            raise ManifestError(loaded.error, path=str(dest / culprit))
        return manifest, spec

    async def deploy_dir(self, directory: Path) -> str:
        """Build, install and activate the function in ``directory`` (used by ``edgefn dev``)."""
        bundle = build_bundle(directory)
        version = bundle.version_id
        try:
            manifest, spec = await self.install_bundle(bundle.data, bundle.sha256, version)
        except ManifestError as err:
            # Name the user's file, not the unpacked copy.
            unpacked = self._versions_dir() / version
            raise ManifestError(
                err.message.split(": ", 1)[-1],
                path=str(directory / Path(err.path).relative_to(unpacked)),
                hint=err.hint,
            ) from None
        self.activate(manifest.name, [(version, 1.0, spec, manifest)])
        return version

    def activate(self, name: str, versions: list[tuple[str, float, LoadSpec, Manifest]]) -> None:
        """Atomically make ``versions`` (with traffic weights) the live ones for ``name``."""
        fn = ActiveFunction(name, tuple(ActiveVersion(v, w, s, m) for v, w, s, m in versions))
        for _, _, spec, manifest in versions:
            self.pool.register(spec)
            self._rules[spec.key] = SubrequestRules(
                manifest.limits.subrequests, manifest.egress.allow, manifest.egress.allow_private
            )
        for key in self.table.activate(fn):
            self.pool.retire(key)
        self.version_stats.forget(name, {v[0] for v in versions})
        self.log.emit("node", event="activated", function=name, versions=[v[0] for v in versions])

    def deactivate(self, name: str) -> None:
        """Stop serving ``name`` (in-flight requests finish on their workers)."""
        for key in self.table.remove(name):
            self.pool.retire(key)
        self.version_stats.forget(name, set())
        self.log.emit("node", event="deactivated", function=name)

    def active_versions(self) -> dict[str, list[str]]:
        return {n: [v.version for v in f.versions] for n, f in self.table.functions.items()}

    # -- host callbacks (from workers) ------------------------------------------------------
    async def _on_fetch(self, request_id: str, call: p.FetchCall) -> p.FetchResult:
        ctx = self._requests.get(request_id)
        rules = self._rules.get(ctx.key if ctx else "", SubrequestRules(0, ()))
        return await self.outbound.fetch(request_id, call, rules)

    async def _on_kv(self, request_id: str, call: p.KVCall) -> p.KVResult:
        ctx = self._requests.get(request_id)
        if self.kv_handler is None or ctx is None:
            return p.KVResult(
                call.id,
                call.call_id,
                False,
                None,
                "unavailable",
                "this node has no KV store configured",
            )
        return await self.kv_handler(ctx, call)

    def _on_background_done(self, request_id: str) -> None:
        self._requests.pop(request_id, None)
        self.outbound.forget(request_id)

    def _on_log(self, function: str, msg: p.Log) -> None:
        now_ms = int(time.monotonic() * 1000)
        dropped = self.log_limiter.take_dropped(function, now_ms)
        if dropped:
            self.log.emit("log_dropped", function=function, lines=dropped)
            self.metrics.errors.labels(self.location, function, "log_dropped").inc(dropped)
        if not self.log_limiter.admit(function, len(msg.message), now_ms):
            return
        self.log.emit(
            "function",
            function=function,
            request_id=msg.request_id,
            level=msg.level,
            message=msg.message,
        )

    # -- HTTP ------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The public listener: functions, health, and metrics for holders of the token."""
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path.startswith("/_edgefn/"):
            if path == "/_edgefn/health" or (
                path == "/_edgefn/metrics" and self._metrics_allowed(scope)
            ):
                await self._internal(scope, send)
            else:
                await _respond(send, 404, {"error": "not_found"})
            return
        await self._handle(scope, receive, send)

    async def _internal_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The internal listener (behind InternalGuard): KV endpoints, health, metrics."""
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path.startswith("/_edgefn/kv") and self.kv_http is not None:
            await self.kv_http(scope, receive, send)
            return
        await self._internal(scope, send)

    def _metrics_allowed(self, scope: Scope) -> bool:
        """A bearer metrics token, or a planet-internal signature of this GET."""
        headers = _decode_headers(scope["headers"])
        auth = next((v for k, v in headers if k == "authorization"), "")
        scheme, _, token = auth.partition(" ")
        if self._metrics_token and scheme.lower() == "bearer":
            return hmac.compare_digest(token.strip().encode(), self._metrics_token.encode())
        signed = next((v for k, v in headers if k == INTERNAL_AUTH_HEADER), None)
        if self._metrics_verifier is None or signed is None:
            return False
        check = self._metrics_verifier.verify(
            signed,
            method=scope["method"],
            target=request_target(scope),
            body=b"",
            now_ms=wall_ms(),
        )
        return check is AuthCheck.VALID

    async def _internal(self, scope: Scope, send: Send) -> None:
        path = scope["path"]
        if path == "/_edgefn/health":
            body = {
                "status": "ok" if self._ready else "starting",
                "location": self.location,
                "region": self.region,
                "functions": self.active_versions(),
                "uptime_s": round(time.monotonic() - self.started_at, 3),
                "isolation": {"mode": self.pool.isolation_mode, **self.pool.layers},
            }
            await _respond(send, 200 if self._ready else 503, body)
        elif path == "/_edgefn/metrics":
            self._refresh_pool_gauges()
            data = self.metrics.render()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/plain; version=0.0.4")],
                }
            )
            await send({"type": "http.response.body", "body": data})
        else:
            await _respond(send, 404, {"error": "not_found"})

    def _refresh_pool_gauges(self) -> None:
        stats = self.pool.statistics().pool
        self.metrics.pool_workers.clear()
        for key, n in stats.per_key.items():
            fn, _, version = key.partition("@")
            self.metrics.pool_workers.labels(self.location, fn, version).set(n)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        rid = os.urandom(8).hex()
        raw_headers = scope["headers"]
        if len(raw_headers) > MAX_REQUEST_HEADERS or (
            sum(len(k) + len(v) for k, v in raw_headers) > MAX_REQUEST_HEADER_BYTES
        ):
            # Every header travels to the worker and is decoded there: bound them first.
            await _respond(
                send,
                431,
                {
                    "error": "headers_too_large",
                    "request_id": rid,
                    "hint": f"at most {MAX_REQUEST_HEADERS} headers and "
                    f"{MAX_REQUEST_HEADER_BYTES // 1024} KiB of them",
                },
                self._base_headers(rid, ""),
            )
            self._access(rid, scope, "", "", 431, t0, False)
            return
        headers = _decode_headers(raw_headers)
        host = next((v for k, v in headers if k == "host"), "")
        fn = self.table.resolve(host, scope["path"])
        gate = None
        if self.traffic is not None:  # serve here or forward; 429/503 (edgefn.edge.traffic)
            name = fn.name if fn else (host.split(":", 1)[0].split(".", 1)[0].lower() or None)
            manifest = fn.versions[0].manifest if fn else None
            gate = await self.traffic.enter(scope, receive, send, headers, name, manifest, rid)
            if gate.handled:
                self._access(gate.request_id, scope, name or "", "", gate.status, t0, False)
                return
            rid, headers, send = gate.request_id, gate.headers, gate.send
        if fn is None and not self._ready:
            await _respond(
                send,
                503,
                {"error": "not_ready", "request_id": rid, "hint": "the node is loading functions"},
                [*self._base_headers(rid, ""), (b"retry-after", b"1")],
            )
            self._access(rid, scope, "", "", 503, t0, False)
            return
        if fn is None:
            await _respond(
                send,
                404,
                {"error": "no_such_function", "host": host, "request_id": rid},
                self._base_headers(rid, ""),
            )
            self._access(rid, scope, "", "", 404, t0, False)
            return
        active = fn.pick(self._rng)
        limit = active.manifest.limits.max_body_kb * 1024
        # The request holds an admission slot while its body arrives: a client that sends slower
        # than BODY_MIN_BYTES_PER_S (after BODY_GRACE_S) is cut off, so a few hundred slow
        # uploads cannot keep everyone else out. A body larger than one chunk streams to the
        # worker under the same deadline (see _pump_body).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BODY_GRACE_S + limit / BODY_MIN_BYTES_PER_S
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    body = await _read_head(receive, headers, limit, deadline)
            except _BodyTooLarge:
                err = failure("body_too_large", "", hint=_too_large_hint(limit))
                await self._fail(send, rid, fn.name, active.version, t0, scope, err)
                return
            except TimeoutError:
                err = failure("body_timeout", "", hint=_timeout_hint())
                await self._fail(send, rid, fn.name, active.version, t0, scope, err)
                return
            except _ClientGone:
                self._access(rid, scope, fn.name, active.version, 499, t0, False)
                return
            await self._run(scope, send, rid, headers, body, active, t0)
        finally:
            if gate is not None and self.traffic is not None:
                self.traffic.leave(gate)  # frees the admission slot

    async def _pump_body(self, inv: Invocation, body: _BodyIn) -> None:
        """Stream the rest of a request body to the worker as it arrives, within its credit.

        Waiting for credit means not calling ``receive()``, so uvicorn stops reading the client
        socket (backpressure all the way to the client). Any limit broken here fails the request
        at once: over ``max_body_kb`` 413, too slow 408, the client gone 499 (nobody to answer).
        """
        pending, more, received = body.pending, body.more, body.received
        try:
            async with asyncio.timeout_at(body.deadline):
                while True:
                    if pending and not await inv.send_body(pending):
                        return
                    if not more:
                        inv.end_body()
                        return
                    message = await body.receive()
                    if message["type"] == "http.disconnect":
                        inv.fail(failure("client_disconnected", "the client left mid-body"))
                        return
                    pending = message.get("body", b"")
                    more = message.get("more_body", False)
                    received += len(pending)
                    if received > body.limit:
                        inv.fail(failure("body_too_large", "", hint=_too_large_hint(body.limit)))
                        return
        except TimeoutError:
            inv.fail(failure("body_timeout", "the body arrived too slowly", hint=_timeout_hint()))

    async def _run(
        self,
        scope: Scope,
        send: Send,
        rid: str,
        headers: list[tuple[str, str]],
        body: _BodyIn,
        active: ActiveVersion,
        t0: float,
    ) -> None:
        name, version, key = active.spec.function, active.version, active.spec.key
        client_loc = next((v for k, v in headers if k == "x-edgefn-client-location"), "")
        qs = scope.get("query_string", b"").decode("latin-1")
        url = f"http://{next((v for k, v in headers if k == 'host'), 'localhost')}{scope['path']}"
        url += f"?{qs}" if qs else ""
        streamed = body.more or bool(body.pending)
        msg = p.Invoke(
            0, scope["method"], url, headers, body.first, self.location, client_loc, rid, streamed
        )
        ctx = RequestContext(rid, name, version, key, active.manifest, headers)
        self._requests[rid] = ctx
        try:
            inv = await self.pool.invoke(key, msg, timeout_ms=active.manifest.limits.timeout_ms)
        except InvokeFailed as err:
            self._requests.pop(rid, None)
            await self._fail(send, rid, name, version, t0, scope, err)
            return
        started = False
        pump = None
        if streamed:
            pump = asyncio.get_running_loop().create_task(self._pump_body(inv, body))
            pump.add_done_callback(self._pump_done)
        try:
            status, resp_headers = await inv.start()
            try:
                out = check_response(status, resp_headers)
            except BadResponse as bad:
                raise InvokeFailed("bad_response", 500, str(bad)) from None
            out += self._base_headers(rid, version, cold=inv.cold)
            out += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in ctx.response_headers]
            whole = inv.whole_body
            if whole is not None and not any(k == b"content-length" for k, _ in out):
                # A non-streamed response: one body message with a length, no chunked encoding.
                out.append((b"content-length", str(len(whole)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": out})
            started = True
            self.metrics.observe_latency(name, time.perf_counter() - t0)
            if whole is not None:
                await send({"type": "http.response.body", "body": whole})
            else:
                async for chunk in inv.chunks():
                    # The node holds at most STREAM_HIGH_BYTES per stream (it stops reading the
                    # worker beyond that); a client that accepts nothing for STREAM_STALL_S is
                    # cut off so neither memory nor the request's slot is held without bound.
                    try:
                        async with asyncio.timeout(STREAM_STALL_S):
                            await send(
                                {"type": "http.response.body", "body": chunk, "more_body": True}
                            )
                    except TimeoutError:
                        inv.abort()
                        self.log.emit(
                            "error", request_id=rid, function=name, error="client_too_slow"
                        )
                        self.metrics.errors.labels(self.location, name, "client_too_slow").inc()
                        return
                await send({"type": "http.response.body", "body": b""})
            self._count(name, status, inv.cold)
            self._access(rid, scope, name, version, status, t0, inv.cold)
        except InvokeFailed as err:
            if started:  # too late to change the status: end the stream and log
                self.log.emit(
                    "error", request_id=rid, function=name, error=err.kind, message=err.message
                )
                with contextlib.suppress(Exception):
                    await send({"type": "http.response.body", "body": b""})
                self.metrics.errors.labels(self.location, name, err.kind).inc()
            else:
                await self._fail(send, rid, name, version, t0, scope, err, cold=inv.cold)
        finally:
            if pump is not None:
                pump.cancel()  # the response is over: the rest of the body is not wanted
            inv.finish()
            if inv.background:
                # ctx.wait_until tasks run on: keep the request's KV bindings and subrequest
                # budget until the worker says they are done (bounded by BACKGROUND_MAX_S).
                asyncio.get_running_loop().call_later(
                    BACKGROUND_MAX_S, self._on_background_done, rid
                )
            else:
                self._on_background_done(rid)

    def _pump_done(self, task: asyncio.Task[None]) -> None:
        # Take the exception of a failed body pump so it reaches the log, not the loop's handler.
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.log.emit("error", error="body_pump", message=f"{type(exc).__name__}: {exc}")

    def _base_headers(
        self, rid: str, version: str, *, cold: bool = False
    ) -> list[tuple[bytes, bytes]]:
        out = [
            (b"x-edgefn-location", self.location.encode()),
            (b"x-edgefn-request-id", rid.encode()),
        ]
        if version:
            out.append((b"x-edgefn-version", version.encode()))
        if cold:
            out.append((b"x-edgefn-cold", b"1"))
        return out

    async def _fail(
        self,
        send: Send,
        rid: str,
        name: str,
        version: str,
        t0: float,
        scope: Scope,
        err: InvokeFailed,
        *,
        cold: bool = False,
    ) -> None:
        kind, status = err.kind, err.status
        if err.message:
            self.log.emit(
                "error",
                request_id=rid,
                function=name,
                version=version,
                error=kind,
                message=err.message,
                traceback=err.traceback or None,
            )
        self.metrics.errors.labels(self.location, name, kind).inc()
        headers = self._base_headers(rid, version, cold=cold)
        answer = {"error": kind, "request_id": rid}
        if err.hint:
            answer["hint"] = err.hint
        await _respond(send, status, answer, headers)
        self._count(name, status, cold)
        self._access(rid, scope, name, version, status, t0, cold)

    def _count(self, name: str, status: int, cold: bool) -> None:
        self.metrics.count(name, status, cold)

    def _access(
        self, rid: str, scope: Scope, name: str, version: str, status: int, t0: float, cold: bool
    ) -> None:
        if name:
            self.version_stats.record(
                name, version, ok=status < 500, latency_ms=(time.perf_counter() - t0) * 1000
            )
        if self.access_log:
            self.log.emit(
                "access",
                request_id=rid,
                method=scope["method"],
                path=scope["path"],
                function=name,
                version=version,
                status=status,
                cold=cold,
                duration_ms=round((time.perf_counter() - t0) * 1000, 3),
            )


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handling: the process that embeds the node owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_asgi(
    app: Callable[[Scope, Receive, Send], Awaitable[None]], host: str, port: int
) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    """Run ``app`` on uvicorn in this loop; return the server, its task and the bound port."""
    limits = IngressLimits(
        header_timeout_s=HEADER_TIMEOUT_S,
        keepalive_idle_s=KEEPALIVE_IDLE_S,
        max_requests=MAX_REQUESTS_PER_CONNECTION,
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        http=ingress_protocol(limits),  # httptools with connection limits
        loop="none",
        timeout_graceful_shutdown=5,
        # uvicorn would otherwise take the client address from X-Forwarded-For of any loopback
        # peer: a client could choose its own rate-limit key. The peer is the socket's.
        proxy_headers=False,
    )
    server = _EmbeddedServer(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    # uvicorn has no "started" event to await; poll its flag, bounded.
    deadline = asyncio.get_running_loop().time() + SERVE_START_TIMEOUT_S
    while not server.started:
        if task.done():
            task.result()
            raise OSError(f"the HTTP server on {host}:{port} stopped during start-up")
        if asyncio.get_running_loop().time() > deadline:
            server.should_exit = True
            raise OSError(f"the HTTP server on {host}:{port} did not start within "
                          f"{SERVE_START_TIMEOUT_S:.0f} s")  # fmt: skip
        await asyncio.sleep(0.005)
    return server, task, int(server.servers[0].sockets[0].getsockname()[1])


def _decode_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw]


@dataclass(slots=True)
class _BodyIn:
    """A request body as the node takes it: the piece for the Invoke frame (at most one chunk),
    what else was read already, and whether the client has more to send."""

    receive: Receive
    first: bytes
    pending: bytes
    more: bool
    received: int
    limit: int
    deadline: float  # loop time by which the whole body must have arrived


async def _read_head(
    receive: Receive, headers: list[tuple[str, str]], limit: int, deadline: float
) -> _BodyIn:
    """Read the body until it ends or one chunk is in hand (a small body is never streamed)."""
    declared = next((v for k, v in headers if k == "content-length"), None)
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        body += message.get("body", b"")
        if len(body) > limit:
            raise _BodyTooLarge
        more = bool(message.get("more_body", False))
        if not more or len(body) >= p.CHUNK_BYTES:
            break
    data = bytes(body)
    first, rest = data[: p.CHUNK_BYTES], data[p.CHUNK_BYTES :]
    return _BodyIn(receive, first, rest, more, len(data), limit, deadline)


def _too_large_hint(limit: int) -> str:
    return (
        f"the body is over [limits] max_body_kb = {limit // 1024} of this function; send less, "
        "or raise max_body_kb in edgefn.toml (at most 15360)"
    )


def _timeout_hint() -> str:
    return (
        f"the body must arrive within {BODY_GRACE_S:.0f} s plus its size limit at "
        f"{BODY_MIN_BYTES_PER_S // 1024} KiB/s; send it faster"
    )


async def _respond(
    send: Send, status: int, obj: Any, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _JSON + (extra or [])})
    await send({"type": "http.response.body", "body": json.dumps(obj).encode()})
