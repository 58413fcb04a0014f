"""The KV replica of one namespace at one location, as a pure state machine.

Change a :class:`Replica` only through ``handle(event) -> list[Instruction]`` (see ``events.py``).

Rules:

1. **Writes** (eventual, session, causal) apply locally at once. A write takes the next own
   sequence number ``seq``, a fresh HLC timestamp, and is persisted, appended to the replay log,
   broadcast as a :class:`Replication`, then acknowledged (in that instruction order).
2. **Delivery** of remote writes is in per-origin ``seq`` order; a causal write also waits until
   its dependencies are applied. ``applied[o]`` is the contiguous frontier of origin ``o``. Early
   or blocked writes wait in a bounded buffer; a gap triggers a rate-limited
   :class:`ReplayRequest` to the origin, which resends from its replay log.
3. **Merge** is last-writer-wins by ``(hlc, origin)`` with tombstones (``records.merge``).
4. **Session and causal** operations first wait (bounded by ``session_wait_ms``) until
   ``applied`` covers the operation's token, then run locally; results extend the token with the
   ``(origin, seq)`` of every write returned or made. A causal write carries the token as its
   dependencies. A token that cannot be covered in time fails with ``KVUnavailable`` naming the
   missing writes; the driver may forward the operation to the origin named there.
5. **Strong** operations go to the home (:class:`AskHome`) and complete on :class:`StrongResult`;
   if none arrives within ``strong_timeout_ms`` the client gets ``KVUnavailable`` (the operation
   may or may not have happened at the home; it is never reported as done when it was not).
6. **Anti-entropy**: every round the replica announces its frontier and clock floor to all peers
   and sends a Merkle digest to the next peer in turn. The receiver pulls the differing buckets;
   after merging, if its tree equals the sender's it adopts the sender's frontier (its state now
   contains everything the sender had applied). Rounds are ``anti_entropy_interval_ms`` apart
   while anything changes here (a write made or merged, a repair asked or served, a member
   joining or leaving, a peer's leave announced or seen) and back off, doubling from there up to
   ``anti_entropy_idle_max_ms``, while nothing does: an idle replica sends ~(N-1)/10 messages a
   second instead of 2(N-1), and the first change brings the next round within the base interval.
7. **Tombstone GC** (also expired entries): an entry with timestamp ``t`` is dropped once, for every
   replica ``p``, ``p`` announced a floor ``(hlc >= t, seq)`` and every replica announced
   ``applied[p] >= seq``: no write that could lose to the tombstone can still arrive anywhere.
8. **Membership** (``membership.py``): replicas join (``MembersChanged``) and leave. A replica
   asked to leave (``LeaveRequested``) does so only once every write it holds is held by a
   replica that stays; then it drops its entries (keeping its counters), broadcasts
   :class:`Leave` and answers every later operation with ``KVUnavailable``. The others drop it
   from the replica set (``PeerLeft``); GC then waits for its writes instead of its floor.
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass

from edgefn.errors import (
    KVConflict,
    KVError,
    KVLimitError,
    KVOutcomeUnknown,
    KVSessionBehind,
    KVUnavailable,
)
from edgefn.state.events import (
    AntiEntropyDigest,
    AntiEntropyRequest,
    AntiEntropyResponse,
    AskHome,
    Broadcast,
    Delete,
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
    List,
    ListDone,
    MembersChanged,
    PeerAnnounced,
    PeerLeft,
    Persist,
    Put,
    ReplayRequested,
    ReplicaMeta,
    ReplicationReceived,
    Reply,
    Restarted,
    ScheduleTick,
    SendTo,
    StrongResult,
    Tick,
    WriteDone,
)
from edgefn.state.hlc import HLC, ClockDriftError
from edgefn.state.membership import (
    PeerView,
    departed_covered,
    leave_blocker,
    leave_is_stale,
    view_of,
)
from edgefn.state.merkle import LEAVES, MerkleTree, bucket_of, diff
from edgefn.state.messages import (
    Announce,
    Digest,
    Leave,
    RepairRequest,
    RepairResponse,
    ReplayRequest,
    Replication,
    StrongOp,
    StrongRecord,
)
from edgefn.state.records import (
    VALUE_BYTES_MAX,
    Consistency,
    Entry,
    check_key,
    check_value,
    decode_session,
    encode_session,
    entry_digest,
    merge,
)
from edgefn.state.vclock import VClock

__all__ = ["Replica", "ReplicaConfig", "ReplicaStatistics"]

_LOCAL_OPS = (Get, Put, Delete, List)
LocalOp = Get | Put | Delete | List


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaConfig:
    """Identity and limits of one replica. ``replicas`` lists the replicas known at start, this
    one included (membership changes later: ``Replica.config.replicas`` is the current set)."""

    replica_id: str
    replicas: tuple[str, ...]
    value_bytes_max: int = VALUE_BYTES_MAX
    session_wait_ms: int = 2_000
    # A backstop: the driver answers within its connect wait plus its home timeout (2 + 2 s).
    strong_timeout_ms: int = 5_000
    waiting_max: int = 1_024
    strong_pending_max: int = 1_024
    buffer_max: int = 4_096
    log_max: int = 4_096
    replay_batch_max: int = 512
    replay_retry_ms: int = 200
    anti_entropy_interval_ms: int = 500
    # The gap between rounds while nothing changes doubles up to this (rule 6).
    anti_entropy_idle_max_ms: int = 10_000
    repair_entries_max: int = 4_096
    # A repair answer travels as one bus message (1 MiB NATS payload): past this many bytes of
    # entries it is split, so a repair of large values is never silently dropped by the bus.
    repair_bytes_max: int = 512 * 1024
    max_drift_ms: int = 60_000
    list_limit_max: int = 1_000

    def __post_init__(self) -> None:
        assert self.replica_id in self.replicas, (self.replica_id, self.replicas)
        assert len(set(self.replicas)) == len(self.replicas), self.replicas


@dataclass(frozen=True, slots=True)
class ReplicaStatistics:
    entries: int
    dead_entries: int
    waiting: int
    strong_pending: int
    buffered: int
    log: int
    local_writes: int
    remote_applied: int
    duplicates: int
    buffer_dropped: int
    drift_rejected: int
    replays_sent: int
    repairs_merged: int
    frontier_jumps: int
    gc_collected: int
    late_strong_results: int
    departed: int
    leaving: bool
    left: bool
    refill_seq: int


@dataclass(slots=True)
class _Counters:
    local_writes: int = 0
    remote_applied: int = 0
    duplicates: int = 0
    buffer_dropped: int = 0
    drift_rejected: int = 0
    replays_sent: int = 0
    repairs_merged: int = 0
    frontier_jumps: int = 0
    gc_collected: int = 0
    late_strong_results: int = 0


class _Out:
    """Instructions of one ``handle`` call; persistence is gathered and emitted first."""

    __slots__ = ("dirty", "log", "others", "removes", "upserts")

    def __init__(self) -> None:
        self.upserts: dict[str, Entry] = {}
        self.removes: set[str] = set()
        self.log: list[Replication] = []
        self.dirty = False
        self.others: list[Instruction] = []


class Replica:
    """One KV replica. Change it only through :meth:`handle`."""

    def __init__(self, config: ReplicaConfig, *, now_ms: int = 0) -> None:
        self.config = config
        self.id = config.replica_id
        self.clock = HLC(max_drift_ms=config.max_drift_ms)
        self._reset_volatile(now_ms)
        self.entries: dict[str, Entry] = {}
        self.tree = MerkleTree()
        self.dead: set[str] = set()
        self.applied: dict[str, int] = {}
        self.own_seq = 0
        self.log: collections.deque[Replication] = collections.deque()
        self.counters = _Counters()
        # Membership (rule 8): replicas that left -> (final_seq, left_hlc); whether this one
        # wants to leave or has left; its own writes it does not hold after a re-join.
        self.departed: dict[str, tuple[int, int]] = {}
        self.leaving = False
        self.left = False
        self.refill_seq = 0

    def _reset_volatile(self, now_ms: int) -> None:
        self.now_ms = now_ms
        self.buffer: dict[str, dict[int, Replication]] = {}
        self.buffered = 0
        self.waiting: collections.deque[tuple[int, LocalOp]] = collections.deque()
        self.strong_pending: dict[int, tuple[int, LocalOp]] = {}
        self.peer_applied: dict[str, VClock] = {}
        self.peer_floor: dict[str, tuple[int, int]] = {}
        self.peer_view: dict[str, PeerView] = {}
        self.replay_asked_ms: dict[str, int] = {}
        self.next_anti_entropy_ms = now_ms
        self.anti_entropy_gap_ms = self.config.anti_entropy_interval_ms
        self._stirred = False
        self.anti_entropy_turn = 0

    # ---------------------------------------------------------------- dispatch

    def handle(self, event: Event) -> list[Instruction]:
        """Apply one event; return what the driver must do, in order."""
        self.now_ms = max(self.now_ms, event.now_ms)
        out = _Out()
        if self.left:
            return self._while_left(event)
        frontier_before = self._frontier_total()
        replicas_before = self.config.replicas
        self._stirred = False  # set by a handler that changed what rounds announce
        if isinstance(event, _LOCAL_OPS):
            self._local(event, out, queued=False)
        elif isinstance(event, ReplicationReceived):
            self._on_replication(event.message, out)
        elif isinstance(event, ReplayRequested):
            self._on_replay_request(event.message, out)
        elif isinstance(event, PeerAnnounced):
            self._on_announce(event.message, out)
        elif isinstance(event, AntiEntropyDigest):
            self._on_digest(event.message, out)
        elif isinstance(event, AntiEntropyRequest):
            self._on_repair_request(event.message, out)
        elif isinstance(event, AntiEntropyResponse):
            self._on_repair_response(event.message, out)
        elif isinstance(event, StrongResult):
            self._on_strong_result(event, out)
        elif isinstance(event, Tick):
            self._on_tick(out)
        elif isinstance(event, MembersChanged):
            self._on_members(event.replicas)
        elif isinstance(event, PeerLeft):
            self._on_peer_left(event.message)
        elif isinstance(event, LeaveRequested):
            self._on_leave_requested(out)
        elif isinstance(event, LeaveCancelled):
            self.leaving = False
        else:
            self._on_restarted(event)
        changed = self._frontier_total() != frontier_before
        if changed:
            out.dirty = True
            self._retry_waiting(out)
        if (
            changed
            or out.upserts
            or out.removes
            or self._stirred
            or self.config.replicas is not replicas_before
            or isinstance(event, (LeaveRequested, LeaveCancelled, PeerLeft))
        ):
            self._liven(out)
        return self._finish(out)

    def _liven(self, out: _Out) -> None:
        """Something changed: anti-entropy rounds back to the base interval (rule 6)."""
        base = self.config.anti_entropy_interval_ms
        self.anti_entropy_gap_ms = base
        due = self.now_ms + base
        if due < self.next_anti_entropy_ms:
            self.next_anti_entropy_ms = due
            out.others.append(ScheduleTick(due))

    def _on_members(self, names: tuple[str, ...]) -> None:
        for name in names:
            self.departed.pop(name, None)  # heard of again: it re-joined
        known = set(self.config.replicas)
        if known.issuperset(names):
            return
        replicas = tuple(sorted(known | set(names)))
        self.config = dataclasses.replace(self.config, replicas=replicas)

    def _finish(self, out: _Out) -> list[Instruction]:
        if not (out.upserts or out.removes or out.log or out.dirty):
            return out.others
        persist = Persist(
            upserts=tuple(out.upserts[k] for k in sorted(out.upserts)),
            removes=tuple(sorted(out.removes)),
            meta=self.meta(),
            log_append=tuple(out.log),
            log_keep_from_seq=self.log[0].entry.seq if self.log else self.own_seq + 1,
        )
        return [persist, *out.others]

    def meta(self) -> ReplicaMeta:
        applied = VClock(self.applied).pairs()
        return ReplicaMeta(applied, self.own_seq, self.clock.last, self.refill_seq, self.left)

    def _held(self) -> VClock:
        """The writes whose effects this replica holds: ``applied``, except its own writes up
        to ``refill_seq`` after a re-join (rule 8). What it tells peers and checks tokens by."""
        if not self.refill_seq:
            return VClock(self.applied)
        return VClock({o: s for o, s in self.applied.items() if o != self.id})

    def _frontier_total(self) -> int:
        # Twice per event: plain sums, no VClock (what _held() would give).
        total = sum(self.applied.values())
        return total - self.applied.get(self.id, 0) if self.refill_seq else total

    # ---------------------------------------------------------------- local operations

    def _local(self, op: LocalOp, out: _Out, *, queued: bool) -> bool:
        """Run or queue a client operation. Returns False if it must keep waiting."""
        try:
            self._validate(op)
            token = decode_session(op.session)
        except KVError as err:
            out.others.append(Reply(op.op_id, Failed(err)))
            return True
        if op.consistency is Consistency.STRONG:
            self._ask_home(op, out)
            return True
        needs_cover = op.consistency in (Consistency.SESSION, Consistency.CAUSAL)
        if needs_cover and not self._held().dominates(token):
            if not queued:
                self._wait(op, out)
            return False
        if isinstance(op, Get):
            self._get(op, token, out)
        elif isinstance(op, List):
            self._list(op, token, out)
        else:
            self._write(op, token, out)
        return True

    def _validate(self, op: LocalOp) -> None:
        if isinstance(op, List):
            if not 1 <= op.limit <= self.config.list_limit_max:
                raise KVLimitError(
                    f"list limit {op.limit} is outside 1..{self.config.list_limit_max}",
                    hint=f"pass limit between 1 and {self.config.list_limit_max}; page with cursor",
                )
            return
        check_key(op.key)
        if isinstance(op, Put):
            check_value(op.key, op.value, op.metadata, self.config.value_bytes_max)
            if op.ttl_ms < 0:
                raise KVLimitError(
                    f"ttl for key {op.key[:80]!r} is negative ({op.ttl_ms} ms)",
                    hint="pass a positive ttl, or none for no expiry",
                )
        if isinstance(op, (Put, Delete)) and op.if_revision is not None and op.if_revision < 0:
            raise KVLimitError(
                f"if_revision for key {op.key[:80]!r} is negative",
                hint="pass a revision returned by a read, or 0 for 'only if absent'",
            )

    def _wait(self, op: LocalOp, out: _Out) -> None:
        if len(self.waiting) >= self.config.waiting_max:
            err = KVUnavailable(
                f"replica {self.id} has {len(self.waiting)} operations waiting for replication",
                hint="retry later, or use eventual consistency",
            )
            out.others.append(Reply(op.op_id, Failed(err)))
            return
        deadline = self.now_ms + self.config.session_wait_ms
        self.waiting.append((deadline, op))
        out.others.append(ScheduleTick(deadline))
        self._request_missing(decode_session(op.session), out)

    def _retry_waiting(self, out: _Out) -> None:
        still: collections.deque[tuple[int, LocalOp]] = collections.deque()
        for deadline, op in self.waiting:
            if not self._local(op, out, queued=True):
                still.append((deadline, op))
        self.waiting = still

    def _view(self, key: str) -> Item:
        entry = self.entries.get(key)
        if entry is None:
            return Item(key, None, 0)
        if not entry.live(self.now_ms):
            return Item(key, None, 0, stamp=entry.stamp)
        return Item(
            key, entry.value, entry.revision, entry.metadata, entry.expires_at_ms, entry.stamp
        )

    def _get(self, op: Get, token: VClock, out: _Out) -> None:
        entry = self.entries.get(op.key)
        if entry is not None:
            token = token.with_counter(entry.origin, entry.seq)
        out.others.append(Reply(op.op_id, GetDone(self._view(op.key), encode_session(token))))

    def _list(self, op: List, token: VClock, out: _Out) -> None:
        keys = sorted(
            k
            for k, e in self.entries.items()
            if k.startswith(op.prefix) and k > op.cursor and e.live(self.now_ms)
        )[: op.limit]
        items = []
        for key in keys:
            entry = self.entries[key]
            token = token.with_counter(entry.origin, entry.seq)
            items.append(self._view(key))
        cursor = keys[-1] if len(keys) == op.limit else ""
        out.others.append(Reply(op.op_id, ListDone(tuple(items), cursor, encode_session(token))))

    def _write(self, op: Put | Delete, token: VClock, out: _Out) -> None:
        current = self.entries.get(op.key)
        revision = current.revision if current is not None and current.live(self.now_ms) else 0
        if op.if_revision is not None and op.if_revision != revision:
            err = KVConflict(
                f"key {op.key[:80]!r} at {self.id} has revision {revision}, "
                f"not the expected {op.if_revision}",
                key=op.key,
                revision=revision,
            )
            out.others.append(Reply(op.op_id, Failed(err)))
            return
        self.own_seq += 1
        seq = self.own_seq
        kvec = VClock(current.kvec if current is not None else ()).with_counter(self.id, seq)
        is_put = isinstance(op, Put)
        entry = Entry(
            key=op.key,
            value=op.value if isinstance(op, Put) else None,
            hlc=self.clock.now(self.now_ms),
            origin=self.id,
            seq=seq,
            kvec=kvec.pairs(),
            metadata=op.metadata if isinstance(op, Put) else b"",
            expires_at_ms=self.now_ms + op.ttl_ms if isinstance(op, Put) and op.ttl_ms else 0,
        )
        self._store(entry, out)
        self.applied[self.id] = seq
        deps = token.pairs() if op.consistency is Consistency.CAUSAL else ()
        message = Replication(self.id, entry, deps)
        self.log.append(message)
        out.log.append(message)
        self._trim_log()
        self.counters.local_writes += 1
        out.others.append(Broadcast(message))
        token = token.with_counter(self.id, seq)
        result = WriteDone(
            op.key, entry.revision if is_put else 0, entry.stamp, encode_session(token)
        )
        out.others.append(Reply(op.op_id, result))

    # ---------------------------------------------------------------- strong operations

    def _ask_home(self, op: LocalOp, out: _Out) -> None:
        if len(self.strong_pending) >= self.config.strong_pending_max:
            err = KVUnavailable(
                f"replica {self.id} has {len(self.strong_pending)} strong operations in flight",
                hint="retry later; the namespace's home is slow or unreachable",
            )
            out.others.append(Reply(op.op_id, Failed(err)))
            return
        deadline = self.now_ms + self.config.strong_timeout_ms
        self.strong_pending[op.op_id] = (deadline, op)
        out.others.append(AskHome(_strong_op(self.id, op, self.now_ms)))
        out.others.append(ScheduleTick(deadline))

    def _on_strong_result(self, event: StrongResult, out: _Out) -> None:
        pending = self.strong_pending.pop(event.op_id, None)
        if pending is None:
            # The client already got KVUnavailable for this operation; never answer twice.
            self.counters.late_strong_results += 1
            return
        op = pending[1]
        outcome = event.outcome
        result: GetDone | WriteDone | ListDone | Failed
        if outcome.status == "unreachable":
            result = Failed(_unavailable(self.id, op, outcome.reason or "home unreachable"))
        elif outcome.status == "unknown":
            result = Failed(_lost(self.id, op, outcome.reason or "the home's answer was lost"))
        elif outcome.status == "conflict":
            key = getattr(op, "key", "")
            err = KVConflict(
                f"key {key[:80]!r} has revision {outcome.revision} at the home, "
                f"not the expected {getattr(op, 'if_revision', None)}",
                key=key,
                revision=outcome.revision,
            )
            result = Failed(err)
        elif isinstance(op, Get):
            result = GetDone(_strong_item(op.key, outcome.record), op.session)
        elif isinstance(op, List):
            items = tuple(_strong_item(r.key, r) for r in outcome.records)
            result = ListDone(items, outcome.cursor, op.session)
        else:
            result = WriteDone(op.key, outcome.revision, None, op.session)
        out.others.append(Reply(op.op_id, result))

    # ---------------------------------------------------------------- replication

    def _store(self, entry: Entry, out: _Out) -> bool:
        """Merge ``entry`` into the state; True if the state changed."""
        current = self.entries.get(entry.key)
        merged = merge(current, entry)
        if merged == current:
            return False
        if current is not None:
            self.tree.toggle(current.key, entry_digest(current))
        self.tree.toggle(merged.key, entry_digest(merged))
        self.entries[merged.key] = merged
        if merged.value is None or merged.expires_at_ms:
            self.dead.add(merged.key)
        else:
            self.dead.discard(merged.key)
        out.upserts[merged.key] = merged
        out.removes.discard(merged.key)
        return True

    def _observe(self, entry: Entry) -> bool:
        """Advance the clock past a remote entry; False if its clock is too far ahead."""
        try:
            self.clock.update(entry.hlc, self.now_ms)
        except ClockDriftError:
            self.counters.drift_rejected += 1
            return False
        return True

    def _on_replication(self, message: Replication, out: _Out) -> None:
        entry = message.entry
        origin = entry.origin
        if origin == self.id or entry.seq <= self.applied.get(origin, 0):
            self.counters.duplicates += 1
            return
        if origin in self.departed and entry.seq > self.departed[origin][0]:
            self._on_members((origin,))  # written after its leave: it re-joined
        slot = self.buffer.setdefault(origin, {})
        if entry.seq not in slot:
            if self.buffered >= self.config.buffer_max:
                # Dropped, not lost: replay or anti-entropy brings it back.
                self.counters.buffer_dropped += 1
                return
            slot[entry.seq] = message
            self.buffered += 1
        self._drain(out)
        if self.buffer.get(origin):
            self._ask_replay(origin, out)

    def _drain(self, out: _Out) -> None:
        """Deliver every buffered write whose turn has come, until nothing moves."""
        progress = True
        while progress:
            progress = False
            for origin in list(self.buffer):
                slot = self.buffer[origin]
                for seq in [s for s in slot if s <= self.applied.get(origin, 0)]:
                    del slot[seq]
                    self.buffered -= 1
                while (message := slot.get(self.applied.get(origin, 0) + 1)) is not None:
                    if not VClock(self.applied).dominates(dict(message.deps)):
                        break
                    if not self._observe(message.entry):
                        break
                    del slot[message.entry.seq]
                    self.buffered -= 1
                    self._store(message.entry, out)
                    self.applied[origin] = message.entry.seq
                    self.counters.remote_applied += 1
                    progress = True
                if not slot:
                    del self.buffer[origin]

    def _ask_replay(self, origin: str, out: _Out) -> None:
        last = self.replay_asked_ms.get(origin)
        if last is not None and self.now_ms - last < self.config.replay_retry_ms:
            return
        if origin not in self.config.replicas or origin == self.id:
            return
        self.replay_asked_ms[origin] = self.now_ms
        self.counters.replays_sent += 1
        from_seq = self.applied.get(origin, 0) + 1
        out.others.append(SendTo(origin, ReplayRequest(self.id, origin, from_seq)))

    def _request_missing(self, token: VClock, out: _Out) -> None:
        for origin in self._held().missing(token):
            self._ask_replay(origin, out)

    def _on_replay_request(self, message: ReplayRequest, out: _Out) -> None:
        if message.origin != self.id:
            return
        sent = 0
        for rep in self.log:
            if rep.entry.seq < message.from_seq:
                continue
            out.others.append(SendTo(message.sender, rep))
            sent += 1
            if sent >= self.config.replay_batch_max:
                break

    def _trim_log(self) -> None:
        acked = min(
            (
                self.peer_applied.get(p, VClock()).get(self.id)
                for p in self.config.replicas
                if p != self.id
            ),
            default=self.own_seq,
        )
        while self.log and (self.log[0].entry.seq <= acked or len(self.log) > self.config.log_max):
            self.log.popleft()

    # ---------------------------------------------------------------- anti-entropy and GC

    def _on_announce(self, message: Announce, out: _Out) -> None:
        peer = message.sender
        if peer in self.departed and message.floor_hlc > self.departed[peer][1]:
            self._on_members((peer,))  # announced after its leave: it re-joined
        if peer not in self.config.replicas or peer == self.id:
            return
        before = self.peer_view.get(peer)
        view = view_of(message, before)
        if view is not None:
            self.peer_view[peer] = view
            self._stirred |= before is None or (view.leaving, view.leaving_seen) != (
                before.leaving,
                before.leaving_seen,
            )
        self.peer_applied[peer] = self.peer_applied.get(peer, VClock()).merge(dict(message.applied))
        floor = (message.floor_hlc, message.floor_seq)
        self.peer_floor[peer] = max(self.peer_floor.get(peer, (0, 0)), floor)
        self._trim_log()
        if message.floor_seq > self.applied.get(peer, 0):
            self._ask_replay(peer, out)

    def _on_tick(self, out: _Out) -> None:
        now = self.now_ms
        for deadline, op in list(self.waiting):
            if deadline <= now:
                self.waiting.remove((deadline, op))
                missing = self._held().missing(decode_session(op.session))
                err = KVSessionBehind(
                    f"replica {self.id} has not received the writes the session token needs "
                    f"(missing {dict(missing)}) within {self.config.session_wait_ms} ms",
                    missing=dict(missing),
                    hint="retry, or send the request to the location that made those writes",
                )
                out.others.append(Reply(op.op_id, Failed(err)))
        for op_id, (deadline, op) in list(self.strong_pending.items()):
            if deadline <= now:
                del self.strong_pending[op_id]
                reason = f"no answer within {self.config.strong_timeout_ms} ms"
                out.others.append(Reply(op_id, Failed(_lost(self.id, op, reason))))
        for origin, slot in self.buffer.items():
            if slot:
                self._ask_replay(origin, out)
        if now >= self.next_anti_entropy_ms:
            self._anti_entropy(out)
        self._collect_garbage(out)
        out.others.append(ScheduleTick(self.next_anti_entropy_ms))

    def _anti_entropy(self, out: _Out) -> None:
        self.next_anti_entropy_ms = self.now_ms + self.anti_entropy_gap_ms
        # The round after next backs off unless something changes before it (_liven).
        self.anti_entropy_gap_ms = min(
            self.config.anti_entropy_idle_max_ms, self.anti_entropy_gap_ms * 2
        )
        floor_hlc = self.clock.now(self.now_ms)
        # The floor is a promise about every later write: persist the clock before announcing.
        out.dirty = True
        applied = self._held().pairs()
        seen = tuple(sorted(p for p, v in self.peer_view.items() if v.leaving))
        announce = Announce(self.id, applied, floor_hlc, self.own_seq, self.leaving, seen)
        out.others.append(Broadcast(announce))
        peers = [p for p in self.config.replicas if p != self.id]
        if not peers:
            return
        peer = peers[self.anti_entropy_turn % len(peers)]
        self.anti_entropy_turn += 1
        out.others.append(SendTo(peer, Digest(self.id, tuple(self.tree.leaves), applied)))

    def _on_digest(self, message: Digest, out: _Out) -> None:
        if len(message.leaves) != LEAVES:
            return
        buckets = diff(self.tree, MerkleTree(list(message.leaves)))
        if not buckets:
            self._adopt_frontier(VClock(message.applied), out)
            return
        self._stirred = True
        out.others.append(SendTo(message.sender, RepairRequest(self.id, tuple(buckets))))

    def _on_repair_request(self, message: RepairRequest, out: _Out) -> None:
        self._stirred = True  # a peer differs: keep the rounds (and its digests) coming
        wanted = set(message.buckets)
        by_bucket: dict[int, list[Entry]] = {}
        for key, entry in self.entries.items():
            bucket = bucket_of(key)
            if bucket in wanted:
                by_bucket.setdefault(bucket, []).append(entry)
        entries: list[Entry] = []
        sent: list[int] = []
        size = 0
        budget = self.config.repair_bytes_max
        for bucket in sorted(wanted):
            chunk = by_bucket.get(bucket, [])
            chunk_bytes = sum(_entry_bytes(e) for e in chunk)
            if len(entries) + len(chunk) > self.config.repair_entries_max:
                break
            if size + chunk_bytes > budget:
                if entries or sent:
                    break  # the rest goes in a later round (the answer says incomplete)
                # One bucket alone is over the budget: ship it now in pieces that each fit a
                # message; the bucket then counts as sent.
                for piece in _pieces(chunk, budget):
                    partial = RepairResponse(
                        sender=self.id,
                        buckets=(bucket,),
                        entries=tuple(piece),
                        complete=False,
                        leaves=(),
                        applied=(),
                    )
                    out.others.append(SendTo(message.sender, partial))
                sent.append(bucket)
                continue
            entries.extend(chunk)
            size += chunk_bytes
            sent.append(bucket)
        response = RepairResponse(
            sender=self.id,
            buckets=tuple(sent),
            entries=tuple(entries),
            complete=len(sent) == len(wanted),
            leaves=tuple(self.tree.leaves),
            applied=self._held().pairs(),
        )
        out.others.append(SendTo(message.sender, response))

    def _on_repair_response(self, message: RepairResponse, out: _Out) -> None:
        buckets = set(message.buckets)
        for entry in message.entries:
            merged = bucket_of(entry.key) in buckets and self._observe(entry)
            if merged and self._store(entry, out):
                self.counters.repairs_merged += 1
        if message.complete and tuple(self.tree.leaves) == message.leaves:
            self._adopt_frontier(VClock(message.applied), out)

    def _adopt_frontier(self, applied: VClock, out: _Out) -> None:
        """Our state contains the peer's: everything it applied counts as applied here."""
        if self.refill_seq and applied.get(self.id) >= self.refill_seq:
            self.refill_seq = 0  # it held our own writes we dropped when we left: so do we now
            out.dirty = True
        ours = VClock(self.applied)
        if ours.dominates(applied):
            return
        for origin, seq in applied.items():
            if origin != self.id and seq > self.applied.get(origin, 0):
                self.applied[origin] = seq
        self.counters.frontier_jumps += 1
        self._drain(out)

    def _collect_garbage(self, out: _Out) -> None:
        stable = self._stable_hlc()
        if stable <= 0:
            return
        for key in sorted(self.dead):
            entry = self.entries[key]
            if entry.hlc > stable:
                continue
            if entry.value is not None and not entry.expired(self.now_ms):
                continue
            self.tree.toggle(key, entry_digest(entry))
            del self.entries[key]
            self.dead.discard(key)
            out.upserts.pop(key, None)
            out.removes.add(key)
            self.counters.gc_collected += 1

    def _stable_hlc(self) -> int:
        """Every write with a timestamp at or below this has been applied everywhere."""
        floors = dict(self.peer_floor)
        floors[self.id] = (self.clock.last, self.own_seq)
        frontiers = dict(self.peer_applied)
        frontiers[self.id] = self._held()
        if not departed_covered(self.departed, self.config.replicas, frontiers):
            return 0
        stable = self.clock.last
        for origin in self.config.replicas:
            if origin not in floors:
                return 0
            floor_hlc, floor_seq = floors[origin]
            for replica in self.config.replicas:
                frontier = frontiers.get(replica)
                if frontier is None or frontier.get(origin) < floor_seq:
                    return 0
            stable = min(stable, floor_hlc)
        return stable

    # ---------------------------------------------------------------- membership (rule 8)

    def _on_peer_left(self, message: Leave) -> None:
        peer = message.sender
        if peer == self.id:
            return  # our own earlier leave, read back from the members bucket
        if leave_is_stale(message, self.peer_view.get(peer), self.applied.get(peer, 0)):
            return
        self.departed[peer] = (message.final_seq, message.left_hlc)
        if peer in self.config.replicas:
            replicas = tuple(r for r in self.config.replicas if r != peer)
            self.config = dataclasses.replace(self.config, replicas=replicas)
        for table in (self.peer_applied, self.peer_floor, self.peer_view, self.replay_asked_ms):
            table.pop(peer, None)

    def _on_leave_requested(self, out: _Out) -> None:
        if not self.leaving:
            self.leaving = True
            self._anti_entropy(out)  # tell the peers now, so they can acknowledge it
        blocker = leave_blocker(
            self.id,
            self.config.replicas,
            self.applied,
            self.peer_view,
            holds_entries=bool(self.entries),
        )
        if blocker:
            out.others.append(LeaveBlocked(blocker))
            return
        self._leave(out)

    def _leave(self, out: _Out) -> None:
        """Every write held here is held by a staying replica: drop the data and go."""
        reason = f"replica {self.id} left the namespace"
        for _deadline, op in self.waiting:
            out.others.append(Reply(op.op_id, Failed(KVUnavailable(reason))))
        for op_id, (_deadline, op) in self.strong_pending.items():
            out.others.append(Reply(op_id, Failed(_lost(self.id, op, reason))))
        out.removes.update(self.entries)
        out.upserts.clear()
        left_hlc = self.clock.now(self.now_ms)
        self._reset_volatile(self.now_ms)
        self.entries, self.tree, self.dead = {}, MerkleTree(), set()
        self.log.clear()
        self.applied = {self.id: self.own_seq} if self.own_seq else {}
        self.refill_seq = self.own_seq
        self.left = True
        self.leaving = False
        out.others.append(Broadcast(Leave(self.id, self.own_seq, left_hlc)))
        out.others.append(Left(self.id, self.own_seq, left_hlc))

    def _while_left(self, event: Event) -> list[Instruction]:
        if isinstance(event, LeaveRequested):
            return [Left(self.id, self.own_seq, self.clock.last)]
        if isinstance(event, _LOCAL_OPS):
            err = KVUnavailable(
                f"replica {self.id} left the namespace (no function here binds it any more)",
                hint="send the request to a location where a function binds the namespace",
            )
            return [Reply(event.op_id, Failed(err))]
        return []

    # ---------------------------------------------------------------- restart

    def _on_restarted(self, event: Restarted) -> None:
        self._reset_volatile(event.now_ms)
        self.entries = {}
        self.tree = MerkleTree()
        self.dead = set()
        for entry in event.entries:
            self.entries[entry.key] = entry
            self.tree.toggle(entry.key, entry_digest(entry))
            if entry.value is None or entry.expires_at_ms:
                self.dead.add(entry.key)
        self.applied = dict(event.meta.applied)
        self.own_seq = event.meta.own_seq
        self.refill_seq = event.meta.refill_seq
        self.clock = HLC(max_drift_ms=self.config.max_drift_ms, last=event.meta.hlc_last)
        for entry in event.entries:
            self.clock.observe(entry.hlc)
        self.log = collections.deque(sorted(event.log, key=lambda r: r.entry.seq))

    # ---------------------------------------------------------------- checks

    def check_invariants(self) -> None:
        """Assert the replica's internal consistency (tests and the simulator call it)."""
        assert self.applied.get(self.id, 0) == self.own_seq, (self.applied, self.own_seq)
        tree = MerkleTree()
        for key, entry in self.entries.items():
            assert entry.key == key, (key, entry.key)
            assert entry.hlc <= self.clock.last, (entry.hlc, self.clock.last)
            assert entry.revision >= 1, entry
            assert (key in self.dead) == (entry.value is None or entry.expires_at_ms != 0), key
            if entry.origin == self.id:
                assert entry.seq <= self.own_seq, (entry.seq, self.own_seq)
            tree.toggle(key, entry_digest(entry))
        assert tree.leaves == self.tree.leaves, "merkle leaves out of date"
        assert self.dead <= set(self.entries), "dead key without entry"
        assert self.buffered == sum(len(s) for s in self.buffer.values()), self.buffered
        assert self.buffered <= self.config.buffer_max, self.buffered
        assert len(self.waiting) <= self.config.waiting_max
        assert len(self.strong_pending) <= self.config.strong_pending_max
        assert len(self.log) <= self.config.log_max
        seqs = [r.entry.seq for r in self.log]
        assert seqs == sorted(seqs), "replay log out of order"
        assert all(s <= self.own_seq for s in seqs), "replay log ahead of own_seq"
        assert self.refill_seq <= self.own_seq, (self.refill_seq, self.own_seq)
        assert not set(self.departed) & set(self.config.replicas), "departed replica is a member"
        assert self.id in self.config.replicas, "a replica is always a member of its own set"
        if self.left:
            assert not self.entries, "a replica that left keeps no entries"
            assert not self.log, "a replica that left keeps no replay log"

    def statistics(self) -> ReplicaStatistics:
        return ReplicaStatistics(
            entries=len(self.entries),
            dead_entries=len(self.dead),
            waiting=len(self.waiting),
            strong_pending=len(self.strong_pending),
            buffered=self.buffered,
            log=len(self.log),
            **dataclasses.asdict(self.counters),
            departed=len(self.departed),
            leaving=self.leaving,
            left=self.left,
            refill_seq=self.refill_seq,
        )

    def content(self) -> dict[str, Item]:
        """Every live key as a read would see it now (checkers compare replicas with this)."""
        return {k: self._view(k) for k, e in self.entries.items() if e.live(self.now_ms)}


def _strong_op(replica: str, op: LocalOp, now_ms: int) -> StrongOp:
    if isinstance(op, Get):
        return StrongOp(op.op_id, replica, "get", key=op.key, now_ms=now_ms)
    if isinstance(op, List):
        return StrongOp(
            op.op_id,
            replica,
            "list",
            prefix=op.prefix,
            limit=op.limit,
            cursor=op.cursor,
            now_ms=now_ms,
        )
    if isinstance(op, Delete):
        return StrongOp(
            op.op_id, replica, "delete", key=op.key, if_revision=op.if_revision, now_ms=now_ms
        )
    return StrongOp(
        op.op_id,
        replica,
        "put",
        key=op.key,
        value=op.value,
        metadata=op.metadata,
        if_revision=op.if_revision,
        expires_at_ms=now_ms + op.ttl_ms if op.ttl_ms else 0,
        now_ms=now_ms,
    )


def _strong_item(key: str, record: StrongRecord | None) -> Item:
    if record is None:
        return Item(key, None, 0)
    return Item(key, record.value, record.revision, record.metadata, record.expires_at_ms)


def _entry_bytes(entry: Entry) -> int:
    """An upper estimate of an entry's size on the wire (key, value, metadata, clock, envelope)."""
    value = len(entry.value) if entry.value is not None else 0
    return len(entry.key) * 4 + value + len(entry.metadata) + 32 * len(entry.kvec) + 64


def _pieces(entries: list[Entry], budget: int) -> list[list[Entry]]:
    """Split ``entries`` into runs of at most ``budget`` bytes (a bigger entry goes alone)."""
    pieces: list[list[Entry]] = []
    current: list[Entry] = []
    size = 0
    for entry in entries:
        n = _entry_bytes(entry)
        if current and size + n > budget:
            pieces.append(current)
            current, size = [], 0
        current.append(entry)
        size += n
    if current:
        pieces.append(current)
    return pieces


def _lost(replica: str, op: LocalOp, reason: str) -> KVUnavailable | KVOutcomeUnknown:
    """An operation was sent to the home and no answer came: a write may have applied."""
    if not isinstance(op, Put | Delete):
        return _unavailable(replica, op, reason)  # a read changed nothing
    return KVOutcomeUnknown(
        f"strong {type(op).__name__.lower()} of key {op.key[:80]!r} at {replica}: sent to the "
        f"namespace's home but {reason}, so it may or may not have applied",
        hint="read the key with consistency='strong' to find out, or retry with if_revision",
    )


def _unavailable(replica: str, op: LocalOp, reason: str) -> KVUnavailable:
    what = f"key {op.key[:80]!r}" if not isinstance(op, List) else f"prefix {op.prefix[:80]!r}"
    return KVUnavailable(
        f"strong {type(op).__name__.lower()} of {what} at {replica}: the namespace's home "
        f"cannot be reached ({reason})",
        hint="retry later, or use eventual/session consistency, which stay available",
    )
