"""Deterministic simulation of a KV namespace: N replicas, a home, clients, a faulty network.

Everything derives from one :class:`SimOptions` and one seed: a priority queue of
``(time_ms, sequence, action)`` drives the replicas' real :class:`Replica` machines through the
simulated driver below (SimPy-style tie-breaking by sequence number). The network delays each
message by a random latency (so messages reorder), drops and duplicates replica-to-replica
messages, and cuts links during partition episodes. Replicas crash (losing everything not yet
persisted) and restart from their persisted state. Each replica's clock is skewed. Replicas leave
the namespace (asking every anti-entropy interval, as the node's KV service does, until the
machine lets them) and re-join later from their store; a members registry stands in for the
members bucket and every replica polls it.

Clients issue sequential operations against the replica of their location (sometimes moving to
another, carrying their session token) and record a history; after the faults stop and the
system quiesces, the checkers judge the history and the final state.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from edgefn.state import (
    AskHome,
    Broadcast,
    Consistency,
    Delete,
    Entry,
    Failed,
    Get,
    GetDone,
    HomeRegister,
    Instruction,
    Leave,
    LeaveCancelled,
    LeaveRequested,
    Left,
    MembersChanged,
    PeerLeft,
    Persist,
    Put,
    Replica,
    ReplicaConfig,
    ReplicaMeta,
    Replication,
    Reply,
    Restarted,
    Result,
    ScheduleTick,
    SendTo,
    StrongOp,
    StrongResult,
    Tick,
    WriteDone,
    received,
)
from edgefn.state.checkers import (
    HistOp,
    check_causal,
    check_convergence,
    check_no_lost_writes,
    check_sessions,
)
from edgefn.state.lincheck import LinOp, check_linearizable
from edgefn.state.messages import Message

LEVELS = (Consistency.EVENTUAL, Consistency.SESSION, Consistency.CAUSAL, Consistency.STRONG)


@dataclass(frozen=True, kw_only=True)
class SimOptions:
    replicas: int = 3
    clients: int = 4
    ops_per_client: int = 10
    keys: int = 3
    levels: tuple[Consistency, ...] = LEVELS
    delay_ms: tuple[int, int] = (1, 40)
    drop: float = 0.0
    duplicate: float = 0.0
    partitions: int = 0
    partition_ms: tuple[int, int] = (200, 1500)
    crashes: int = 0
    downtime_ms: tuple[int, int] = (50, 600)
    leaves: int = 0
    away_ms: tuple[int, int] = (200, 1500)
    members_poll_ms: int = 300
    clock_skew_ms: int = 20
    move: float = 0.2
    think_ms: tuple[int, int] = (0, 60)
    fault_window_ms: int = 3_000
    quiesce_ms: int = 6_000
    anti_entropy_interval_ms: int = 100
    session_wait_ms: int = 400
    strong_timeout_ms: int = 400
    sqlite_dir: str = ""


@dataclass
class _MemoryStore:
    """The persisted state of one replica, applied exactly as the SQLite store applies it."""

    entries: dict[str, Entry] = field(default_factory=dict)
    meta: ReplicaMeta = field(default_factory=lambda: ReplicaMeta((), 0, 0))
    log: dict[int, Replication] = field(default_factory=dict)

    def apply(self, persist: Persist) -> None:
        for entry in persist.upserts:
            self.entries[entry.key] = entry
        for key in persist.removes:
            self.entries.pop(key, None)
        self.meta = persist.meta
        for rep in persist.log_append:
            self.log[rep.entry.seq] = rep
        for seq in [s for s in self.log if s < persist.log_keep_from_seq]:
            del self.log[seq]

    def recover(self, now_ms: int) -> Restarted:
        log = tuple(self.log[s] for s in sorted(self.log))
        return Restarted(tuple(self.entries.values()), self.meta, now_ms, log)


class _Store:
    """Either store, behind one interface (the SQLite one is used in a few scenarios)."""

    def __init__(self, name: str, sqlite_dir: str) -> None:
        self.sqlite: object | None = None
        self.memory = _MemoryStore()
        if sqlite_dir:
            from edgefn.state.store import SqliteStore

            self.sqlite = SqliteStore(f"{sqlite_dir}/{name}.sqlite3", synchronous="OFF")

    def apply(self, persist: Persist) -> None:
        if self.sqlite is not None:
            self.sqlite.apply(persist)  # type: ignore[attr-defined]
        else:
            self.memory.apply(persist)

    def recover(self, now_ms: int) -> Restarted:
        if self.sqlite is not None:
            return self.sqlite.recover(now_ms)  # type: ignore[attr-defined, no-any-return]
        return self.memory.recover(now_ms)

    def close(self) -> None:
        if self.sqlite is not None:
            self.sqlite.close()  # type: ignore[attr-defined]


@dataclass
class _Client:
    name: str
    level: Consistency
    location: str
    session: str = ""
    done: int = 0
    waiting_op: int | None = None
    waiting_since: int = 0
    last_read: dict[str, tuple[bytes | None, int]] = field(default_factory=dict)


@dataclass
class _Pending:
    client: _Client
    kind: str
    key: str
    value: bytes | None
    if_revision: int | None
    invoke_ms: int
    index: int
    location: str


class Simulation:
    """One seeded run. Call :meth:`run`, then :meth:`check`."""

    HOME = "home"

    def __init__(
        self, options: SimOptions, seed: int, *, replica_type: type[Replica] = Replica
    ) -> None:
        self.replica_type = replica_type
        self.options = options
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = 0
        self._queue: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = 0
        names = tuple(f"r{i}" for i in range(options.replicas))
        self.names = names
        self.skew = {
            n: self.rng.randint(-options.clock_skew_ms, options.clock_skew_ms) for n in names
        }
        self.stores = {n: _Store(n, options.sqlite_dir) for n in names}
        self.replicas: dict[str, Replica | None] = {}
        self.epoch = dict.fromkeys(names, 0)
        self.ticks: dict[str, set[int]] = {n: set() for n in names}
        for n in names:
            self.replicas[n] = self._new_replica(n)
        self.home = HomeRegister()
        # The members bucket: None = registered, a Leave = its leave record.
        self.registry: dict[str, Leave | None] = dict.fromkeys(names)
        self.away: set[str] = set()
        self.left_count = 0
        self.cuts: set[frozenset[str]] = set()
        self.faults_on = True
        self.next_op_id = 1
        self.pending: dict[int, _Pending] = {}
        self.hist: list[HistOp] = []
        self.lin: list[LinOp] = []
        self.clients = [
            _Client(f"c{i}", options.levels[i % len(options.levels)], names[i % len(names)])
            for i in range(options.clients)
        ]
        self.steps = 0

    # ------------------------------------------------------------------ kernel

    def _at(self, when: int, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (max(when, self.now), self._seq, action))

    def _run_until(self, end: int) -> None:
        while self._queue and self._queue[0][0] <= end:
            when, _, action = heapq.heappop(self._queue)
            self.now = when
            action()
        self.now = end

    def _clock(self, name: str) -> int:
        return max(0, self.now + self.skew[name])

    # ------------------------------------------------------------------ replicas

    def _new_replica(self, name: str) -> Replica:
        o = self.options
        config = ReplicaConfig(
            replica_id=name,
            replicas=self.names,
            session_wait_ms=o.session_wait_ms,
            strong_timeout_ms=o.strong_timeout_ms,
            anti_entropy_interval_ms=o.anti_entropy_interval_ms,
            replay_retry_ms=max(20, o.anti_entropy_interval_ms // 2),
            log_max=64,
        )
        replica = self.replica_type(config, now_ms=self._clock(name))
        epoch = self.epoch[name]
        self._at(self.now, lambda: self._feed(name, epoch, Tick(self._clock(name))))
        return replica

    def _feed(self, name: str, epoch: int, event: object) -> None:
        replica = self.replicas[name]
        if replica is None or self.epoch[name] != epoch:
            return
        if isinstance(event, Tick):
            self.ticks[name].discard(self.now)
            event = Tick(self._clock(name))
        instructions = replica.handle(event)  # type: ignore[arg-type]
        self.steps += 1
        replica.check_invariants()
        self._carry_out(name, instructions)

    def _carry_out(self, name: str, instructions: list[Instruction]) -> None:
        for ins in instructions:
            if isinstance(ins, Persist):
                self.stores[name].apply(ins)
            elif isinstance(ins, Broadcast):
                for peer in self.names:
                    if peer != name:
                        self._send(name, peer, ins.message)
            elif isinstance(ins, SendTo):
                self._send(name, ins.replica, ins.message)
            elif isinstance(ins, AskHome):
                self._ask_home(name, ins.op)
            elif isinstance(ins, ScheduleTick):
                self._schedule_tick(name, ins.at_ms - self.skew[name])
            elif isinstance(ins, Reply):
                self._on_reply(ins.op_id, ins.result)
            elif isinstance(ins, Left):
                self._on_left(name, ins)

    def _schedule_tick(self, name: str, when: int) -> None:
        when = max(when, self.now)
        if when in self.ticks[name]:
            return
        self.ticks[name].add(when)
        epoch = self.epoch[name]
        self._at(when, lambda: self._feed(name, epoch, Tick(0)))

    def _cut(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.cuts

    def _delay(self) -> int:
        return self.rng.randint(*self.options.delay_ms)

    def _send(self, src: str, dst: str, message: Message) -> None:
        o = self.options
        if self._cut(src, dst):
            return
        if self.faults_on and self.rng.random() < o.drop:
            return
        copies = 2 if self.faults_on and self.rng.random() < o.duplicate else 1
        for _ in range(copies):
            self._at(self.now + self._delay(), lambda: self._deliver(src, dst, message))

    def _deliver(self, src: str, dst: str, message: Message) -> None:
        if self._cut(src, dst):
            return
        self._feed(dst, self.epoch[dst], received(message, self._clock(dst)))

    def _ask_home(self, name: str, op: StrongOp) -> None:
        # The home channel is request/reply: delayed or cut, never duplicated.
        if self._cut(name, self.HOME):
            return
        epoch = self.epoch[name]

        def at_home() -> None:
            if self._cut(name, self.HOME):
                return
            outcome = self.home.apply(op)
            self.home.check_invariants()

            def back() -> None:
                if not self._cut(name, self.HOME):
                    self._feed(name, epoch, StrongResult(op.op_id, outcome, self._clock(name)))

            self._at(self.now + self._delay(), back)

        self._at(self.now + self._delay(), at_home)

    # ------------------------------------------------------------------ faults

    def _plan_faults(self) -> None:
        o = self.options
        nodes = [*self.names, self.HOME]
        for _ in range(o.partitions):
            start = self.rng.randint(0, o.fault_window_ms)
            length = self.rng.randint(*o.partition_ms)
            side = set(self.rng.sample(nodes, self.rng.randint(1, len(nodes) - 1)))
            cuts = {frozenset((a, b)) for a in side for b in nodes if b not in side}
            self._at(start, lambda c=cuts: self.cuts.update(c))
            self._at(start + length, lambda c=cuts: self.cuts.difference_update(c))
        for _ in range(o.crashes):
            victim = self.rng.choice(self.names)
            start = self.rng.randint(0, o.fault_window_ms)
            length = self.rng.randint(*o.downtime_ms)
            self._at(start, lambda v=victim: self._crash(v))
            self._at(start + length, lambda v=victim: self._restart(v))

    def _plan_leaves(self) -> None:
        o = self.options
        for _ in range(o.leaves):
            victim = self.rng.choice(self.names)
            start = self.rng.randint(0, o.fault_window_ms)
            self._at(start, lambda v=victim, t=start: self._try_leave(v, t + o.fault_window_ms))
        if o.leaves:
            self._at(0, self._poll_members)

    def _try_leave(self, name: str, until: int) -> None:
        """The KV service's sync loop: ask again every interval until left, or wanted again."""
        replica = self.replicas[name]
        if name in self.away:
            return
        if self.now >= until or not self.faults_on:
            if replica is not None:
                self._feed(name, self.epoch[name], LeaveCancelled(self._clock(name)))
            return
        if replica is not None:
            self._feed(name, self.epoch[name], LeaveRequested(self._clock(name)))
        if name not in self.away:
            step = self.options.anti_entropy_interval_ms
            self._at(self.now + step, lambda: self._try_leave(name, until))

    def _on_left(self, name: str, left: Left) -> None:
        self.registry[name] = Leave(name, left.final_seq, left.left_hlc)
        self.away.add(name)
        self.left_count += 1
        self.replicas[name] = None
        self.epoch[name] += 1
        self.ticks[name].clear()
        o = self.options
        self._at(self.now + self.rng.randint(*o.away_ms), lambda: self._rejoin(name))

    def _rejoin(self, name: str) -> None:
        if name not in self.away:
            return
        self.away.discard(name)
        self.registry[name] = None
        self._restart(name)

    def _poll_members(self) -> None:
        """Every replica reads the members registry, as the driver reads the bucket."""
        present = tuple(n for n, record in self.registry.items() if record is None)
        records = [r for r in self.registry.values() if r is not None]
        for name, replica in self.replicas.items():
            if replica is None:
                continue
            epoch = self.epoch[name]
            self._feed(name, epoch, MembersChanged(present, self._clock(name)))
            for record in records:
                self._feed(name, epoch, PeerLeft(record, self._clock(name)))
        self._at(self.now + self.options.members_poll_ms, self._poll_members)

    def _crash(self, name: str) -> None:
        if self.replicas[name] is None:
            return
        self.replicas[name] = None
        self.epoch[name] += 1
        self.ticks[name].clear()

    def _restart(self, name: str) -> None:
        if self.replicas[name] is not None or name in self.away:
            return
        replica = self._new_replica(name)
        self.replicas[name] = replica
        replica.handle(self.stores[name].recover(self._clock(name)))
        replica.check_invariants()

    # ------------------------------------------------------------------ clients

    def _client_step(self, client: _Client) -> None:
        o = self.options
        if client.done >= o.ops_per_client:
            return
        if self.rng.random() < o.move:
            client.location = self.rng.choice(self.names)
        key = f"k{self.rng.randrange(o.keys)}"
        op_id = self.next_op_id
        self.next_op_id += 1
        client.done += 1
        kind = self.rng.choice(("get", "get", "put", "put", "delete"))
        value = f"{client.name}-{op_id}".encode() if kind == "put" else None
        if_revision = None
        if client.level is Consistency.STRONG and kind == "put" and key in client.last_read:
            if_revision = client.last_read[key][1]  # compare-and-set on what it last read
        pending = _Pending(client, kind, key, value, if_revision, self.now, op_id, client.location)
        self.pending[op_id] = pending
        now = self._clock(client.location)
        event: Get | Put | Delete
        if kind == "get":
            event = Get(op_id, key, now, client.level, client.session)
        elif kind == "put":
            assert value is not None
            event = Put(
                op_id,
                key,
                value,
                now,
                client.level,
                if_revision=if_revision,
                session=client.session,
            )
        else:
            event = Delete(op_id, key, now, client.level, session=client.session)
        client.waiting_op = op_id
        name = client.location
        if self.replicas[name] is None:
            self._at(self.now + 5, lambda: self._on_reply(op_id, None))
            return
        self._feed(name, self.epoch[name], event)
        timeout = o.session_wait_ms + o.strong_timeout_ms + 200
        self._at(self.now + timeout, lambda: self._on_reply(op_id, None))

    def _on_reply(self, op_id: int, result: Result | None) -> None:
        pending = self.pending.pop(op_id, None)
        if pending is None:
            return
        client = pending.client
        self._record(pending, result)
        if isinstance(result, (GetDone, WriteDone)) and result.session:
            client.session = result.session
        think = self.rng.randint(*self.options.think_ms)
        self._at(self.now + think, lambda: self._client_step(client))

    def _record(self, p: _Pending, result: Result | None) -> None:
        client = p.client
        if client.level is Consistency.STRONG:
            self._record_strong(p, result)
            return
        ok = isinstance(result, (GetDone, WriteDone))
        failed_cleanly = isinstance(result, Failed)
        stamp = None
        value = p.value
        if isinstance(result, GetDone):
            stamp = result.item.stamp
            value = result.item.value
        elif isinstance(result, WriteDone):
            stamp = result.stamp
        self.hist.append(
            HistOp(
                session=client.name,
                index=p.index,
                kind=p.kind,
                key=p.key,
                ok=ok,
                stamp=stamp,
                value=value,
                causal=client.level is Consistency.CAUSAL,
                indeterminate=not ok and not failed_cleanly,
                location=p.location,
            )
        )
        # Session checks only apply to sessions that asked for them.
        if client.level is Consistency.EVENTUAL:
            client.session = ""

    def _record_strong(self, p: _Pending, result: Result | None) -> None:
        outcome = "unknown"
        value: bytes | None = p.value
        revision = 0
        if isinstance(result, GetDone):
            outcome, value, revision = "ok", result.item.value, result.item.revision
            p.client.last_read[p.key] = (value, revision)
        elif isinstance(result, WriteDone):
            outcome, revision = "ok", result.revision
        elif isinstance(result, Failed) and type(result.error).__name__ == "KVConflict":
            outcome = "conflict"
            revision = result.error.revision  # type: ignore[attr-defined]
        self.lin.append(
            LinOp(
                op_id=p.index,
                client=p.client.name,
                kind=p.kind,
                key=p.key,
                invoke_ms=p.invoke_ms,
                return_ms=self.now if outcome != "unknown" else None,
                outcome=outcome,
                value=value,
                revision=revision,
                if_revision=p.if_revision,
            )
        )

    # ------------------------------------------------------------------ run and check

    def run(self) -> None:
        o = self.options
        self._plan_faults()
        self._plan_leaves()
        for client in self.clients:
            self._at(self.rng.randint(0, 50), lambda c=client: self._client_step(c))
        self._run_until(o.fault_window_ms + o.partition_ms[1] + o.downtime_ms[1])
        self.faults_on = False
        self.cuts.clear()
        for name in sorted(self.away):
            self._rejoin(name)
        for name in self.names:
            self._restart(name)
        # Quiesce: run until every replica holds the same tree and frontier (or the budget ends).
        end = self.now + o.quiesce_ms
        while self.now < end:
            self._run_until(min(end, self.now + 2 * o.anti_entropy_interval_ms))
            if not self.pending and self._settled():
                break
        for store in self.stores.values():
            store.close()

    def _settled(self) -> bool:
        replicas = [r for r in self.replicas.values() if r is not None]
        first = replicas[0]
        return all(
            r.tree.leaves == first.tree.leaves and r.applied == first.applied and not r.dead
            for r in replicas
        )

    def check(self) -> list[str]:
        contents = {}
        for name, replica in self.replicas.items():
            assert replica is not None
            contents[name] = replica.content()
        problems = check_convergence(contents)
        final = contents[self.names[0]]
        problems += check_no_lost_writes(self.hist, final)
        session = {c.name for c in self.clients if c.level is Consistency.SESSION}
        causal = {c.name for c in self.clients if c.level is Consistency.CAUSAL}
        problems += check_sessions(self.hist, only=session)
        problems += check_causal(self.hist, only=causal)
        lin = check_linearizable(self.lin)
        if not lin.ok:
            problems.append(f"strong history not linearizable: {lin.reason}")
        pending = [c.name for c in self.clients if c.done < self.options.ops_per_client]
        if pending:
            problems.append(f"clients never finished: {pending}")
        return problems


def run_seed(
    options: SimOptions, seed: int, *, replica_type: type[Replica] = Replica
) -> tuple[Simulation, list[str]]:
    sim = Simulation(options, seed, replica_type=replica_type)
    sim.run()
    return sim, sim.check()
