"""The public request path: one function request, from the ASGI scope to the streamed response.

Steps of :meth:`RequestPath.handle`, each of which may end the request with its own answer:

1. headers bounded (431 ``headers_too_large``), decoded;
2. the function resolved in the :class:`~edgefn.edge.functions.FunctionTable` (Host header or
   manifest route);
3. with a traffic driver: served here, forwarded, or answered 429 / 503 by the driver
   (:meth:`~edgefn.edge.traffic.TrafficDriver.enter`), which then holds an admission slot until
   the request ends;
4. no function: 503 ``not_ready`` + ``Retry-After`` while the node is loading, else 404
   ``no_such_function``;
5. a version picked by weight, the body head read within ``max_body_kb`` and the body deadline
   (:mod:`edgefn.edge.request_io`: 413, 408, or 499 if the client left);
6. ``SandboxPool.invoke``, the rest of the body pumped to the worker, the response checked
   (:func:`~edgefn.edge.response_check.check_response`) and streamed back with
   ``x-edgefn-location``, ``x-edgefn-version``, ``x-edgefn-request-id``, ``x-edgefn-cold: 1`` on
   a cold start and the headers host services added (:attr:`RequestContext.response_headers`).

Every failure becomes a JSON body ``{"error": kind, "request_id": ...}`` (and a ``hint``);
exception text and tracebacks go only to the log. Every request is recorded once, whatever its
outcome (:class:`~edgefn.edge.request_record.RequestRecorder`: version statistics, telemetry,
tail, access log); with a tracer, its server and invoke spans are opened around steps 1-6
(:mod:`edgefn.edge.request_tracing`). The request's :class:`RequestContext` stays registered while
the worker may still call back (KV, subrequests): until the response ends, or until its
``ctx.wait_until`` tasks are done (at most ``BACKGROUND_MAX_S``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Callable

from edgefn.edge.functions import ActiveVersion, FunctionTable
from edgefn.edge.listener import Receive, Scope, Send
from edgefn.edge.request_context import RequestContext
from edgefn.edge.request_io import (
    MAX_REQUEST_HEADER_BYTES,
    MAX_REQUEST_HEADERS,
    BodyIn,
    BodyTooLarge,
    ClientGone,
    body_deadline,
    decode_headers,
    headers_too_large,
    pump_body,
    read_head,
    respond,
    timeout_hint,
    too_large_hint,
)
from edgefn.edge.request_record import RequestRecorder
from edgefn.edge.request_tracing import TracedSend, end_server_span, invoke_span, server_span
from edgefn.edge.response_check import BadResponse, check_response
from edgefn.edge.tail import TailPublisher
from edgefn.edge.tracing import NodeTracer, Span, replace_trace_headers
from edgefn.edge.traffic import TrafficDriver
from edgefn.observe import JsonLog, NodeMetrics
from edgefn.observe.rollup import Accumulator
from edgefn.observe.version_stats import VersionStatsTracker
from edgefn.runtime import protocol as p
from edgefn.runtime.sandbox import (
    BACKGROUND_MAX_S,
    STORE_FAULT_KINDS,
    STREAM_STALL_S,
    InvokeFailed,
    SandboxPool,
    failure,
)

__all__ = ["RequestContext", "RequestPath"]


class RequestPath:
    """Serves function requests of one node. ``await path.handle(scope, receive, send)``.

    ``requests`` is the node's registry of in-flight requests (its host callbacks look requests
    up there); ``release`` drops one from it once the worker cannot call back any more.
    """

    def __init__(
        self,
        *,
        location: str,
        table: FunctionTable,
        pool: SandboxPool,
        traffic: TrafficDriver | None,
        log: JsonLog,
        metrics: NodeMetrics,
        version_stats: VersionStatsTracker,
        requests: dict[str, RequestContext],
        ready: Callable[[], bool],
        release: Callable[[str], None],
        access_log: bool,
        seed: int,
        telemetry: Accumulator | None = None,
        tail: TailPublisher | None = None,
        tracer: NodeTracer | None = None,
    ) -> None:
        self.location = location
        self.table = table
        self.pool = pool
        # Routing, rate limits and admission (edgefn.edge.traffic); None serves every request here.
        self.traffic = traffic
        self.log = log
        self.metrics = metrics
        self.version_stats = version_stats
        self.access_log = access_log
        self._requests = requests
        self._ready = ready
        self._release = release
        self._rng = random.Random(seed)
        # Rollups of what this node answered (edgefn.observe.rollup); None records nothing.
        self.telemetry = telemetry
        # Live tail (edgefn.edge.tail); None: this node never sends request events.
        self.tail = tail
        # Spans of every request, tail-sampled (edgefn.edge.tracing); None: no tracing.
        self.tracer = tracer
        self._recorder = RequestRecorder(
            log=log,
            version_stats=version_stats,
            requests=requests,
            access_log=access_log,
            telemetry=telemetry,
            tail=tail,
        )

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracer = self.tracer
        if tracer is None:
            await self._handle(scope, receive, send, None)
            return
        span = server_span(tracer, scope, self.location)
        traced = TracedSend(send, span, scope, self.location)
        try:
            await self._handle(scope, receive, traced, span, traced)
        except BaseException:
            span.error = True
            raise
        finally:
            end_server_span(tracer, span, traced)

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        span: Span | None,
        traced: TracedSend | None = None,
    ) -> None:
        """``send`` is ``traced`` when the request is traced: behind the traffic driver the
        gate's ``send`` taps the response start for it instead (one ``send`` layer less)."""
        t0 = time.perf_counter()
        rid = os.urandom(8).hex()
        raw_headers = scope["headers"]
        if headers_too_large(raw_headers):
            # Every header travels to the worker and is decoded there: bound them first.
            await respond(
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
            self._recorder.answered(rid, scope, "", "", 431, t0, False)
            return
        headers = decode_headers(raw_headers)
        host = next((v for k, v in headers if k == "host"), "")
        fn = self.table.resolve(host, scope["path"])
        if span is not None:
            # A forwarded request's parent is this node's server span.
            headers = replace_trace_headers(headers, span, lower=False)
            span.attributes["server.address"] = host[:256]
            if fn is not None:
                span.function = fn.name
        gate = None
        if self.traffic is not None:  # serve here or forward; 429/503 (edgefn.edge.traffic)
            name = fn.name if fn else (host.split(":", 1)[0].split(".", 1)[0].lower() or None)
            if span is not None and name and not span.function:
                span.function = name[:64]
            manifest = fn.versions[0].manifest if fn else None
            gate = await self.traffic.enter(
                scope,
                receive,
                send if traced is None else traced.send,
                headers,
                name,
                manifest,
                rid,
                None if traced is None else traced.start,
            )
            if gate.handled:
                self._recorder.answered(
                    gate.request_id, scope, name or "", "", gate.status, t0, False,
                    relayed=gate.relayed,
                )  # fmt: skip
                return
            rid, headers, send = gate.request_id, gate.headers, gate.send
        if fn is None and not self._ready():
            await respond(
                send,
                503,
                {"error": "not_ready", "request_id": rid, "hint": "the node is loading functions"},
                [*self._base_headers(rid, ""), (b"retry-after", b"1")],
            )
            self._recorder.answered(rid, scope, "", "", 503, t0, False)
            return
        if fn is None:
            await respond(
                send,
                404,
                {"error": "no_such_function", "host": host, "request_id": rid},
                self._base_headers(rid, ""),
            )
            self._recorder.answered(rid, scope, "", "", 404, t0, False)
            return
        active = fn.pick(self._rng)
        limit = active.manifest.limits.max_body_kb * 1024
        # The request holds an admission slot while its body arrives: a client that sends slower
        # than BODY_MIN_BYTES_PER_S (after BODY_GRACE_S) is cut off, so a few hundred slow
        # uploads cannot keep everyone else out. A body larger than one chunk streams to the
        # worker under the same deadline (see request_io.pump_body).
        deadline = body_deadline(limit)
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    body = await read_head(receive, headers, limit, deadline)
            except BodyTooLarge:
                err = failure("body_too_large", "", hint=too_large_hint(limit))
                await self._fail(send, rid, fn.name, active.version, t0, scope, err)
                return
            except TimeoutError:
                err = failure("body_timeout", "", hint=timeout_hint())
                await self._fail(send, rid, fn.name, active.version, t0, scope, err)
                return
            except ClientGone:
                self._recorder.answered(rid, scope, fn.name, active.version, 499, t0, False)
                return
            await self._run(scope, send, rid, headers, body, active, t0, span)
        finally:
            if gate is not None and self.traffic is not None:
                self.traffic.leave(gate)  # frees the admission slot

    async def _run(
        self,
        scope: Scope,
        send: Send,
        rid: str,
        headers: list[tuple[str, str]],
        body: BodyIn,
        active: ActiveVersion,
        t0: float,
        parent: Span | None,
    ) -> None:
        tracer = self.tracer
        if tracer is None or parent is None:
            await self._invoke(scope, send, rid, headers, body, active, t0, None)
            return
        # The invoke span (edgefn.edge.request_tracing.invoke_span): the worker sees it as the
        # request's traceparent.
        span, headers = invoke_span(tracer, parent, active.version, headers)
        try:
            await self._invoke(scope, send, rid, headers, body, active, t0, span)
        except BaseException:
            span.error = True
            raise
        finally:
            tracer.end(span, error=span.error)

    async def _invoke(
        self,
        scope: Scope,
        send: Send,
        rid: str,
        headers: list[tuple[str, str]],
        body: BodyIn,
        active: ActiveVersion,
        t0: float,
        span: Span | None,
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
        ctx = RequestContext(rid, name, version, key, active.manifest, headers, span=span)
        self._requests[rid] = ctx
        try:
            inv = await self.pool.invoke(key, msg, timeout_ms=active.manifest.limits.timeout_ms)
        except InvokeFailed as err:
            self._requests.pop(rid, None)
            if span is not None:
                span.error = True
                span.attributes["error.type"] = err.kind
            await self._fail(send, rid, name, version, t0, scope, err, ctx=ctx)
            return
        if span is not None:
            span.attributes["edgefn.cold_start"] = inv.cold
        started = False
        pump = None
        if streamed:
            pump = asyncio.get_running_loop().create_task(pump_body(inv, body))
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
            ctx.cpu_us = inv.cpu_us
            self._count(name, status, inv.cold)
            self._recorder.answered(rid, scope, name, version, status, t0, inv.cold)
        except InvokeFailed as err:
            ctx.cpu_us = inv.cpu_us
            if span is not None:
                span.error = True
                span.attributes["error.type"] = err.kind
            if started:  # too late to change the status: end the stream and log
                self.log.emit(
                    "error", request_id=rid, function=name, error=err.kind, message=err.message
                )
                with contextlib.suppress(Exception):
                    await send({"type": "http.response.body", "body": b""})
                self.metrics.errors.labels(self.location, name, err.kind).inc()
            else:
                await self._fail(send, rid, name, version, t0, scope, err, cold=inv.cold, ctx=ctx)
        finally:
            if pump is not None:
                pump.cancel()  # the response is over: the rest of the body is not wanted
            inv.finish()
            if inv.background:
                # ctx.wait_until tasks run on: keep the request's KV bindings and subrequest
                # budget until the worker says they are done (bounded by BACKGROUND_MAX_S).
                asyncio.get_running_loop().call_later(BACKGROUND_MAX_S, self._release, rid)
            else:
                self._release(rid)

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
        ctx: RequestContext | None = None,
    ) -> None:
        kind, status = err.kind, err.status
        # The store's fault only if the node itself saw the store fail one of its KV calls.
        store_fault = kind in STORE_FAULT_KINDS and ctx is not None and ctx.store_faults > 0
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
        await respond(send, status, answer, headers)
        self._count(name, status, cold)
        self._recorder.answered(
            rid, scope, name, version, status, t0, cold, store_fault=store_fault
        )

    def _count(self, name: str, status: int, cold: bool) -> None:
        self.metrics.count(name, status, cold)
