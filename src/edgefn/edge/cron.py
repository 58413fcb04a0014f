"""The cron driver of a node: runs :class:`~edgefn.edge.cron_policy.CronMachine` against the home.

One task per node. Every ``SYNC_S`` (and at every time the machine asks for) it reads the
triggers of the functions active here from the function table (``[triggers] crons`` of each
active version, leased for that version's ``timeout_ms``), feeds ``Sync``/``Tick`` and carries out
the instructions: claim reads and compare-and-set writes go to the trigger's record in the home
bucket (``edgefn-kvhome``, key :func:`~edgefn.edge.cron_policy.claim_key`) through
:class:`JetStreamClaims`; ``Run`` calls the node's
:class:`~edgefn.edge.scheduled_run.ScheduledRunner`; ``Report`` becomes a ``cron`` log record.
Each I/O instruction runs as its own task (bounded: a few per trigger) whose result is fed back
as an event, so a slow home never delays another trigger's tick.

The bus connection (``cron-<location>``) is made only once some active function has a cron, so
a planet without crons pays nothing for this.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.kv import KeyValue

from edgefn.bus.errors import BusError
from edgefn.bus.jetstream import connect, jetstream
from edgefn.bus.subjects import KV_HOME_BUCKET
from edgefn.edge.cron_policy import (
    LEASE_SLACK_MS,
    ClaimRead,
    ClaimWritten,
    CronMachine,
    Event,
    Instruction,
    ReadClaim,
    Report,
    Run,
    RunFinished,
    StoreFailed,
    Sync,
    Tick,
    Trigger,
    WriteClaim,
    claim_key,
    decode_claim,
    encode_claim,
)
from edgefn.edge.functions import FunctionTable
from edgefn.edge.scheduled_run import ScheduledOutcome
from edgefn.observe import JsonLog

__all__ = ["ClaimStore", "ClaimStoreError", "CronDriver", "JetStreamClaims", "triggers_of"]

SYNC_S: Final = 2.0
# A claim read or write that takes longer has failed (retried by the machine).
STORE_TIMEOUT_S: Final = 3.0
_CONNECT_RETRY_S: Final = 2.0


class ClaimStoreError(Exception):
    """The home could not be asked, or its answer was lost."""


class ClaimStore(Protocol):
    async def read(self, key: str) -> tuple[bytes | None, int]: ...

    async def write(self, key: str, value: bytes, expected_revision: int) -> int | None:
        """The new revision, or ``None`` when the record is no longer at ``expected_revision``."""
        ...

    async def close(self) -> None: ...


class JetStreamClaims:
    """Claim records in the home bucket, on the node's own connection ``<purpose>-<location>``
    (``cron``; durable objects use one of their own, ``do``), made on first use."""

    def __init__(self, nats_urls: list[str], *, location: str, purpose: str = "cron") -> None:
        self.nats_urls = nats_urls
        self.name = f"{purpose}-{location}"
        self._nc: Client | None = None
        self._kv: KeyValue | None = None
        self._connecting: asyncio.Task[None] | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is not None and self._nc is not None and self._nc.is_connected:
            return self._kv
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
        # Wait for the connection only as long as one store call may take.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._connecting), STORE_TIMEOUT_S)
        if self._kv is None or self._nc is None or not self._nc.is_connected:
            raise ClaimStoreError("not connected to the home (JetStream KV in the core)")
        return self._kv

    async def _connect(self) -> None:
        while self._kv is None:
            try:
                if self._nc is None:
                    self._nc = await connect(self.nats_urls, name=self.name, connect_deadline_s=5)
                self._kv = await jetstream(self._nc, timeout_s=STORE_TIMEOUT_S).key_value(
                    KV_HOME_BUCKET
                )
            except (BusError, nats.errors.Error, OSError, TimeoutError):
                await asyncio.sleep(_CONNECT_RETRY_S)

    async def read(self, key: str) -> tuple[bytes | None, int]:
        kv = await self._bucket()
        try:
            entry = await asyncio.wait_for(kv.get(key), STORE_TIMEOUT_S)
        except nats.js.errors.KeyNotFoundError:
            return None, 0
        except (nats.errors.Error, OSError, TimeoutError) as err:
            raise ClaimStoreError(f"{type(err).__name__}: {err}") from None
        return entry.value, int(entry.revision or 0)

    async def write(self, key: str, value: bytes, expected_revision: int) -> int | None:
        kv = await self._bucket()
        try:
            if expected_revision == 0:
                call = kv.create(key, value)
            else:
                call = kv.update(key, value, last=expected_revision)
            return int(await asyncio.wait_for(call, STORE_TIMEOUT_S))
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyValueError):
            return None
        except (nats.errors.Error, OSError, TimeoutError) as err:
            raise ClaimStoreError(f"{type(err).__name__}: {err}") from None

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        if self._nc is not None:
            with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                await asyncio.wait_for(self._nc.close(), 2.0)


def triggers_of(
    table: FunctionTable, claim_delay: Callable[[str], int] | None = None
) -> tuple[Trigger, ...]:
    """Every (function, cron) an active version here declares, leased for the longest timeout
    among the versions that declare it; a function whose active version prefers low carbon
    waits ``claim_delay(function)`` ms after each tick before claiming it."""
    leases: dict[tuple[str, str], int] = {}
    greener: set[str] = set()
    for fn in table.functions.values():
        for v in fn.versions:
            lease = v.manifest.limits.timeout_ms + LEASE_SLACK_MS
            if v.manifest.triggers.prefer == "low_carbon":
                greener.add(fn.name)
            for cron in v.manifest.triggers.crons:
                key = (fn.name, cron)
                leases[key] = max(leases.get(key, 0), lease)
    delays = {f: claim_delay(f) for f in greener} if claim_delay is not None else {}
    return tuple(Trigger(f, c, lease, delays.get(f, 0)) for (f, c), lease in sorted(leases.items()))


Runner = Callable[..., Awaitable[ScheduledOutcome]]


class CronDriver:
    """``await start()`` / ``await stop()``; ``store`` None makes a :class:`JetStreamClaims`."""

    def __init__(
        self,
        *,
        location: str,
        table: FunctionTable,
        run: Runner,
        log: JsonLog,
        nats_urls: list[str],
        store: ClaimStore | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        claim_delay: Callable[[str], int] | None = None,
    ) -> None:
        self.location = location
        self._claim_delay = claim_delay
        self.table = table
        self._run = run
        self.log = log
        self._store: ClaimStore | None = store
        self._nats_urls = nats_urls
        self._clock_ms = clock_ms
        self.machine = CronMachine(holder=f"{location}/{os.urandom(4).hex()}")
        self._task: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="cron")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._jobs) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._store is not None:
            await self._store.close()

    async def _loop(self) -> None:
        while True:
            triggers = triggers_of(self.table, self._claim_delay)
            if triggers or self.machine.triggers:
                self._feed(Sync(triggers, self._clock_ms()))
            wake_ms = self.machine.wake_at_ms()
            sleep_s = SYNC_S
            if wake_ms is not None:
                sleep_s = min(SYNC_S, max(0.0, (wake_ms - self._clock_ms()) / 1000))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), sleep_s)
            self._feed(Tick(self._clock_ms()))

    def _feed(self, event: Event) -> None:
        for ins in self.machine.handle(event):
            self._execute(ins)
        self._wake.set()  # the machine's next wake time may have moved earlier

    def _execute(self, ins: Instruction) -> None:
        if isinstance(ins, Report):
            job = ins.job
            self.log.emit(
                "cron",
                event=ins.kind,
                function=job.function,
                cron=job.cron,
                scheduled_time=job.tick_ms,
                detail=ins.detail or None,
            )
            return
        task = asyncio.get_running_loop().create_task(self._io(ins))
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    def _claims(self) -> ClaimStore:
        if self._store is None:
            self._store = JetStreamClaims(self._nats_urls, location=self.location)
        return self._store

    async def _io(self, ins: ReadClaim | WriteClaim | Run) -> None:
        job = ins.job
        key = claim_key(job.function, job.cron)
        if isinstance(ins, Run):
            out = await self._run(job.function, job.cron, job.tick_ms, attempt=ins.attempt)
            self._feed(RunFinished(job, out.outcome, self._clock_ms()))
            return
        try:
            if isinstance(ins, ReadClaim):
                data, revision = await self._claims().read(key)
                record = decode_claim(data) if data is not None else None
                self._feed(ClaimRead(job, record, revision, self._clock_ms()))
                return
            new = await self._claims().write(key, encode_claim(ins.record), ins.expected_revision)
        except ClaimStoreError as err:
            self._feed(StoreFailed(job, str(err), self._clock_ms()))
            return
        self._feed(ClaimWritten(job, new is not None, new or 0, self._clock_ms()))
