"""Replica sets shrink (state/membership.py, machine rule 8): events in, instructions out."""

from __future__ import annotations

import random

import pytest
from _net import Net

from edgefn.errors import KVOutcomeUnknown, KVUnavailable
from edgefn.state import (
    Broadcast,
    Consistency,
    Delete,
    Entry,
    Failed,
    Get,
    GetDone,
    Leave,
    LeaveBlocked,
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
    Restarted,
    SendTo,
    Tick,
    WriteDone,
    received,
)
from edgefn.state.membership import PeerView, leave_blocker
from edgefn.state.messages import Announce, Digest, ReplayRequest
from edgefn.state.vclock import VClock

S = Consistency.SESSION


def _round(net: Net, names: tuple[str, ...] | None = None) -> None:
    """One anti-entropy round of ``names`` (default: all), after what is in flight, delivered."""
    net.flush()
    net.now += 1_000
    for name in names or net.names:
        net.do(name, Tick(net.now))
    net.flush()


def _leave(net: Net, name: str) -> list[object]:
    return list(net.do(name, LeaveRequested(net.now)))


def _value(net: Net, replica: str, key: str, op_id: int = 900) -> bytes | None:
    net.do(replica, Get(op_id, key, net.now))
    result = net.replies.pop(op_id)
    assert isinstance(result, GetDone), result
    return result.item.value


def test_a_replica_leaves_only_once_a_staying_peer_holds_its_writes() -> None:
    """a wrote k; it may leave only after a peer that knows a is leaving announced holding it.
    Leaving drops a's data, tells everyone, and later operations at a fail clearly."""
    net = Net()
    net.do("a", Put(1, "k", b"v", net.now))
    net.drop_all()  # the write has reached nobody yet
    out = _leave(net, "a")
    assert any(isinstance(i, LeaveBlocked) and "writes of a up to seq 1" in i.reason for i in out)
    assert any(isinstance(i, Broadcast) and getattr(i.message, "leaving", False) for i in out)
    net.flush()  # the intent announcement makes b and c ask a for a replay
    assert _value(net, "b", "k") == b"v"
    _round(net, ("b", "c"))  # their announcements acknowledge a's intent
    out = _leave(net, "a")
    kinds = [type(i) for i in out]
    assert kinds == [Persist, Broadcast, Left], kinds
    persist, broadcast, left = out
    assert isinstance(persist, Persist)
    assert persist.removes == ("k",)
    assert persist.meta.left
    assert persist.meta.refill_seq == 1
    assert persist.meta.own_seq == 1
    assert broadcast == Broadcast(Leave("a", 1, left.left_hlc))  # type: ignore[union-attr]
    assert left == Left("a", 1, left.left_hlc)  # type: ignore[union-attr]
    a = net.replicas["a"]
    assert a.left
    assert not a.entries
    assert a.statistics().left
    net.flush()
    for peer in ("b", "c"):
        replica = net.replicas[peer]
        assert replica.config.replicas == tuple(n for n in ("b", "c"))
        assert replica.departed == {"a": (1, left.left_hlc)}  # type: ignore[union-attr]
        assert replica.statistics().departed == 1
    net.do("a", Put(2, "k2", b"late", net.now))
    failed = net.replies[2]
    assert isinstance(failed, Failed)
    assert isinstance(failed.error, KVUnavailable)
    assert "left the namespace" in failed.error.message
    assert _leave(net, "a") == [left], "asking again answers the same"
    assert net.do("a", Tick(net.now)) == []


def test_the_only_replica_never_leaves() -> None:
    """Leaving would take the namespace's data with it: the stream keeps only a bounded tail."""
    net = Net(("a",))
    net.do("a", Put(1, "k", b"v", net.now))
    out = _leave(net, "a")
    assert [i for i in out if isinstance(i, LeaveBlocked)] == [
        LeaveBlocked("a is the only replica of the namespace; leaving would take its data with it")
    ]
    assert not net.replicas["a"].left
    assert _value(net, "a", "k") == b"v"


def test_a_replica_that_never_wrote_or_applied_anything_leaves_at_once() -> None:
    net = Net(("a", "b"))
    out = _leave(net, "a")
    assert any(isinstance(i, Left) for i in out)
    persist = next(i for i in out if isinstance(i, Persist))
    assert persist.meta.refill_seq == 0
    assert persist.meta.applied == ()


def test_two_replicas_leaving_at_once_never_rely_on_each_other() -> None:
    """a and b want to leave while c is cut off: each holds the other's writes, but neither
    counts a replica that is leaving, so both wait until c (staying) has everything."""
    net = Net()
    net.do("a", Put(1, "ka", b"1", net.now))
    net.do("b", Put(2, "kb", b"2", net.now))

    def cut_c() -> None:
        net.in_flight = [m for m in net.in_flight if "c" not in (m[0], m[1])]

    cut_c()
    net.flush()
    # Both ask at once: each has only the other's pre-intent announcement (no acknowledgment).
    _round(net, ("a", "b"))
    assert not [i for i in _leave(net, "a") if isinstance(i, Left)]
    assert not [i for i in _leave(net, "b") if isinstance(i, Left)]
    for _ in range(3):
        cut_c()
        _round(net, ("a", "b"))
        for name in ("a", "b"):
            assert not any(isinstance(i, Left) for i in _leave(net, name)), name
            cut_c()
    # c comes back: it catches up, acknowledges both, and then each may leave.
    net.flush()
    _round(net)
    _round(net, ("c",))
    assert not any(isinstance(i, LeaveBlocked) for i in _leave(net, "a"))
    assert not any(isinstance(i, LeaveBlocked) for i in _leave(net, "b"))
    net.flush()
    assert _value(net, "c", "ka") == b"1"
    assert _value(net, "c", "kb") == b"2"
    assert net.replicas["c"].config.replicas == ("c",)


def test_leave_blocker_rules() -> None:
    """The hand-off rule, table-driven: the holder must stay, hold enough, and (for another
    origin's writes) have acknowledged the leaver's intent."""
    applied = {"a": 2, "d": 5}
    ok = PeerView(10, VClock({"a": 2, "d": 5}), leaving=False, leaving_seen=frozenset({"a"}))
    assert leave_blocker("a", ("a", "b"), applied, {"b": ok}, holds_entries=True) == ""
    behind = PeerView(10, VClock({"a": 2, "d": 4}), False, frozenset({"a"}))
    assert "writes of d up to seq 5" in leave_blocker(
        "a", ("a", "b"), applied, {"b": behind}, holds_entries=True
    )
    leaving = PeerView(10, VClock({"a": 2, "d": 5}), True, frozenset({"a"}))
    assert leave_blocker("a", ("a", "b"), applied, {"b": leaving}, holds_entries=True)
    unaware = PeerView(10, VClock({"a": 2, "d": 5}), False, frozenset())
    assert leave_blocker("a", ("a", "b"), applied, {"b": unaware}, holds_entries=True)
    # An origin that stays is trusted with its own writes, acknowledgment or not.
    own = PeerView(10, VClock({"b": 3}), False, frozenset())
    assert leave_blocker("a", ("a", "b"), {"b": 3}, {"b": own}, holds_entries=True) == ""
    assert leave_blocker("a", ("a", "b"), {"b": 3}, {}, holds_entries=True) != ""
    # Alone: only a replica that holds nothing may go.
    assert leave_blocker("a", ("a",), {}, {}, holds_entries=False) == ""
    assert "only replica" in leave_blocker("a", ("a",), {}, {}, holds_entries=True)
    assert "only replica" in leave_blocker("a", ("a",), {"b": 1}, {}, holds_entries=False)


def test_a_departed_replica_stops_blocking_gc_once_its_writes_are_everywhere() -> None:
    """b deletes k; a (which will never announce again) leaves. GC at b waits for c to apply
    a's last write (cut off from c), not for a's floor, and then collects the tombstone."""
    net = Net()
    net.do("b", Put(1, "k", b"v", net.now))
    net.do("b", Delete(2, "k", net.now))
    net.flush()
    net.do("a", Put(3, "x", b"from a", net.now))
    net.in_flight = [m for m in net.in_flight if m[1] != "c"]  # c misses a's write
    net.flush()
    net.do("a", LeaveRequested(net.now))
    net.in_flight = [m for m in net.in_flight if "c" not in (m[0], m[1])]
    net.flush()
    _round(net, ("b",))
    assert any(isinstance(i, Left) for i in _leave(net, "a"))
    net.flush()  # a's Leave reaches b and c
    b = net.replicas["b"]
    assert b.departed == {"a": (1, b.departed["a"][1])}
    for _ in range(4):
        _round(net, ("b", "c"))
    assert "k" not in b.entries, "tombstone collected without a's floor"
    assert b.statistics().gc_collected >= 1
    assert _value(net, "c", "x") == b"from a", "anti-entropy brought c the departed write"


def test_gc_waits_for_every_member_to_apply_the_departed_writes() -> None:
    """b applied the departed a's writes up to 7, c only up to 5: a tombstone stays until c's
    announcement covers seq 7 (a write of a still on its way to c could resurrect the key)."""
    b = Replica(ReplicaConfig(replica_id="b", replicas=("a", "b", "c")))
    b.handle(Restarted((), ReplicaMeta((("a", 7),), 0, 0), 1_000))
    b.handle(Put(1, "k", b"v", 1_000))
    b.handle(Delete(2, "k", 1_001))
    b.handle(PeerLeft(Leave("a", 7, 1), 1_002))
    assert b.config.replicas == ("b", "c")
    floor = b.clock.last + (10 << 16)
    b.handle(received(Announce("c", (("a", 5), ("b", 2)), floor, 0), 2_000))
    b.handle(Tick(10_000))
    assert "k" in b.entries, "c has not applied a's writes up to 7"
    b.handle(received(Announce("c", (("a", 7), ("b", 2)), floor + 1, 0), 11_000))
    b.handle(Tick(20_000))
    assert "k" not in b.entries
    b.check_invariants()


def test_a_stale_leave_record_is_ignored_after_a_rejoin() -> None:
    """The members bucket still holds a's leave record when a is back and announcing."""
    b = Replica(ReplicaConfig(replica_id="b", replicas=("a", "b")))
    b.handle(received(Announce("a", (), 5_000 << 16, 0), 1))
    b.handle(PeerLeft(Leave("a", 0, 4_000 << 16), 2))
    assert b.config.replicas == ("a", "b"), "announced after that leave: still a member"
    b.handle(PeerLeft(Leave("a", 0, 6_000 << 16), 3))
    assert b.config.replicas == ("b",)
    # An old announcement (before the leave) does not bring it back; a newer one does.
    b.handle(received(Announce("a", (), 5_500 << 16, 0), 4))
    assert b.config.replicas == ("b",)
    b.handle(received(Announce("a", (), 7_000 << 16, 0), 5))
    assert b.config.replicas == ("a", "b")
    assert not b.departed
    b.handle(PeerLeft(Leave("b", 0, 1), 6))
    assert b.config.replicas == ("a", "b"), "never leaves itself on someone's word"


def test_members_changed_and_writes_past_the_leave_bring_a_replica_back() -> None:
    b = Replica(ReplicaConfig(replica_id="b", replicas=("a", "b", "c")))
    b.handle(PeerLeft(Leave("a", 0, 1), 1))
    b.handle(PeerLeft(Leave("c", 0, 1), 1))
    assert b.config.replicas == ("b",)
    b.handle(MembersChanged(("a",), 2))
    assert b.config.replicas == ("a", "b")
    assert set(b.departed) == {"c"}
    entry = Entry("k", b"v", 1 << 16, "c", 1, (("c", 1),))
    b.handle(received(Replication("c", entry), 3))
    assert b.config.replicas == ("a", "b", "c")
    assert not b.departed
    b.check_invariants()


def test_a_rejoined_replica_refills_before_it_serves_sessions_that_name_its_writes() -> None:
    """a wrote k in a session, left, and re-joins from its store (entries gone, counters kept).
    A session read naming a's write waits at a until a Merkle round with b refilled a."""
    net = Net(("a", "b"))
    net.do("a", Put(1, "k", b"v", net.now, S))
    done = net.replies.pop(1)
    assert isinstance(done, WriteDone)
    net.flush()
    _round(net)
    _leave(net, "a")
    _round(net, ("b",))
    out = _leave(net, "a")
    persist = next(i for i in out if isinstance(i, Persist))
    net.flush()
    # Re-join: a fresh replica from what the store kept.
    a = Replica(ReplicaConfig(replica_id="a", replicas=("a", "b")), now_ms=net.now)
    a.handle(Restarted((), persist.meta, net.now))
    net.replicas["a"] = a
    net.do("b", MembersChanged(("a",), net.now))
    assert a.own_seq == 1
    assert a.refill_seq == 1
    assert a.statistics().refill_seq == 1
    net.do("a", Get(2, "k", net.now, S, session=done.session))
    assert 2 not in net.replies, "a does not hold its own old write yet"
    assert not any(isinstance(m, ReplayRequest) and d == "a" for _s, d, m in net.in_flight), (
        "a never asks itself for a replay"
    )
    net.drop_all()
    net.now += 1_000
    out = net.do("a", Tick(net.now))
    announce = next(i.message for i in out if isinstance(i, Broadcast))
    assert isinstance(announce, Announce)
    assert announce.applied == ()
    digest = next(i.message for i in out if isinstance(i, SendTo))
    assert isinstance(digest, Digest)
    assert digest.applied == ()
    net.do("b", Tick(net.now))  # b's digest: a pulls b's differing buckets
    net.flush()
    got = net.replies[2]
    assert isinstance(got, GetDone)
    assert got.item.value == b"v"
    assert a.refill_seq == 0
    # New writes continue a's sequence, so nobody drops them as duplicates.
    net.do("a", Put(3, "k2", b"new", net.now))
    net.flush()
    assert _value(net, "b", "k2") == b"new"
    assert net.replicas["b"].applied["a"] == 2


def test_leaving_answers_waiting_and_strong_operations() -> None:
    """Operations still waiting when the replica leaves get an answer: unavailable, or outcome
    unknown for a strong write already sent to the home."""
    net = Net(("a", "b"))
    net.home_reachable = False
    net.do("b", Put(1, "k", b"v", net.now, S))
    token = net.replies.pop(1).session  # type: ignore[union-attr]
    net.drop_all()
    net.do("a", Get(2, "k", net.now, S, session=token))
    net.do("a", Put(3, "s", b"v", net.now, Consistency.STRONG))
    net.drop_all()
    _round(net)
    net.do("a", LeaveRequested(net.now))
    net.flush()
    _round(net, ("b",))
    net.replies.pop(2, None)  # the session read may have been served by the round
    out = _leave(net, "a")
    assert any(isinstance(i, Left) for i in out)
    strong = net.replies[3]
    assert isinstance(strong, Failed)
    assert isinstance(strong.error, KVOutcomeUnknown)


def test_a_waiting_session_read_fails_when_its_replica_leaves() -> None:
    net = Net(("a", "b"))
    net.do("b", Put(1, "k", b"v", net.now, S))
    token = net.replies.pop(1).session  # type: ignore[union-attr]
    net.drop_all()
    # a knows nothing of b's write, so the read waits; a's own data is nothing: it may leave.
    net.do("a", Get(2, "k", net.now, S, session=token))
    net.drop_all()
    out = _leave(net, "a")
    assert any(isinstance(i, Left) for i in out)
    failed = net.replies[2]
    assert isinstance(failed, Failed)
    assert isinstance(failed.error, KVUnavailable)


def test_a_cancelled_leave_announces_staying() -> None:
    net = Net(("a", "b"))
    net.do("a", Put(1, "k", b"v", net.now))
    net.drop_all()
    _leave(net, "a")
    assert net.replicas["a"].leaving
    net.drop_all()
    net.do("a", LeaveCancelled(net.now))
    net.now += 1_000
    out = net.do("a", Tick(net.now))
    announce = next(i.message for i in out if isinstance(i, Broadcast))
    assert isinstance(announce, Announce)
    assert not announce.leaving
    assert not net.replicas["a"].statistics().leaving


@pytest.mark.parametrize("seed", range(20))
def test_random_leaves_and_rejoins_keep_every_acknowledged_write(seed: int) -> None:
    """Seeded: writes at random replicas over a lossy network, a random replica asks to leave
    every round and replicas that left re-join at random. No acknowledged write is ever lost
    from the replicas that stay, and they converge."""
    rng = random.Random(seed)
    names = ("a", "b", "c")
    net = Net(names)
    keys: set[str] = set()
    away: dict[str, Persist] = {}
    op = 0
    for _ in range(12):
        here = [n for n in names if n not in away]
        for _ in range(3):
            op += 1
            key = f"k{rng.randrange(4)}"
            net.do(rng.choice(here), Put(op, key, f"v{op}".encode(), net.now))
            assert isinstance(net.replies[op], WriteDone)
            keys.add(key)
        net.in_flight = [m for m in net.in_flight if rng.random() < 0.7]  # lossy
        net.flush()
        _round(net, tuple(here))
        leaver = rng.choice(here)
        out = net.do(leaver, LeaveRequested(net.now))
        persist = next((i for i in out if isinstance(i, Persist) and i.meta.left), None)
        if persist is not None:
            away[leaver] = persist
        net.flush()
        for name, kept in list(away.items()):
            if name != leaver and rng.random() < 0.5:
                back = Replica(ReplicaConfig(replica_id=name, replicas=names), now_ms=net.now)
                back.handle(Restarted((), kept.meta, net.now))
                net.replicas[name] = back
                del away[name]
                for other in names:
                    net.do(other, MembersChanged((name,), net.now))
        net.flush()
    staying = tuple(n for n in names if n not in away)
    assert staying, "the last replica never leaves"
    for _ in range(6):
        _round(net, staying)
    for name in staying:
        for key in sorted(keys):
            assert _value(net, name, key) is not None, (seed, name, key)
    contents = {n: net.replicas[n].content() for n in staying}
    assert len({tuple(sorted((k, i.value) for k, i in c.items())) for c in contents.values()}) == 1
