"""The real driver: one :class:`Replica` + :class:`SqliteStore` connected to NATS/JetStream.

Subjects and JetStream objects of namespace ``ns`` (key and replica names are used verbatim, so
they must be NATS subject tokens; the home keys are base64url-encoded because JetStream KV keys
allow only ``[-/_=.a-zA-Z0-9]``):

- stream ``EDGEFN_KV_<ns>`` on ``edgefn.kv.<ns>.*``: every eventual/session/causal write, published
  by its origin on ``edgefn.kv.<ns>.<origin>``. Each replica consumes it with its own durable
  consumer (``kv-<replica>``, manual ack after the write is applied and persisted), so writes
  replay after partitions and restarts from where the replica left off. A message whose sender or
  entry origin is not the subject's origin token is dropped (NATS permissions let a node publish
  only its own origin; see edgefn.bus.permissions).
- core subjects ``edgefn.kvctl.<ns>.<replica>.<sender>`` (point-to-point: replay requests and
  answers, Merkle digests, repair requests/responses) and ``edgefn.kvctl.<ns>._all.<sender>``
  (announcements); a message whose ``sender`` differs from the subject's sender is dropped.
- KV bucket ``edgefn-kvhome``, keys ``<ns>.<base64url key>``: the home of strong operations of every
  namespace. ``put`` with ``if_revision`` is ``update(key, value, last=revision)`` (compare-and-set;
  the revision is the fencing token), ``if_revision=0`` is ``create``. A timeout or lost connection
  is ``unreachable``.

- KV bucket ``edgefn-kv-members``, key ``<ns>.<replica>``: every replica registers itself there
  (an empty value); the driver reads the keys at start and every 3 s (backing off to 48 s while
  they stay the same), learns senders of
  announcements as they arrive, and remembers all of them in the store (``MembersChanged``). A
  replica that leaves (:meth:`KVDriver.leave`, see ``membership.py``) overwrites its key with a
  *leave record*, msgpack ``[final_seq, left_hlc]``, so replicas that were away learn of it too
  (``PeerLeft``); a re-join registers again. The store's member list keeps every name ever seen:
  a replica restarted while cut off counts a departed one as a member until it reads the bucket,
  which only makes it wait longer before collecting tombstones.

Connecting happens in the background: ``start`` recovers from the store and the replica serves
local reads and eventual writes at once, even when NATS cannot be reached (a node restarted during
a partition); a strong operation waits up to ``connect_wait_s`` (default 2 s) for the home
connection, then fails with ``KVUnavailable`` (nothing was done). Every
JetStream context comes from :func:`edgefn.bus.jetstream.jetstream`, so the driver works through a
regional hub (JetStream domain ``edgefn``) as well as at the core.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DiscardPolicy, StorageType, StreamConfig

from edgefn.bus.jetstream import connect, ensure_kv, jetstream
from edgefn.bus.subjects import (
    KV_HOME_BUCKET,
    KV_MEMBERS_BUCKET,
    kv_control_subject,
    kv_replication_subject,
)
from edgefn.errors import EdgefnError, KVError, KVSessionBehind, KVUnavailable
from edgefn.state.events import (
    AskHome,
    Broadcast,
    Event,
    Failed,
    Get,
    GetDone,
    Instruction,
    Item,
    LeaveBlocked,
    LeaveCancelled,
    LeaveRequested,
    Left,
    MembersChanged,
    PeerLeft,
    Persist,
    Reply,
    Result,
    ScheduleTick,
    SendTo,
    StrongResult,
    Tick,
    received,
)
from edgefn.state.machine import Replica
from edgefn.state.messages import (
    Announce,
    Leave,
    Message,
    Replication,
    SessionRead,
    SessionReadAnswer,
    StrongOp,
    StrongOutcome,
    StrongRecord,
    decode_answer,
    decode_message,
    encode_answer,
    encode_message,
)
from edgefn.state.operations import ReplicaOperations
from edgefn.state.records import Consistency
from edgefn.state.store import SqliteStore

__all__ = [
    "HOME_WAIT_S",
    "MEMBERS_BUCKET",
    "DriverStatistics",
    "KVDriver",
    "decode_home_value",
    "encode_home_value",
    "home_key",
]

MEMBERS_BUCKET = KV_MEMBERS_BUCKET
# Values up to 1 MiB plus key, metadata and framing.
_HOME_VALUE_BYTES_MAX = 2 * 1024 * 1024
# JetStream reserves max_bytes of every stream up front from the core's file store (2 GiB on a
# planet), so these bounds decide how many namespaces fit: (64 + 32) MiB each.
_STREAM_BYTES_MAX = 64 * 1024 * 1024
_HOME_BYTES_MAX = 32 * 1024 * 1024
_MEMBERS_BYTES_MAX = 1024 * 1024
_MEMBERS_POLL_S = 3.0
# While the member set stays the same the poll backs off, doubling up to this: each poll is a
# JetStream consumer made and deleted at the core plus one message per member, which at 50
# replicas was ~900 messages/s of an idle planet. Members are learned from their
# announcements as well; the poll is the backstop for leaves a replica missed while away.
_MEMBERS_POLL_MAX_S = 48.0
_SETUP_RETRY_S = 0.5
_STOP_WAIT_S = 3.0
_JS_TIMEOUT_S = 10.0
# How long a strong operation waits for the home connection (start-up, deploy, revive, reconnect)
# before it answers KVUnavailable: the default of ``edgefn node --kv-wait-ms``.
HOME_WAIT_S = 2.0
_RECONNECT_POLL_S = 0.05
# A home call answers this long before the machine's deadline, and gets at least _CALL_MIN_S.
_ANSWER_MARGIN_S = 0.1
_CALL_MIN_S = 0.05
# A session read this replica cannot catch up for is asked of at most this many writers' replicas,
# each bounded by FORWARD_TIMEOUT_S.
FORWARD_TIMEOUT_S = 1.0
_FORWARD_ORIGINS_MAX = 2

_HOME_VALUE = msgspec.msgpack.Decoder(tuple[bytes, bytes, int])
_LEAVE_RECORD = msgspec.msgpack.Decoder(tuple[int, int])
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
    reads_forwarded: int
    forward_failures: int
    reads_answered: int
    connected: bool
    members: tuple[str, ...]
    last_setup_error: str
    departed: tuple[str, ...] = ()
    # Empty, or why the replica cannot leave yet (it was asked to: no function binds it here).
    leave_blocked: str = ""
    left: bool = False


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _probe(servers: str | list[str]) -> None:
    url = servers if isinstance(servers, str) else servers[0]
    host, _, port = url.rsplit("/", 1)[-1].rpartition(":")
    _reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host or "127.0.0.1", int(port or 4222)), timeout=2.0
    )
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _leave_record(name: str, value: bytes) -> Leave | None:
    """The leave record in a members-bucket value; None for a registration (empty) or a value
    this version cannot read (counted as registered: a wider set is the safe side)."""
    if not value:
        return None
    try:
        final_seq, left_hlc = _LEAVE_RECORD.decode(value)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return Leave(name, final_seq, left_hlc)


def home_key(namespace: str, key: str) -> str:
    """The key of ``namespace``'s strong ``key`` in ``edgefn-kvhome``."""
    encoded = base64.urlsafe_b64encode(key.encode("utf-8")).rstrip(b"=").decode("ascii") or "_"
    return f"{namespace}.{encoded}"


def encode_home_value(value: bytes, metadata: bytes, expires_at_ms: int) -> bytes:
    """A strong record as ``edgefn-kvhome`` stores it (queue commits write it too)."""
    return _ENC.encode((value, metadata, expires_at_ms))


def decode_home_value(data: bytes) -> tuple[bytes, bytes, int]:
    """(value, metadata, expires_at_ms); raises ``msgspec.DecodeError`` on a foreign value."""
    return _HOME_VALUE.decode(data)


def _user_key(hkey: str) -> str:
    encoded = hkey.rsplit(".", 1)[-1]
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")


class KVDriver(ReplicaOperations):
    """Runs one replica of one namespace against a NATS server with JetStream."""

    # Leaving (see leave()); class-level defaults, each driver assigns its own.
    _left: Left | None = None
    _leave_blocked = ""

    def __init__(
        self,
        *,
        namespace: str,
        replica: Replica,
        store: SqliteStore,
        servers: str | list[str],
        home_timeout_s: float = 2.0,
        ack_wait_s: float = 5.0,
        connect_wait_s: float = HOME_WAIT_S,
        forward_timeout_s: float = FORWARD_TIMEOUT_S,
        clock_skew_ms: int = 0,
    ) -> None:
        self.namespace = namespace
        self.replica = replica
        self.store = store
        self.servers = servers
        self.home_timeout_s = home_timeout_s
        self.ack_wait_s = ack_wait_s
        self.connect_wait_s = connect_wait_s
        self.forward_timeout_s = forward_timeout_s
        # Added to the wall clock this replica's HLC reads: 0 but in chaos runs, where a node is
        # restarted with its clock off (`edgefn net skew`) to exercise the HLC under skew.
        self.clock_skew_ms = clock_skew_ms
        self._ready = asyncio.Event()
        self._last_setup_error = ""
        self._members_kv: Any = None
        self._nc: NATS | None = None
        self._js: Any = None
        self._kv: Any = None
        self._futures: dict[int, asyncio.Future[Result]] = {}
        self._op_ids = itertools.count(1)
        self._tick_at_ms: int | None = None
        self._tick_wakeup = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stats = dict.fromkeys(
            (
                "published",
                "publish_failures",
                "consumed",
                "home_calls",
                "home_failures",
                "reads_forwarded",
                "forward_failures",
                "reads_answered",
            ),
            0,
        )

    def _now_ms(self) -> int:
        return _now_ms() + self.clock_skew_ms

    # ------------------------------------------------------------------ lifecycle

    async def start(self, *, wait_connected: bool = True, timeout_s: float = 10.0) -> None:
        """Recover from the store, then connect and subscribe (in the background).

        With ``wait_connected`` wait until subscriptions are in place (raises
        :class:`KVUnavailable` after ``timeout_s``; the driver keeps trying in the background).
        """
        self._feed(self.store.recover(self._now_ms()))
        self._learn_members((self.replica.id, *self.store.members()))
        self._spawn(self._ticker())
        self._spawn(self._setup_loop())
        self._feed(Tick(self._now_ms()))
        if wait_connected:
            await self.wait_connected(timeout_s=timeout_s)

    async def wait_connected(self, *, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout=timeout_s)
        except TimeoutError:
            raise KVUnavailable(
                f"KV namespace {self.namespace!r} at {self.replica.id}: not connected to NATS at "
                f"{self.servers} within {timeout_s:g}s",
                hint="check that the planet's core and this location's hub are running",
            ) from None

    @property
    def connected(self) -> bool:
        return self._ready.is_set() and self._nc is not None and self._nc.is_connected

    async def _setup_loop(self) -> None:
        while True:
            try:
                await self._setup()
                break
            except (*_HOME_ERRORS, EdgefnError) as err:
                # The core or hub is unreachable: keep serving locally and try again.
                self._last_setup_error = f"{type(err).__name__}: {err}"
                if self._nc is not None:
                    with contextlib.suppress(*_HOME_ERRORS):
                        await self._nc.close()
                    self._nc = None
                await asyncio.sleep(_SETUP_RETRY_S)
        self._ready.set()
        self._spawn(self._members_loop())

    async def _setup(self) -> None:
        ns, me = self.namespace, self.replica.id
        # Probe the first server with a plain (cancellable) TCP connect before handing over to
        # nats-py, whose connect loop may swallow a cancellation while the server is down.
        await _probe(self.servers)
        self._nc = await connect(
            self.servers, name=f"kv-{ns}-{me}", reconnect_time_wait_s=0.2, connect_deadline_s=5
        )
        # Setup calls may queue behind other nodes' at a busy core; home operations are bounded
        # separately by home_timeout_s (in _ask_home).
        self._js = jetstream(self._nc, timeout_s=_JS_TIMEOUT_S)
        stream = f"EDGEFN_KV_{ns}"
        config = StreamConfig(
            name=stream,
            subjects=[kv_replication_subject(ns, "*")],
            storage=StorageType.FILE,
            max_bytes=_STREAM_BYTES_MAX,
            discard=DiscardPolicy.OLD,
        )
        with contextlib.suppress(nats.js.errors.BadRequestError):
            await self._js.add_stream(config)
        # replicas=None: the core created both buckets with its own replica count (3 on an HA
        # core); a bare nats-server without a core (tests) gets them with 1.
        self._kv = await ensure_kv(
            self._js,
            KV_HOME_BUCKET,
            replicas=None,
            max_value_bytes=_HOME_VALUE_BYTES_MAX,
            max_bytes=_HOME_BYTES_MAX,
        )
        self._members_kv = await ensure_kv(
            self._js,
            MEMBERS_BUCKET,
            replicas=None,
            max_value_bytes=1024,
            max_bytes=_MEMBERS_BYTES_MAX,
        )
        await self._members_kv.put(f"{ns}.{me}", b"")
        await self._nc.subscribe(kv_control_subject(ns, me, "*"), cb=self._on_control)
        await self._nc.subscribe(kv_control_subject(ns, "_all", "*"), cb=self._on_control)
        await self._js.subscribe(
            kv_replication_subject(ns, "*"),
            durable=f"kv-{me}",
            stream=stream,
            cb=self._on_stream,
            manual_ack=True,
            config=ConsumerConfig(ack_wait=self.ack_wait_s, max_ack_pending=4096),
        )
        await self._refresh_members()

    async def _members_loop(self) -> None:
        gap = _MEMBERS_POLL_S
        seen = self._member_set()
        while True:
            await asyncio.sleep(gap)
            with contextlib.suppress(*_HOME_ERRORS):
                await self._refresh_members()
            now = self._member_set()
            gap = _MEMBERS_POLL_S if now != seen else min(_MEMBERS_POLL_MAX_S, gap * 2)
            seen = now

    def _member_set(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The replicas and the departed ones, to tell whether a poll found anything new."""
        return self.replica.config.replicas, tuple(sorted(self.replica.departed))

    async def _refresh_members(self) -> None:
        """Registered replicas join the set, leave records remove (or keep out) their writer.

        A watch on ``<namespace>.>`` (see :meth:`_home_keys` for why not ``keys()``) that also
        delivers the values, which say registered (empty) or left (a leave record).
        """
        prefix = f"{self.namespace}."
        watcher = await self._members_kv.watch(f"{prefix}>", ignore_deletes=True)
        records: dict[str, bytes] = {}
        try:
            async for entry in watcher:
                if entry is None:  # every current key delivered
                    break
                records[entry.key[len(prefix) :]] = entry.value or b""
        finally:
            await watcher.stop()
        self._learn_members(tuple(n for n, v in records.items() if not _leave_record(n, v)))
        for name, value in sorted(records.items()):
            record = _leave_record(name, value)
            if record is not None:
                self._feed(PeerLeft(record, self._now_ms()))

    def _learn_members(self, names: tuple[str, ...]) -> None:
        new = tuple(n for n in names if n and n not in self.replica.config.replicas)
        if names:
            self.store.add_members(tuple(set(names)))
        if new:
            self._feed(MembersChanged(new, self._now_ms()))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            # Bounded: nats-py's first connect can ignore a cancellation for a while.
            await asyncio.wait(list(self._tasks), timeout=_STOP_WAIT_S)
        if self._nc is not None and self._nc.is_connected:
            try:
                await asyncio.wait_for(self._nc.drain(), timeout=2.0)
            except _HOME_ERRORS:
                # Draining needs the server; when it is gone, just close the connection.
                with contextlib.suppress(*_HOME_ERRORS):
                    await self._nc.close()
        elif self._nc is not None:
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
        try:
            return await super().get(key, consistency=consistency, session=session)
        except KVSessionBehind as err:
            # Read-your-writes wherever the user lands: ask a replica that has the writes.
            return await self._forward_read(key, consistency, session, err)

    async def _forward_read(
        self, key: str, consistency: Consistency, session: str, behind: KVSessionBehind
    ) -> GetDone:
        """Serve a session/causal read this replica could not catch up for at a writer's replica.

        The origins the token is missing are asked in turn (most missing writes first) over NATS
        request/reply, each bounded by ``forward_timeout_s``; the first that covers the token
        answers. If none can, the original :class:`KVSessionBehind` stands (nothing was done).
        """
        origins = sorted(behind.missing, key=lambda o: (-behind.missing[o], o))
        reasons = []
        for origin in origins[:_FORWARD_ORIGINS_MAX]:
            if origin == self.replica.id or not self.connected:
                continue
            assert self._nc is not None
            request = SessionRead(self.replica.id, key, session, consistency.value)
            subject = kv_control_subject(self.namespace, origin, self.replica.id)
            self._stats["reads_forwarded"] += 1
            try:
                reply = await self._nc.request(
                    subject, encode_message(request), timeout=self.forward_timeout_s
                )
                answer = decode_answer(reply.data)
            except (*_HOME_ERRORS, msgspec.DecodeError) as err:
                reasons.append(f"{origin}: {type(err).__name__}")
                continue
            if answer.sender != origin or not answer.ok:
                reasons.append(f"{origin}: {answer.reason or 'bad answer'}")
                continue
            item = Item(
                key,
                answer.value,
                answer.revision,
                answer.metadata,
                answer.expires_at_ms,
                answer.stamp,
            )
            return GetDone(item, answer.session)
        self._stats["forward_failures"] += 1
        if reasons:
            raise KVSessionBehind(
                f"{behind.message}; forwarded to {', '.join(reasons)}",
                missing=behind.missing,
                hint=behind.hint,
            ) from None
        raise behind

    async def _answer_read(self, msg: Msg, request: SessionRead) -> None:
        """Run a peer's forwarded session/causal read here and answer it (never forwarded on)."""
        try:
            level = Consistency(request.consistency)
            if level not in (Consistency.SESSION, Consistency.CAUSAL):
                raise KVError(f"forwarded reads are session or causal, not {request.consistency}")
            result = await self._call(
                lambda op: Get(op, request.key, self._now_ms(), level, request.session)
            )
            assert isinstance(result, GetDone)
            item = result.item
            answer = SessionReadAnswer(
                self.replica.id,
                True,
                item.value,
                item.revision,
                item.metadata,
                item.expires_at_ms,
                item.stamp,
                result.session,
            )
        except (KVError, ValueError) as err:
            answer = SessionReadAnswer(self.replica.id, False, reason=str(err).splitlines()[0])
        self._stats["reads_answered"] += 1
        if msg.reply:
            with contextlib.suppress(*_HOME_ERRORS):
                await msg.respond(encode_answer(answer))

    async def _call(self, make: Callable[[int], Event]) -> Result:
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
                subject = kv_control_subject(self.namespace, ins.replica, self.replica.id)
                self._spawn(self._publish(subject, ins))
            elif isinstance(ins, AskHome):
                self._spawn(self._ask_home(ins.op))
            elif isinstance(ins, ScheduleTick) and (
                self._tick_at_ms is None or ins.at_ms < self._tick_at_ms
            ):
                self._tick_at_ms = ins.at_ms
                self._tick_wakeup.set()
            elif isinstance(ins, Left):
                self._left = ins
            elif isinstance(ins, LeaveBlocked):
                self._leave_blocked = ins.reason

    async def _broadcast(self, message: Message) -> None:
        if isinstance(message, Replication):
            if not self.connected:
                # Not connected: the write stays in the replay log for the peers to fetch.
                self._stats["publish_failures"] += 1
                return
            subject = kv_replication_subject(self.namespace, self.replica.id)
            try:
                await self._js.publish(subject, encode_message(message))
                self._stats["published"] += 1
            except _HOME_ERRORS:
                # The write stays in the replay log; peers ask for it after they see our
                # announcement.
                self._stats["publish_failures"] += 1
            return
        assert isinstance(message, (Announce, Leave)), message
        subject = kv_control_subject(self.namespace, "_all", self.replica.id)
        await self._publish(subject, Broadcast(message))

    async def _publish(self, subject: str, ins: SendTo | Broadcast) -> None:
        if not self.connected:
            return  # Control messages are retried by the machine (ticks, announcements).
        assert self._nc is not None
        with contextlib.suppress(*_HOME_ERRORS):
            await self._nc.publish(subject, encode_message(ins.message))

    async def _on_control(self, msg: Msg) -> None:
        try:
            message = decode_message(msg.data)
        except msgspec.DecodeError:
            return
        sender = getattr(message, "sender", None)
        if sender == self.replica.id or sender != msg.subject.rsplit(".", 1)[-1]:
            return  # Our own, or claims a sender other than the one NATS authenticated.
        known = (*self.replica.config.replicas, *self.replica.departed)
        if isinstance(sender, str) and sender not in known and not isinstance(message, Leave):
            # A departed sender is the machine's call: it re-adds one that announces a clock
            # past its leave (a delayed old message must not bring it back).
            self._learn_members((sender,))
        if isinstance(message, SessionRead):
            if msg.subject.split(".")[-2] == self.replica.id:  # to us, not an announcement
                self._spawn(self._answer_read(msg, message))
            return
        self._feed(received(message, self._now_ms()))

    async def _on_stream(self, msg: Msg) -> None:
        try:
            message = decode_message(msg.data)
        except msgspec.DecodeError:
            await msg.term()
            return
        origin = msg.subject.rsplit(".", 1)[-1]
        if not isinstance(message, Replication) or (
            message.sender != origin or message.entry.origin != origin
        ):
            # Not a write, or one published under another origin's name: never applied.
            await msg.term()
            return
        self._stats["consumed"] += 1
        self._feed(received(message, self._now_ms()))
        # Acknowledged only after the write was applied (and persisted) or buffered.
        with contextlib.suppress(*_HOME_ERRORS):
            await msg.ack()

    async def _ticker(self) -> None:
        while True:
            now = self._now_ms()
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
        # Answer before the machine's own deadline (strong_timeout_ms), which would otherwise
        # report a write that was never sent as one whose outcome is unknown.
        budget_s = (op.now_ms + self.replica.config.strong_timeout_ms - self._now_ms()) / 1000
        budget_s -= _ANSWER_MARGIN_S
        started = asyncio.get_running_loop().time()
        if not await self._home_connected(min(self.connect_wait_s, budget_s - _CALL_MIN_S)):
            # Never sent: the operation certainly did nothing.
            self._stats["home_failures"] += 1
            reason = "not connected to the home (JetStream KV in the core)"
            self._feed(
                StrongResult(op.op_id, StrongOutcome("unreachable", reason=reason), self._now_ms())
            )
            return
        try:
            left_s = budget_s - (asyncio.get_running_loop().time() - started)
            timeout_s = max(min(self.home_timeout_s, left_s), _CALL_MIN_S)
            outcome = await asyncio.wait_for(self._home(op), timeout=timeout_s)
        except _HOME_ERRORS as err:
            # Sent (or being sent) when it failed: a write may have reached the home.
            self._stats["home_failures"] += 1
            status = "unknown" if op.kind in ("put", "delete") else "unreachable"
            outcome = StrongOutcome(status, reason=f"{type(err).__name__}: {err}")
        self._feed(StrongResult(op.op_id, outcome, self._now_ms()))

    async def _home_connected(self, wait_s: float) -> bool:
        """Whether the home can be asked, waiting up to ``wait_s`` for it.

        Right after a start, a deploy or a revive (and while nats-py reconnects) the connection is
        seconds away; a strong operation waits for it, bounded, rather than failing at once.
        """
        deadline = asyncio.get_running_loop().time() + wait_s
        while self._kv is None or not self.connected:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            if not self._ready.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ready.wait(), timeout=left)
            else:
                await asyncio.sleep(min(_RECONNECT_POLL_S, left))
        return True

    async def _read_home(self, key: str, now_ms: int) -> StrongRecord | None:
        try:
            entry = await self._kv.get(home_key(self.namespace, key))
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
        hkey = home_key(self.namespace, op.key)
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
        hkeys = await self._home_keys()
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

    async def _home_keys(self) -> list[str]:
        """This namespace's keys in the shared home bucket.

        A watch on ``<namespace>.>`` rather than ``KeyValue.keys(filters=...)``: nats-py applies
        those filters as substrings of each key after reading the whole bucket, so a subject
        wildcard never matches (and every namespace's keys would be read).
        """
        watcher = await self._kv.watch(f"{self.namespace}.>", ignore_deletes=True, meta_only=True)
        keys: list[str] = []
        try:
            async for entry in watcher:
                if entry is None:  # the watch has delivered every current key
                    break
                keys.append(entry.key)
        finally:
            await watcher.stop()
        return keys

    def statistics(self) -> DriverStatistics:
        return DriverStatistics(
            self.namespace,
            self.replica.id,
            **self._stats,
            connected=self.connected,
            members=self.replica.config.replicas,
            last_setup_error=self._last_setup_error,
            departed=tuple(sorted(self.replica.departed)),
            leave_blocked=self._leave_blocked if self.leaving else "",
            left=self._left is not None,
        )

    # ------------------------------------------------------------------ leaving

    @property
    def left(self) -> bool:
        """The replica left the namespace (it refuses operations; maybe not yet deregistered)."""
        return self._left is not None

    @property
    def leaving(self) -> bool:
        """Asked to leave and not yet gone (or gone from the machine, not yet deregistered)."""
        return self.replica.leaving or self._left is not None

    async def leave(self) -> bool:
        """Leave the namespace if that loses no write (``membership.py`` rule 1): True once the
        replica left, deregistered, deleted its stream consumer and stopped.

        False while a staying replica does not yet hold everything this one holds (the reason is
        in ``statistics().leave_blocked``; the replica keeps serving, and its announcements say
        it is leaving so the others acknowledge it), or while deregistering fails (NATS
        unreachable). Call it again later; :meth:`stay` cancels.
        """
        if self._left is None:
            self._feed(LeaveRequested(self._now_ms()))
            if self._left is None:
                return False
        if not await self._deregister(self._left):
            return False
        await self.stop()
        return True

    def stay(self) -> None:
        """The namespace is wanted here again: cancel a leave that has not happened yet."""
        if self.replica.leaving:
            self._feed(LeaveCancelled(self._now_ms()))

    async def _deregister(self, left: Left) -> bool:
        if not self.connected or self._members_kv is None:
            self._leave_blocked = "left; cannot deregister: not connected to NATS"
            return False
        ns, me = self.namespace, self.replica.id
        leave = Leave(me, left.final_seq, left.left_hlc)
        try:
            assert self._nc is not None
            # The machine broadcast this already; that task may not run before stop().
            await self._nc.publish(kv_control_subject(ns, "_all", me), encode_message(leave))
            await self._members_kv.put(f"{ns}.{me}", _ENC.encode((left.final_seq, left.left_hlc)))
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self._js.delete_consumer(f"EDGEFN_KV_{ns}", f"kv-{me}")
        except _HOME_ERRORS as err:
            self._leave_blocked = f"left; cannot deregister: {type(err).__name__}: {err}"
            return False
        return True
