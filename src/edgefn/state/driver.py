"""The real driver: one :class:`Replica` + :class:`SqliteStore` connected to NATS/JetStream.

Subjects and JetStream objects of namespace ``ns`` (key and replica names are used verbatim, so
they must be NATS subject tokens; the home keys are base64url-encoded because JetStream KV keys
allow only ``[-/_=.a-zA-Z0-9]``):

- stream ``EDGEFN_KV_<ns>`` on ``edgefn.kv.<ns>.*``: every eventual/session/causal write, published
  by its origin on ``edgefn.kv.<ns>.<origin>``. Each replica consumes it with its own durable
  consumer (``kv-<replica>``, manual ack after the write is applied and persisted), so writes
  replay after partitions and restarts from where the replica left off.
- core subjects ``edgefn.kvctl.<ns>.<replica>`` (point-to-point: replay requests and answers,
  Merkle digests, repair requests/responses) and ``edgefn.kvctl.<ns>._all`` (announcements).
- KV bucket ``edgefn-kv-<ns>``: the home of strong operations. ``put`` with ``if_revision`` is
  ``update(key, value, last=revision)`` (compare-and-set; the revision is the fencing token),
  ``if_revision=0`` is ``create``. A timeout or lost connection is ``unreachable``.

The driver feeds events to the machine one at a time on the event loop and carries out the
instructions in order (``Persist`` runs synchronously in SQLite before anything is sent). A write
that could not be published while NATS was unreachable is still in the replica's replay log; peers
learn of it from its announcements and ask for a replay.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from edgefn.errors import KVUnavailable
from edgefn.state.events import (
    AskHome,
    Broadcast,
    Delete,
    Event,
    Failed,
    Get,
    GetDone,
    Instruction,
    List,
    ListDone,
    Persist,
    Put,
    Reply,
    Result,
    ScheduleTick,
    SendTo,
    StrongResult,
    Tick,
    WriteDone,
    received,
)
from edgefn.state.machine import Replica
from edgefn.state.messages import (
    Announce,
    Message,
    Replication,
    StrongOp,
    StrongOutcome,
    StrongRecord,
    decode_message,
    encode_message,
)
from edgefn.state.records import Consistency
from edgefn.state.store import SqliteStore

__all__ = ["DriverStatistics", "KVDriver"]

_HOME_VALUE = msgspec.msgpack.Decoder(tuple[bytes, bytes, int])
_ENC = msgspec.msgpack.Encoder()
_HOME_ERRORS = (
    asyncio.TimeoutError,
    nats.errors.Error,
    nats.js.errors.Error,
    ConnectionError,
)


@dataclass(frozen=True, slots=True)
class DriverStatistics:
    namespace: str
    replica: str
    published: int
    publish_failures: int
    consumed: int
    home_calls: int
    home_failures: int


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _home_key(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode("utf-8")).rstrip(b"=").decode("ascii") or "_"


def _user_key(home_key: str) -> str:
    return base64.urlsafe_b64decode(home_key + "=" * (-len(home_key) % 4)).decode("utf-8")


class KVDriver:
    """Runs one replica of one namespace against a NATS server with JetStream."""

    def __init__(
        self,
        *,
        namespace: str,
        replica: Replica,
        store: SqliteStore,
        servers: str,
        home_timeout_s: float = 2.0,
    ) -> None:
        self.namespace = namespace
        self.replica = replica
        self.store = store
        self.servers = servers
        self.home_timeout_s = home_timeout_s
        self._nc: NATS | None = None
        self._js: Any = None
        self._kv: Any = None
        self._futures: dict[int, asyncio.Future[Result]] = {}
        self._op_ids = itertools.count(1)
        self._tick_at_ms: int | None = None
        self._tick_wakeup = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stats = dict.fromkeys(
            ("published", "publish_failures", "consumed", "home_calls", "home_failures"), 0
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Recover from the store, connect, create the stream/bucket if needed, subscribe."""
        ns, me = self.namespace, self.replica.id
        self._feed(self.store.recover(_now_ms()))
        self._nc = await nats.connect(
            self.servers, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2
        )
        self._js = self._nc.jetstream(timeout=self.home_timeout_s)
        stream = f"EDGEFN_KV_{ns}"
        with contextlib.suppress(nats.js.errors.BadRequestError):
            await self._js.add_stream(name=stream, subjects=[f"edgefn.kv.{ns}.*"])
        self._kv = await self._js.create_key_value(bucket=f"edgefn-kv-{ns}", history=1)
        await self._nc.subscribe(f"edgefn.kvctl.{ns}.{me}", cb=self._on_control)
        await self._nc.subscribe(f"edgefn.kvctl.{ns}._all", cb=self._on_control)
        await self._js.subscribe(
            f"edgefn.kv.{ns}.*",
            durable=f"kv-{me}",
            stream=stream,
            cb=self._on_stream,
            manual_ack=True,
        )
        self._spawn(self._ticker())
        self._feed(Tick(_now_ms()))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._nc is not None:
            try:
                await self._nc.drain()
            except _HOME_ERRORS:
                # Draining needs the server; when it is gone, just close the connection.
                with contextlib.suppress(*_HOME_ERRORS):
                    await self._nc.close()
        for future in self._futures.values():
            if not future.done():
                future.set_exception(KVUnavailable(f"replica {self.replica.id} stopped"))
        self.store.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ client API

    async def get(
        self, key: str, *, consistency: Consistency = Consistency.EVENTUAL, session: str = ""
    ) -> GetDone:
        result = await self._call(lambda op: Get(op, key, _now_ms(), consistency, session))
        assert isinstance(result, GetDone)
        return result

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        consistency: Consistency = Consistency.EVENTUAL,
        metadata: bytes = b"",
        ttl_ms: int = 0,
        if_revision: int | None = None,
        session: str = "",
    ) -> WriteDone:
        result = await self._call(
            lambda op: Put(
                op, key, value, _now_ms(), consistency, metadata, ttl_ms, if_revision, session
            )
        )
        assert isinstance(result, WriteDone)
        return result

    async def delete(
        self,
        key: str,
        *,
        consistency: Consistency = Consistency.EVENTUAL,
        if_revision: int | None = None,
        session: str = "",
    ) -> WriteDone:
        result = await self._call(
            lambda op: Delete(op, key, _now_ms(), consistency, if_revision, session)
        )
        assert isinstance(result, WriteDone)
        return result

    async def list_keys(
        self,
        *,
        prefix: str = "",
        limit: int = 1000,
        cursor: str = "",
        consistency: Consistency = Consistency.EVENTUAL,
        session: str = "",
    ) -> ListDone:
        result = await self._call(
            lambda op: List(op, _now_ms(), consistency, prefix, limit, cursor, session)
        )
        assert isinstance(result, ListDone)
        return result

    async def _call(self, make: Any) -> Result:
        op_id = next(self._op_ids)
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._futures[op_id] = future
        self._feed(make(op_id))
        result = await future
        if isinstance(result, Failed):
            raise result.error
        return result

    # ------------------------------------------------------------------ machine plumbing

    def _feed(self, event: Event) -> None:
        self._carry_out(self.replica.handle(event))

    def _carry_out(self, instructions: list[Instruction]) -> None:
        for ins in instructions:
            if isinstance(ins, Persist):
                self.store.apply(ins)
            elif isinstance(ins, Reply):
                future = self._futures.pop(ins.op_id, None)
                if future is not None and not future.done():
                    future.set_result(ins.result)
            elif isinstance(ins, Broadcast):
                self._spawn(self._broadcast(ins.message))
            elif isinstance(ins, SendTo):
                self._spawn(self._publish(f"edgefn.kvctl.{self.namespace}.{ins.replica}", ins))
            elif isinstance(ins, AskHome):
                self._spawn(self._ask_home(ins.op))
            elif isinstance(ins, ScheduleTick) and (
                self._tick_at_ms is None or ins.at_ms < self._tick_at_ms
            ):
                self._tick_at_ms = ins.at_ms
                self._tick_wakeup.set()

    async def _broadcast(self, message: Message) -> None:
        if isinstance(message, Replication):
            subject = f"edgefn.kv.{self.namespace}.{self.replica.id}"
            try:
                await self._js.publish(subject, encode_message(message))
                self._stats["published"] += 1
            except _HOME_ERRORS:
                # The write stays in the replay log; peers ask for it after they see our
                # announcement.
                self._stats["publish_failures"] += 1
            return
        assert isinstance(message, Announce), message
        await self._publish(f"edgefn.kvctl.{self.namespace}._all", Broadcast(message))

    async def _publish(self, subject: str, ins: SendTo | Broadcast) -> None:
        assert self._nc is not None
        with contextlib.suppress(*_HOME_ERRORS):
            await self._nc.publish(subject, encode_message(ins.message))

    async def _on_control(self, msg: Msg) -> None:
        try:
            message = decode_message(msg.data)
        except msgspec.DecodeError:
            return
        if getattr(message, "sender", None) == self.replica.id:
            return
        self._feed(received(message, _now_ms()))

    async def _on_stream(self, msg: Msg) -> None:
        try:
            message = decode_message(msg.data)
        except msgspec.DecodeError:
            await msg.term()
            return
        self._stats["consumed"] += 1
        self._feed(received(message, _now_ms()))
        # Acknowledged only after the write was applied (and persisted) or buffered.
        with contextlib.suppress(*_HOME_ERRORS):
            await msg.ack()

    async def _ticker(self) -> None:
        while True:
            now = _now_ms()
            if self._tick_at_ms is not None and self._tick_at_ms <= now:
                self._tick_at_ms = None
                self._feed(Tick(now))
                continue
            delay_s = 1.0 if self._tick_at_ms is None else (self._tick_at_ms - now) / 1000
            self._tick_wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._tick_wakeup.wait(), timeout=max(delay_s, 0.001))

    # ------------------------------------------------------------------ the home

    async def _ask_home(self, op: StrongOp) -> None:
        self._stats["home_calls"] += 1
        try:
            outcome = await asyncio.wait_for(self._home(op), timeout=self.home_timeout_s)
        except _HOME_ERRORS as err:
            self._stats["home_failures"] += 1
            outcome = StrongOutcome("unreachable", reason=f"{type(err).__name__}: {err}")
        self._feed(StrongResult(op.op_id, outcome, _now_ms()))

    async def _read_home(self, key: str, now_ms: int) -> StrongRecord | None:
        try:
            entry = await self._kv.get(_home_key(key))
        except nats.js.errors.KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        value, metadata, expires_at_ms = _HOME_VALUE.decode(entry.value)
        if expires_at_ms and expires_at_ms <= now_ms:
            return None
        return StrongRecord(key, value, int(entry.revision), metadata, expires_at_ms)

    async def _home(self, op: StrongOp) -> StrongOutcome:
        kv = self._kv
        if op.kind == "get":
            return StrongOutcome("ok", record=await self._read_home(op.key, op.now_ms))
        if op.kind == "list":
            return await self._home_list(op)
        hkey = _home_key(op.key)
        try:
            if op.kind == "delete":
                return await self._home_delete(op, hkey)
            body = _ENC.encode((op.value, op.metadata, op.expires_at_ms))
            if op.if_revision is None:
                revision = await kv.put(hkey, body)
            elif op.if_revision == 0:
                revision = await kv.create(hkey, body)
            else:
                revision = await kv.update(hkey, body, last=op.if_revision)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyValueError):
            current = await self._read_home(op.key, op.now_ms)
            revision_now = current.revision if current is not None else 0
            return StrongOutcome("conflict", record=current, revision=revision_now)
        record = StrongRecord(op.key, op.value, int(revision), op.metadata, op.expires_at_ms)
        return StrongOutcome("ok", record=record, revision=int(revision))

    async def _home_delete(self, op: StrongOp, hkey: str) -> StrongOutcome:
        current = await self._read_home(op.key, op.now_ms)
        current_revision = current.revision if current is not None else 0
        if op.if_revision is not None and op.if_revision != current_revision:
            return StrongOutcome("conflict", record=current, revision=current_revision)
        if current is None:
            return StrongOutcome("ok", revision=0)
        await self._kv.delete(hkey, last=current_revision)
        return StrongOutcome("ok", revision=0)

    async def _home_list(self, op: StrongOp) -> StrongOutcome:
        try:
            hkeys = await self._kv.keys()
        except nats.js.errors.NoKeysError:
            hkeys = []
        keys = sorted(k for k in map(_user_key, hkeys) if k.startswith(op.prefix) and k > op.cursor)
        records: list[StrongRecord] = []
        for key in keys:
            record = await self._read_home(key, op.now_ms)
            if record is not None:
                records.append(record)
            if len(records) >= op.limit:
                break
        cursor = records[-1].key if len(records) >= op.limit else ""
        return StrongOutcome("ok", records=tuple(records), cursor=cursor)

    def statistics(self) -> DriverStatistics:
        return DriverStatistics(self.namespace, self.replica.id, **self._stats)
