"""Durable objects on a node: finding an object's home, serving it there, its storage and alarms.

The rules are :mod:`edgefn.edge.durable_policy`; this is the driver (docs/design/0027). A
worker's ``env.ROOM.get(id).fetch(...)`` arrives as a ``FetchCall`` with ``durable`` set; the
node reads the object's record in the strong KV and

- holds its live lease → serves it here: one request at a time per object (an ``asyncio.Lock``,
  at most ``MAX_QUEUE`` waiting), renewing the lease first when less than ``RENEW_BELOW_MS`` is
  left, in a worker of the function (an ``Invoke`` with ``durable`` set);
- another location holds it → forwards the request there over the bus (``remote``: request/reply
  on ``edgefn.do.<location>``, node to node); if that location does not answer (dead, cut off),
  waits for its lease to end and claims the object;
- nobody does (or the lease ran out) → claims it by compare-and-set (``location_hint``: asks that
  location to claim it first) and serves it here.

Storage calls of the invocation (``KVCall`` with binding ``=do``) are applied to the cached record
and written back with compare-and-set on its revision before they are acknowledged; a refused
write means another location took the object over: the home drops it and the call fails
(``fenced``). A home renews its lease while it is busy or has an alarm set, and releases an object
idle for ``IDLE_MS``. Alarms run at their time on the home, one at a time with requests; the next
home of an object whose home died runs an alarm that is due when it claims the object.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from edgefn.edge import durable_policy as dp
from edgefn.edge._clock import wall_ms
from edgefn.edge.cron import ClaimStoreError as RecordStoreError
from edgefn.edge.functions import ActiveVersion, FunctionTable
from edgefn.edge.request_context import RequestContext
from edgefn.observe import JsonLog
from edgefn.runtime import protocol as p
from edgefn.runtime.sandbox import BACKGROUND_MAX_S, InvokeFailed, SandboxPool

__all__ = [
    "DurableObjects",
    "DurableRequest",
    "MemoryRecordStore",
    "RecordStore",
    "RecordStoreError",
    "Remote",
]

MAX_QUEUE = 256
MAX_HOMES = 10_000  # objects one node is the home of at a time (idle ones are let go)
IDLE_MS = 30_000
ROUTE_DEADLINE_S = 30.0
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
MAX_KNOWN = 10_000
MAX_HOPS = 2
ALARM_SCAN_S = 5.0  # how often a node looks for due alarms of objects nobody is the home of


class RecordStore(Protocol):
    async def read(self, key: str) -> tuple[bytes | None, int]: ...
    async def write(self, key: str, value: bytes, expected_revision: int) -> int | None: ...


@dataclass
class MemoryRecordStore:
    """An in-process store with the same compare-and-set rules (``edgefn dev``, tests)."""

    records: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    _revision: int = 0

    async def read(self, key: str) -> tuple[bytes | None, int]:
        value, revision = self.records.get(key, (None, 0))
        return value, revision

    async def write(self, key: str, value: bytes, expected_revision: int) -> int | None:
        if self.records.get(key, (b"", 0))[1] != expected_revision:
            return None
        self._revision += 1
        self.records[key] = (value, self._revision)
        return self._revision


class DurableRequest(msgspec.Struct, frozen=True):
    """One request to an object, as it travels to its home."""

    function: str
    class_name: str
    oid: str
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes
    timeout_ms: int
    hint: str = ""
    claim_only_here: bool = False  # sent to a hinted location: claim it there or refuse
    hops: int = 0  # how many nodes forwarded it: a request is forwarded at most MAX_HOPS times


class DurableReply(msgspec.Struct, frozen=True):
    status: int = 0
    headers: list[tuple[str, str]] = []
    body: bytes = b""
    error_kind: str = ""
    error_message: str = ""


# Forward a request to another location's node: its reply, or None if it did not answer.
Remote = Callable[[str, DurableRequest], Awaitable[DurableReply | None]]


@dataclass
class _Home:
    key: str
    record: dp.Record
    revision: int
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0
    last_used: float = field(default_factory=time.monotonic)
    alarm: asyncio.TimerHandle | None = None
    request: DurableRequest | None = None  # the class and id, for alarms

    def live(self, me: str, now_ms: int) -> bool:
        return dp.where(self.record, me, now_ms)[0] == "mine"


class _Lost(Exception):
    """This location is no longer the object's home (its write or renewal was refused)."""


class DurableObjects:
    """Every durable object this node is the home of, and the way to the others."""

    def __init__(
        self,
        *,
        location: str,
        table: FunctionTable,
        pool: SandboxPool,
        log: JsonLog,
        requests: dict[str, RequestContext],
        release: Callable[[str], None],
        store: RecordStore | None = None,
        remote: Remote | None = None,
    ) -> None:
        self.location = location
        self.table = table
        self.pool = pool
        self.log = log
        self.store: RecordStore = store or MemoryRecordStore()
        self.remote = remote
        self._requests = requests
        self._release = release
        self._homes: dict[str, _Home] = {}
        # Other locations' objects: key -> (home, until when that is known to hold).
        self._known: dict[str, tuple[str, int]] = {}
        # Invocation request id -> the object it runs (its storage calls name no object).
        self._running: dict[str, str] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._scanner: asyncio.Task[None] | None = None
        self.stats: dict[str, int] = {"served": 0, "forwarded": 0, "claimed": 0, "fenced": 0}

    # -- a stub's request, from a worker of this node or another node ------------------------
    async def call(self, ctx: RequestContext | None, call: p.FetchCall) -> p.FetchResult:
        """``env.ROOM.get(id).fetch(...)`` from a worker."""

        def error(kind: str, message: str) -> p.FetchResult:
            return p.FetchResult(call.id, call.fetch_id, 0, [], b"", kind, message)

        if ctx is None:
            return error("error", "durable object call outside a request")
        binding, _, rest = call.durable.partition("\n")
        oid, _, hint = rest.partition("\n")
        declared = {d.binding: d.class_name for d in ctx.manifest.durable_objects}
        if binding not in declared:
            return error("error", f"no [[durable_objects]] binding {binding!r} in edgefn.toml")
        if not dp.valid_id(oid):
            return error("error", f"{oid[:40]!r} is not a durable object id")
        req = DurableRequest(
            ctx.function, declared[binding], oid, call.method, call.url, list(call.headers),
            call.body, call.timeout_ms, hint[:63],
        )  # fmt: skip
        reply = await self.route(req)
        return p.FetchResult(
            call.id, call.fetch_id, reply.status, reply.headers, reply.body, reply.error_kind,
            reply.error_message,
        )  # fmt: skip

    async def route(self, req: DurableRequest) -> DurableReply:
        """Serve ``req`` here if this is (or becomes) the object's home, else where it is."""
        key = dp.record_key(req.function, req.class_name, req.oid)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ROUTE_DEADLINE_S
        tried_hint = req.claim_only_here
        while loop.time() < deadline:
            home = self._homes.get(key)
            if home is not None and home.live(self.location, wall_ms()):
                try:
                    return await self._serve(home, req)
                except _Lost:
                    continue
            known = self._known.get(key)
            if known is not None and known[1] > wall_ms() and not req.claim_only_here:
                got = await self._forward(known[0], req)
                if got is not None and got.error_kind != "moved":
                    return got
                self._known.pop(key, None)
            try:
                raw, revision = await self.store.read(key)
                record = dp.decode_record(raw) if raw is not None else None
            except RecordStoreError as err:
                return DurableReply(error_kind="error", error_message=f"object store: {err}")
            except ValueError as err:
                return DurableReply(error_kind="error", error_message=f"{key}: {err}")
            state, holder = dp.where(record, self.location, wall_ms())
            if state == "held":
                if req.claim_only_here:
                    return DurableReply(error_kind="moved", error_message=holder)
                assert record is not None
                # Where the object is, until its lease as read ends (one store read saved per
                # request while the home keeps it).
                self._known[key] = (holder, record.lease_until_ms)
                while len(self._known) > MAX_KNOWN:
                    del self._known[next(iter(self._known))]
                got = await self._forward(holder, req)
                if got is not None and got.error_kind != "moved":
                    return got
                self._known.pop(key, None)
                assert record is not None
                # The home did not answer: wait (bounded) for its lease to end, then claim.
                await asyncio.sleep(
                    min(max(0.05, (record.lease_until_ms - wall_ms()) / 1000 + 0.05), 1.0)
                )
                continue
            if state == "free" and req.hint and req.hint != self.location and not tried_hint:
                tried_hint = True
                got = await self._forward(
                    req.hint, msgspec.structs.replace(req, claim_only_here=True)
                )
                if got is not None and got.error_kind != "moved":
                    return got
                continue
            # Free, or ours on the store (a record this node wrote before a restart): claim it.
            if len(self._homes) >= MAX_HOMES:
                return DurableReply(
                    503,
                    [("retry-after", "1"), ("content-type", "application/json")],
                    b'{"error":"too_many_objects","message":"this location is the home of as '
                    b'many durable objects as it may be"}',
                )
            new = dp.claimed(record, self.location, wall_ms())
            try:
                written = await self.store.write(key, dp.encode_record(new), revision)
            except RecordStoreError as err:
                return DurableReply(error_kind="error", error_message=f"object store: {err}")
            if written is None:
                continue  # another location claimed it first: look again
            self.stats["claimed"] += 1
            home = _Home(key, new, written, request=req)
            self._homes[key] = home
            self.log.emit("durable", event="claimed", key=key, epoch=new.epoch)
            self._start_renewer()
            self._arm_alarm(home)
            try:
                return await self._serve(home, req)
            except _Lost:
                continue
        return DurableReply(
            error_kind="timeout",
            error_message=f"durable object {req.oid} found no home within {ROUTE_DEADLINE_S:g} s",
        )

    async def _forward(self, location: str, req: DurableRequest) -> DurableReply | None:
        if self.remote is None:
            return None
        if req.hops >= MAX_HOPS:  # the object moved while the request travelled: the caller retries
            return DurableReply(
                error_kind="error",
                error_message=f"durable object {req.oid} moved while the request was forwarded; retry",
            )
        self.stats["forwarded"] += 1
        return await self.remote(location, msgspec.structs.replace(req, hops=req.hops + 1))

    async def _serve(self, home: _Home, req: DurableRequest) -> DurableReply:
        if home.waiting >= MAX_QUEUE:
            return DurableReply(503, [("retry-after", "1")], b'{"error":"object_overloaded"}')
        home.waiting += 1
        try:
            async with home.lock:
                try:
                    await self._keep(home)
                except RecordStoreError as err:
                    return DurableReply(error_kind="error", error_message=f"object store: {err}")
                home.last_used = time.monotonic()
                self.stats["served"] += 1
                return await self._run(home, req)
        finally:
            home.waiting -= 1

    async def _keep(self, home: _Home) -> None:
        """Before serving: still the home, with enough lease left (renewed if not)."""
        now = wall_ms()
        if not home.live(self.location, now):
            self._drop(home, "lease ended")
            raise _Lost
        if home.record.lease_until_ms - now < dp.RENEW_BELOW_MS:
            await self._write(home, dp.renewed(home.record, now))

    async def _write(self, home: _Home, record: dp.Record) -> None:
        written = await self.store.write(home.key, dp.encode_record(record), home.revision)
        if written is None:
            self.stats["fenced"] += 1
            self._drop(home, "fenced: another location took the object over")
            raise _Lost
        home.record, home.revision = record, written

    def _drop(self, home: _Home, why: str) -> None:
        if self._homes.get(home.key) is home:
            del self._homes[home.key]
            if home.alarm is not None:
                home.alarm.cancel()
            self.log.emit("durable", event="dropped", key=home.key, reason=why)

    # -- running an object in a worker --------------------------------------------------------
    def _version(self, req: DurableRequest) -> ActiveVersion | None:
        fn = self.table.functions.get(req.function)
        if fn is None:
            return None
        for version in sorted(fn.versions, key=lambda v: -v.weight):
            if any(d.class_name == req.class_name for d in version.manifest.durable_objects):
                return version
        return None

    async def _run(self, home: _Home, req: DurableRequest) -> DurableReply:
        active = self._version(req)
        if active is None:
            return DurableReply(
                error_kind="error",
                error_message=f"{req.function} with class {req.class_name} is not active at "
                f"{self.location}",
            )
        spec, manifest = active.spec, active.manifest
        rid = os.urandom(8).hex()
        msg = p.Invoke(
            0, req.method, req.url, req.headers, req.body, self.location, "", rid,
            durable=f"{req.class_name}\n{req.oid}",
        )  # fmt: skip
        self._requests[rid] = RequestContext(
            rid, spec.function, active.version, spec.key, manifest, list(req.headers)
        )
        self._running[rid] = home.key
        timeout = min(req.timeout_ms, manifest.limits.timeout_ms)
        try:
            inv = await self.pool.invoke(spec.key, msg, timeout_ms=timeout)
        except InvokeFailed as err:
            self._requests.pop(rid, None)
            self._running.pop(rid, None)
            return DurableReply(error_kind="error", error_message=f"{err.kind}: {err.message}")
        try:
            status, headers = await inv.start()
            body = bytearray()
            async for chunk in inv.chunks():
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    return DurableReply(
                        error_kind="too_large",
                        error_message=f"the object's response is over {MAX_RESPONSE_BYTES} bytes",
                    )
            return DurableReply(status, list(headers), bytes(body))
        except InvokeFailed as err:
            return DurableReply(error_kind="error", error_message=f"{err.kind}: {err.message}")
        finally:
            inv.finish()
            self._running.pop(rid, None)
            if inv.background:
                asyncio.get_running_loop().call_later(BACKGROUND_MAX_S, self._release, rid)
            else:
                self._release(rid)

    # -- storage calls from the invocation ----------------------------------------------------
    async def storage(self, request_id: str, call: p.KVCall) -> p.KVResult:
        def fail(kind: str, message: str) -> p.KVResult:
            return p.KVResult(call.id, call.call_id, False, None, kind, message)

        key = self._running.get(request_id)
        home = self._homes.get(key) if key is not None else None
        if home is None or not home.live(self.location, wall_ms()):
            return fail("error", "fenced: this object moved to another location; retry the request")
        try:
            new, result = dp.apply_op(home.record, call.op, call.args)
        except dp.StorageError as err:
            return fail(err.kv_kind, err.message)
        if new is not None:
            try:
                await self._write(home, new)
            except _Lost:
                return fail("error", "fenced: another location took this object over")
            except RecordStoreError as err:
                return fail("outcome_unknown", f"the object's store did not answer: {err}")
            if call.op in ("set_alarm", "delete_alarm"):
                self._arm_alarm(home)
                await self._index(home)
        return p.KVResult(call.id, call.call_id, True, result)

    # -- alarms and leases --------------------------------------------------------------------
    def _arm_alarm(self, home: _Home) -> None:
        if home.alarm is not None:
            home.alarm.cancel()
            home.alarm = None
        due = home.record.alarm_ms
        if not due or home.request is None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, (due - wall_ms()) / 1000)
        home.alarm = loop.call_later(delay, lambda: loop.create_task(self._ring(home, due)))

    async def _ring(self, home: _Home, due: int) -> None:
        assert home.request is not None
        alarm = msgspec.structs.replace(
            home.request, method="ALARM", url="http://durable-object/__alarm", headers=[], body=b""
        )
        try:
            async with home.lock:
                if self._homes.get(home.key) is not home or home.record.alarm_ms != due:
                    return
                await self._keep(home)
                reply = await self._run(home, alarm)
                if not reply.error_kind and home.record.alarm_ms == due:
                    await self._write(home, msgspec.structs.replace(home.record, alarm_ms=0))
                    await self._index(home)
                elif reply.error_kind:  # retried in a second, like Workers' alarms
                    self.log.emit(
                        "durable", event="alarm_failed", key=home.key, error=reply.error_message
                    )
                    loop = asyncio.get_running_loop()
                    home.alarm = loop.call_later(
                        1.0, lambda: loop.create_task(self._ring(home, due))
                    )
        except (_Lost, RecordStoreError):
            return

    async def _index(self, home: _Home) -> None:
        """Record the object's alarm (or its absence) in its function's alarm index."""
        if home.request is not None:
            req = home.request
            await self._index_as(req.function, req.class_name, req.oid, home.record.alarm_ms)

    async def _index_as(self, function: str, class_name: str, oid: str, due_ms: int) -> None:
        key = dp.alarm_index_key(function)
        member = dp.alarm_member(class_name, oid)
        for _ in range(8):  # compare-and-set against other homes of the same function
            try:
                raw, revision = await self.store.read(key)
                index = dp.decode_index(raw)
                if index.get(member, 0) == due_ms:
                    return
                new = dp.indexed(index, member, due_ms)
                if await self.store.write(key, dp.encode_index(new), revision) is not None:
                    return
            except (RecordStoreError, ValueError, dp.StorageError) as err:
                self.log.emit("durable", event="alarm_index_failed", key=key, error=str(err))
                return
        self.log.emit("durable", event="alarm_index_failed", key=key, error="contended")

    def start(self) -> None:
        """Look for due alarms of objects whose home is gone (every ``ALARM_SCAN_S``)."""
        if self._scanner is None:
            self._scanner = asyncio.get_running_loop().create_task(self._scan_loop())

    async def _scan_loop(self) -> None:
        while True:
            await asyncio.sleep(ALARM_SCAN_S)
            with contextlib.suppress(RecordStoreError, ValueError):
                await self.scan_alarms()

    async def scan_alarms(self) -> int:
        """One look: claim each object with a due alarm and no live home (its alarm then rings
        here). Returns how many were woken."""
        woken = 0
        for fn in list(self.table.functions.values()):
            classes = {d.class_name for v in fn.versions for d in v.manifest.durable_objects}
            if not classes:
                continue
            raw, _ = await self.store.read(dp.alarm_index_key(fn.name))
            now = wall_ms()
            for member, due in dp.decode_index(raw).items():
                class_name, _, oid = member.partition("\n")
                key = dp.record_key(fn.name, class_name, oid)
                if due > now or key in self._homes or class_name not in classes:
                    continue
                if await self._wake(fn.name, class_name, oid):
                    woken += 1
        return woken

    async def _wake(self, function: str, class_name: str, oid: str) -> bool:
        key = dp.record_key(function, class_name, oid)
        raw, revision = await self.store.read(key)
        record = dp.decode_record(raw) if raw is not None else None
        if record is None or (record.alarm_ms != 0 and record.alarm_ms > wall_ms()):
            # Gone, or its alarm moved later: the index is behind; bring it up to date.
            await self._index_as(function, class_name, oid, record.alarm_ms if record else 0)
            return False
        if not record.alarm_ms:
            await self._index_as(function, class_name, oid, 0)
            return False
        if dp.where(record, self.location, wall_ms())[0] != "free":
            return False
        if len(self._homes) >= MAX_HOMES:
            return False
        new = dp.claimed(record, self.location, wall_ms())
        written = await self.store.write(key, dp.encode_record(new), revision)
        if written is None:
            return False
        req = DurableRequest(
            function, class_name, oid, "ALARM", "http://durable-object/__alarm", [], b"",
            dp.LEASE_MS,
        )  # fmt: skip
        home = _Home(key, new, written, request=req)
        self._homes[key] = home
        self.stats["claimed"] += 1
        self.log.emit("durable", event="woken_for_alarm", key=key, epoch=new.epoch)
        self._start_renewer()
        self._arm_alarm(home)
        return True

    def _start_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_loop())

    async def _renew_loop(self) -> None:
        while self._homes:
            await asyncio.sleep(dp.LEASE_MS / 4000)
            for home in list(self._homes.values()):
                idle = time.monotonic() - home.last_used > IDLE_MS / 1000
                if home.lock.locked():
                    continue  # the request renews before it runs
                async with home.lock:
                    if self._homes.get(home.key) is not home:
                        continue
                    with contextlib.suppress(_Lost, RecordStoreError):
                        if idle and not home.record.alarm_ms:
                            await self._write(home, dp.released(home.record))
                            self._drop(home, "idle")
                        elif home.record.lease_until_ms - wall_ms() < dp.RENEW_BELOW_MS:
                            await self._write(home, dp.renewed(home.record, wall_ms()))

    async def stop(self) -> None:
        """Let go of every object (another location may claim them at once)."""
        for task in (self._renewer, self._scanner):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        homes = list(self._homes.values())

        async def release(home: _Home) -> None:
            with contextlib.suppress(_Lost, RecordStoreError):
                await self._write(home, dp.released(home.record))

        with contextlib.suppress(TimeoutError):  # bounded: the rest lapse with their leases
            await asyncio.wait_for(asyncio.gather(*(release(h) for h in homes)), 3.0)
        for home in homes:
            self._drop(home, "stopping")
        close = getattr(self.store, "close", None)
        if close is not None:
            await close()

    def statistics(self) -> dict[str, Any]:
        return {**self.stats, "homes": len(self._homes)}
