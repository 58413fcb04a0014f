"""Spans as the node records them, ships them and the core stores them (pure).

W3C Trace Context (https://www.w3.org/TR/trace-context/):

* :func:`parse_traceparent` accepts ``00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>``
  (lower-case hex, neither id all zeros; a future version's longer value is read by its first
  four fields, as the spec asks) and returns None for anything else: an invalid header is
  **ignored** and the node starts a new trace, it is never an error answer.
* :func:`valid_tracestate` keeps a ``tracestate`` of at most 32 ``key=value`` members and 512
  characters; anything else is dropped (the spec lets a vendor drop it whole).
* :func:`format_traceparent` writes the header for a span (always flag ``01``: every span is
  recorded until the tail decision, so the next hop should record too).

Wire format. A node ships the spans of kept traces as a :class:`TraceBatch` (msgpack) on its own
location's subject; :func:`decode_batch` treats a batch as hostile: every string, count and map is
bounded, ids must be hex of the right length, times must not run backwards, the kind and status
must be known values and every span must name the batch's location.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

__all__ = [
    "KIND_CLIENT",
    "KIND_INTERNAL",
    "KIND_SERVER",
    "MAX_ATTRIBUTES",
    "MAX_SPANS_PER_BATCH",
    "STATUS_ERROR",
    "STATUS_OK",
    "STATUS_UNSET",
    "BadBatch",
    "SpanRecord",
    "TraceBatch",
    "decode_batch",
    "encode_batch",
    "format_traceparent",
    "parse_traceparent",
    "valid_tracestate",
]

# The values of OpenTelemetry's SpanKind and StatusCode (the exporter maps them one to one).
KIND_INTERNAL, KIND_SERVER, KIND_CLIENT = 0, 1, 2
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
MAX_ATTRIBUTES = 32
MAX_SPANS_PER_BATCH = 512
_MAX_NAME = 128
_MAX_VALUE = 512
_MAX_TRACESTATE = 512
_MAX_TRACESTATE_MEMBERS = 32

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_TRACESTATE_MEMBER = re.compile(
    r"[a-z0-9][_0-9a-z\-*/]{0,255}(@[a-z0-9][_0-9a-z\-*/]{0,13})?=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """``(trace_id, parent_span_id)`` of a valid ``traceparent``; None for absent or invalid."""
    if not value or len(value) > 512:
        return None
    m = _TRACEPARENT.fullmatch(value.strip())
    if m is None:
        return None
    version, trace_id, span_id, _flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest):
        return None  # ff is forbidden; version 00 has exactly four fields
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id


def valid_tracestate(value: str | None) -> str:
    """The ``tracestate`` to pass on: the value if it is well formed, else ``""``."""
    if not value or len(value) > _MAX_TRACESTATE:
        return ""
    members = [m.strip() for m in value.split(",") if m.strip()]
    if len(members) > _MAX_TRACESTATE_MEMBERS:
        return ""
    if not all(_TRACESTATE_MEMBER.fullmatch(m) for m in members):
        return ""
    return ",".join(members)


def format_traceparent(trace_id: str, span_id: str) -> str:
    return f"00-{trace_id}-{span_id}-01"


class BadBatch(ValueError):
    """A trace batch that does not decode or breaks a rule (the message is dropped)."""


Name = Annotated[str, msgspec.Meta(max_length=_MAX_NAME)]
TraceId = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{32}$")]
SpanId = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{16}$")]
ParentId = Annotated[str, msgspec.Meta(pattern="^([0-9a-f]{16})?$")]
Nanos = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Value = (
    Annotated[str, msgspec.Meta(max_length=_MAX_VALUE)]
    | Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
    | float
    | bool
)
Attributes = Annotated[dict[Name, Value], msgspec.Meta(max_length=MAX_ATTRIBUTES)]


class SpanRecord(msgspec.Struct, frozen=True, array_like=True):
    """One ended span of a kept trace. ``parent_id`` "" for a trace's root; ``remote_parent``:
    the parent was made by another process (a client, or the node that forwarded the request).
    ``probability`` is the tail sampler's keep probability for the trace (1.0: always kept)."""

    trace_id: TraceId
    span_id: SpanId
    parent_id: ParentId
    remote_parent: bool
    name: Name
    kind: Annotated[int, msgspec.Meta(ge=0, le=4)]
    start_ns: Nanos
    end_ns: Nanos
    status: Annotated[int, msgspec.Meta(ge=0, le=2)]
    location: Name
    function: Name
    probability: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    reason: Name
    attributes: Attributes = {}

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


class TraceBatch(msgspec.Struct, frozen=True):
    """Spans one node shipped in one message; ``batch_id`` is the JetStream ``Nats-Msg-Id``."""

    location: Name
    batch_id: Name
    spans: Annotated[list[SpanRecord], msgspec.Meta(max_length=MAX_SPANS_PER_BATCH)]


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(TraceBatch)


def encode_batch(batch: TraceBatch) -> bytes:
    return _ENCODER.encode(batch)


def decode_batch(data: bytes, *, max_bytes: int = 1 << 20) -> TraceBatch:
    """A batch from the bus, every field checked; raises :class:`BadBatch`."""
    if len(data) > max_bytes:
        raise BadBatch(f"trace batch of {len(data)} bytes is over {max_bytes}")
    try:
        batch = _DECODER.decode(data)
    except msgspec.DecodeError as err:
        raise BadBatch(f"trace batch does not decode: {err}") from None
    for span in batch.spans:
        if span.location != batch.location:
            raise BadBatch(f"span {span.span_id} names {span.location!r}, not {batch.location!r}")
        if span.end_ns < span.start_ns:
            raise BadBatch(f"span {span.span_id} ends before it starts")
        if span.parent_id == span.span_id:
            raise BadBatch(f"span {span.span_id} is its own parent")
    return batch
