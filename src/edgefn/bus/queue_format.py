"""Queues on the bus: how messages and partition records are stored, for nodes and the core.

Pure (no I/O): the node's queue driver (:mod:`edgefn.edge.queues`, rules in
:mod:`edgefn.edge.queue_policy`) and the control plane's queue API (``edgefn queues``) read and
write the same stream and records, so both take the format from here (the control plane may not
import the edge, docs/design/0028-queues.md):

- messages in stream ``EDGEFN_Q`` on subject ``edgefn.q.<queue>.<partition>``, 16 partitions by a
  hash of the key (of the id without one), msgpack ``[id, body, key, sent_ms, not_before_ms]``;
- a message's id: derived from the queue and ``idempotency_key`` when one is given (a retried
  send returns the same id), else fresh; its ``Nats-Msg-Id`` the idempotency key (or the id), so
  JetStream's duplicate window drops a re-send;
- one record per partition in the strong KV's home bucket at ``=q.<queue>.<p>``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

__all__ = [
    "BODY_BYTES_MAX",
    "DELAY_S_MAX",
    "IDEMPOTENCY_CHARS_MAX",
    "KEY_CHARS_MAX",
    "PARTITIONS",
    "QUEUE_NAME_RE",
    "Outgoing",
    "PartitionRecord",
    "QueueMessage",
    "decode_message",
    "decode_record",
    "encode_message",
    "encode_record",
    "outgoing",
    "partition_of",
    "record_key",
    "stream_subject",
    "unfinished",
]

PARTITIONS: Final = 16
QUEUE_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
BODY_BYTES_MAX: Final = 128 * 1024
KEY_CHARS_MAX: Final = 256
IDEMPOTENCY_CHARS_MAX: Final = 128
DELAY_S_MAX: Final = 43_200


def record_key(queue: str, partition: int) -> str:
    """The partition's record in ``edgefn-kvhome`` (``=`` cannot start a KV namespace, so no
    function's strong keys reach it)."""
    return f"=q.{queue}.{partition}"


def stream_subject(queue: str, partition: int) -> str:
    return f"edgefn.q.{queue}.{partition}"


def partition_of(key: str | None, message_id: str) -> int:
    digest = hashlib.sha256((key if key is not None else "#" + message_id).encode()).digest()
    return int.from_bytes(digest[:4], "big") % PARTITIONS


class QueueMessage(msgspec.Struct, array_like=True, frozen=True):
    """One message as stored in the stream; ``seq`` is its stream sequence (0 before it has one)."""

    id: str
    body: bytes  # msgpack of the value sent
    key: str | None = None
    sent_ms: int = 0
    not_before_ms: int = 0  # send(delay_s=...)
    seq: int = 0

    @property
    def order_key(self) -> str:
        """Messages of one key are processed one at a time in send order; unkeyed ones freely."""
        return self.key if self.key is not None else "#" + self.id


def encode_message(message: QueueMessage) -> bytes:
    return msgspec.msgpack.encode(message)


def decode_message(data: bytes, seq: int) -> QueueMessage:
    """Raises ``msgspec.DecodeError``/``ValidationError`` on a malformed message."""
    message = msgspec.msgpack.decode(data, type=QueueMessage)
    return msgspec.structs.replace(message, seq=seq)


@dataclass(frozen=True, slots=True)
class PartitionRecord:
    holder: str = ""
    epoch: int = 0
    lease_until_ms: int = 0
    cursor: int = 1
    done: frozenset[int] = frozenset()
    attempts: dict[int, int] = field(default_factory=dict)  # failed deliveries so far
    not_before: dict[int, int] = field(default_factory=dict)
    dead: int = 0  # messages moved to the dead-letter queue (or dropped) here, for `queues list`
    processed: int = 0


def encode_record(record: PartitionRecord) -> bytes:
    return msgspec.msgpack.encode(
        [
            record.holder,
            record.epoch,
            record.lease_until_ms,
            record.cursor,
            sorted(record.done),
            sorted(record.attempts.items()),
            sorted(record.not_before.items()),
            record.dead,
            record.processed,
        ]
    )


def decode_record(data: bytes | None) -> PartitionRecord | None:
    """``None`` for an absent or unreadable record (a partition nobody consumed yet)."""
    if not data:
        return None
    try:
        raw: Any = msgspec.msgpack.decode(data)
        holder, epoch, lease, cursor, done, attempts, not_before, dead, processed = raw
        return PartitionRecord(
            str(holder),
            int(epoch),
            int(lease),
            int(cursor),
            frozenset(int(s) for s in done),
            {int(s): int(n) for s, n in attempts},
            {int(s): int(t) for s, t in not_before},
            int(dead),
            int(processed),
        )
    except (msgspec.DecodeError, TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message ready to publish: ``subject``, ``dedupe`` (its ``Nats-Msg-Id``), ``payload``."""

    subject: str
    dedupe: str
    payload: bytes
    id: str


def outgoing(queue: str, item: dict[str, Any], *, now_ms: int, fresh_id: str) -> Outgoing:
    """Check one message to send (``body``, ``key``, ``idempotency_key``, ``delay_s``) and encode
    it; ``fresh_id`` is its id when it has no idempotency key. Raises ``ValueError`` saying what
    is wrong."""
    key = item.get("key")
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= KEY_CHARS_MAX):
        raise ValueError(f"a message key is a string of 1..{KEY_CHARS_MAX} characters")
    idem = item.get("idempotency_key")
    if idem is not None and (
        not isinstance(idem, str) or not 0 < len(idem) <= IDEMPOTENCY_CHARS_MAX
    ):
        raise ValueError(f"idempotency_key is a string of 1..{IDEMPOTENCY_CHARS_MAX} characters")
    delay = item.get("delay_s") or 0
    if (
        isinstance(delay, bool)
        or not isinstance(delay, int | float)
        or not 0 <= delay <= DELAY_S_MAX
    ):
        raise ValueError(f"delay_s is a number of seconds, 0..{DELAY_S_MAX}")
    try:
        body = msgspec.msgpack.encode(item.get("body"))
    except (TypeError, OverflowError, msgspec.EncodeError) as err:  # Overflow: an int past 64 bits
        raise ValueError(
            f"the body cannot be sent ({err}); send str, bytes, numbers, lists, dicts"
        ) from None
    if len(body) > BODY_BYTES_MAX:
        raise ValueError(
            f"a message body is at most {BODY_BYTES_MAX // 1024} KiB encoded, not {len(body)} bytes"
        )
    # With an idempotency key the id is derived from it, so a retried send returns the id of the
    # message JetStream kept (the retry itself is dropped as a duplicate).
    mid = (
        hashlib.sha256(f"{queue}\n{idem}".encode()).hexdigest()[:32]
        if idem is not None
        else fresh_id
    )
    message = QueueMessage(mid, body, key, now_ms, now_ms + int(delay * 1000) if delay else 0)
    dedupe = f"{queue}.{idem}" if idem is not None else mid
    return Outgoing(
        stream_subject(queue, partition_of(key, mid)), dedupe, encode_message(message), mid
    )


def unfinished(record: PartitionRecord | None, messages: list[QueueMessage]) -> list[QueueMessage]:
    """The messages of a partition not yet finished (acknowledged, or moved to the DLQ)."""
    if record is None:
        return list(messages)
    return [m for m in messages if m.seq >= record.cursor and m.seq not in record.done]
