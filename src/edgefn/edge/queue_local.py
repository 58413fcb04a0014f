"""In-process queues: the node's queue code without NATS (what ``edgefn.testing`` runs).

:class:`LocalQueues` plays the queue stream ``EDGEFN_Q`` and the holder of every partition of one
function's consumed queues, in this process, with the node's own code (:mod:`edgefn.edge.queues`;
the rules are :mod:`edgefn.edge.queue_policy`):

- **Send**: the node's checks and encoding (``send_target``, ``message_rows``: binding, key,
  idempotency key, ``delay_s``, body size, batch size). The stream keeps each subject's messages
  with stream sequences and, as ``EDGEFN_Q`` does, drops a message whose ``Nats-Msg-Id`` it took
  within the duplicate window (2 h), and refuses a send that would make it hold more than
  256 MiB (of messages not finished yet).
- **Batches**: per partition, ``select_batch`` over its window (the first ``WINDOW_MAX``
  unfinished messages): one in flight per key, in send order, at most ``max_batch_size``. The
  caller's invoker (the same signature as ``QueueService.invoke``) runs the handler with a
  :class:`~edgefn.edge.queues.QueueTxn` for its strong KV and answers each message's decision
  (None: the handler failed, every message is retried); ``settle`` applies them; a message that
  failed more than ``max_retries`` times moves to the dead-letter queue (the node's
  ``dead_letter_rows``: same id, deduped) or is dropped.
- **Commit**: the handler's strong writes go to the namespaces' homes (each ``LocalKVDriver``'s
  :class:`~edgefn.state.home.HomeRegister`) all at once, each only if its key is still at the
  revision the handler read, as the node's atomic batch on ``edgefn-kvhome``. A refused commit,
  like a failed handler, fails every message of the batch and keeps none of its writes.
- **Time** is data: ``now_ms`` (send time, ``delay_s``, back-off, the duplicate window) moves only
  when the caller moves it. The home's TTLs follow the wall clock, as ``LocalKVDriver``'s do.

Unlike a node: one holder and no leases (so never fenced), one batch at a time
(``max_concurrency`` is never reached), a batch smaller than ``max_batch_size`` runs at once
instead of waiting out ``max_batch_timeout_ms``, and the bus is always reachable (no outbox).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from edgefn.bundle.manifest import Manifest
from edgefn.bus.jetstream import QUEUE_DUPLICATE_WINDOW_S, QUEUE_STREAM_BYTES_MAX
from edgefn.bus.queue_format import unfinished
from edgefn.edge.queue_policy import (
    PARTITIONS,
    WINDOW_MAX,
    ConsumerRules,
    Decision,
    PartitionRecord,
    QueueMessage,
    decode_message,
    next_due_ms,
    select_batch,
    settle,
    stream_subject,
)
from edgefn.edge.queues import (
    HomeWrite,
    Invoker,
    QueueFull,
    QueueTxn,
    dead_letter_rows,
    message_rows,
    rules_of,
    send_target,
)
from edgefn.errors import KVUnavailable, QueueError
from edgefn.runtime import protocol as p
from edgefn.state.driver import decode_home_value, encode_home_value
from edgefn.state.home import HomeRegister
from edgefn.state.messages import StrongOp

__all__ = [
    "BATCHES_MAX",
    "BatchOutcome",
    "LocalHome",
    "LocalQueueStatistics",
    "LocalQueues",
    "QueuedMessage",
]

# How many batches one drain runs at most (a consumer that keeps sending to its own queue never
# drains).
BATCHES_MAX: Final = 10_000
_DUPLICATE_WINDOW_MS: Final = QUEUE_DUPLICATE_WINDOW_S * 1000
_REPLICA: Final = "queue"  # who the home's operations name (the home ignores it)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """A message as it waits in a queue: ``attempts`` is how many deliveries of it failed so far
    (0: never delivered), ``due_ms`` when it may be delivered (its ``delay_s``, or its back-off;
    0: at once)."""

    id: str
    body: Any
    key: str | None
    attempts: int
    due_ms: int
    sent_ms: int


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What one batch did: the ids of its messages, of those acknowledged, retried and dead
    (moved to the dead-letter queue or dropped); ``error`` says why the whole batch failed."""

    queue: str
    ids: tuple[str, ...]
    acked: tuple[str, ...]
    retried: tuple[str, ...]
    dead: tuple[str, ...]
    error: str = ""


@dataclass(frozen=True, slots=True)
class LocalQueueStatistics:
    sent: int
    duplicates: int
    batches: int
    acked: int
    retried: int
    dead: int
    stored_messages: int
    stored_bytes: int


class LocalHome:
    """The home for a :class:`~edgefn.edge.queues.QueueTxn` in this process: each namespace's
    :class:`~edgefn.state.home.HomeRegister` (``home_for``), which strong operations outside
    queue handlers reach through the replica machine."""

    def __init__(self, home_for: Callable[[str], Awaitable[HomeRegister]]) -> None:
        self._home_for = home_for

    async def read(self, hkey: str) -> tuple[bytes | None, int]:
        """A home key's value (as ``edgefn-kvhome`` stores it) and revision (0: absent)."""
        home, key = await self._locate(hkey)
        record = home.apply(StrongOp(0, _REPLICA, "get", key=key, now_ms=_wall_ms())).record
        if record is None:
            return None, 0
        return encode_home_value(
            record.value, record.metadata, record.expires_at_ms
        ), record.revision

    async def commit(self, writes: Sequence[HomeWrite]) -> bool:
        """Apply ``writes`` together if every key with an ``expected`` revision is still at it;
        False (nothing applied) otherwise."""
        located = [(await self._locate(w.hkey), w) for w in writes]
        now = _wall_ms()
        for (home, key), w in located:
            if w.expected is None:
                continue
            current = home.apply(StrongOp(0, _REPLICA, "get", key=key, now_ms=now)).record
            if (current.revision if current is not None else 0) != w.expected:
                return False
        # Nothing awaits from here on: no other task sees the homes half written.
        for (home, key), w in located:
            if w.body is None:
                home.apply(StrongOp(0, _REPLICA, "delete", key=key, now_ms=now))
                continue
            value, metadata, expires = decode_home_value(w.body)
            op = StrongOp(
                0, _REPLICA, "put", key, value, metadata, expires_at_ms=expires, now_ms=now
            )
            outcome = home.apply(op)
            if outcome.status != "ok":  # a home of a million keys: no test gets here
                raise KVUnavailable(f"the home refused a queue batch's write: {outcome.reason}")
        return True

    async def _locate(self, hkey: str) -> tuple[HomeRegister, str]:
        # The inverse of edgefn.state.driver.home_key: "<namespace>.<urlsafe base64 of the key>"
        # ("_" for the empty key); namespaces have no dots.
        namespace, _, encoded = hkey.rpartition(".")
        padded = encoded + "=" * (-len(encoded) % 4)
        key = "" if encoded == "_" else base64.urlsafe_b64decode(padded).decode("utf-8")
        return await self._home_for(namespace), key


class LocalQueues:
    """The queues of one function in this process (see the module docstring)."""

    def __init__(
        self,
        manifest: Manifest,
        *,
        home_for: Callable[[str], Awaitable[HomeRegister]],
        now_ms: int,
    ) -> None:
        self.manifest = manifest
        self.now_ms = now_ms
        self.home = LocalHome(home_for)
        self.rules: dict[str, ConsumerRules] = {
            c.queue: rules_of(c) for c in manifest.queues.consumers
        }
        self.records: dict[str, PartitionRecord] = {}  # by subject
        self.dead: dict[str, list[QueueMessage]] = {}  # by queue: moved to its DLQ or dropped
        self._subjects: dict[str, list[QueueMessage]] = {}  # unfinished messages, in order
        self._sizes: dict[int, int] = {}  # stream sequence -> payload bytes
        self._seen: dict[str, int] = {}  # Nats-Msg-Id -> when it was taken (duplicate window)
        self._seq = 0
        self._counts = {"sent": 0, "duplicates": 0, "batches": 0, "acked": 0, "retried": 0}
        self._draining = False

    def names(self) -> set[str]:
        """Every queue the manifest names: producers', consumers' and dead-letter queues."""
        out = {q.queue for q in self.manifest.queues.producers} | set(self.rules)
        out.update(r.dead_letter_queue for r in self.rules.values() if r.dead_letter_queue)
        return out

    # -- sending -------------------------------------------------------------------------------
    def send(self, call: p.KVCall) -> p.KVResult:
        """A producer's ``send``/``send_batch`` (a ``KVCall`` with binding ``=q``), as a node
        answers it: the ids, or a ``queue`` refusal saying what is wrong."""

        def refuse(message: str) -> p.KVResult:
            return p.KVResult(call.id, call.call_id, False, None, "queue", message)

        try:
            queue = send_target(self.manifest, call)
        except ValueError as err:
            return refuse(str(err))
        try:
            rows = message_rows(queue, call.args.get("messages"), now_ms=self.now_ms)
            self._publish([(subject, payload, dedupe) for subject, dedupe, payload, _ in rows])
        except (ValueError, TypeError, QueueFull) as err:
            return refuse(f"queue {queue!r}: {err}")
        return p.KVResult(call.id, call.call_id, True, [mid for *_, mid in rows])

    def _publish(self, rows: Sequence[tuple[str, bytes, str]]) -> None:
        """Store ``(subject, payload, Nats-Msg-Id)`` rows as the stream does (all or none)."""
        self._seen = {k: t for k, t in self._seen.items() if t > self.now_ms - _DUPLICATE_WINDOW_MS}
        stored = sum(self._sizes.values())
        if stored + sum(len(payload) for _, payload, _ in rows) > QUEUE_STREAM_BYTES_MAX:
            raise QueueFull(
                "the queue stream refused the message: it holds "
                f"{QUEUE_STREAM_BYTES_MAX // (1024 * 1024)} MiB of unfinished messages"
            )
        for subject, payload, dedupe in rows:
            if dedupe in self._seen:
                self._counts["duplicates"] += 1
                continue
            self._seen[dedupe] = self.now_ms
            self._seq += 1
            self._subjects.setdefault(subject, []).append(decode_message(payload, self._seq))
            self._sizes[self._seq] = len(payload)
            self._counts["sent"] += 1

    # -- consuming -----------------------------------------------------------------------------
    async def drain(
        self, invoke: Invoker, *, wait: bool = False, batches_max: int = BATCHES_MAX
    ) -> list[BatchOutcome]:
        """Run batches until none is due now; with ``wait``, then move the clock to the next
        due message (a delay, a back-off) and go on until no consumed queue holds any."""
        if self._draining:
            raise QueueError(
                "the queues are already being drained (a queue handler cannot drain them)",
                hint="drain from the test, after the handler returned",
            )
        self._draining = True
        out: list[BatchOutcome] = []
        try:
            while True:
                if await self._run_due(invoke, out, batches_max):
                    continue
                due = self.next_due_ms()
                if not wait or due is None:
                    return out
                assert due > self.now_ms, (due, self.now_ms)  # else a batch would have run
                self.now_ms = due
        finally:
            self._draining = False

    def next_due_ms(self) -> int | None:
        """When the earliest waiting message of a consumed queue becomes due (None: none waits)."""
        due = [
            t
            for queue in self.rules
            for subject in _subjects(queue)
            if (t := next_due_ms(self._record(subject), self._window(subject))) is not None
        ]
        return min(due) if due else None

    async def _run_due(self, invoke: Invoker, out: list[BatchOutcome], batches_max: int) -> bool:
        """One round over every partition: run the batch each one has due; False if none had."""
        ran = False
        for queue, rules in self.rules.items():
            for subject in _subjects(queue):
                window = self._window(subject)
                batch = select_batch(
                    self._record(subject), window, self.now_ms, rules.max_batch_size
                )
                if not batch:
                    continue
                if len(out) >= batches_max:
                    raise QueueError(
                        f"queue {queue!r} still has messages due after {batches_max} batches",
                        hint="a consumer that sends to its own queue never drains; "
                        "pass batches_max= or check the handler",
                    )
                out.append(await self._run_batch(invoke, queue, subject, rules, window, batch))
                ran = True
        return ran

    async def _run_batch(
        self,
        invoke: Invoker,
        queue: str,
        subject: str,
        rules: ConsumerRules,
        window: list[QueueMessage],
        batch: list[QueueMessage],
    ) -> BatchOutcome:
        """Run one batch and commit its outcome, as ``Partition._process`` does on a node."""
        record = self._record(subject)
        txn = QueueTxn(self.home)
        decisions, error = await invoke(self.manifest.name, queue, batch, record.attempts, txn)
        writes = list(txn.writes.values())
        if decisions is None:  # the handler failed: nothing it wrote is kept
            decisions = [Decision(m.seq, "retry") for m in batch]
            writes = []
        scanned = window[-1].seq + 1
        settled = settle(
            record, window, decisions, rules=rules, scanned_to=scanned, now_ms=self.now_ms
        )
        self._move_dead(queue, rules, [m for m in batch if m.seq in settled.dead])
        if not await self.home.commit(writes):
            # A key the handler read was written meanwhile: the batch counts as failed.
            decisions = [Decision(m.seq, "retry") for m in batch]
            error = "a key the handler read was written meanwhile (the batch is retried)"
            settled = settle(
                record, window, decisions, rules=rules, scanned_to=scanned, now_ms=self.now_ms
            )
            self._move_dead(queue, rules, [m for m in batch if m.seq in settled.dead])
        dead = [m for m in batch if m.seq in settled.dead]
        self.dead.setdefault(queue, []).extend(dead)
        self.records[subject] = settled.record
        self._forget_finished(subject, settled.record)
        self._counts["batches"] += 1
        self._counts["acked"] += len(settled.acked)
        self._counts["retried"] += len(settled.retried)
        ids = {m.seq: m.id for m in batch}
        return BatchOutcome(
            queue,
            tuple(m.id for m in batch),
            tuple(ids[s] for s in settled.acked),
            tuple(ids[s] for s in settled.retried),
            tuple(m.id for m in dead),
            error,
        )

    def _move_dead(self, queue: str, rules: ConsumerRules, dead: list[QueueMessage]) -> None:
        """Put ``dead`` in the dead-letter queue before the commit that finishes them (a repeated
        move is deduped by id); without one they are dropped."""
        if dead and rules.dead_letter_queue:
            try:
                self._publish(dead_letter_rows(rules.dead_letter_queue, queue, dead))
            except QueueFull as err:
                raise QueueError(
                    f"queue {queue!r}: its dead-letter queue {rules.dead_letter_queue!r} is "
                    f"full ({err}); the batch was not committed",
                    hint="consume the dead-letter queue",
                ) from None

    # -- what waits ----------------------------------------------------------------------------
    def waiting(self, queue: str) -> list[QueuedMessage]:
        """``queue``'s unfinished messages, in stream order."""
        out: list[tuple[int, QueuedMessage]] = []
        for subject in _subjects(queue):
            record = self._record(subject)
            for m in self._unfinished(subject, record):
                due = max(m.not_before_ms, record.not_before.get(m.seq, 0))
                attempts = record.attempts.get(m.seq, 0)
                out.append((m.seq, _shown(m, attempts, due)))
        return [q for _, q in sorted(out, key=lambda pair: pair[0])]

    def dead_messages(self, queue: str) -> list[QueuedMessage]:
        """``queue``'s messages that failed more than ``max_retries`` times, in the order they
        died."""
        rules = self.rules.get(queue, ConsumerRules())
        return [_shown(m, rules.max_retries + 1, 0) for m in self.dead.get(queue, [])]

    def statistics(self) -> LocalQueueStatistics:
        return LocalQueueStatistics(
            **self._counts,
            dead=sum(len(d) for d in self.dead.values()),
            stored_messages=len(self._sizes),
            stored_bytes=sum(self._sizes.values()),
        )

    def check_invariants(self) -> None:
        for subject, messages in self._subjects.items():
            seqs = [m.seq for m in messages]
            assert seqs == sorted(seqs), subject
            assert all(s in self._sizes for s in seqs), subject
        assert len(self._sizes) == sum(len(m) for m in self._subjects.values())

    # -- helpers -------------------------------------------------------------------------------
    def _record(self, subject: str) -> PartitionRecord:
        return self.records.get(subject) or PartitionRecord()

    def _unfinished(self, subject: str, record: PartitionRecord) -> list[QueueMessage]:
        return unfinished(record, self._subjects.get(subject, []))

    def _window(self, subject: str) -> list[QueueMessage]:
        return self._unfinished(subject, self._record(subject))[:WINDOW_MAX]

    def _forget_finished(self, subject: str, record: PartitionRecord) -> None:
        kept = self._unfinished(subject, record)
        for m in self._subjects.get(subject, []):
            if m.seq < record.cursor or m.seq in record.done:
                self._sizes.pop(m.seq, None)
        self._subjects[subject] = kept


def _subjects(queue: str) -> list[str]:
    return [stream_subject(queue, i) for i in range(PARTITIONS)]


def _shown(m: QueueMessage, attempts: int, due_ms: int) -> QueuedMessage:
    return QueuedMessage(m.id, msgspec.msgpack.decode(m.body), m.key, attempts, due_ms, m.sent_ms)
