"""Queues: the pure rules of partitions, leases, batches, retries and the dead-letter queue.

A queue's messages live in one JetStream stream (``EDGEFN_Q``, subject ``edgefn.q.<queue>.<p>``)
in 16 partitions, a message's partition being a hash of its key (of its id when it has none), so
every message of a key is in one partition, in send order. Each partition has one record in the
strong KV's home bucket (``edgefn-kvhome``, key :func:`record_key`): who consumes it now (a lease
with an epoch, as durable objects and cron claims have, docs/design/0025 and 0027) and what is
done there: ``cursor`` (every message of the partition below that stream sequence is finished),
``done`` (finished ones above it), ``attempts`` and ``not_before`` (failed deliveries and the time
each may be tried again). The holder commits a batch's outcome by compare-and-set on the record,
in one atomic JetStream batch with the handler's strong KV writes (docs/design/0028-queues.md):
so a message is finished exactly when its effects are stored, and a stale holder (its lease lost)
has its whole commit refused.

This module decides; :mod:`edgefn.edge.queues` does the I/O. Time is data (``now_ms``). How
messages and records are stored is :mod:`edgefn.bus.queue_format` (shared with the control
plane); its names are importable from here too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final

from edgefn.bus.queue_format import (
    PARTITIONS,
    QUEUE_NAME_RE,
    PartitionRecord,
    QueueMessage,
    decode_message,
    decode_record,
    encode_message,
    encode_record,
    partition_of,
    record_key,
    stream_subject,
)

__all__ = [
    "BACKOFF_MAX_MS",
    "LEASE_MS",
    "PARTITIONS",
    "QUEUE_NAME_RE",
    "RENEW_BELOW_MS",
    "SAFETY_MS",
    "WINDOW_MAX",
    "ConsumerRules",
    "Decision",
    "PartitionRecord",
    "QueueMessage",
    "Settled",
    "backoff_ms",
    "can_claim",
    "claimed",
    "decode_message",
    "decode_record",
    "encode_message",
    "encode_record",
    "next_due_ms",
    "partition_of",
    "record_key",
    "released",
    "renewed",
    "select_batch",
    "serving",
    "settle",
    "stream_subject",
]

LEASE_MS: Final = 10_000
# A holder stops starting batches this long before its lease ends, so its commit (a CAS on the
# record) lands before anyone may claim; a commit refused anyway is simply not applied.
SAFETY_MS: Final = 1_000
RENEW_BELOW_MS: Final = 6_000
# Messages a holder reads ahead of its cursor (the window it chooses batches from).
WINDOW_MAX: Final = 512
BACKOFF_MAX_MS: Final = 3_600_000


# -- leases -----------------------------------------------------------------------------------


def can_claim(record: PartitionRecord | None, me: str, now_ms: int) -> bool:
    return record is None or record.holder == me or record.lease_until_ms <= now_ms


def claimed(record: PartitionRecord | None, me: str, now_ms: int) -> PartitionRecord:
    """The record with ``me`` holding it from ``now_ms``; the epoch grows at each change of hands."""
    base = record or PartitionRecord()
    epoch = base.epoch if base.holder == me and base.lease_until_ms > now_ms else base.epoch + 1
    return replace(base, holder=me, epoch=epoch, lease_until_ms=now_ms + LEASE_MS)


def serving(record: PartitionRecord | None, me: str, now_ms: int) -> bool:
    """Whether ``me`` may start a batch now (its lease has more than ``SAFETY_MS`` left)."""
    return record is not None and record.holder == me and now_ms < record.lease_until_ms - SAFETY_MS


def renewed(record: PartitionRecord, now_ms: int) -> PartitionRecord:
    return replace(record, lease_until_ms=now_ms + LEASE_MS)


def released(record: PartitionRecord) -> PartitionRecord:
    """Given up (a node stopping): anyone may claim at once."""
    return replace(record, lease_until_ms=0)


# -- batches ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsumerRules:
    """A ``[[queues.consumers]]`` entry's numbers (the manifest validated them)."""

    max_batch_size: int = 10
    max_batch_timeout_ms: int = 5_000
    max_retries: int = 3
    retry_delay_s: float = 1.0
    dead_letter_queue: str = ""
    max_concurrency: int = 4


def backoff_ms(rules: ConsumerRules, failures: int) -> int:
    """Exponential: ``retry_delay_s`` after the first failure, doubling, at most an hour."""
    base = rules.retry_delay_s * 1000
    return int(min(base * (2 ** max(failures - 1, 0)), BACKOFF_MAX_MS))


def _pending(record: PartitionRecord, window: Iterable[QueueMessage]) -> Iterable[QueueMessage]:
    return (m for m in window if m.seq >= record.cursor and m.seq not in record.done)


def _due_at(record: PartitionRecord, message: QueueMessage) -> int:
    return max(message.not_before_ms, record.not_before.get(message.seq, 0))


def select_batch(
    record: PartitionRecord, window: Sequence[QueueMessage], now_ms: int, max_size: int
) -> list[QueueMessage]:
    """The next batch: the first unfinished message of each key (in stream order) that is due,
    at most ``max_size``. A key whose first unfinished message waits (a retry's back-off, a
    delayed send) has none of its later messages chosen: one in flight per key, in order."""
    seen: set[str] = set()
    out: list[QueueMessage] = []
    for message in _pending(record, window):
        k = message.order_key
        if k in seen:
            continue
        seen.add(k)
        if _due_at(record, message) <= now_ms:
            out.append(message)
            if len(out) >= max_size:
                break
    return out


def next_due_ms(record: PartitionRecord, window: Sequence[QueueMessage]) -> int | None:
    """When the earliest waiting head of a key becomes due (None: nothing waits)."""
    seen: set[str] = set()
    due: list[int] = []
    for message in _pending(record, window):
        if message.order_key in seen:
            continue
        seen.add(message.order_key)
        due.append(_due_at(record, message))
    return min(due) if due else None


@dataclass(frozen=True, slots=True)
class Decision:
    """What the handler said of one message: ``ack`` or ``retry`` (``delay_ms`` None: back-off)."""

    seq: int
    action: str  # "ack" | "retry"
    delay_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Settled:
    """A batch's outcome: the record to commit and the messages for the dead-letter queue."""

    record: PartitionRecord
    dead: tuple[int, ...]
    acked: tuple[int, ...]
    retried: tuple[int, ...]


def settle(
    record: PartitionRecord,
    window: Sequence[QueueMessage],
    decisions: Sequence[Decision],
    *,
    rules: ConsumerRules,
    scanned_to: int,
    now_ms: int,
) -> Settled:
    """Apply a batch's decisions. A message that failed more than ``max_retries`` times is dead
    (finished here; the driver puts it in the dead-letter queue first). The cursor then moves past
    every finished message: to the first unfinished one of the window, or to ``scanned_to`` (the
    stream sequence the holder has read the partition up to) when all are finished."""
    done = set(record.done)
    attempts = dict(record.attempts)
    not_before = dict(record.not_before)
    dead: list[int] = []
    acked: list[int] = []
    retried: list[int] = []
    for d in decisions:
        if d.action == "ack":
            done.add(d.seq)
            acked.append(d.seq)
            attempts.pop(d.seq, None)
            not_before.pop(d.seq, None)
            continue
        failures = attempts.get(d.seq, 0) + 1
        if failures > rules.max_retries:
            done.add(d.seq)
            dead.append(d.seq)
            attempts.pop(d.seq, None)
            not_before.pop(d.seq, None)
            continue
        attempts[d.seq] = failures
        delay = d.delay_ms if d.delay_ms is not None else backoff_ms(rules, failures)
        not_before[d.seq] = now_ms + max(0, min(delay, BACKOFF_MAX_MS))
        retried.append(d.seq)
    unfinished = [m.seq for m in window if m.seq >= record.cursor and m.seq not in done]
    cursor = min(unfinished) if unfinished else max(scanned_to, record.cursor)
    out = replace(
        record,
        cursor=cursor,
        done=frozenset(s for s in done if s >= cursor),
        attempts={s: n for s, n in attempts.items() if s >= cursor},
        not_before={s: t for s, t in not_before.items() if s >= cursor},
        dead=record.dead + len(dead),
        processed=record.processed + len(acked),
    )
    return Settled(out, tuple(dead), tuple(acked), tuple(retried))
