"""A node's spans: recorded for every request, kept or dropped as a whole trace when its root ends.

How it works. The request path opens a **server span** per request (:meth:`NodeTracer.server`):
its parent is the client's valid ``traceparent`` (a remote parent), else it starts a new trace.
Children (:meth:`NodeTracer.child`) are the **invoke** span (the request in its sandboxed worker,
whose ``traceparent`` the worker sees as the request's header), the **subrequest** spans
(``edgefn.fetch``; the outbound request carries the subrequest span's ``traceparent``) and the
**KV** spans (one per ``env.<KV>`` call, served here on the node). A request forwarded to another
location carries the server span's ``traceparent``; that location's server span is its own local
root with a remote parent, so both halves join in one trace at the core.

Ended spans wait in a bounded table by trace id. When a **local root** ends (no parent, or a
remote one) the pure :class:`~edgefn.observe.trace_sampling.TailSampler` decides the trace; a
kept trace's spans go, as :class:`~edgefn.observe.spans.SpanRecord` with the probability used,
to the outbox the :class:`~edgefn.edge.trace_ship.TraceShipper` empties. A span that ends after
its root (a ``ctx.wait_until`` task's KV call) follows the decision, remembered for the last
``DECIDED_MAX`` traces.

Cost. The hot path is a slotted object, a random id and ``time.time_ns`` per span;
the OpenTelemetry SDK builds its spans only for kept traces, at the core's OTLP export
(docs/design/0023-traces.md measured the SDK's ``start_span`` at ~30 µs a span here, ten times
this). Everything is bounded: ``OPEN_TRACES_MAX`` traces waiting for their root (the oldest is
dropped and counted), ``SPANS_PER_TRACE_MAX`` spans each, ``OUTBOX_SPANS_MAX`` spans unsent.
"""

from __future__ import annotations

import os
import random
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
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
from edgefn.observe.trace_sampling import SamplingConfig, TailSampler, TraceEnded

__all__ = [
    "DECIDED_MAX",
    "OPEN_TRACES_MAX",
    "OUTBOX_SPANS_MAX",
    "SPANS_PER_TRACE_MAX",
    "Attrs",
    "NodeTracer",
    "Span",
    "TracerStatistics",
    "replace_trace_headers",
]

OPEN_TRACES_MAX = 4096
SPANS_PER_TRACE_MAX = 128
DECIDED_MAX = 4096
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
        "end_ns",
        "error",
        "function",
        "kind",
        "local_root",
        "name",
        "parent_id",
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

    @property
    def traceparent(self) -> str:
        return format_traceparent(self.trace_id, self.span_id)


def replace_trace_headers(
    headers: list[tuple[str, str]], span: Span, *, lower: bool = True
) -> list[tuple[str, str]]:
    """``headers`` with ``traceparent`` (and ``tracestate``) naming ``span`` as the parent.
    ``lower=False``: the names are lower case already (a decoded request's)."""
    if lower:
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
    open_evicted: int
    outbox_spans: int
    outbox_dropped: int


class NodeTracer:
    """The spans of one location. ``server`` / ``child`` / ``end``; ``drain`` for the shipper."""

    def __init__(self, location: str, *, sampling: SamplingConfig | None = None) -> None:
        self.location = location
        self.sampler = TailSampler(sampling or SamplingConfig())
        self._open: OrderedDict[str, list[Span]] = OrderedDict()
        self._decided: OrderedDict[str, tuple[float, str] | None] = OrderedDict()
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
        parent = parse_traceparent(traceparent)
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
        span = Span(
            parent.trace_id,
            parent.span_id,
            name,
            kind,
            parent.function,
            attributes if attributes is not None else {},
            local_root=False,
            tracestate=parent.tracestate,
        )
        return span

    def end(self, span: Span, *, error: bool = False) -> None:
        """End ``span``; the local root's end decides its trace."""
        span.end_ns = time.time_ns()
        if error:
            span.error = True
            span.status = STATUS_ERROR
        tid = span.trace_id
        if tid in self._decided:  # a late child: its trace is decided already
            decided = self._decided[tid]
            if decided is not None:
                self._ship([span], *decided)
            return
        spans = self._open.get(tid)
        if spans is None:
            if len(self._open) >= OPEN_TRACES_MAX:
                self._open.popitem(last=False)
                self._evicted += 1
            spans = self._open[tid] = []
        if len(spans) < SPANS_PER_TRACE_MAX:
            spans.append(span)
        if span.local_root:
            self._decide(span, self._open.pop(tid))

    def _decide(self, root: Span, spans: list[Span]) -> None:
        status = root.attributes.get("http.response.status_code", 0)
        decision = self.sampler.handle(
            TraceEnded(
                trace_id=root.trace_id,
                function=root.function,
                status=status if isinstance(status, int) else 0,
                error=root.error,
                duration_ms=(root.end_ns - root.start_ns) / 1e6,
                spans=len(spans),
                now_ms=root.end_ns // 1_000_000,
            )
        )
        kept = (decision.probability, decision.reason) if decision.keep else None
        self._decided[root.trace_id] = kept
        if len(self._decided) > DECIDED_MAX:
            self._decided.popitem(last=False)
        if kept is None:
            self._dropped += 1
            return
        self._kept += 1
        self._ship(spans, decision.probability, decision.reason)

    def _ship(self, spans: Iterable[Span], probability: float, reason: str) -> None:
        for s in spans:
            if len(self._outbox) >= OUTBOX_SPANS_MAX:
                self._outbox.popleft()
                self._outbox_dropped += 1
            self._spans_kept += 1
            self._outbox.append(self._record(s, probability, reason))

    def _record(self, s: Span, probability: float, reason: str) -> SpanRecord:
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
            open_traces=len(self._open),
            open_evicted=self._evicted,
            outbox_spans=len(self._outbox),
            outbox_dropped=self._outbox_dropped,
        )


def _bounded(attributes: dict[str, Attr]) -> dict[str, Attr]:
    out: dict[str, Attr] = {}
    for k, v in list(attributes.items())[:32]:
        out[k[:128]] = v[:512] if isinstance(v, str) else v
    return out
