"""A node's spans: recorded for every request, kept or dropped as a whole trace when its root ends.

How it works. The request path opens a **server span** per request (:meth:`NodeTracer.server`):
its parent is the client's valid ``traceparent`` (a remote parent), else it starts a new trace.
Children (:meth:`NodeTracer.child`) are the **invoke** span (the request in its sandboxed worker,
whose ``traceparent`` the worker sees as the request's header), the **subrequest** spans
(``edgefn.fetch``; the outbound request carries the subrequest span's ``traceparent``) and the
**KV** spans (one per ``env.<KV>`` call, served here on the node). A request forwarded to another
location carries the server span's ``traceparent``; that location's server span is its own local
root with a remote parent, so both halves join in one trace at the core.

Ended spans wait on their **local root** (every span holds a reference to it): when the root
ends (no parent, or a remote one) the pure :class:`~edgefn.observe.trace_sampling.TailSampler`
decides the trace; a kept trace's spans go, as :class:`~edgefn.observe.spans.SpanRecord` with
the probability used, to the outbox the :class:`~edgefn.edge.trace_ship.TraceShipper` empties.
A span that ends after its root (a ``ctx.wait_until`` task's KV call) follows the decision the
root keeps. No table by trace id: two requests that carry the same client ``traceparent`` are
two local roots, each decided on its own.

Cost. The hot path is a slotted object, a random id and ``time.time_ns`` per span; attributes
that cost something to build are filled in only for kept traces (``Span.fill``), and a dropped
trace is forgotten with its root. The OpenTelemetry SDK builds its spans only for kept traces,
at the core's OTLP export (docs/design/0023-traces.md measured the SDK's ``start_span`` at
~30 µs a span here, ten times this). Everything is bounded: ``SPANS_PER_TRACE_MAX`` spans wait on
a root (more are dropped and counted), roots are the requests in flight, and at most
``OUTBOX_SPANS_MAX`` spans wait unsent.
"""

from __future__ import annotations

import os
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from edgefn.observe.spans import (
    KIND_INTERNAL,
    KIND_SERVER,
    STATUS_ERROR,
    STATUS_UNSET,
    SpanRecord,
    format_traceparent,
    parse_traceparent,
    valid_tracestate,
)
from edgefn.observe.trace_sampling import SamplingConfig, TailSampler

__all__ = [
    "OUTBOX_SPANS_MAX",
    "SPANS_PER_TRACE_MAX",
    "Attrs",
    "NodeTracer",
    "Span",
    "TracerStatistics",
    "replace_trace_headers",
]

SPANS_PER_TRACE_MAX = 128
OUTBOX_SPANS_MAX = 20_000

Attr = str | int | float | bool
_TRACE_HEADERS = ("traceparent", "tracestate")
# Span and trace ids need to be unique and random, not secret (the OpenTelemetry SDK draws them
# from ``random.getrandbits`` too); a Mersenne Twister seeded from the OS is ~5x cheaper than an
# ``os.urandom`` call per id. Never zero (W3C: an all-zero id is invalid).
_ids = random.Random(os.urandom(32))
Attrs = dict[str, Attr]


class Span:
    """One span being recorded. Set attributes on ``attributes``; end it with the tracer."""

    __slots__ = (
        "attributes",
        "children",
        "decision",
        "end_ns",
        "error",
        "fill",
        "function",
        "kind",
        "local_root",
        "name",
        "parent_id",
        "root",
        "span_id",
        "start_ns",
        "status",
        "trace_id",
        "tracestate",
    )

    def __init__(
        self,
        trace_id: str,
        parent_id: str,
        name: str,
        kind: int,
        function: str,
        attributes: dict[str, Attr],
        *,
        local_root: bool,
        tracestate: str = "",
        root: Span | None = None,
    ) -> None:
        self.trace_id = trace_id
        self.span_id = f"{_ids.getrandbits(64) or 1:016x}"
        self.parent_id = parent_id
        self.name = name
        self.kind = kind
        self.function = function
        self.attributes = attributes
        self.local_root = local_root
        self.tracestate = tracestate
        self.start_ns = time.time_ns()
        self.end_ns = 0
        self.status = STATUS_UNSET
        self.error = False
        # Called with the span only if its trace is kept: attributes that cost something to
        # build (a request's method, path, response headers) are not built for dropped traces.
        self.fill: Callable[[Span], None] | None = None
        # The local root holds its ended descendants until it ends, then its decision
        # (probability, reason) or None for a dropped trace: a late child follows it.
        self.root: Span = self if root is None else root
        self.children: list[Span] = []
        self.decision: tuple[float, str] | None = None

    @property
    def traceparent(self) -> str:
        return format_traceparent(self.trace_id, self.span_id)


def replace_trace_headers(
    headers: list[tuple[str, str]], span: Span, *, lower: bool = True, ours: Span | None = None
) -> list[tuple[str, str]]:
    """``headers`` with ``traceparent`` (and ``tracestate``) naming ``span`` as the parent.
    ``lower=False``: the names are lower case already (a decoded request's). ``ours``: the
    headers came from this function naming ``ours`` (no other trace headers): when they are
    still the last ones, they are cut off instead of every header being compared."""
    n = 2 if ours is not None and ours.tracestate else 1
    if ours is not None and len(headers) >= n and headers[-n][0] == "traceparent":
        out = headers[:-n]
    elif lower:
        out = [(k, v) for k, v in headers if k.lower() not in _TRACE_HEADERS]
    else:
        out = [(k, v) for k, v in headers if k not in _TRACE_HEADERS]
    out.append(("traceparent", span.traceparent))
    if span.tracestate:
        out.append(("tracestate", span.tracestate))
    return out


@dataclass(frozen=True, slots=True)
class TracerStatistics:
    spans_started: int
    traces_kept: int
    traces_dropped: int
    spans_kept: int
    open_traces: int
    spans_over_limit: int
    outbox_spans: int
    outbox_dropped: int


class NodeTracer:
    """The spans of one location. ``server`` / ``child`` / ``end``; ``drain`` for the shipper."""

    def __init__(self, location: str, *, sampling: SamplingConfig | None = None) -> None:
        self.location = location
        self.sampler = TailSampler(sampling or SamplingConfig())
        self._open = 0  # local roots started and not ended
        self._outbox: deque[SpanRecord] = deque()
        self._started = 0
        self._kept = 0
        self._dropped = 0
        self._spans_kept = 0
        self._evicted = 0
        self._outbox_dropped = 0

    def server(
        self,
        name: str,
        traceparent: str | None,
        tracestate: str | None,
        attributes: dict[str, Attr],
    ) -> Span:
        """The server span of a request that just arrived (a new trace unless a valid
        ``traceparent`` came in; an invalid one is ignored). Set ``function`` once known."""
        self._started += 1
        self._open += 1
        parent = parse_traceparent(traceparent) if traceparent else None
        if parent is None:
            trace_id, parent_id, state = f"{_ids.getrandbits(128) or 1:032x}", "", ""
        else:
            (trace_id, parent_id), state = parent, valid_tracestate(tracestate)
        return Span(
            trace_id,
            parent_id,
            name,
            KIND_SERVER,
            "",
            attributes,
            local_root=True,
            tracestate=state,
        )

    def child(
        self, parent: Span, name: str, kind: int = KIND_INTERNAL, attributes: Attrs | None = None
    ) -> Span:
        self._started += 1
        return Span(
            parent.trace_id,
            parent.span_id,
            name,
            kind,
            parent.function,
            attributes if attributes is not None else {},
            local_root=False,
            tracestate=parent.tracestate,
            root=parent.root,
        )

    def end(self, span: Span, *, error: bool = False) -> None:
        """End ``span``; the local root's end decides its trace."""
        span.end_ns = time.time_ns()
        if error:
            span.error = True
            span.status = STATUS_ERROR
        root = span.root
        if root is span:
            self._open -= 1
            self._decide(span)
        elif not root.end_ns:  # the root is open: the span waits for its decision
            if len(root.children) < SPANS_PER_TRACE_MAX:
                root.children.append(span)
            else:
                self._evicted += 1
        elif root.decision is not None:  # a late child of a kept trace
            self._ship((span,), *root.decision)

    def _decide(self, root: Span) -> None:
        status = root.attributes.get("http.response.status_code", 0)
        status = status if isinstance(status, int) else 0
        spans = len(root.children) + 1
        decision = self.sampler.decide(
            root.trace_id,
            root.function,
            status,
            root.error,
            (root.end_ns - root.start_ns) / 1e6,
            spans,
            root.end_ns // 1_000_000,
        )
        if decision is None or not decision.keep:
            self._dropped += 1
            root.children = []
            return
        root.decision = (decision.probability, decision.reason)
        self._kept += 1
        self._ship((*root.children, root), decision.probability, decision.reason)
        root.children = []

    def _ship(self, spans: Iterable[Span], probability: float, reason: str) -> None:
        for s in spans:
            if len(self._outbox) >= OUTBOX_SPANS_MAX:
                self._outbox.popleft()
                self._outbox_dropped += 1
            self._spans_kept += 1
            self._outbox.append(self._record(s, probability, reason))

    def _record(self, s: Span, probability: float, reason: str) -> SpanRecord:
        if s.fill is not None:
            s.fill(s)
            s.fill = None
        return SpanRecord(
            trace_id=s.trace_id,
            span_id=s.span_id,
            parent_id=s.parent_id,
            remote_parent=bool(s.local_root and s.parent_id),
            name=s.name[:128],
            kind=s.kind,
            start_ns=s.start_ns,
            end_ns=max(s.end_ns, s.start_ns),
            status=s.status,
            location=self.location,
            function=s.function[:128],
            probability=probability,
            reason=reason,
            attributes=_bounded(s.attributes),
        )

    def drain(self, max_spans: int) -> list[SpanRecord]:
        """Up to ``max_spans`` kept spans, oldest first, out of the outbox."""
        n = min(max_spans, len(self._outbox))
        return [self._outbox.popleft() for _ in range(n)]

    def requeue(self, spans: list[SpanRecord]) -> None:
        """Spans a failed publish gives back go to the front, while the outbox has room."""
        room = OUTBOX_SPANS_MAX - len(self._outbox)
        self._outbox_dropped += max(0, len(spans) - room)
        self._outbox.extendleft(reversed(spans[:room]))

    def statistics(self) -> TracerStatistics:
        return TracerStatistics(
            spans_started=self._started,
            traces_kept=self._kept,
            traces_dropped=self._dropped,
            spans_kept=self._spans_kept,
            open_traces=self._open,
            spans_over_limit=self._evicted,
            outbox_spans=len(self._outbox),
            outbox_dropped=self._outbox_dropped,
        )


def _bounded(attributes: dict[str, Attr]) -> dict[str, Attr]:
    out: dict[str, Attr] = {}
    for k, v in list(attributes.items())[:32]:
        out[k[:128]] = v[:512] if isinstance(v, str) else v
    return out
