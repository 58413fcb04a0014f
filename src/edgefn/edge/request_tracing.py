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
    "invoke_span",
    "server_span",
    "traced_kv_call",
    "traced_subrequest",
]

# The response header that links a request (x-edgefn-request-id) to its trace.
TRACE_ID_HEADER = b"x-edgefn-trace-id"


def server_span(tracer: NodeTracer, scope: Scope, location: str) -> Span:
    """The request's server span: a child of the client's valid ``traceparent``, else a new trace.

    Its attributes are built only if the trace is kept (:meth:`TracedSend.fill`); the decision
    needs the status alone, which :func:`end_server_span` sets.
    """
    parent = state = None
    for k, v in scope["headers"]:
        if k == b"traceparent":
            parent = v.decode("latin-1")
        elif k == b"tracestate":
            state = v.decode("latin-1")
    return tracer.server(scope["method"], parent, state, {})


def end_server_span(tracer: NodeTracer, span: Span, traced: TracedSend) -> None:
    """End the server span with the response's status; the rest is filled in if it is kept."""
    status = traced.status
    span.attributes["http.response.status_code"] = status
    span.fill = traced.fill
    tracer.end(span, error=span.error or status >= 500 or status == 0)


class TracedSend:
    """The client's ``send``, noting the response's status and head for the server span and
    adding the trace id header (``x-edgefn-trace-id``, unless a forwarded answer carries it).

    Behind the traffic driver, whose gate wraps ``send`` to record the status anyway, the gate
    calls :meth:`start` instead (``recording(..., tap=traced.start)``) and this object's own
    ``__call__`` is used only for what is answered before the gate exists."""

    __slots__ = ("headers", "location", "scope", "send", "span", "status")

    def __init__(self, send: Send, span: Span, scope: Scope, location: str) -> None:
        self.send = send
        self.span = span
        self.scope = scope
        self.location = location
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            message = self.start(message)
        await self.send(message)

    def start(self, message: Message) -> Message:
        """The response's start message, with the trace id header; its status and head noted."""
        self.status = int(message["status"])
        headers = message.get("headers")
        if not isinstance(headers, list):
            headers = list(headers or ())
            message = {**message, "headers": headers}
        for k, _ in headers:
            if k == TRACE_ID_HEADER:
                break
        else:
            headers.append((TRACE_ID_HEADER, self.span.trace_id.encode()))
        self.headers = headers
        return message

    def fill(self, span: Span) -> None:
        """The server span's attributes, for a kept trace: the request, then what the response
        said (request id, version, cold start)."""
        scope, status = self.scope, self.status
        a = {
            "http.request.method": scope["method"],
            "url.path": scope["path"][:256],
            "url.scheme": scope.get("scheme", "http"),
            "edgefn.location": self.location,
            **span.attributes,
            "http.response.status_code": status,
            "edgefn.status_class": f"{min(max(status // 100, 1), 5)}xx" if status else "none",
            "edgefn.cold_start": False,
        }
        for k, v in self.headers:
            if k == b"x-edgefn-request-id":
                a["edgefn.request_id"] = v.decode("latin-1")
            elif k == b"x-edgefn-version":
                a["edgefn.version"] = v.decode("latin-1")
            elif k == b"x-edgefn-cold":
                a["edgefn.cold_start"] = True
        a.setdefault("edgefn.request_id", "")
        if span.function:
            a["edgefn.function"] = span.function
        span.attributes = a


def invoke_span(
    tracer: NodeTracer, parent: Span, version: str, headers: list[tuple[str, str]]
) -> tuple[Span, list[tuple[str, str]]]:
    """The request's invoke span (a child of its server span) and the request headers naming it
    as the ``traceparent`` (the worker sees them); the caller ends it with the tracer."""
    span = tracer.child(parent, "edgefn.invoke")
    span.fill = _invoke_attributes
    span.attributes["edgefn.version"] = version
    return span, replace_trace_headers(headers, span, lower=False, ours=parent)


def _invoke_attributes(span: Span) -> None:
    span.attributes["edgefn.function"] = span.function


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
