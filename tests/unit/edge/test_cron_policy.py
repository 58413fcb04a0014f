"""The cron claim machine, deterministically from a seed: one run per tick planet-wide.

A small simulation drives several :class:`CronMachine` against one compare-and-set store (a pure
model of the home bucket: one revision counter, CAS on write) with random store latencies, run
durations, partitions (a node's store calls fail) and crashes (a node stops; what it had in
flight is lost). ``check_invariants`` runs after every step.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from dataclasses import dataclass, field

import pytest

from edgefn.bundle.crons import next_tick_ms
from edgefn.edge.cron_policy import (
    CLAIM_DELAY_MAX_MS,
    CLAIM_STEP_MS,
    ClaimRead,
    ClaimRecord,
    ClaimWritten,
    CronMachine,
    Event,
    Instruction,
    Job,
    ReadClaim,
    Report,
    Run,
    RunFinished,
    StoreFailed,
    Sync,
    Tick,
    Trigger,
    WriteClaim,
    carbon_claim_delay_ms,
    claim_key,
    decode_claim,
    encode_claim,
)

T0 = 1_735_689_600_000 + 7_000  # 7 s past a minute
MIN = 60_000
TRIGGER = Trigger("job", "* * * * *", lease_ms=15_000)


@dataclass
class Sim:
    seed: int
    nodes: int
    run_ms: tuple[int, int] = (50, 3_000)
    now: int = T0
    store: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    revision: int = 0
    machines: dict[str, CronMachine] = field(default_factory=dict)
    cut: set[str] = field(default_factory=set)
    dead: set[str] = field(default_factory=set)
    runs: list[tuple[str, Job, int]] = field(default_factory=list)
    reports: list[tuple[str, Report]] = field(default_factory=list)
    queue: list[tuple[int, int, str, Event]] = field(default_factory=list)
    seq: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        for i in range(self.nodes):
            name = f"n{i}"
            self.machines[name] = CronMachine(holder=f"{name}/e", retry_ms=1_000)
            self._feed(name, Sync((TRIGGER,), self.now))

    # -- the home and the network --------------------------------------------------------
    def _later(self, node: str, delay: int, event: Event) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (self.now + delay, self.seq, node, event))

    def _execute(self, node: str, ins: Instruction) -> None:
        latency = self.rng.randint(1, 40)
        if isinstance(ins, Report):
            self.reports.append((node, ins))
        elif isinstance(ins, Run):
            self.runs.append((node, ins.job, ins.attempt))
            duration = self.rng.randint(*self.run_ms)
            self._later(node, duration, RunFinished(ins.job, "ok", 0))
        elif node in self.cut:
            self._later(node, latency, StoreFailed(ins.job, "cut off", 0))
        elif isinstance(ins, ReadClaim):
            data, rev = self.store.get(claim_key(ins.job.function, ins.job.cron), (b"", 0))
            record = decode_claim(data) if data else None
            self._later(node, latency, ClaimRead(ins.job, record, rev, 0))
        else:
            assert isinstance(ins, WriteClaim)
            key = claim_key(ins.job.function, ins.job.cron)
            current = self.store.get(key, (b"", 0))[1]
            if current != ins.expected_revision:
                self._later(node, latency, ClaimWritten(ins.job, False, 0, 0))
                return
            self.revision += 1
            self.store[key] = (encode_claim(ins.record), self.revision)
            self._later(node, latency, ClaimWritten(ins.job, True, self.revision, 0))

    def _feed(self, node: str, event: Event) -> None:
        if node in self.dead:
            return
        machine = self.machines[node]
        for ins in machine.handle(_at(event, self.now)):
            self._execute(node, ins)
        machine.check_invariants()

    def run_until(self, end_ms: int, step_ms: int = 250) -> None:
        while self.now < end_ms:
            target = self.now + step_ms
            while self.queue and self.queue[0][0] <= target:
                when, _, node, event = heapq.heappop(self.queue)
                self.now = max(self.now, when)
                self._feed(node, event)
            self.now = target
            for node in self.machines:
                self._feed(node, Tick(self.now))

    def runs_per_tick(self) -> dict[int, list[tuple[str, int]]]:
        out: dict[int, list[tuple[str, int]]] = {}
        for node, job, attempt in self.runs:
            out.setdefault(job.tick_ms, []).append((node, attempt))
        return out


def _at(event: Event, now: int) -> Event:
    """``event`` stamped with the simulation's clock (the driver stamps it the same way)."""
    if isinstance(event, Sync | Tick):
        return event
    return type(event)(*[*_fields(event)[:-1], now])  # type: ignore[arg-type]


def _fields(event: Event) -> list[object]:
    return [getattr(event, f) for f in event.__dataclass_fields__]  # type: ignore[union-attr]


def _ticks(start: int, end: int) -> list[int]:
    out, t = [], next_tick_ms("* * * * *", start)
    while t + MIN <= end:  # a tick whose deadline passed within the run
        out.append(t)
        t += MIN
    return out


@pytest.mark.parametrize("seed", range(8))
def test_six_nodes_run_each_tick_exactly_once(seed: int) -> None:
    sim = Sim(seed, nodes=6)
    end = T0 + 6 * MIN
    sim.run_until(end)
    per_tick = sim.runs_per_tick()
    ticks = _ticks(T0, end)
    assert len(ticks) == 5
    assert {t: len(per_tick.get(t, [])) for t in ticks} == dict.fromkeys(ticks, 1)
    ran = [r for _, r in sim.reports if r.kind == "ran"]
    assert len(ran) >= 5
    assert not [r for _, r in sim.reports if r.kind in ("missed", "fenced", "gave_up")]


@pytest.mark.parametrize("seed", range(8))
def test_a_partitioned_and_a_killed_node_leave_one_run_per_tick(seed: int) -> None:
    sim = Sim(seed, nodes=6, run_ms=(10, 200))
    sim.cut.add("n1")
    sim.run_until(T0 + 2 * MIN)
    sim.dead.add("n2")  # between ticks: it holds nothing
    end = T0 + 6 * MIN
    sim.run_until(end)
    per_tick = sim.runs_per_tick()
    for tick in _ticks(T0, end):
        runners = per_tick.get(tick, [])
        assert len(runners) == 1, (tick, runners)
        assert runners[0][0] != "n1"
    # The cut-off node reports every tick it could not claim as missed, here (only here).
    missed = {(n, r.job.tick_ms) for n, r in sim.reports if r.kind == "missed"}
    assert {n for n, _ in missed} == {"n1"}


@pytest.mark.parametrize("seed", range(6))
def test_a_holder_killed_mid_run_is_taken_over_once_its_lease_ran_out(seed: int) -> None:
    sim = Sim(seed, nodes=4, run_ms=(5_000, 5_000))
    first_tick = next_tick_ms("* * * * *", T0)
    sim.run_until(first_tick + 2_000)
    holders = [n for n, job, _ in sim.runs if job.tick_ms == first_tick]
    assert len(holders) == 1
    sim.dead.add(holders[0])
    sim.run_until(first_tick + 40_000)
    runs = sim.runs_per_tick()[first_tick]
    assert len(runs) == 2, runs
    assert runs[1][1] == 2  # the takeover is attempt 2, after the lease
    assert runs[1][0] != holders[0]
    taken = [r for _, r in sim.reports if r.kind == "taken_over"]
    assert len(taken) == 1


def test_a_holder_cut_off_past_its_lease_is_fenced() -> None:
    # A run longer than its lease cannot happen on a node (timeout_ms < lease); here it stands
    # for a holder that lost the home mid-run and finished after another took the tick over.
    sim = Sim(3, nodes=3, run_ms=(18_000, 18_000))
    first_tick = next_tick_ms("* * * * *", T0)
    sim.run_until(first_tick + 2_000)
    holder = next(n for n, job, _ in sim.runs if job.tick_ms == first_tick)
    sim.cut.add(holder)  # the run goes on, but the home cannot hear from it
    sim.run_until(first_tick + 17_500)
    sim.cut.discard(holder)
    sim.run_until(first_tick + 45_000)
    kinds = [(n, r.kind) for n, r in sim.reports if r.job.tick_ms == first_tick]
    assert (holder, "fenced") in kinds or (holder, "gave_up") in kinds, kinds
    assert len(sim.runs_per_tick()[first_tick]) == 2
    record = decode_claim(sim.store[claim_key("job", "* * * * *")][0])
    assert record is not None
    assert record.state == "done"
    assert record.holder != f"{holder}/e"


def test_a_home_nobody_reaches_means_missed_ticks_and_no_run() -> None:
    sim = Sim(1, nodes=2)
    sim.cut.update({"n0", "n1"})
    sim.run_until(T0 + 3 * MIN)
    assert sim.runs == []
    missed = [r for _, r in sim.reports if r.kind == "missed"]
    assert len(missed) >= 4  # two nodes, two ticks past their deadline
    assert all(r.detail == "no claim before the deadline" for r in missed)


def test_attempts_are_bounded() -> None:
    m = CronMachine(holder="me/1", max_attempts=2)
    m.handle(Sync((TRIGGER,), T0))
    tick = next_tick_ms("* * * * *", T0)
    (read,) = m.handle(Tick(tick))
    assert isinstance(read, ReadClaim)
    stale = ClaimRecord(tick, "other/1", "running", tick + 1, attempt=2)
    out = m.handle(ClaimRead(read.job, stale, 7, tick + 10))
    assert [type(i) for i in out] == [Report]
    assert out[0].kind == "gave_up"  # type: ignore[union-attr]
    assert m.jobs == {}


def test_own_claim_whose_answer_was_lost_is_run_not_claimed_again() -> None:
    m = CronMachine(holder="me/1")
    m.handle(Sync((TRIGGER,), T0))
    tick = next_tick_ms("* * * * *", T0)
    (read,) = m.handle(Tick(tick))
    assert isinstance(read, ReadClaim)
    (write,) = m.handle(ClaimRead(read.job, None, 0, tick))
    assert isinstance(write, WriteClaim)
    assert m.handle(StoreFailed(read.job, "timeout", tick + 3_000)) == []
    (again,) = m.handle(Tick(tick + 4_500))
    assert isinstance(again, ReadClaim)
    out = m.handle(ClaimRead(read.job, write.record, 12, tick + 4_600))
    assert out == [Run(read.job, 1)]


def test_a_later_tick_or_a_done_record_ends_the_job_silently() -> None:
    m = CronMachine(holder="me/1")
    m.handle(Sync((TRIGGER,), T0))
    tick = next_tick_ms("* * * * *", T0)
    (read,) = m.handle(Tick(tick))
    assert isinstance(read, ReadClaim)
    done = ClaimRecord(tick, "other/1", "done", tick + 1, 1, "ok")
    assert m.handle(ClaimRead(read.job, done, 3, tick + 5)) == []
    assert m.jobs == {}
    (read2,) = m.handle(Tick(tick + MIN))
    assert isinstance(read2, ReadClaim)
    later = ClaimRecord(tick + 2 * MIN, "other/1", "running", tick + 3 * MIN, 1)
    assert m.handle(ClaimRead(read2.job, later, 4, tick + MIN + 5)) == []


def test_garbage_in_the_record_is_overwritten_at_its_revision() -> None:
    assert decode_claim(b"not json") is None
    assert decode_claim(b'{"tick_ms": 1}') is None
    m = CronMachine(holder="me/1")
    m.handle(Sync((TRIGGER,), T0))
    tick = next_tick_ms("* * * * *", T0)
    (read,) = m.handle(Tick(tick))
    assert isinstance(read, ReadClaim)
    (write,) = m.handle(ClaimRead(read.job, None, 41, tick))
    assert isinstance(write, WriteClaim)
    assert write.expected_revision == 41


def test_a_removed_trigger_stops_ticking_and_drops_its_waiting_jobs() -> None:
    m = CronMachine(holder="me/1")
    m.handle(Sync((TRIGGER,), T0))
    tick = next_tick_ms("* * * * *", T0)
    m.handle(Tick(tick))
    m.handle(Sync((), tick + 10))
    assert m.jobs == {}
    assert m.wake_at_ms() is None
    assert m.handle(Tick(tick + MIN)) == []


def test_a_node_that_slept_through_ticks_runs_only_the_latest() -> None:
    m = CronMachine(holder="me/1")
    m.handle(Sync((TRIGGER,), T0))
    tick = next_tick_ms("* * * * *", T0)
    out = m.handle(Tick(tick + 3 * MIN + 5))
    assert [type(i) for i in out] == [ReadClaim]
    assert m.next_ms[("job", "* * * * *")] == tick + 4 * MIN


def test_claim_keys_cannot_be_a_namespace_key() -> None:
    key = claim_key("job", "* * * * *")
    assert key.startswith("=cron.job.")
    assert claim_key("job", "*/5 * * * *") != key


# g CO2/kWh per node: n3 is the cleanest, then n1 and n4 (a tie: by id); n5's is not known.
CARBON: dict[str, float | None] = {
    "n0": 420.0,
    "n1": 35.0,
    "n2": 300.0,
    "n3": 12.0,
    "n4": 35.0,
    "n5": None,
}


def test_the_claim_delay_ranks_locations_by_carbon_then_id() -> None:
    delays = {n: carbon_claim_delay_ms(n, CARBON) for n in CARBON}
    step = CLAIM_STEP_MS
    assert delays == {"n3": 0, "n1": step, "n4": 2 * step, "n2": 3 * step, "n0": 4 * step,
                      "n5": 5 * step}  # fmt: skip
    many = {f"x{i:02}": float(i) for i in range(40)}
    assert carbon_claim_delay_ms("x39", many) == CLAIM_DELAY_MAX_MS  # bounded
    assert carbon_claim_delay_ms("x06", {"x05": None, "x06": None}) == 0  # nothing known


def _greener_sim(seed: int) -> Sim:
    sim = Sim(seed, nodes=6, run_ms=(10, 200))
    for node, machine in sim.machines.items():
        delay = carbon_claim_delay_ms(node, CARBON)
        machine.handle(Sync((dataclasses.replace(TRIGGER, claim_delay_ms=delay),), sim.now))
    return sim


@pytest.mark.parametrize("seed", range(6))
def test_prefer_low_carbon_runs_each_tick_once_at_the_cleanest_live_location(seed: int) -> None:
    sim = _greener_sim(seed)
    sim.run_until(T0 + 3 * MIN)
    first = _ticks(T0, T0 + 3 * MIN)
    per_tick = sim.runs_per_tick()
    assert len(first) == 2
    assert {t: per_tick.get(t) for t in first} == {t: [("n3", 1)] for t in first}
    # The cleanest dies between ticks: the next cleanest runs them, a step later; once each.
    sim.dead.add("n3")
    sim.cut.add("n1")  # ... and the one after it is cut off from the home: n4 then
    end = T0 + 7 * MIN
    sim.run_until(end)
    later = [t for t in _ticks(T0, end) if t > T0 + 3 * MIN]  # the ticks after the faults
    per_tick = sim.runs_per_tick()
    assert len(later) == 3
    assert {t: per_tick.get(t) for t in later} == {t: [("n4", 1)] for t in later}
    assert not [r for n, r in sim.reports if r.kind in ("fenced", "gave_up")]


def test_a_delayed_location_reads_the_claim_only_after_its_delay() -> None:
    m = CronMachine(holder="n0/e")
    trigger = dataclasses.replace(TRIGGER, claim_delay_ms=1_500)
    tick = next_tick_ms("* * * * *", T0)
    assert m.handle(Sync((trigger,), T0)) == []
    assert m.handle(Tick(tick)) == []
    assert m.handle(Tick(tick + 1_499)) == []
    assert m.handle(Tick(tick + 1_500)) == [ReadClaim(Job("job", "* * * * *", tick))]
    m.check_invariants()
