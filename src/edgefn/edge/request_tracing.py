"""The spans of one request's path through a node: the server span around the whole request,
the invoke span around its worker, and the client spans of its subrequests and KV calls.

:mod:`edgefn.edge.tracing` records spans and decides traces; this module is where the request
path and the node's host callbacks open and end them, so those stay about requests, not traces.
Every function here is a no-op wrapper when tracing is off (the caller passes no tracer or no
parent span), so an untraced request pays one ``is None`` test.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import msgspec

from edgefn.edge.listener import Message, Scope, Send
from edgefn.edge.tracing import NodeTracer, Span, replace_trace_headers
from edgefn.observe.spans import KIND_CLIENT
from edgefn.runtime import protocol as p

__all__ = [
    "TRACE_ID_HEADER",
    "TracedSend",
    "end_server_span",
    "server_span",
    "traced_invoke",
    "traced_kv_call",
    "traced_subrequest",
]

# The response header that links a request (x-edgefn-request-id) to its trace.
TRACE_ID_HEADER = b"x-edgefn-trace-id"


def server_span(tracer: NodeTracer, scope: Scope, location: str) -> Span:
    """The request's server span: a child of the client's valid ``traceparent``, else a new trace."""
    parent = state = None
    for k, v in scope["headers"]:
        if k == b"traceparent":
            parent = v.decode("latin-1")
        elif k == b"tracestate":
            state = v.decode("latin-1")
    method = scope["method"]
    attributes: dict[str, str | int | float | bool] = {
        "http.request.method": method,
        "url.path": scope["path"][:256],
        "url.scheme": scope.get("scheme", "http"),
        "edgefn.location": location,
    }
    return tracer.server(method, parent, state, attributes)


def end_server_span(tracer: NodeTracer, span: Span, traced: TracedSend) -> None:
    """End the server span with what the response said (status, request id, version, cold)."""
    a = span.attributes
    status = traced.status
    a["http.response.status_code"] = status
    a["edgefn.status_class"] = f"{min(max(status // 100, 1), 5)}xx" if status else "none"
    a["edgefn.request_id"] = traced.request_id
    if traced.version:
        a["edgefn.version"] = traced.version
    a["edgefn.cold_start"] = traced.cold
    if span.function:
        a["edgefn.function"] = span.function
    tracer.end(span, error=span.error or status >= 500 or status == 0)


class TracedSend:
    """The client's ``send``, noting what the server span needs and adding the trace id header
    (``x-edgefn-trace-id``, unless a forwarded answer carries it already)."""

    __slots__ = ("cold", "request_id", "send", "span", "status", "version")

    def __init__(self, send: Send, span: Span) -> None:
        self.send = send
        self.span = span
        self.status = 0
        self.request_id = ""
        self.version = ""
        self.cold = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            headers = list(message.get("headers") or ())
            has_trace = False
            for k, v in headers:
                if k == b"x-edgefn-request-id":
                    self.request_id = v.decode("latin-1")
                elif k == b"x-edgefn-version":
                    self.version = v.decode("latin-1")
                elif k == b"x-edgefn-cold":
                    self.cold = True
                elif k == TRACE_ID_HEADER:
                    has_trace = True
            if not has_trace:
                headers.append((TRACE_ID_HEADER, self.span.trace_id.encode()))
            message = {**message, "headers": headers}
        await self.send(message)


async def traced_invoke(
    tracer: NodeTracer | None,
    parent: Span | None,
    name: str,
    version: str,
    headers: list[tuple[str, str]],
    run: Callable[[list[tuple[str, str]], Span | None], Awaitable[None]],
) -> None:
    """``run(headers, span)`` inside the request's invoke span (the worker sees it as the
    request's ``traceparent``); without a tracer or parent, ``run(headers, None)``."""
    if tracer is None or parent is None:
        await run(headers, None)
        return
    span = tracer.child(
        parent, "edgefn.invoke", attributes={"edgefn.function": name, "edgefn.version": version}
    )
    try:
        await run(replace_trace_headers(headers, span, lower=False), span)
    except BaseException:
        span.error = True
        raise
    finally:
        tracer.end(span, error=span.error)


async def traced_subrequest(
    tracer: NodeTracer | None,
    parent: Span | None,
    call: p.FetchCall,
    fetch: Callable[[p.FetchCall], Awaitable[p.FetchResult]],
) -> p.FetchResult:
    """``fetch(call)`` as a client span whose ``traceparent`` the outbound request carries."""
    if tracer is None or parent is None:
        return await fetch(call)
    target = urlsplit(call.url)
    span = tracer.child(
        parent,
        call.method,
        KIND_CLIENT,
        {
            "http.request.method": call.method,
            # Without the query: it may carry what the function's owner keeps private.
            "url.full": f"{target.scheme}://{target.netloc}{target.path}"[:512],
            "server.address": (target.hostname or "")[:256],
            "edgefn.subrequest": True,
        },
    )
    call = msgspec.structs.replace(call, headers=replace_trace_headers(call.headers, span))
    try:
        result = await fetch(call)
    except BaseException:
        tracer.end(span, error=True)
        raise
    if result.status:
        span.attributes["http.response.status_code"] = result.status
    if result.error_kind:
        span.attributes["error.type"] = result.error_kind
    tracer.end(span, error=bool(result.error_kind) or result.status >= 500)
    return result


async def traced_kv_call(
    tracer: NodeTracer | None,
    parent: Span | None,
    call: p.KVCall,
    serve: Callable[[p.KVCall], Awaitable[p.KVResult]],
) -> p.KVResult:
    """``serve(call)`` as a client span ``kv.<op> <binding>``."""
    if tracer is None or parent is None:
        return await serve(call)
    span = tracer.child(
        parent,
        f"kv.{call.op} {call.binding}",
        KIND_CLIENT,
        {
            "db.system.name": "edgefn.kv",
            "db.operation.name": call.op,
            "edgefn.kv.binding": call.binding,
        },
    )
    try:
        result = await serve(call)
    except BaseException:
        tracer.end(span, error=True)
        raise
    if not result.ok:
        span.attributes["error.type"] = result.error_kind
    tracer.end(span, error=not result.ok)
    return result
