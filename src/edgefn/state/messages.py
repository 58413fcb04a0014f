"""Wire messages between replicas and the strong-operation protocol with the namespace's home.

Every message is a msgspec Struct with a tag, so a driver encodes any of them with one msgpack
encoder and decodes the union :data:`Message` with one decoder. Replication messages travel on the
namespace's JetStream stream (subject ``edgefn.kv.<namespace>.<origin>``) and replay after
partitions and restarts; the anti-entropy ones are request/reply between two replicas.

- :class:`Replication`: one write, with its causal dependencies (empty unless the write was causal).
- :class:`ReplayRequest`: "resend your writes from ``from_seq``" (a gap in per-origin order).
- :class:`Announce`: periodic, to every replica: what the sender has applied, and its clock floor
  (every write it makes later has a larger timestamp, every write up to ``floor_seq`` a smaller or
  equal one). Tombstone garbage collection and gap detection use it.
- :class:`Digest` -> :class:`RepairRequest` -> :class:`RepairResponse`: a Merkle round; the digest
  receiver pulls the sender's entries of the buckets that differ.
- :class:`SessionRead` -> :class:`SessionReadAnswer`: a session or causal read forwarded (NATS
  request/reply) to a replica that has applied the writes its token needs, when the asking
  replica could not catch up in time. Handled by the driver, not the machine: the answering
  replica runs the read as its own client would.
"""

from __future__ import annotations

import msgspec

from edgefn.state.records import Entry

__all__ = [
    "Announce",
    "Digest",
    "Message",
    "RepairRequest",
    "RepairResponse",
    "ReplayRequest",
    "Replication",
    "SessionRead",
    "SessionReadAnswer",
    "StrongOp",
    "StrongOutcome",
    "StrongRecord",
    "decode_answer",
    "decode_message",
    "encode_answer",
    "encode_message",
]

Pairs = tuple[tuple[str, int], ...]


class Replication(msgspec.Struct, frozen=True, tag="rep", array_like=True):
    sender: str
    entry: Entry
    deps: Pairs = ()


class ReplayRequest(msgspec.Struct, frozen=True, tag="replay", array_like=True):
    sender: str
    origin: str
    from_seq: int


class Announce(msgspec.Struct, frozen=True, tag="ann", array_like=True):
    sender: str
    applied: Pairs
    floor_hlc: int
    floor_seq: int


class Digest(msgspec.Struct, frozen=True, tag="dig", array_like=True):
    sender: str
    leaves: tuple[int, ...]
    applied: Pairs


class RepairRequest(msgspec.Struct, frozen=True, tag="rreq", array_like=True):
    sender: str
    buckets: tuple[int, ...]


class RepairResponse(msgspec.Struct, frozen=True, tag="rresp", array_like=True):
    """The sender's entries of ``buckets`` (all of them if ``complete``), its current leaves
    and applied frontier: a requester whose tree equals ``leaves`` after merging may adopt
    ``applied``."""

    sender: str
    buckets: tuple[int, ...]
    entries: tuple[Entry, ...]
    complete: bool
    leaves: tuple[int, ...]
    applied: Pairs


class SessionRead(msgspec.Struct, frozen=True, tag="sread", array_like=True):
    sender: str
    key: str
    session: str
    consistency: str = "session"


class SessionReadAnswer(msgspec.Struct, frozen=True, array_like=True):
    """``ok`` with the item and the extended token, or why not (``reason``)."""

    sender: str
    ok: bool
    value: bytes | None = None
    revision: int = 0
    metadata: bytes = b""
    expires_at_ms: int = 0
    stamp: tuple[int, str] | None = None
    session: str = ""
    reason: str = ""


Message = (
    Replication | ReplayRequest | Announce | Digest | RepairRequest | RepairResponse | SessionRead
)

_ENCODER = msgspec.msgpack.Encoder()
_DECODER: msgspec.msgpack.Decoder[Message] = msgspec.msgpack.Decoder(Message)


def encode_message(message: Message) -> bytes:
    return _ENCODER.encode(message)


def decode_message(raw: bytes) -> Message:
    """Decode one message; malformed input raises ``msgspec.DecodeError``."""
    return _DECODER.decode(raw)


_ANSWER_DECODER = msgspec.msgpack.Decoder(SessionReadAnswer)


def encode_answer(answer: SessionReadAnswer) -> bytes:
    return _ENCODER.encode(answer)


def decode_answer(raw: bytes) -> SessionReadAnswer:
    """Decode a forwarded read's answer; malformed input raises ``msgspec.DecodeError``."""
    return _ANSWER_DECODER.decode(raw)


class StrongOp(msgspec.Struct, frozen=True, array_like=True):
    """A strong operation for the home. ``kind`` is get, put, delete or list."""

    op_id: int
    replica: str
    kind: str
    key: str = ""
    value: bytes = b""
    metadata: bytes = b""
    if_revision: int | None = None
    expires_at_ms: int = 0
    prefix: str = ""
    limit: int = 1000
    cursor: str = ""
    now_ms: int = 0


class StrongRecord(msgspec.Struct, frozen=True, array_like=True):
    """One key at the home; ``revision`` is the home's compare-and-set revision (fencing token)."""

    key: str
    value: bytes
    revision: int
    metadata: bytes = b""
    expires_at_ms: int = 0


class StrongOutcome(msgspec.Struct, frozen=True, array_like=True):
    """The home's answer. ``status``: ok, conflict (``revision`` = current), unreachable (the
    operation never reached the home) or unknown (it was sent, the answer was lost)."""

    status: str
    record: StrongRecord | None = None
    revision: int = 0
    records: tuple[StrongRecord, ...] = ()
    cursor: str = ""
    reason: str = ""
