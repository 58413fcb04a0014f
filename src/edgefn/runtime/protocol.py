"""The node ⇄ worker (and node ⇄ zygote) IPC protocol: length-prefixed msgpack frames.

A frame is a 4-byte big-endian length followed by that many bytes of msgpack encoding one tagged
struct below. Frames over ``MAX_FRAME_BYTES`` or that do not decode to a known message are a
:class:`~edgefn.errors.ProtocolError`; the receiving side drops the peer instead of guessing.

Bodies never travel in one frame, whatever their size. A request body that is not complete in
``Invoke.body`` (``more_body``) follows as ``RequestChunk`` frames of at most ``CHUNK_BYTES`` and a
``RequestEnd``; the node sends at most ``BODY_WINDOW_BYTES`` of chunks ahead of what the function has
consumed, which the worker reports with ``RequestCredit`` (credit-based flow control, as in HTTP/2),
so neither side buffers more than a window per request. A response larger than one chunk travels as
``ResponseStart``, ``ResponseChunk``s and ``ResponseEnd``, back-pressured by the node (see sandbox).

Node → worker: Load, Invoke, RequestChunk, RequestEnd, Cancel, FetchResult, KVResult, Shutdown.
Worker → node: Ready, Loaded, Respond, ResponseStart, ResponseChunk, ResponseEnd, RequestCredit,
Background, BackgroundDone, InvokeError, Log, FetchCall, KVCall.
Node → zygote: Spawn. Zygote → node: Hello (first), Spawned (with the worker's socket attached by
SCM_RIGHTS).
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

from edgefn.errors import ProtocolError

MAX_FRAME_BYTES = 16 * 1024 * 1024
# The largest body piece in one frame, both ways, and how many request-body bytes the node may send
# ahead of the function's reading (per request).
CHUNK_BYTES = 64 * 1024
BODY_WINDOW_BYTES = 1024 * 1024
_LEN = struct.Struct(">I")


class _Msg(msgspec.Struct, tag_field="t", array_like=True, omit_defaults=False):
    pass


class Load(_Msg, tag="load"):
    """Specialise a generic worker to one function version."""

    function: str
    version: str
    code_dir: str
    main: str
    vars: dict[str, Any]
    memory_mb: int
    bindings: list[str] = []
    # Decrypted secrets (name -> value), kept apart from ``vars`` so the node can tell them
    # apart for redaction; they become ``env.NAME`` like vars (docs/design/0013-secrets.md).
    secrets: dict[str, str] = {}
    tenant: str = ""
    uid: int = 0
    scratch_mb: int = 16
    # [runtime] preload: imported after isolation is set up, before the function's main module.
    preload: list[str] = []
    # [triggers] crons is set: the load fails unless main defines `async def scheduled`.
    scheduled: bool = False
    # [[origins]]: binding -> base url, each an `env.<binding>` Origin.
    origins: dict[str, str] = {}
    # [cdn]: "origin" -> its binding, and hook point -> handler name; then main has no fetch.
    cdn: dict[str, str] = {}
    # [[durable_objects]]: binding -> class name (each a DurableObject subclass in main).
    durable_objects: dict[str, str] = {}
    # [[queues.producers]]: binding -> queue (each an `env.<binding>` Queue).
    queues: dict[str, str] = {}
    # [[queues.consumers]] is set: the load fails unless main defines `async def queue`.
    queue_consumer: bool = False


class Invoke(_Msg, tag="inv"):
    id: int
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes
    location: str
    client_location: str
    request_id: str
    # True when ``body`` is only the start: RequestChunk frames and a RequestEnd follow.
    more_body: bool = False
    # A cron tick, not a request: the worker calls ``scheduled(event, env, ctx)`` with this
    # expression and tick (ms since the epoch) and answers Respond(204) or InvokeError.
    cron: str = ""
    scheduled_ms: int = 0
    attempt: int = 1
    # A durable object's request, not the function's: "<class>\n<id>"; method ALARM calls alarm().
    durable: str = ""
    # A batch of queue messages, not a request: the worker calls ``queue(batch, env, ctx)`` with
    # ``body`` the batch (sdk/_queue.encode_batch) and answers Respond(200, each one's decision).
    queue: str = ""


class RequestChunk(_Msg, tag="qchunk"):
    """The next piece of a request body (at most CHUNK_BYTES, within the worker's credit)."""

    id: int
    data: bytes


class RequestEnd(_Msg, tag="qend"):
    id: int


class RequestCredit(_Msg, tag="qcredit"):
    """The function consumed ``n`` bytes of streamed request body: the node may send ``n`` more."""

    id: int
    n: int


class Cancel(_Msg, tag="cancel"):
    id: int


class FetchResult(_Msg, tag="fres"):
    id: int
    fetch_id: int
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    error_kind: str = ""
    error_message: str = ""


class KVResult(_Msg, tag="kvres"):
    id: int
    call_id: int
    ok: bool
    value: Any = None
    error_kind: str = ""
    error_message: str = ""


class Shutdown(_Msg, tag="bye"):
    pass


class Ready(_Msg, tag="ready"):
    pid: int
    isolation: dict[str, str] = {}


class Loaded(_Msg, tag="loaded"):
    ok: bool
    error: str = ""
    load_ms: float = 0.0
    isolation: dict[str, str] = {}
    phases_ms: dict[str, float] = {}  # where load_ms went, in order (bench runtime reports it)
    minor_faults: int = 0  # page faults taken while loading (copy-on-write after the fork)


class ResponseStart(_Msg, tag="rstart"):
    id: int
    status: int
    headers: list[tuple[str, str]]


class Respond(_Msg, tag="resp"):
    """A whole (non-streamed) response in one frame: start, body and end together."""

    id: int
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    cpu_us: int = 0  # the invocation's CPU time (see ResponseEnd)


class ResponseChunk(_Msg, tag="rchunk"):
    id: int
    data: bytes


class ResponseEnd(_Msg, tag="rend"):
    id: int
    # The function's CPU time for this invocation, in µs: the worker's thread CPU time over every
    # step of the invocation's task (telemetry; the node clamps it, a worker's word is not trusted
    # beyond that).
    cpu_us: int = 0


class Background(_Msg, tag="bg"):
    """Sent just before the last frame of a response whose ``ctx.wait_until`` tasks still run:
    the node keeps the request's context (KV bindings, subrequest rules) until ``BackgroundDone``."""

    id: int


class BackgroundDone(_Msg, tag="bgdone"):
    id: int


class InvokeError(_Msg, tag="ierr"):
    """The function failed: kind is ``exception``, ``bad_response`` or ``exceeded_memory``."""

    id: int
    kind: str
    message: str
    traceback: str = ""
    cpu_us: int = 0  # the invocation's CPU time (see ResponseEnd)


class Log(_Msg, tag="log"):
    request_id: str
    level: str
    message: str


class FetchCall(_Msg, tag="fcall"):
    id: int
    fetch_id: int
    url: str
    method: str
    headers: list[tuple[str, str]]
    body: bytes
    timeout_ms: int
    origin: str = ""  # an [[origins]] binding: fetched through the edge cache
    # caches.default: "match" | "put" | "delete" on the location's cache, nothing fetched; a put
    # carries the response to store (status, headers; its body in ``body``).
    cache_op: str = ""
    put_status: int = 0
    put_headers: list[tuple[str, str]] = []
    # [cdn] origin hooks: "lookup" opens a ticket for a location-tier miss, "origin" fetches
    # upstream for it, "complete" stores what the hooks made of the answer (docs/design/0026).
    ticket: str = ""
    # A durable object stub's request: "<binding>\n<id>\n<location hint>" (routed to the home).
    durable: str = ""


class KVCall(_Msg, tag="kvcall"):
    id: int
    call_id: int
    binding: str
    op: str
    args: dict[str, Any]


class Spawn(_Msg, tag="spawn"):
    count: int


class Spawned(_Msg, tag="spawned"):
    pid: int
    cgroup: str = ""


class Hello(_Msg, tag="hello"):
    """The zygote's first frame: which isolation layers a probe worker could set up."""

    isolation: dict[str, str]


Message = (
    Load
    | Invoke
    | RequestChunk
    | RequestEnd
    | RequestCredit
    | Cancel
    | FetchResult
    | KVResult
    | Shutdown
    | Ready
    | Loaded
    | ResponseStart
    | Respond
    | ResponseChunk
    | ResponseEnd
    | Background
    | BackgroundDone
    | InvokeError
    | Log
    | FetchCall
    | KVCall
    | Spawn
    | Spawned
    | Hello
)

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Message] = msgspec.msgpack.Decoder(Message)


def encode(msg: Message) -> bytes:
    """One frame: length prefix + msgpack."""
    payload = _encoder.encode(msg)
    if len(payload) > MAX_FRAME_BYTES:
        raise ProtocolError(
            f"frame of {len(payload)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit",
            hint="stream large bodies in chunks",
        )
    return _LEN.pack(len(payload)) + payload


def decode_length(header: bytes) -> int:
    """Validate a 4-byte length prefix."""
    if len(header) != _LEN.size:
        raise ProtocolError(f"truncated frame header ({len(header)} of 4 bytes)")
    (n,) = _LEN.unpack(header)
    if n > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame length {n} exceeds the {MAX_FRAME_BYTES}-byte limit")
    return int(n)


def decode(payload: bytes) -> Message:
    """Decode one frame's payload into a message."""
    try:
        return _decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as err:
        # msgspec reports invalid UTF-8 in a string (even the tag) as UnicodeDecodeError.
        raise ProtocolError(f"malformed IPC frame ({len(payload)} bytes): {err}") from None


class FrameBuffer:
    """Incremental decoder for a byte stream of frames (bounded by MAX_FRAME_BYTES per frame)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        """Add received bytes; return the complete messages decoded so far."""
        self._buf += data
        out: list[Message] = []
        while len(self._buf) >= 4:
            n = decode_length(bytes(self._buf[:4]))
            if len(self._buf) < 4 + n:
                break
            out.append(decode(bytes(self._buf[4 : 4 + n])))
            del self._buf[: 4 + n]
        return out
