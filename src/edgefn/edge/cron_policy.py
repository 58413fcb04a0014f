"""Which location runs a cron tick: one claim record per trigger in the strong KV, a lease, fencing.

A *trigger* is (function, cron expression). Every location where the function is active follows
the trigger's ticks (UTC, :func:`edgefn.bundle.crons.next_tick_ms`); at a tick ``T`` each of them
starts a *job* for ``(trigger, T)`` that reads the trigger's claim record from the home (JetStream
KV, compare-and-set revisions) and decides:

======================================  ===================================================
record                                  this location
======================================  ===================================================
absent, or for a tick before ``T``      claims ``T``: writes ``{T, me, running, lease}`` if
                                        the record is still at the revision it read (CAS)
for a tick after ``T``                  nothing (superseded)
``T``, done                             nothing: it ran
``T``, running, held by me              runs it (its own claim, whose answer was lost)
``T``, running, lease expired           takes it over (CAS, ``attempt + 1``), at most
                                        ``max_attempts`` runs in all
``T``, running, lease live              reads again once the lease has run out
======================================  ===================================================

Exactly one CAS succeeds per revision, so one location runs the tick; the record's revision after
the claim is the run's fencing token: the run's closing write (``done``) is a CAS on it and is
refused if another location took the tick over meanwhile (reported ``fenced``). The lease is the
function's ``timeout_ms`` plus :data:`LEASE_SLACK_MS`, so a live run has always finished (or been
cancelled by its own timeout) before anyone may take it over: a second run of a tick happens only
when the first location died, or lost the home, mid-run (then ``event.attempt`` is 2).

A failed read or write (home unreachable, answer lost) is retried after ``retry_ms``. A job gives
up at its deadline, the next tick or ``T + max_grace_ms``, whichever is first: the tick is then
*missed* here (reported). Missed ticks are not replayed later, and a location that starts (or a
function deployed) between two ticks begins with the next one; see docs/design/0025-cron.md.

Pure: time comes in as data; :class:`CronMachine` changes only through :meth:`CronMachine.handle`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

import msgspec

from edgefn.bundle.crons import next_tick_ms

__all__ = [
    "CLAIM_DELAY_MAX_MS",
    "CLAIM_STEP_MS",
    "LEASE_SLACK_MS",
    "ClaimRead",
    "ClaimRecord",
    "ClaimWritten",
    "CronMachine",
    "Event",
    "Instruction",
    "Job",
    "ReadClaim",
    "Report",
    "Run",
    "RunFinished",
    "StoreFailed",
    "Sync",
    "Tick",
    "Trigger",
    "WriteClaim",
    "carbon_claim_delay_ms",
    "claim_key",
    "decode_claim",
    "encode_claim",
]

LEASE_SLACK_MS: Final = 5_000
# A job per tick; a trigger has at most this many at once (a running one, a new tick, and one
# whose closing write is being retried). Older waiting jobs are dropped first.
MAX_JOBS_PER_TRIGGER: Final = 3


@dataclass(frozen=True, slots=True, order=True)
class Trigger:
    function: str
    cron: str
    lease_ms: int = 30_000 + LEASE_SLACK_MS
    # How long after each tick this location first reads the claim: 0 for every location by
    # default; ``[triggers] prefer = "low_carbon"`` staggers them by carbon intensity
    # (:func:`carbon_claim_delay_ms`), so the cleanest live location claims first and the next
    # one takes the tick only when it has not.
    claim_delay_ms: int = 0


# ``prefer = "low_carbon"``: a location waits this long per location cleaner than it before it
# reads a tick's claim, at most CLAIM_DELAY_MAX_MS (the tick runs that late when every cleaner
# location is down).
CLAIM_STEP_MS: Final = 1_000
CLAIM_DELAY_MAX_MS: Final = 5_000


def carbon_claim_delay_ms(me: str, carbon: Mapping[str, float | None]) -> int:
    """This location's claim delay among the locations running the function (``carbon``: their
    grid intensity, g/kWh; ``me`` among them): its rank from the cleanest, times
    :data:`CLAIM_STEP_MS`, capped. Unknown intensities rank last; ties go by id, so every
    location computes the same order. When no intensity is known, nobody waits."""
    if all(c is None for c in carbon.values()):
        return 0
    order = sorted(carbon, key=lambda loc: (carbon[loc] is None, carbon[loc] or 0.0, loc))
    return min(order.index(me) * CLAIM_STEP_MS, CLAIM_DELAY_MAX_MS)


@dataclass(frozen=True, slots=True, order=True)
class Job:
    function: str
    cron: str
    tick_ms: int


class ClaimRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the home holds for a trigger: the latest tick claimed and how its run went."""

    tick_ms: int
    holder: str
    state: Literal["running", "done"]
    lease_until_ms: int
    attempt: int
    outcome: str = ""


_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(ClaimRecord)


def encode_claim(record: ClaimRecord) -> bytes:
    return _ENCODER.encode(record)


def decode_claim(data: bytes) -> ClaimRecord | None:
    """The record, or ``None`` for bytes that are not one (treated as absent, then overwritten)."""
    try:
        return _DECODER.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def claim_key(function: str, cron: str) -> str:
    """The trigger's key in the home bucket. ``=`` cannot start a KV namespace, so no function's
    strong keys (``<namespace>.<key>``) can collide with, or reach, a claim."""
    digest = hashlib.sha256(cron.encode()).hexdigest()[:16]
    return f"=cron.{function}.{digest}"


# --------------------------------------------------------------------------- events
@dataclass(frozen=True, slots=True)
class Sync:
    """The triggers of the functions active here now (added ones start at their next tick)."""

    triggers: tuple[Trigger, ...]
    now_ms: int


@dataclass(frozen=True, slots=True)
class Tick:
    now_ms: int


@dataclass(frozen=True, slots=True)
class ClaimRead:
    job: Job
    record: ClaimRecord | None
    revision: int  # 0: no record
    now_ms: int


@dataclass(frozen=True, slots=True)
class ClaimWritten:
    job: Job
    ok: bool  # False: the revision had moved on (CAS refused)
    revision: int
    now_ms: int


@dataclass(frozen=True, slots=True)
class StoreFailed:
    job: Job
    reason: str
    now_ms: int


@dataclass(frozen=True, slots=True)
class RunFinished:
    job: Job
    outcome: str  # "ok" or the error kind
    now_ms: int


Event = Sync | Tick | ClaimRead | ClaimWritten | StoreFailed | RunFinished


# --------------------------------------------------------------------------- instructions
@dataclass(frozen=True, slots=True)
class ReadClaim:
    job: Job


@dataclass(frozen=True, slots=True)
class WriteClaim:
    job: Job
    record: ClaimRecord
    expected_revision: int  # 0: create (no record may exist)


@dataclass(frozen=True, slots=True)
class Run:
    job: Job
    attempt: int


@dataclass(frozen=True, slots=True)
class Report:
    """Something for the log: ``ran``, ``missed``, ``fenced``, ``taken_over``, ``gave_up``."""

    kind: str
    job: Job
    detail: str = ""


Instruction = ReadClaim | WriteClaim | Run | Report


# --------------------------------------------------------------------------- the machine
_Phase = Literal["reading", "claiming", "running", "closing", "waiting"]


@dataclass(slots=True)
class _JobState:
    phase: _Phase
    deadline_ms: int
    wake_ms: int = 0  # waiting: when to read (or close) again
    revision: int = 0  # claiming: the revision read; running/closing: the claim's (fencing token)
    lease_until_ms: int = 0  # running/closing: when the claim's lease runs out
    attempt: int = 1
    closing_record: ClaimRecord | None = None
    retry_close: bool = False  # waiting to retry the closing write, not to read
    held_elsewhere: bool = False  # waiting for another location's lease: not missed if it ends


@dataclass(slots=True)
class CronMachine:
    """The cron jobs of one location. ``holder`` names this process (location + a random epoch,
    so a restarted node never mistakes its predecessor's claim for its own)."""

    holder: str
    retry_ms: int = 1_000
    max_attempts: int = 2
    max_grace_ms: int = 900_000
    triggers: dict[tuple[str, str], Trigger] = field(default_factory=dict)
    next_ms: dict[tuple[str, str], int] = field(default_factory=dict)
    jobs: dict[Job, _JobState] = field(default_factory=dict)

    def handle(self, event: Event) -> list[Instruction]:
        match event:
            case Sync():
                return self._sync(event)
            case Tick():
                return self._tick(event.now_ms)
            case ClaimRead():
                return self._read(event)
            case ClaimWritten():
                return self._written(event)
            case StoreFailed():
                return self._failed(event)
            case RunFinished():
                return self._finished(event)
        raise AssertionError(f"unknown event {event!r}")

    def wake_at_ms(self) -> int | None:
        """When :class:`Tick` should come next (the earliest tick, retry or deadline)."""
        times = list(self.next_ms.values())
        for st in self.jobs.values():
            if st.phase == "waiting":
                times.append(st.wake_ms)
            if st.phase in ("waiting", "reading", "claiming"):
                times.append(st.deadline_ms)
        return min(times) if times else None

    # -- events --------------------------------------------------------------------------
    def _sync(self, event: Sync) -> list[Instruction]:
        wanted = {(t.function, t.cron): t for t in event.triggers}
        for key in list(self.triggers):
            if key not in wanted:
                del self.triggers[key]
                del self.next_ms[key]
                for job in [j for j, st in self.jobs.items() if (j.function, j.cron) == key]:
                    if self.jobs[job].phase in ("waiting", "reading"):
                        del self.jobs[job]  # a claim or a run in flight finishes on its own
        for key, trigger in wanted.items():
            if key not in self.triggers:
                self.next_ms[key] = next_tick_ms(trigger.cron, event.now_ms)
            self.triggers[key] = trigger
        return self._tick(event.now_ms)

    def _tick(self, now_ms: int) -> list[Instruction]:
        out: list[Instruction] = []
        for key, due in list(self.next_ms.items()):
            if due > now_ms:
                continue
            trigger = self.triggers[key]
            # A node that slept through several ticks runs only the latest (the others are past).
            upcoming = next_tick_ms(trigger.cron, now_ms)
            job = Job(trigger.function, trigger.cron, due)
            self.next_ms[key] = upcoming
            self._make_room(key, out)
            deadline = min(upcoming, due + self.max_grace_ms)
            if trigger.claim_delay_ms > 0:  # read once the cleaner locations had their turn
                wake = due + trigger.claim_delay_ms
                self.jobs[job] = _JobState("waiting", deadline_ms=deadline, wake_ms=wake)
            else:
                self.jobs[job] = _JobState("reading", deadline_ms=deadline)
                out.append(ReadClaim(job))
        for job, st in list(self.jobs.items()):
            live = st.phase in ("waiting", "reading", "claiming") and not st.retry_close
            if live and now_ms >= st.deadline_ms:
                del self.jobs[job]
                if not st.held_elsewhere:
                    out.append(Report("missed", job, "no claim before the deadline"))
                continue
            if st.phase == "waiting" and now_ms >= st.wake_ms:
                out.append(self._resume(job, st, now_ms))
        return out

    def _resume(self, job: Job, st: _JobState, now_ms: int) -> Instruction:
        if st.retry_close and st.closing_record is not None:
            if now_ms >= st.lease_until_ms:
                del self.jobs[job]  # too late: the lease is over, another may take over
                return Report("gave_up", job, "could not record the run as done within its lease")
            st.phase = "closing"
            return WriteClaim(job, st.closing_record, st.revision)
        st.phase = "reading"
        return ReadClaim(job)

    def _make_room(self, key: tuple[str, str], out: list[Instruction]) -> None:
        mine = sorted(j for j in self.jobs if (j.function, j.cron) == key)
        while len(mine) >= MAX_JOBS_PER_TRIGGER:
            idle = [j for j in mine if self.jobs[j].phase in ("waiting", "reading")]
            victim = idle[0] if idle else mine[0]
            del self.jobs[victim]
            mine.remove(victim)
            out.append(Report("missed", victim, "superseded by a later tick"))

    def _read(self, event: ClaimRead) -> list[Instruction]:
        job, rec = event.job, event.record
        st = self.jobs.get(job)
        if st is None or st.phase != "reading":
            return []
        trigger = self.triggers.get((job.function, job.cron))
        if rec is not None and rec.tick_ms > job.tick_ms:
            del self.jobs[job]
            return []
        if rec is not None and rec.tick_ms == job.tick_ms:
            if rec.state == "done":
                del self.jobs[job]
                return []
            if rec.holder == self.holder and rec.attempt == st.attempt:
                st.lease_until_ms = rec.lease_until_ms
                return self._start_run(job, st, event.revision, rec.attempt)
            if event.now_ms < rec.lease_until_ms:
                st.held_elsewhere = True
                self._wait(st, rec.lease_until_ms + self.retry_ms // 2)
                return []
            if rec.attempt >= self.max_attempts:
                del self.jobs[job]
                return [Report("gave_up", job, f"{rec.attempt} attempts; the last one expired")]
            st.attempt = rec.attempt + 1
        if trigger is None:  # the function left this location meanwhile: claim nothing
            del self.jobs[job]
            return []
        lease_until = event.now_ms + trigger.lease_ms
        claim = ClaimRecord(job.tick_ms, self.holder, "running", lease_until, st.attempt)
        st.phase = "claiming"
        st.revision = event.revision
        st.lease_until_ms = lease_until
        return [WriteClaim(job, claim, event.revision)]

    def _start_run(self, job: Job, st: _JobState, revision: int, attempt: int) -> list[Instruction]:
        st.phase = "running"
        st.revision = revision
        out: list[Instruction] = []
        if attempt > 1:
            out.append(Report("taken_over", job, f"attempt {attempt}"))
        out.append(Run(job, attempt))
        return out

    def _written(self, event: ClaimWritten) -> list[Instruction]:
        job = event.job
        st = self.jobs.get(job)
        if st is None:
            return []
        if st.phase == "claiming":
            if not event.ok:  # someone else moved the record: look again
                st.phase = "reading"
                return [ReadClaim(job)]
            return self._start_run(job, st, event.revision, st.attempt)
        if st.phase == "closing":
            del self.jobs[job]
            outcome = st.closing_record.outcome if st.closing_record is not None else ""
            if not event.ok:
                return [Report("fenced", job, f"outcome {outcome}; another location took over")]
            return [Report("ran", job, outcome)]
        return []

    def _failed(self, event: StoreFailed) -> list[Instruction]:
        st = self.jobs.get(event.job)
        if st is None or st.phase not in ("reading", "claiming", "closing"):
            return []
        st.retry_close = st.phase == "closing"
        self._wait(st, event.now_ms + self.retry_ms)
        return []

    def _finished(self, event: RunFinished) -> list[Instruction]:
        job = event.job
        st = self.jobs.get(job)
        if st is None or st.phase != "running":
            return []
        # The closing record keeps the claim's lease end: past it, another may have taken over.
        done = ClaimRecord(
            job.tick_ms, self.holder, "done", st.lease_until_ms, st.attempt, event.outcome
        )
        st.phase = "closing"
        st.closing_record = done
        return [WriteClaim(job, done, st.revision)]

    def _wait(self, st: _JobState, until_ms: int) -> None:
        st.phase = "waiting"
        st.wake_ms = until_ms

    # -- checks --------------------------------------------------------------------------
    def check_invariants(self) -> None:
        assert set(self.triggers) == set(self.next_ms)
        per_trigger: dict[tuple[str, str], int] = {}
        for job, st in self.jobs.items():
            key = (job.function, job.cron)
            per_trigger[key] = per_trigger.get(key, 0) + 1
            assert 1 <= st.attempt <= self.max_attempts
            if st.phase == "closing":
                assert st.closing_record is not None
        assert all(n <= MAX_JOBS_PER_TRIGGER for n in per_trigger.values()), per_trigger
