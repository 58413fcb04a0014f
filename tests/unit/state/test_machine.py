"""The replica machine: events in, instructions out."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from _net import Net

from edgefn.errors import KVConflict, KVLimitError, KVOutcomeUnknown, KVUnavailable
from edgefn.state import (
    AskHome,
    Broadcast,
    Consistency,
    Delete,
    Failed,
    Get,
    GetDone,
    List,
    ListDone,
    Persist,
    Put,
    Replica,
    ReplicaConfig,
    Replication,
    ReplicationReceived,
    Reply,
    ScheduleTick,
    SendTo,
    StrongOutcome,
    StrongResult,
    Tick,
    WriteDone,
    received,
)
from edgefn.state.events import AntiEntropyRequest
from edgefn.state.hlc import pack
from edgefn.state.messages import RepairRequest, RepairResponse, ReplayRequest

S = Consistency.SESSION
C = Consistency.CAUSAL
ST = Consistency.STRONG


def _value(net: Net, replica: str, key: str, op_id: int = 900, **kw: object) -> bytes | None:
    net.do(replica, Get(op_id, key, net.now, **kw))  # type: ignore[arg-type]
    result = net.replies.pop(op_id)
    assert isinstance(result, GetDone), result
    return result.item.value


def test_put_persists_then_broadcasts_then_replies() -> None:
    net = Net()
    out = net.do("a", Put(1, "k", b"v", net.now))
    assert [type(i) for i in out] == [Persist, Broadcast, Reply]
    persist = out[0]
    assert isinstance(persist, Persist)
    assert persist.upserts[0].value == b"v"
    assert persist.meta.own_seq == 1
    assert persist.log_append[0].entry.seq == 1
    done = net.replies[1]
    assert isinstance(done, WriteDone)
    assert done.revision == 1
    assert _value(net, "a", "k") == b"v"
    assert _value(net, "b", "k") is None
    net.flush()
    assert _value(net, "b", "k") == b"v"


def test_if_revision_conflicts_name_the_current_revision() -> None:
    net = Net()
    net.do("a", Put(1, "k", b"v1", net.now, if_revision=0))
    assert isinstance(net.replies[1], WriteDone)
    net.do("a", Put(2, "k", b"v2", net.now, if_revision=0))
    failed = net.replies[2]
    assert isinstance(failed, Failed)
    assert isinstance(failed.error, KVConflict)
    assert failed.error.revision == 1
    assert failed.error.key == "k"
    net.do("a", Put(3, "k", b"v2", net.now, if_revision=1))
    assert isinstance(net.replies[3], WriteDone)
    net.do("a", Delete(4, "k", net.now, if_revision=1))
    assert isinstance(net.replies[4], Failed)


@pytest.mark.parametrize(
    ("event", "match"),
    [
        (Put(1, "k" * 600, b"v", 0), "512-byte limit"),
        (Put(1, "k", b"v" * 20, 0), "over the 16-byte limit"),
        (Put(1, "k", b"v", 0, ttl_ms=-5), "ttl .* negative"),
        (Put(1, "k", b"v", 0, if_revision=-1), "if_revision .* negative"),
        (Get(1, "", 0), "key is empty"),
        (List(1, 0, limit=0), "list limit 0"),
        (Get(1, "k", 0, S, session="!!"), "x-edgefn-session"),
    ],
)
def test_bad_arguments_fail_with_kv_limit_error(event: Put | Get | List, match: str) -> None:
    net = Net(value_bytes_max=16)
    net.do("a", event)
    result = net.replies[1]
    assert isinstance(result, Failed)
    assert isinstance(result.error, KVLimitError)
    assert result.error.hint
    with pytest.raises(KVLimitError, match=match):
        raise result.error


def test_ttl_expires_as_data() -> None:
    net = Net()
    net.do("a", Put(1, "k", b"v", 1_000, ttl_ms=500))
    assert _value(net, "a", "k") == b"v"
    net.now = 1_500
    net.do("a", Tick(1_500))
    assert _value(net, "a", "k") is None


def test_out_of_order_delivery_waits_and_asks_for_replay() -> None:
    net = Net(("a", "b"))
    net.do("a", Put(1, "k1", b"1", net.now))
    net.do("a", Put(2, "k2", b"2", net.now))
    (first, second) = [m for _, _, m in net.in_flight]
    net.drop_all()
    assert isinstance(second, Replication)
    out = net.do("b", ReplicationReceived(second, net.now))
    assert SendTo("a", ReplayRequest("b", "a", 1)) in out
    assert _value(net, "b", "k2") is None, "seq 2 must wait for seq 1"
    # The origin answers the replay from its log.
    net.flush()
    assert _value(net, "b", "k1") == b"1"
    assert _value(net, "b", "k2") == b"2"
    assert net.replicas["b"].applied["a"] == 2
    assert first.entry.seq == 1


def test_session_read_waits_for_the_token_then_answers() -> None:
    net = Net()
    net.do("a", Put(1, "k", b"mine", net.now, S))
    done = net.replies.pop(1)
    assert isinstance(done, WriteDone)
    assert done.session
    out = net.do("b", Get(2, "k", net.now, S, session=done.session))
    assert 2 not in net.replies
    assert any(isinstance(i, ScheduleTick) for i in out)
    net.flush()
    got = net.replies[2]
    assert isinstance(got, GetDone)
    assert got.item.value == b"mine"


def test_session_read_fails_clearly_when_the_token_cannot_be_covered() -> None:
    net = Net(session_wait_ms=300)
    net.do("a", Put(1, "k", b"mine", net.now, S))
    token = net.replies.pop(1).session  # type: ignore[union-attr]
    net.drop_all()
    net.do("b", Get(2, "k", net.now, S, session=token))
    net.drop_all()
    net.do("b", Tick(net.now + 299))
    assert 2 not in net.replies
    net.do("b", Tick(net.now + 300))
    failed = net.replies[2]
    assert isinstance(failed, Failed)
    assert isinstance(failed.error, KVUnavailable)
    assert "'a': 1" in failed.error.message
    assert "session token" in failed.error.message


def test_waiting_queue_is_bounded() -> None:
    net = Net(waiting_max=1)
    net.do("a", Put(1, "k", b"v", net.now, S))
    token = net.replies.pop(1).session  # type: ignore[union-attr]
    net.drop_all()
    net.do("b", Get(2, "k", net.now, S, session=token))
    net.do("b", Get(3, "k", net.now, S, session=token))
    failed = net.replies[3]
    assert isinstance(failed, Failed)
    assert isinstance(failed.error, KVUnavailable)


def test_causal_write_is_not_visible_before_its_dependencies() -> None:
    net = Net()
    net.do("a", Put(1, "x", b"cause", net.now, C))
    token = net.replies.pop(1).session  # type: ignore[union-attr]
    cause = [(s, d, m) for s, d, m in net.in_flight]
    net.drop_all()
    # The same client, now at b, cannot write until b has the cause...
    net.in_flight = [m for m in cause if m[1] == "b"]
    net.flush()
    net.do("b", Put(2, "y", b"effect", net.now, C, session=token))
    assert isinstance(net.replies[2], WriteDone)
    effect = [m for m in net.in_flight if m[1] == "c"]
    net.drop_all()
    # ...and c, which got only the effect, holds it back until the cause arrives.
    net.in_flight = effect
    net.flush(only="c")
    net.in_flight = [m for m in net.in_flight if m[0] != "c"]
    assert _value(net, "c", "y") is None
    net.in_flight = [m for m in cause if m[1] == "c"]
    net.flush()
    assert _value(net, "c", "x") == b"cause"
    assert _value(net, "c", "y") == b"effect"


def test_strong_ops_go_through_the_home_with_cas_revisions() -> None:
    net = Net()
    out = net.do("a", Put(1, "n", b"1", net.now, ST, if_revision=0))
    assert any(isinstance(i, AskHome) for i in out)
    first = net.replies[1]
    assert isinstance(first, WriteDone)
    net.do("b", Put(2, "n", b"2", net.now, ST, if_revision=first.revision))
    assert isinstance(net.replies[2], WriteDone)
    net.do("c", Put(3, "n", b"stale", net.now, ST, if_revision=first.revision))
    failed = net.replies[3]
    assert isinstance(failed, Failed)
    assert isinstance(failed.error, KVConflict)
    assert failed.error.revision == 2
    net.do("c", Get(4, "n", net.now, ST))
    got = net.replies[4]
    assert isinstance(got, GetDone)
    assert (got.item.value, got.item.revision) == (b"2", 2)
    net.do("c", List(5, net.now, ST))
    listed = net.replies[5]
    assert isinstance(listed, ListDone)
    assert [i.key for i in listed.items] == ["n"]
    assert _value(net, "a", "n") is None, "strong keys live at the home"


def test_strong_op_without_home_is_unavailable_and_late_answers_are_dropped() -> None:
    """A write sent to the home with no answer may have applied (outcome unknown); a read that
    got no answer changed nothing (unavailable); an answer after the timeout is dropped."""
    net = Net(strong_timeout_ms=100)
    net.home_reachable = False
    net.do("a", Put(1, "n", b"1", net.now, ST))
    net.do("a", Get(3, "n", net.now, ST))
    assert 1 not in net.replies
    net.do("a", Tick(net.now + 100))
    failed = net.replies.pop(1)
    assert isinstance(failed, Failed)
    assert isinstance(failed.error, KVOutcomeUnknown)
    assert "may or may not have applied" in failed.error.message
    read = net.replies.pop(3)
    assert isinstance(read, Failed)
    assert isinstance(read.error, KVUnavailable)
    assert "home" in read.error.message
    net.do("a", StrongResult(1, StrongOutcome("ok", revision=1), net.now + 150))
    assert 1 not in net.replies, "a timed-out operation is never answered twice"
    assert net.replicas["a"].statistics().late_strong_results == 1
    net.do("a", Get(2, "n", net.now, ST))
    net.do("a", StrongResult(2, StrongOutcome("unreachable", reason="cut"), net.now))
    assert isinstance(net.replies[2], Failed)


def test_strong_pending_is_bounded() -> None:
    net = Net(strong_pending_max=1)
    net.home_reachable = False
    net.do("a", Get(1, "n", net.now, ST))
    net.do("a", Get(2, "n", net.now, ST))
    failed = net.replies[2]
    assert isinstance(failed, Failed)
    assert "in flight" in failed.error.message


def test_anti_entropy_repairs_lost_writes_and_adopts_the_frontier() -> None:
    net = Net(("a", "b"), log_max=1)
    for i in range(5):
        net.do("a", Put(i, f"k{i}", b"v", net.now))
    net.drop_all()  # every replication message lost; a's log keeps only the last write
    net.now += 1_000
    net.do("a", Tick(net.now))
    net.flush()
    b = net.replicas["b"]
    assert all(_value(net, "b", f"k{i}") == b"v" for i in range(5))
    assert b.applied["a"] == 5
    assert b.statistics().frontier_jumps >= 1
    assert b.tree.leaves == net.replicas["a"].tree.leaves


def test_tombstones_are_collected_only_once_every_replica_is_past_them() -> None:
    net = Net()
    net.do("a", Put(1, "k", b"v", net.now))
    net.do("a", Delete(2, "k", net.now))
    net.flush()
    a = net.replicas["a"]
    assert "k" in a.entries
    # Announcements from a and b only: c's floor is unknown, nothing may be collected.
    for name in ("a", "b"):
        net.now += 1_000
        net.do(name, Tick(net.now))
    net.flush()
    net.do("a", Tick(net.now))
    assert "k" in a.entries
    for name in ("c", "a", "b", "c"):
        net.now += 1_000
        net.do(name, Tick(net.now))
        net.flush()
    net.do("a", Tick(net.now))
    assert "k" not in a.entries
    assert a.statistics().gc_collected == 1


def test_clock_drift_is_refused_and_counted() -> None:
    net = Net(("a", "b"), max_drift_ms=1_000)
    entry = net.replicas["a"]
    net.do("a", Put(1, "k", b"v", 10_000_000))
    (_, _, message) = net.in_flight[0]
    net.drop_all()
    net.do("b", ReplicationReceived(message, 1_000))  # type: ignore[arg-type]
    assert net.replicas["b"].statistics().drift_rejected == 1
    assert _value(net, "b", "k") is None
    assert entry.clock.last >= pack(10_000_000, 0)


def test_list_pages_by_prefix_and_cursor() -> None:
    net = Net()
    for i, key in enumerate(["a/1", "a/2", "a/3", "b/1"]):
        net.do("a", Put(i, key, b"v", net.now))
    net.do("a", Delete(9, "a/2", net.now))
    net.do("a", List(10, net.now, prefix="a/", limit=1))
    page = net.replies[10]
    assert isinstance(page, ListDone)
    assert [i.key for i in page.items] == ["a/1"]
    net.do("a", List(11, net.now, prefix="a/", limit=5, cursor=page.cursor))
    rest = net.replies[11]
    assert isinstance(rest, ListDone)
    assert [i.key for i in rest.items] == ["a/3"]
    assert rest.cursor == ""


def test_statistics_and_config_validation() -> None:
    replica = Replica(ReplicaConfig(replica_id="a", replicas=("a",)))
    stats = replica.statistics()
    assert stats.entries == 0
    assert dataclasses.asdict(stats)["local_writes"] == 0
    with pytest.raises(AssertionError):
        ReplicaConfig(replica_id="z", replicas=("a",))


def test_anti_entropy_repairs_large_values_in_messages_that_fit_the_bus() -> None:
    """Repairs of many large values are split into answers under repair_bytes_max each (one
    answer used to carry them all and was too big for one NATS message)."""
    budget = 64 * 1024
    net = Net(("a", "b"), log_max=1, repair_bytes_max=budget)
    big = b"x" * 20_000
    for i in range(30):
        net.do("a", Put(i, f"k{i}", big, net.now))
    net.drop_all()
    net.now += 1_000
    net.do("a", Tick(net.now))
    sizes: list[int] = []
    for _ in range(50):
        if not net.in_flight:
            break
        batch, net.in_flight = net.in_flight, []
        for _src, dst, message in batch:
            if isinstance(message, RepairResponse):
                sizes.append(sum(len(e.value or b"") for e in message.entries))
            net.do(dst, received(message, net.now))
        net.now += 1_000
        net.do("a", Tick(net.now))
        net.do("b", Tick(net.now))
    assert all(_value(net, "b", f"k{i}") == big for i in range(30))
    assert sizes
    assert max(sizes) <= budget


def _rounds(net: Net, name: str, until_ms: int, step_ms: int = 100) -> list[int]:
    """Tick ``name`` every ``step_ms`` until ``until_ms``: when it announced (a round)."""
    at = []
    while net.now < until_ms:
        net.now += step_ms
        if any(isinstance(i, Broadcast) for i in net.do(name, Tick(net.now))):
            at.append(net.now)
        net.flush()
    return at


def test_idle_anti_entropy_backs_off_and_a_change_brings_the_base_interval_back() -> None:
    """Rule 6: the next round 500 ms after a change, then doubling up to the idle ceiling; a write
    (here, or merged from a peer) makes the next round due within the base interval again."""
    net = Net(("a", "b"), anti_entropy_interval_ms=500, anti_entropy_idle_max_ms=4_000)
    net.do("a", Put(1, "k", b"v", net.now))
    net.flush()
    rounds = _rounds(net, "a", net.now + 20_000)
    assert rounds[0] == 1_100  # due at once (a new replica), then 500 ms on, then doubling
    gaps = [b - a for a, b in itertools.pairwise(rounds)]
    assert gaps[:4] == [500, 1_000, 2_000, 4_000]
    assert set(gaps[4:]) == {4_000}
    # A write merged from b: the ScheduleTick it returns pulls the next round in.
    before = net.now
    net.do("b", Put(2, "k2", b"v", net.now))
    pulled = [
        i for _src, dst, m in list(net.in_flight) if dst == "a"
        for i in net.do("a", received(m, net.now)) if isinstance(i, ScheduleTick)
    ]  # fmt: skip
    net.in_flight.clear()
    assert pulled == [ScheduleTick(before + 500)]
    assert _rounds(net, "a", before + 1_100)[0] == before + 500


def test_serving_a_repair_keeps_the_rounds_at_the_base_interval() -> None:
    """A peer that asks for buckets differs: the sender's next round (and digest) comes within
    the base interval while the repair goes on, instead of after its idle back-off."""
    net = Net(("a", "b"), anti_entropy_interval_ms=500, anti_entropy_idle_max_ms=8_000)
    net.do("a", Put(1, "k", b"v", net.now))
    start = net.now
    _rounds(net, "a", start + 20_000)  # backed off to 8 s by now
    asked = net.now
    out = net.do("a", AntiEntropyRequest(RepairRequest("b", (1, 2)), asked))
    assert ScheduleTick(asked + 500) in out
    net.in_flight.clear()
    assert _rounds(net, "a", asked + 1_100)[0] == asked + 500
