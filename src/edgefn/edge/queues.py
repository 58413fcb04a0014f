"""Queues on a node: producers' sends, a bounded outbox while cut off, and consumer partitions.

The rules (partitions, leases, batch choice, retries, the dead-letter queue) are
:mod:`edgefn.edge.queue_policy`; this module does the I/O (docs/design/0028-queues.md):

- **Send** (``env.Q.send``, a ``KVCall`` with binding ``=q``): the node checks the binding against
  the caller's manifest, stamps an id and publishes to stream ``EDGEFN_Q`` on
  ``edgefn.q.<queue>.<partition>`` with ``Nats-Msg-Id`` = the idempotency key (or the id), so a
  re-send is dropped by JetStream's duplicate window (2 h). When the bus cannot be reached (or an
  earlier send still waits) the message goes to the location's outbox, a SQLite file (at most
  ``OUTBOX_MAX`` messages), and the send returns; the outbox is published in order after heal.
- **Consume**: for every ``[[queues.consumers]]`` of a function active here, one task per
  partition tries to hold the partition's lease; the holder reads the partition ahead of its
  cursor (batched direct gets), picks batches, runs ``queue(batch, env, ctx)`` in a worker and
  commits: the partition record (compare-and-set on the revision it holds: the fencing token)
  and the strong KV writes the handler made, in **one atomic JetStream batch** on the home
  bucket. A message is finished exactly when its effects are stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client

from edgefn.bundle.manifest import Manifest, QueueConsumer
from edgefn.bus.errors import BusError
from edgefn.bus.jetstream import (
    connect,
    direct_get_batch,
    ensure_atomic_batches,
    ensure_queue_stream,
    jetstream,
)
from edgefn.bus.queue_format import outgoing
from edgefn.bus.subjects import JETSTREAM_DOMAIN, KV_HOME_BUCKET, QUEUE_STREAM
from edgefn.edge.functions import ActiveFunction, ActiveVersion, FunctionTable
from edgefn.edge.kv_calls import run_op
from edgefn.edge.kv_codec import error_kind
from edgefn.edge.queue_policy import (
    PARTITIONS,
    RENEW_BELOW_MS,
    WINDOW_MAX,
    ConsumerRules,
    Decision,
    PartitionRecord,
    QueueMessage,
    can_claim,
    claimed,
    decode_message,
    decode_record,
    encode_message,
    encode_record,
    next_due_ms,
    partition_of,
    record_key,
    released,
    renewed,
    select_batch,
    serving,
    settle,
    stream_subject,
)
from edgefn.edge.request_context import RequestContext
from edgefn.errors import KVError, KVUnavailable
from edgefn.observe import JsonLog
from edgefn.runtime import protocol as p
from edgefn.runtime.sandbox import BACKGROUND_MAX_S, InvokeFailed, SandboxPool
from edgefn.sdk._queue import MAX_SEND_BATCH, encode_batch
from edgefn.state.driver import decode_home_value, encode_home_value, home_key
from edgefn.state.events import GetDone, Item, ListDone, WriteDone
from edgefn.state.records import Consistency

__all__ = [
    "OUTBOX_MAX",
    "HomeReader",
    "QueueBus",
    "QueueBusError",
    "QueueService",
    "batch_body",
    "batch_decisions",
    "dead_letter_rows",
    "message_rows",
    "send_target",
    "txn_kv_call",
]

OUTBOX_MAX: Final = 10_000
STORE_TIMEOUT_S: Final = 3.0
_SYNC_S: Final = 2.0
_IDLE_POLL_MAX_S: Final = 1.0
_IDLE_POLL_MIN_S: Final = 0.02
_API: Final = f"$JS.{JETSTREAM_DOMAIN}.API"
_BUS_ERRORS: Final = (nats.errors.Error, OSError, TimeoutError, asyncio.TimeoutError)


class QueueBusError(Exception):
    """The bus could not be asked, or its answer was lost."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class HomeWrite:
    """One strong write of a handler, committed with its batch: ``expected`` is the last
    sequence of the key it read (None: a blind write)."""

    hkey: str
    body: bytes | None  # None: a delete
    expected: int | None


class QueueBus:
    """The node's queue connection ``queue-<location>``: the stream and the partition records."""

    def __init__(self, nats_urls: list[str], *, location: str) -> None:
        self.nats_urls = nats_urls
        self.name = f"queue-{location}"
        self._nc: Client | None = None
        self._ready = False
        self._connecting: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._ready and self._nc is not None and self._nc.is_connected

    async def _client(self, wait_s: float = STORE_TIMEOUT_S) -> Client:
        nc = self._nc
        if nc is not None and self._ready and nc.is_connected:
            return nc
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._connecting), wait_s)
        return self._usable()

    def _usable(self) -> Client:
        nc = self._nc
        if nc is None or not self._ready or not nc.is_connected:
            raise QueueBusError("not connected to the bus")
        return nc

    async def _connect(self) -> None:
        while not self._ready:
            try:
                if self._nc is None:
                    self._nc = await connect(self.nats_urls, name=self.name, connect_deadline_s=5)
                js = jetstream(self._nc, timeout_s=STORE_TIMEOUT_S)
                await ensure_queue_stream(js)
                await ensure_atomic_batches(js, f"KV_{KV_HOME_BUCKET}")
                self._ready = True
            except (BusError, *_BUS_ERRORS, nats.js.errors.Error):
                await asyncio.sleep(2.0)

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connecting
        if self._nc is not None:
            with contextlib.suppress(*_BUS_ERRORS):
                await asyncio.wait_for(self._nc.close(), 2.0)

    # -- messages ------------------------------------------------------------------------------
    async def publish(self, subject: str, payload: bytes, msg_id: str, *, wait_s: float) -> None:
        """Raises :class:`QueueBusError` when not sent or unconfirmed, ``QueueFull`` on refusal."""
        nc = await self._client(wait_s)
        js = jetstream(nc, timeout_s=STORE_TIMEOUT_S)
        try:
            await js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})
        except nats.js.errors.APIError as err:
            raise QueueFull(f"the queue stream refused the message: {err.description}") from None
        except _BUS_ERRORS as err:
            raise QueueBusError(f"{type(err).__name__}: {err}") from None

    async def publish_many(self, items: list[tuple[str, bytes, str]], *, wait_s: float) -> int:
        """Publish ``(subject, payload, msg_id)`` items at once (pipelined: one round trip for
        all, in order on the connection); how many from the start were confirmed. Raises
        ``QueueFull`` when the stream refused the first unconfirmed one."""
        if not items:
            return 0
        await self._client(wait_s)
        results = await asyncio.gather(
            *(self.publish(s, pl, mid, wait_s=wait_s) for s, pl, mid in items),
            return_exceptions=True,
        )
        for i, result in enumerate(results):
            if isinstance(result, QueueFull):
                if i == 0:
                    raise result
                return i
            if isinstance(result, BaseException):
                if not isinstance(result, QueueBusError):
                    raise result
                return i
        return len(items)

    async def fetch(self, subject: str, from_seq: int, limit: int) -> list[QueueMessage]:
        """Up to ``limit`` messages of ``subject`` from stream sequence ``from_seq`` on (one
        batched direct get; malformed messages are skipped)."""
        nc = await self._client()
        try:
            raw = await direct_get_batch(
                nc, QUEUE_STREAM, subject, from_seq, limit, timeout_s=STORE_TIMEOUT_S
            )
        except _BUS_ERRORS as err:
            raise QueueBusError(f"{type(err).__name__}: {err}") from None
        got = []
        for seq, data in raw:
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError, ValueError):
                got.append(decode_message(data, seq))
        return got

    # -- the home bucket -----------------------------------------------------------------------
    async def read(self, hkey: str) -> tuple[bytes | None, int]:
        """A home key's value and last sequence (a delete marker: ``None`` and its sequence)."""
        js = jetstream(await self._client(), timeout_s=STORE_TIMEOUT_S)
        try:
            msg = await js.get_msg(f"KV_{KV_HOME_BUCKET}", subject=f"$KV.{KV_HOME_BUCKET}.{hkey}")
        except nats.js.errors.NotFoundError:
            return None, 0
        except (*_BUS_ERRORS, nats.js.errors.Error) as err:
            raise QueueBusError(f"{type(err).__name__}: {err}") from None
        seq = int(msg.seq or 0)
        if (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
            return None, seq
        return msg.data, seq

    async def commit(
        self, writes: list[HomeWrite], rkey: str, record: bytes, expected: int
    ) -> int | None:
        """Write ``writes`` and the record at ``rkey`` (if still at ``expected``) atomically; the
        record's new revision, or ``None`` when a compare-and-set refused the whole batch."""
        nc = await self._client()
        items = [*writes, HomeWrite(rkey, record, expected)]
        batch_id = os.urandom(12).hex()
        try:
            for i, w in enumerate(items, 1):
                headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(i)}
                if w.expected is not None:
                    headers["Nats-Expected-Last-Subject-Sequence"] = str(w.expected)
                if w.body is None:
                    headers["KV-Operation"] = "DEL"
                subject = f"{_API}.$KV.{KV_HOME_BUCKET}.{w.hkey}"
                if i < len(items):
                    await nc.publish(subject, w.body or b"", headers=headers)
                    continue
                headers["Nats-Batch-Commit"] = "1"
                reply = await nc.request(
                    subject, w.body or b"", headers=headers, timeout=STORE_TIMEOUT_S
                )
        except _BUS_ERRORS as err:
            raise QueueBusError(f"{type(err).__name__}: {err}") from None
        answer = json.loads(reply.data or b"{}")
        error = answer.get("error")
        if error is None:
            return int(answer["seq"])
        if error.get("err_code") == 10071:  # wrong last sequence
            return None
        raise QueueBusError(f"the home refused the commit: {error.get('description')}")


class QueueFull(Exception):
    """JetStream refused a message (the stream is full): a real refusal, never buffered."""


# -- the outbox -------------------------------------------------------------------------------


class Outbox:
    """Sends made while the bus could not be reached, in order, in a SQLite file."""

    def __init__(self, path: Path, *, limit: int = OUTBOX_MAX) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.limit = limit
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (n INTEGER PRIMARY KEY AUTOINCREMENT,"
            " subject TEXT NOT NULL, msg_id TEXT NOT NULL, payload BLOB NOT NULL)"
        )
        self.count = int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def add(self, rows: list[tuple[str, str, bytes]]) -> None:
        if self.count + len(rows) > self.limit:
            raise QueueFull(
                f"the location's outbox holds {self.count} unsent messages (at most {self.limit})"
            )
        with self._db:
            self._db.executemany(
                "INSERT INTO outbox (subject, msg_id, payload) VALUES (?, ?, ?)", rows
            )
        self.count += len(rows)

    def head(self, n: int) -> list[tuple[int, str, str, bytes]]:
        return list(
            self._db.execute(
                "SELECT n, subject, msg_id, payload FROM outbox ORDER BY n LIMIT ?", (n,)
            )
        )

    def remove(self, n: int) -> None:
        self._db.execute("DELETE FROM outbox WHERE n = ?", (n,))
        self.count -= 1

    def close(self) -> None:
        self._db.close()


# -- a handler's strong writes ------------------------------------------------------------------


class HomeReader(Protocol):
    """Where a :class:`QueueTxn` reads the home: :class:`QueueBus` on a node, the namespace's
    in-process home in ``edgefn.testing`` (:mod:`edgefn.edge.queue_local`)."""

    async def read(self, hkey: str) -> tuple[bytes | None, int]: ...


@dataclass(slots=True)
class QueueTxn:
    """The strong KV of one batch invocation: reads go to the home (their sequences are kept),
    writes wait here and are committed with the batch."""

    bus: HomeReader
    reads: dict[str, int] = field(default_factory=dict)
    writes: dict[str, HomeWrite] = field(default_factory=dict)
    values: dict[str, tuple[bytes | None, bytes, int]] = field(default_factory=dict)

    async def get(self, hkey: str, now_ms: int) -> tuple[bytes | None, bytes, int, int]:
        """(value, metadata, expires_at_ms, revision) as the batch sees it."""
        if hkey in self.values:
            value, metadata, expires = self.values[hkey]
            return value, metadata, expires, 0
        data, seq = await self.bus.read(hkey)
        self.reads.setdefault(hkey, seq)
        if data is None:
            return None, b"", 0, 0
        value, metadata, expires = decode_home_value(data)
        if expires and expires <= now_ms:
            return None, b"", 0, 0
        return value, metadata, expires, seq

    def write(self, hkey: str, value: bytes | None, metadata: bytes, expires: int) -> None:
        previous = self.writes.get(hkey)
        expected = previous.expected if previous is not None else self.reads.get(hkey)
        body = None if value is None else encode_home_value(value, metadata, expires)
        self.writes[hkey] = HomeWrite(hkey, body, expected)
        self.values[hkey] = (value, metadata, expires)


class TxnOps:
    """``ReplicaOps`` for a batch: strong operations through :class:`QueueTxn`, the others on
    the namespace's replica as in a request."""

    def __init__(self, namespace: str, txn: QueueTxn, replica: Any) -> None:
        self.namespace = namespace
        self.txn = txn
        self.replica = replica

    async def get(self, key: str, *, consistency: Consistency, session: str) -> GetDone:
        if consistency is not Consistency.STRONG:
            got: GetDone = await self.replica.get(key, consistency=consistency, session=session)
            return got
        value, metadata, expires, revision = await self.txn.get(
            home_key(self.namespace, key), _now_ms()
        )
        return GetDone(
            Item(key, value, revision if value is not None else 0, metadata, expires), session
        )

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        consistency: Consistency,
        metadata: bytes = b"",
        ttl_ms: int = 0,
        if_revision: int | None = None,
        session: str = "",
    ) -> WriteDone:
        if consistency is not Consistency.STRONG:
            done: WriteDone = await self.replica.put(
                key,
                value,
                consistency=consistency,
                metadata=metadata,
                ttl_ms=ttl_ms,
                if_revision=if_revision,
                session=session,
            )
            return done
        hkey = home_key(self.namespace, key)
        if if_revision is not None:
            self.txn.reads[hkey] = if_revision
        expires = _now_ms() + ttl_ms if ttl_ms else 0
        self.txn.write(hkey, value, metadata, expires)
        return WriteDone(key, 0, None, session)

    async def delete(
        self,
        key: str,
        *,
        consistency: Consistency,
        if_revision: int | None = None,
        session: str = "",
    ) -> WriteDone:
        if consistency is not Consistency.STRONG:
            done: WriteDone = await self.replica.delete(
                key, consistency=consistency, if_revision=if_revision, session=session
            )
            return done
        hkey = home_key(self.namespace, key)
        if if_revision is not None:
            self.txn.reads[hkey] = if_revision
        self.txn.write(hkey, None, b"", 0)
        return WriteDone(key, 0, None, session)

    async def list_keys(
        self, *, prefix: str, limit: int, cursor: str, consistency: Consistency, session: str
    ) -> ListDone:
        if consistency is Consistency.STRONG:
            raise KVError(
                "a strong list is not available in a queue handler (its writes commit with the "
                "batch)",
                hint="list at the eventual level, or keep an index under one strong key",
            )
        listed: ListDone = await self.replica.list_keys(
            prefix=prefix, limit=limit, cursor=cursor, consistency=consistency, session=session
        )
        return listed


# -- consumers ----------------------------------------------------------------------------------


def rules_of(consumer: QueueConsumer) -> ConsumerRules:
    return ConsumerRules(
        max_batch_size=consumer.max_batch_size,
        max_batch_timeout_ms=consumer.max_batch_timeout_ms,
        max_retries=consumer.max_retries,
        retry_delay_s=consumer.retry_delay_s,
        dead_letter_queue=consumer.dead_letter_queue,
        max_concurrency=consumer.max_concurrency,
    )


Invoker = Callable[
    [str, str, list[QueueMessage], dict[int, int], QueueTxn],
    Awaitable[tuple[list[Decision] | None, str]],
]


class Partition:
    """One partition of one consumed queue at this node: claim it when free, serve it while held."""

    def __init__(self, service: QueueService, function: str, queue: str, index: int) -> None:
        assert service.bus is not None
        self.service = service
        self.bus: QueueBus = service.bus
        self.function = function
        self.queue = queue
        self.index = index
        self.rkey = record_key(queue, index)
        self.subject = stream_subject(queue, index)
        self.record: PartitionRecord | None = None
        self.revision = 0
        self.held = False

    @property
    def me(self) -> str:
        return self.service.location

    def rules(self) -> ConsumerRules | None:
        return self.service.rules_for(self.function, self.queue)

    async def run(self) -> None:
        rng = random.Random(f"{self.me}{self.rkey}")
        last_error = ""
        while True:
            if self.rules() is None:  # the consumer left this location; the sync loop stops us
                await asyncio.sleep(_SYNC_S)
                continue
            try:
                data, self.revision = await self.bus.read(self.rkey)
                self.record = decode_record(data)
                now = _now_ms()
                if not can_claim(self.record, self.me, now):
                    assert self.record is not None
                    wait = (self.record.lease_until_ms - now) / 1000
                    await asyncio.sleep(min(max(wait, 0.2), _SYNC_S) + rng.random() * 0.2)
                    continue
                mine = claimed(self.record, self.me, now)
                revision = await self.bus.commit([], self.rkey, encode_record(mine), self.revision)
                if revision is None:
                    continue
                self.record, self.revision, self.held = mine, revision, True
                self.service.log.emit(
                    "queue",
                    event="claimed",
                    queue=self.queue,
                    partition=self.index,
                    epoch=mine.epoch,
                    cursor=mine.cursor,
                )
                await self._hold()
                self.held = False
            except QueueBusError as err:
                self.held = False
                if str(err) != last_error:
                    last_error = str(err)
                    self.service.log.emit(
                        "queue",
                        event="bus_error",
                        queue=self.queue,
                        partition=self.index,
                        error=last_error,
                    )
                await asyncio.sleep(1.0 + rng.random())
            # A cancelled task (the node stopping) still holds: stop() releases the lease then.

    async def release(self) -> None:
        if not self.held or self.record is None:
            return
        with contextlib.suppress(QueueBusError):
            await self.bus.commit(
                [], self.rkey, encode_record(released(self.record)), self.revision
            )

    async def _hold(self) -> None:
        assert self.record is not None
        window: list[QueueMessage] = []
        scanned = self.record.cursor
        idle = _IDLE_POLL_MIN_S
        while True:
            rules = self.rules()
            now = _now_ms()
            if rules is None or not serving(self.record, self.me, now):
                return
            if self.record.lease_until_ms - now < RENEW_BELOW_MS:
                mine = renewed(self.record, now)
                revision = await self.bus.commit([], self.rkey, encode_record(mine), self.revision)
                if revision is None:
                    self._fenced()
                    return
                self.record, self.revision = mine, revision
            if len(window) < WINDOW_MAX:
                got = await self.bus.fetch(self.subject, scanned, WINDOW_MAX - len(window))
                if got:
                    window.extend(got)
                    scanned = got[-1].seq + 1
            batch = select_batch(self.record, window, now, rules.max_batch_size)
            full = len(batch) >= rules.max_batch_size or len(window) >= WINDOW_MAX
            if batch and not full:
                oldest = min(max(m.sent_ms, m.not_before_ms) for m in batch)
                if now - oldest < rules.max_batch_timeout_ms:
                    await asyncio.sleep(
                        min(idle, (rules.max_batch_timeout_ms - (now - oldest)) / 1000)
                    )
                    idle = min(idle * 2, _IDLE_POLL_MAX_S)
                    continue
            if not batch:
                due = next_due_ms(self.record, window)
                pause = idle if due is None else max(0.0, min(idle, (due - now) / 1000))
                await asyncio.sleep(max(pause, 0.005))
                idle = min(idle * 2, _IDLE_POLL_MAX_S)
                continue
            idle = _IDLE_POLL_MIN_S
            async with self.service.slots(self.function, self.queue, rules):
                kept = await self._process(batch, window, scanned, rules)
            if not kept:
                return
            assert self.record is not None
            window = [
                m for m in window if m.seq >= self.record.cursor and m.seq not in self.record.done
            ]

    def _fenced(self) -> None:
        self.service.log.emit("queue", event="fenced", queue=self.queue, partition=self.index)

    async def _process(
        self,
        batch: list[QueueMessage],
        window: list[QueueMessage],
        scanned: int,
        rules: ConsumerRules,
    ) -> bool:
        """Run one batch and commit its outcome; False when the partition was lost."""
        assert self.record is not None
        record = self.record
        txn = QueueTxn(self.bus)
        decisions, error = await self.service.invoke(
            self.function, self.queue, batch, record.attempts, txn
        )
        writes = list(txn.writes.values())
        if decisions is None:  # the handler failed: nothing it wrote is kept
            decisions = [Decision(m.seq, "retry") for m in batch]
            writes = []
        for _attempt in range(2):
            now = _now_ms()
            settled = settle(record, window, decisions, rules=rules, scanned_to=scanned, now_ms=now)
            dead = [m for m in batch if m.seq in settled.dead]
            if dead and not await self.service.dead_letter(rules, self.queue, dead):
                return True  # not committed: the batch runs again once the bus answers
            mine = renewed(settled.record, now)
            revision = await self.bus.commit(writes, self.rkey, encode_record(mine), self.revision)
            if revision is not None:
                self.record, self.revision = mine, revision
                self.service.log.emit(
                    "queue",
                    event="batch",
                    queue=self.queue,
                    partition=self.index,
                    function=self.function,
                    size=len(batch),
                    acked=len(settled.acked),
                    retried=len(settled.retried),
                    dead=len(settled.dead),
                    error=error or None,
                )
                self.service.counts["acked"] += len(settled.acked)
                self.service.counts["retried"] += len(settled.retried)
                self.service.counts["dead"] += len(settled.dead)
                return True
            data, current = await self.bus.read(self.rkey)
            now_record = decode_record(data)
            if current != self.revision or now_record is None or now_record.epoch != record.epoch:
                self._fenced()
                return False
            # A key the handler read changed before the commit: the batch counts as failed.
            decisions = [Decision(m.seq, "retry") for m in batch]
            writes = []
            error = "a key the handler read was written meanwhile (the batch is retried)"
        return True


class QueueService:
    """Queues at one node (see the module docstring). Without ``nats_urls`` (``edgefn dev``) sends
    are refused with a clear error."""

    def __init__(
        self,
        *,
        location: str,
        table: FunctionTable,
        pool: SandboxPool,
        log: JsonLog,
        requests: dict[str, RequestContext],
        release: Callable[[str], None],
    ) -> None:
        self.location = location
        self.table = table
        self.pool = pool
        self.log = log
        self._requests = requests
        self._release = release
        self.bus: QueueBus | None = None
        self.outbox: Outbox | None = None
        self.replica_for: Callable[[str], Awaitable[Any]] | None = None
        self.txns: dict[str, tuple[QueueTxn, Manifest]] = {}
        self.counts: dict[str, int] = {
            "sent": 0,
            "buffered": 0,
            "acked": 0,
            "retried": 0,
            "dead": 0,
        }
        self._partitions: dict[tuple[str, str], list[tuple[Partition, asyncio.Task[None]]]] = {}
        self._slots: dict[tuple[str, str], asyncio.Semaphore] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._outbox_wake = asyncio.Event()
        self._rng = random.Random(location)

    def attach(
        self, nats_urls: list[str], state_dir: Path, replica_for: Callable[[str], Awaitable[Any]]
    ) -> None:
        """Give the service the bus, its outbox file and the KV replicas (the planet assembly)."""
        self.bus = QueueBus(nats_urls, location=self.location)
        self.outbox = Outbox(state_dir / "queues" / "outbox.sqlite3")
        self.replica_for = replica_for

    def start(self) -> None:
        if self.bus is None:
            return
        self._spawn(self._sync_loop())
        self._spawn(self._outbox_loop())

    async def stop(self) -> None:
        for parts in self._partitions.values():
            for _part, task in parts:
                task.cancel()
        for parts in self._partitions.values():
            for part, task in parts:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                await part.release()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        if self.bus is not None:
            await self.bus.close()
        if self.outbox is not None:
            self.outbox.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- sending -------------------------------------------------------------------------------
    async def send(self, ctx: RequestContext | None, call: p.KVCall) -> p.KVResult:
        def refuse(kind: str, message: str) -> p.KVResult:
            return p.KVResult(call.id, call.call_id, False, None, kind, message)

        if ctx is None:
            return refuse("queue", "no request is in flight for this send")
        try:
            queue = send_target(ctx.manifest, call)
        except ValueError as err:
            return refuse("queue", str(err))
        if self.bus is None or self.outbox is None:
            return refuse(
                "queue",
                f"queue {queue!r}: this node has no bus; queues run on a planet (`edgefn up`)",
            )
        try:
            rows = message_rows(queue, call.args.get("messages"), now_ms=_now_ms())
            ids = await self._publish_rows(rows)
        except (ValueError, TypeError) as err:
            return refuse("queue", f"queue {queue!r}: {err}")
        except QueueFull as err:
            return refuse("queue", f"queue {queue!r}: {err}")
        return p.KVResult(call.id, call.call_id, True, ids)

    async def _publish_rows(self, rows: list[tuple[str, str, bytes, str]]) -> list[str]:
        assert self.bus is not None
        assert self.outbox is not None
        sent = 0
        if self.outbox.count == 0:
            # What is not confirmed is buffered below, in order; a re-publish of one that did
            # arrive is dropped by the stream's duplicate window.
            with contextlib.suppress(QueueBusError):
                sent = await self.bus.publish_many(
                    [(subject, payload, dedupe) for subject, dedupe, payload, _ in rows], wait_s=0.5
                )
        rest = rows[sent:]
        if rest:
            self.outbox.add([(s, d, pl) for s, d, pl, _ in rest])
            self.counts["buffered"] += len(rest)
            self._outbox_wake.set()
        self.counts["sent"] += sent
        return [mid for *_, mid in rows]

    async def _outbox_loop(self) -> None:
        assert self.bus is not None
        assert self.outbox is not None
        while True:
            if self.outbox.count == 0:
                self._outbox_wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._outbox_wake.wait(), 5.0)
                continue
            try:
                head = self.outbox.head(64)
                confirmed = await self.bus.publish_many(
                    [(subject, payload, dedupe) for _, subject, dedupe, payload in head],
                    wait_s=STORE_TIMEOUT_S,
                )
                for n, *_ in head[:confirmed]:
                    self.outbox.remove(n)
                self.counts["sent"] += confirmed
                if confirmed < len(head):
                    await asyncio.sleep(1.0)
            except QueueBusError:
                await asyncio.sleep(1.0)
            except QueueFull as err:
                self.log.emit("queue", event="outbox_refused", error=str(err))
                await asyncio.sleep(5.0)

    # -- consuming -----------------------------------------------------------------------------
    def consumers(self) -> dict[tuple[str, str], ConsumerRules]:
        """(function, queue) -> rules, for the consumers of functions active here."""
        out: dict[tuple[str, str], ConsumerRules] = {}
        for name, fn in self.table.functions.items():
            for version in fn.versions:
                for consumer in version.manifest.queues.consumers:
                    out.setdefault((name, consumer.queue), rules_of(consumer))
        return out

    def rules_for(self, function: str, queue: str) -> ConsumerRules | None:
        return self.consumers().get((function, queue))

    def slots(self, function: str, queue: str, rules: ConsumerRules) -> asyncio.Semaphore:
        key = (function, queue)
        if key not in self._slots:
            self._slots[key] = asyncio.Semaphore(rules.max_concurrency)
        return self._slots[key]

    async def _sync_loop(self) -> None:
        while True:
            wanted = self.consumers()
            for key in wanted.keys() - self._partitions.keys():
                parts = []
                for i in range(PARTITIONS):
                    part = Partition(self, key[0], key[1], i)
                    task = asyncio.get_running_loop().create_task(part.run())
                    parts.append((part, task))
                self._partitions[key] = parts
            for key in self._partitions.keys() - wanted.keys():
                for part, task in self._partitions.pop(key):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                    await part.release()
            await asyncio.sleep(_SYNC_S)

    def held(self) -> dict[str, list[int]]:
        """Queue -> the partitions this node holds now (for tests and `queues list`)."""
        out: dict[str, list[int]] = {}
        for (_, queue), parts in self._partitions.items():
            out[queue] = [part.index for part, _ in parts if part.held]
        return out

    async def dead_letter(self, rules: ConsumerRules, queue: str, dead: list[QueueMessage]) -> bool:
        """Put ``dead`` in the dead-letter queue (deduped by id); False when the bus failed."""
        assert self.bus is not None
        if not rules.dead_letter_queue:
            for m in dead:
                self.log.emit("queue", event="dropped", queue=queue, message_id=m.id)
            return True
        try:
            for subject, payload, dedupe in dead_letter_rows(rules.dead_letter_queue, queue, dead):
                await self.bus.publish(subject, payload, dedupe, wait_s=STORE_TIMEOUT_S)
        except (QueueBusError, QueueFull) as err:
            self.log.emit("queue", event="dead_letter_failed", queue=queue, error=str(err))
            return False
        return True

    async def invoke(
        self,
        function: str,
        queue: str,
        batch: list[QueueMessage],
        attempts: dict[int, int],
        txn: QueueTxn,
    ) -> tuple[list[Decision] | None, str]:
        """Run ``queue(batch, env, ctx)``: each message's decision, or None and why it failed."""
        fn = self.table.functions.get(function)
        versions = [
            v
            for v in (fn.versions if fn else ())
            if any(c.queue == queue for c in v.manifest.queues.consumers)
        ]
        if fn is None or not versions:
            return None, "the consumer is not active here"
        active: ActiveVersion = ActiveFunction(function, tuple(versions)).pick(self._rng)
        spec, manifest = active.spec, active.manifest
        rid = os.urandom(8).hex()
        msg = p.Invoke(
            0,
            "QUEUE",
            f"http://{function}.localhost/__queue",
            [],
            batch_body(batch, attempts),
            self.location,
            "",
            rid,
            queue=queue,
        )
        self._requests[rid] = RequestContext(rid, function, active.version, spec.key, manifest, [])
        self.txns[rid] = (txn, manifest)
        try:
            inv = await self.pool.invoke(spec.key, msg, timeout_ms=manifest.limits.timeout_ms)
        except InvokeFailed as err:
            self._requests.pop(rid, None)
            self.txns.pop(rid, None)
            return None, f"{err.kind}: {err.message}"
        try:
            await inv.start()
            return batch_decisions(batch, inv.whole_body or b"")
        except InvokeFailed as err:
            return None, f"{err.kind}: {err.message}"
        finally:
            inv.finish()
            self.txns.pop(rid, None)
            if inv.background:
                asyncio.get_running_loop().call_later(BACKGROUND_MAX_S, self._release, rid)
            else:
                self._release(rid)

    async def kv_call(self, request_id: str, call: p.KVCall) -> p.KVResult | None:
        """A KV call of a batch invocation (None: not one; the node's KV handler serves it)."""
        entry = self.txns.get(request_id)
        if entry is None:
            return None
        txn, manifest = entry
        return await txn_kv_call(txn, manifest, call, self.replica_for)


# -- what a node and edgefn.testing's in-process queues (edge/queue_local.py) share --------------


def send_target(manifest: Manifest, call: p.KVCall) -> str:
    """The queue a producer's send goes to; ``ValueError`` when ``manifest`` has no such binding."""
    binding = str(call.args.get("binding", ""))
    queue = next((q.queue for q in manifest.queues.producers if q.binding == binding), None)
    if call.op != "send" or queue is None:
        raise ValueError(f"no [[queues.producers]] binding {binding!r} in edgefn.toml")
    return queue


def message_rows(queue: str, messages: object, *, now_ms: int) -> list[tuple[str, str, bytes, str]]:
    """A send's messages checked and encoded: ``(subject, Nats-Msg-Id, payload, id)`` each.
    Raises ``ValueError`` saying what is wrong (with a message, or their number)."""
    rows = []
    for item in _items(messages):
        out = outgoing(queue, item, now_ms=now_ms, fresh_id=os.urandom(16).hex())
        rows.append((out.subject, out.dedupe, out.payload, out.id))
    if len(rows) > MAX_SEND_BATCH:
        raise ValueError(f"at most {MAX_SEND_BATCH} messages per send_batch")
    return rows


def dead_letter_rows(
    dead_letter_queue: str, queue: str, dead: list[QueueMessage]
) -> list[tuple[str, bytes, str]]:
    """``(subject, payload, Nats-Msg-Id)`` of each of ``queue``'s dead messages moved to
    ``dead_letter_queue``: same id, due at once, deduped by ``dlq.<queue>.<id>``."""
    out = []
    for m in dead:
        moved = msgspec.structs.replace(m, seq=0, not_before_ms=0)
        subject = stream_subject(dead_letter_queue, partition_of(m.key, m.id))
        out.append((subject, encode_message(moved), f"dlq.{queue}.{m.id}"))
    return out


def batch_body(batch: list[QueueMessage], attempts: dict[int, int]) -> bytes:
    """The ``Invoke`` body of a batch (the worker reads it with ``sdk._queue.decode_batch``);
    ``attempts``: the partition's failed deliveries so far."""
    items = [(m.id, m.body, m.key, attempts.get(m.seq, 0) + 1, m.sent_ms) for m in batch]
    return encode_batch(items)


def batch_decisions(batch: list[QueueMessage], raw: bytes) -> tuple[list[Decision] | None, str]:
    """The worker's answer (``sdk._queue.decisions_of``) as each message's decision, or None and
    why it cannot be read."""
    try:
        answer = msgspec.msgpack.decode(raw, type=list[tuple[str, int | None]])
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        return None, f"the worker's answer is malformed: {err}"
    if len(answer) != len(batch):
        return None, "the worker answered for a different number of messages"
    return [
        Decision(m.seq, "retry" if action == "retry" else "ack", delay)
        for m, (action, delay) in zip(batch, answer, strict=True)
    ], ""


async def txn_kv_call(
    txn: QueueTxn,
    manifest: Manifest,
    call: p.KVCall,
    replica_for: Callable[[str], Awaitable[Any]] | None,
) -> p.KVResult:
    """A KV call of a batch invocation: strong operations in ``txn`` (committed with the batch),
    the others on the namespace's replica (``replica_for``), as in a request."""
    namespace = next(
        (ns.namespace for ns in manifest.kv_namespaces if ns.binding == call.binding), None
    )
    try:
        if namespace is None:
            raise KVError(
                f"function {manifest.name}: no KV binding named {call.binding!r}",
                hint="declare it under [[kv_namespaces]] in edgefn.toml",
            )
        if replica_for is None:
            raise KVUnavailable("this node has no KV store configured")
        ops = TxnOps(namespace, txn, await replica_for(namespace))
        value, _token, _stamp = await run_op(ops, call.op, call.args, "")
    except KVError as err:
        return p.KVResult(call.id, call.call_id, False, None, error_kind(err), str(err))
    except QueueBusError as err:
        return p.KVResult(
            call.id, call.call_id, False, None, "unavailable", f"the home cannot be read: {err}"
        )
    return p.KVResult(call.id, call.call_id, True, value)


def _items(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise ValueError("send_batch takes a non-empty list of messages")
    out = []
    for item in value:
        if not isinstance(item, dict):
            raise ValueError("each message is a dict with a body")
        out.append(item)
    return out
