"""The edge node: one location's function table, sandbox pool and listeners, and their lifecycle.

:class:`EdgeNode` is assembled from its parts in its constructor (a planet node by
:func:`edgefn.planet.assembly.build_node`; a test or ``edgefn dev`` directly) and owns:

* the **function table** (:mod:`edgefn.edge.functions`): installing a bundle unpacks and
  test-loads it (:meth:`EdgeNode.install_bundle`), activating swaps a function's versions
  atomically (:meth:`EdgeNode.activate`);
* the **sandbox pool** (:class:`~edgefn.runtime.sandbox.SandboxPool`) and the host services its
  workers call back: subrequests (:class:`~edgefn.edge.outbound.Outbound` under the version's
  ``SubrequestRules``), KV (the ``kv_handler``, the KV service's ``handle_call`` on a planet) and
  rate-limited function logs;
* two **listeners** on uvicorn in the caller's loop (:mod:`edgefn.edge.listener`). The public
  one (``url``) serves functions through :class:`~edgefn.edge.request_path.RequestPath` and
  ``/_edgefn/*`` through :class:`~edgefn.edge.node_endpoints.NodeEndpoints` (health; metrics with
  the metrics token or a signature; else 404). The internal one (``internal_url``, its own
  loopback port, only with the planet secret) serves ``/_edgefn/kv*``, health and metrics, and
  lets nothing in without a valid ``x-edgefn-internal-auth`` signature
  (:class:`~edgefn._internal_auth.InternalGuard`).

Readiness: a node built with ``ready=False`` answers health 503 and a request for a function not
(yet) loaded 503 ``not_ready`` until whoever loads its functions calls :meth:`EdgeNode.mark_ready`.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvicorn

from edgefn._internal_auth import InternalGuard
from edgefn.bundle import Manifest, build_bundle, extract_bundle
from edgefn.edge.cache_policy import CACHE_HEADER
from edgefn.edge.durable import DurableObjects
from edgefn.edge.functions import ActiveFunction, ActiveVersion, FunctionTable
from edgefn.edge.listener import (
    HEADER_TIMEOUT_S,
    KEEPALIVE_IDLE_S,
    MAX_REQUESTS_PER_CONNECTION,
    SERVE_START_TIMEOUT_S,
    ASGIApp,
    Receive,
    Scope,
    Send,
    serve_asgi,
)
from edgefn.edge.node_endpoints import NodeEndpoints
from edgefn.edge.origin_fetch import OriginFetch, record_cache_headers
from edgefn.edge.outbound import Outbound, SubrequestRules
from edgefn.edge.queues import QueueService
from edgefn.edge.request_io import (
    BODY_GRACE_S,
    BODY_MIN_BYTES_PER_S,
    MAX_REQUEST_HEADER_BYTES,
    MAX_REQUEST_HEADERS,
)
from edgefn.edge.request_path import RequestContext, RequestPath
from edgefn.edge.request_tracing import traced_kv_call, traced_subrequest
from edgefn.edge.scheduled_run import TEST_PATH, ScheduledRunner, serve_test_scheduled
from edgefn.edge.tail import TailPublisher
from edgefn.edge.tracing import NodeTracer
from edgefn.edge.traffic import TrafficDriver
from edgefn.errors import ManifestError
from edgefn.observe import JsonLog, LogLimiter, NodeMetrics
from edgefn.observe.rollup import Accumulator
from edgefn.observe.version_stats import VersionStatsTracker
from edgefn.runtime import pool_policy as pp
from edgefn.runtime import protocol as p
from edgefn.runtime.sandbox import Host, Isolation, LoadSpec, SandboxPool
from edgefn.sdk._durable import DURABLE_BINDING
from edgefn.sdk._queue import QUEUE_BINDING

# The limits are re-exported for the modules and tests that import them from here; each is read
# (and so must be changed) in the module that defines it: listener.py or request_io.py.
__all__ = [
    "BODY_GRACE_S",
    "BODY_MIN_BYTES_PER_S",
    "HEADER_TIMEOUT_S",
    "KEEPALIVE_IDLE_S",
    "MAX_REQUESTS_PER_CONNECTION",
    "MAX_REQUEST_HEADERS",
    "MAX_REQUEST_HEADER_BYTES",
    "SERVE_START_TIMEOUT_S",
    "EdgeNode",
    "KVHandler",
    "Receive",
    "RequestContext",
    "Scope",
    "Send",
    "serve_asgi",
]

# How a worker's KV call is answered (KVService.handle_call on a planet node).
KVHandler = Callable[[RequestContext, p.KVCall], Awaitable[p.KVResult]]


class EdgeNode:
    """One location. ``await node.start()``; ``node.url``; ``await node.stop()``.

    Collaborators come in through the constructor: ``table`` (shared with a traffic driver that
    advertises its functions), ``traffic`` (routing, rate limits and admission; None serves every
    request here), ``kv_handler`` (None answers KV calls ``unavailable``) and ``kv_http`` (the
    internal listener's ``/_edgefn/kv*`` app).
    """

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
        table: FunctionTable | None = None,
        traffic: TrafficDriver | None = None,
        kv_handler: KVHandler | None = None,
        kv_http: ASGIApp | None = None,
        telemetry: Accumulator | None = None,
        tail: TailPublisher | None = None,
        tracer: NodeTracer | None = None,
        test_scheduled: bool = False,
    ) -> None:
        self.location = location
        # `edgefn dev --test-scheduled`: GET /__scheduled fires a cron tick (never on a planet).
        self.test_scheduled = test_scheduled
        self.region = region
        self.host = host
        self.port = port
        # The internal listener exists only with the planet secret: nothing unsigned may reach it.
        self.internal_secret = internal_secret
        self.internal_host = internal_host
        self.internal_port = internal_port
        self.state_dir = state_dir
        self.log = log or JsonLog(location=location)
        # Function console output is bounded per function (lines and bytes per second).
        self.log_limiter = LogLimiter()
        self.metrics = NodeMetrics(location)
        self.version_stats = VersionStatsTracker()
        self.table = table if table is not None else FunctionTable()
        self.outbound = outbound or Outbound()
        # [[origins]]: the location tier of the edge cache (the region tier is attached by the
        # planet assembly when the planet has region hubs).
        self.origins = OriginFetch(self.outbound)
        self._kv_handler = kv_handler
        # Spans of every request (edgefn.edge.tracing); None: tracing off.
        self.tracer = tracer
        # Not ready: health answers 503 and a request for a function not (yet) loaded gets
        # 503 not_ready + Retry-After, never 404 (a node restoring its functions from disk, or
        # `edgefn dev` before its first load). Whoever loads the functions calls mark_ready().
        self._ready = ready
        self._rules: dict[str, SubrequestRules] = {}
        # In-flight requests by id, for the workers' callbacks (KV, subrequests).
        self._requests: dict[str, RequestContext] = {}
        self.pool = SandboxPool(
            Host(self._on_fetch, self._on_kv, self._on_log, self._on_background_done),
            config=pool_config,
            preload=preload,
            isolation=isolation,
            host_layers=sandbox_host_layers,
        )
        self._path = RequestPath(
            location=location,
            table=self.table,
            pool=self.pool,
            traffic=traffic,
            log=self.log,
            metrics=self.metrics,
            version_stats=self.version_stats,
            requests=self._requests,
            ready=lambda: self._ready,
            release=self._on_background_done,
            access_log=access_log,
            seed=seed,
            telemetry=telemetry,
            tail=tail,
            tracer=tracer,
        )
        self.scheduled = ScheduledRunner(
            location=location,
            table=self.table,
            pool=self.pool,
            log=self.log,
            metrics=self.metrics,
            requests=self._requests,
            release=self._on_background_done,
            seed=seed,
        )
        # Durable objects this node is the home of (the planet assembly gives it the strong KV
        # and the bus to other nodes; alone, e.g. under `edgefn dev`, it keeps them in memory).
        self.durable = DurableObjects(
            location=location,
            table=self.table,
            pool=self.pool,
            log=self.log,
            requests=self._requests,
            release=self._on_background_done,
        )
        # Queues: producers' sends and consumer partitions (the planet assembly attaches the bus).
        self.queues = QueueService(
            location=location,
            table=self.table,
            pool=self.pool,
            log=self.log,
            requests=self._requests,
            release=self._on_background_done,
        )
        self._endpoints = NodeEndpoints(
            location=location,
            region=region,
            pool=self.pool,
            metrics=self.metrics,
            ready=lambda: self._ready,
            functions=self.active_versions,
            kv_http=kv_http,
            metrics_token=metrics_token,
            internal_secret=internal_secret,
            heat=traffic.thermal.heat if traffic is not None else None,
        )
        self._server: uvicorn.Server | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self._internal_server: uvicorn.Server | None = None
        self._internal_task: asyncio.Task[None] | None = None
        self._tmp_dirs: list[Path] = []

    # Read-only: the request path and the endpoints hold them, so they are given at construction.
    @property
    def traffic(self) -> TrafficDriver | None:
        return self._path.traffic

    @property
    def kv_http(self) -> ASGIApp | None:
        return self._endpoints.kv_http

    @property
    def kv_handler(self) -> KVHandler | None:
        return self._kv_handler

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
        self.durable.start()
        self.queues.start()
        await self.pool.start(versions_dir=str(self._versions_dir()))
        self._server, self._serve_task, self.port = await serve_asgi(self, self.host, self.port)
        if self.internal_secret is not None:
            guarded = InternalGuard(self._endpoints.internal, self.internal_secret)
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
        await self.durable.stop()
        await self.queues.stop()
        await self.pool.stop()
        await self.outbound.aclose()
        for d in self._tmp_dirs:
            shutil.rmtree(d, ignore_errors=True)

    # -- functions -------------------------------------------------------------------------
    def _versions_dir(self) -> Path:
        if self.state_dir is None:
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
            scheduled=bool(manifest.triggers.crons),
            origins=tuple((o.binding, o.url) for o in manifest.origins),
            cdn=(
                (("origin", manifest.cdn.origin), *manifest.cdn.hooks().items())
                if manifest.cdn is not None
                else ()
            ),
            durable_objects=tuple((d.binding, d.class_name) for d in manifest.durable_objects),
            queues=tuple((q.binding, q.queue) for q in manifest.queues.producers),
            queue_consumer=bool(manifest.queues.consumers),
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
            self._rules[spec.key] = SubrequestRules.of(manifest)
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
        if ctx is not None:
            ctx.subrequests += 1
        rules = self._rules.get(ctx.key if ctx else "", SubrequestRules(0, ()))
        span = ctx.span if ctx is not None else None

        async def fetch(c: p.FetchCall) -> p.FetchResult:
            if c.durable:
                return await self.durable.call(ctx, c)
            if c.cache_op and not c.origin:
                function = ctx.function if ctx is not None else ""
                answer = self.origins.cache_api(function, request_id, c, rules)
                if ctx is not None and c.cache_op == "match":
                    record_cache_headers(ctx.response_headers, answer.headers)
                return answer
            if c.origin:
                function = ctx.function if ctx is not None else ""
                result = await self.origins.fetch(function, request_id, c, rules)
                status = next((v for k, v in result.headers if k == CACHE_HEADER), None)
                if status is not None:
                    self.metrics.cache_request(function, status)
                if ctx is not None:
                    # The function cannot set x-edgefn-* headers; the node says what its origin
                    # requests found (the last one, as a CDN reports its one fetch).
                    record_cache_headers(ctx.response_headers, result.headers)
                return result
            return await self.outbound.fetch(request_id, c, rules)

        return await traced_subrequest(self.tracer, span, call, fetch)

    async def _on_kv(self, request_id: str, call: p.KVCall) -> p.KVResult:
        ctx = self._requests.get(request_id)
        if call.binding == DURABLE_BINDING:  # a durable object's storage, at its home
            return await self.durable.storage(request_id, call)
        if call.binding == QUEUE_BINDING:  # env.<producer>.send(...)
            return await self.queues.send(ctx, call)
        if request_id in self.queues.txns:  # a queue batch: strong writes commit with it
            answer = await self.queues.kv_call(request_id, call)
            if answer is not None:
                return answer
        if self._kv_handler is None or ctx is None:
            return p.KVResult(
                call.id,
                call.call_id,
                False,
                None,
                "unavailable",
                "this node has no KV store configured",
            )
        ctx.kv_ops += 1
        handler = self._kv_handler

        async def serve(c: p.KVCall) -> p.KVResult:
            return await handler(ctx, c)

        result = await traced_kv_call(self.tracer, ctx.span, call, serve)
        if not result.ok and result.error_kind in ("unavailable", "outcome_unknown"):
            ctx.store_faults += 1
        return result

    def _on_background_done(self, request_id: str) -> None:
        self._requests.pop(request_id, None)
        self.outbound.forget(request_id)
        self.origins.forget(request_id)

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
        tail = self._path.tail
        if tail is not None and tail.watching(function):
            tail.log(function, msg.request_id, msg.level, msg.message)

    # -- HTTP ------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The public listener: functions, health, and metrics for holders of the token."""
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path.startswith("/_edgefn/"):
            await self._endpoints.public(scope, send)
            return
        if self.test_scheduled and path == TEST_PATH:
            await serve_test_scheduled(self.scheduled, scope, send)
            return
        await self._path.handle(scope, receive, send)
