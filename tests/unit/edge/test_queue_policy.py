"""The pure rules of queues (edge/queue_policy.py): partitions, leases, batch choice, settling.

A seeded model run drives one partition through random handler outcomes and holder changes and
checks per-key order, one in flight per key, and that every message ends acknowledged exactly
once or dead after ``max_retries`` failures.
"""

from __future__ import annotations

import random

import pytest

from edgefn.edge.queue_policy import (
    LEASE_MS,
    SAFETY_MS,
    ConsumerRules,
    Decision,
    PartitionRecord,
    QueueMessage,
    backoff_ms,
    can_claim,
    claimed,
    decode_message,
    decode_record,
    encode_message,
    encode_record,
    partition_of,
    released,
    select_batch,
    serving,
    settle,
)


def msg(seq: int, key: str | None, *, not_before: int = 0) -> QueueMessage:
    return QueueMessage(f"m{seq}", b"\xc0", key, 0, not_before, seq)


def test_a_key_always_lands_in_one_partition_and_unkeyed_messages_spread() -> None:
    assert len({partition_of("k", f"id{i}") for i in range(50)}) == 1
    assert len({partition_of(None, f"id{i}") for i in range(200)}) == 16


def test_records_and_messages_round_trip_and_garbage_reads_as_absent() -> None:
    r = PartitionRecord("fra", 3, 99, 7, frozenset({9, 12}), {8: 2}, {8: 1234}, 1, 5)
    assert decode_record(encode_record(r)) == r
    assert decode_record(b"\x93garbage") is None
    assert decode_record(None) is None
    m = QueueMessage("id", b"\x01", "k", 5, 6)
    assert decode_message(encode_message(m), 42) == QueueMessage("id", b"\x01", "k", 5, 6, 42)


def test_leases_a_live_one_is_never_claimed_and_the_epoch_grows_on_takeover() -> None:
    mine = claimed(None, "fra", 1000)
    assert mine.epoch == 1
    assert mine.lease_until_ms == 1000 + LEASE_MS
    assert not can_claim(mine, "lhr", 1000 + LEASE_MS - 1)
    assert can_claim(mine, "lhr", 1000 + LEASE_MS)
    assert claimed(mine, "fra", 2000).epoch == 1  # a renewal by the holder
    assert claimed(mine, "lhr", 1000 + LEASE_MS).epoch == 2
    assert serving(mine, "fra", 1000 + LEASE_MS - SAFETY_MS - 1)
    assert not serving(mine, "fra", 1000 + LEASE_MS - SAFETY_MS)
    assert not serving(mine, "lhr", 1000)
    assert can_claim(released(mine), "lhr", 1001)


def test_one_message_per_key_per_batch_and_a_waiting_head_blocks_its_key() -> None:
    window = [msg(1, "a"), msg(2, "a"), msg(3, "b"), msg(4, None), msg(5, None), msg(6, "c")]
    rec = PartitionRecord(cursor=1)
    assert [m.seq for m in select_batch(rec, window, 0, 10)] == [1, 3, 4, 5, 6]
    assert [m.seq for m in select_batch(rec, window, 0, 2)] == [1, 3]
    waiting = PartitionRecord(cursor=1, not_before={1: 500})
    assert [m.seq for m in select_batch(waiting, window, 0, 10)] == [3, 4, 5, 6]
    assert next(m.seq for m in select_batch(waiting, window, 500, 10)) == 1
    delayed = [msg(1, "a", not_before=900), msg(2, "a")]
    assert select_batch(rec, delayed, 0, 10) == []


def test_settle_moves_the_cursor_past_finished_messages_only() -> None:
    window = [msg(3, "a"), msg(7, "b"), msg(9, "c")]
    rules = ConsumerRules(max_retries=1, retry_delay_s=1)
    rec = PartitionRecord(cursor=3)
    s = settle(
        rec,
        window,
        [Decision(3, "retry"), Decision(7, "ack"), Decision(9, "ack")],
        rules=rules,
        scanned_to=10,
        now_ms=100,
    )
    assert s.record.cursor == 3
    assert s.record.done == frozenset({7, 9})
    assert s.record.attempts == {3: 1}
    assert s.record.not_before == {3: 1100}
    s2 = settle(s.record, window, [Decision(3, "retry")], rules=rules, scanned_to=10, now_ms=2000)
    assert s2.dead == (3,)
    assert s2.record.cursor == 10
    assert not s2.record.done
    assert s2.record.dead == 1
    assert s2.record.processed == 2


def test_backoff_doubles_and_is_capped() -> None:
    rules = ConsumerRules(retry_delay_s=0.5)
    assert [backoff_ms(rules, n) for n in (1, 2, 3)] == [500, 1000, 2000]
    assert backoff_ms(rules, 40) == 3_600_000


@pytest.mark.parametrize("seed", range(20))
def test_model_run_keeps_order_and_finishes_each_message_once(seed: int) -> None:
    rng = random.Random(seed)
    rules = ConsumerRules(
        max_batch_size=rng.randint(1, 6), max_retries=rng.randint(0, 3), retry_delay_s=0.01
    )
    keys = [f"k{i}" for i in range(rng.randint(1, 6))] + [None]
    stream = [msg(seq, rng.choice(keys)) for seq in range(1, 120)]
    poison = {m.seq for m in stream if rng.random() < 0.05}
    rec, now = claimed(None, "a", 0), 0
    acked: list[int] = []
    dead: list[int] = []
    scanned, window = 1, []
    while len(acked) + len(dead) < len(stream):
        now += rng.randint(1, 30)
        if rng.random() < 0.05:  # the partition changes hands: the new holder rebuilds its window
            rec = claimed(released(rec), rng.choice("abc"), now)
            scanned, window = rec.cursor, []
        fresh = [m for m in stream if m.seq >= scanned][: 16 - len(window)]
        window += fresh
        scanned = fresh[-1].seq + 1 if fresh else scanned
        batch = select_batch(rec, window, now, rules.max_batch_size)
        assert len({m.order_key for m in batch}) == len(batch)
        decisions = [
            Decision(m.seq, "retry" if m.seq in poison or rng.random() < 0.2 else "ack")
            for m in batch
        ]
        s = settle(rec, window, decisions, rules=rules, scanned_to=scanned, now_ms=now)
        for seq in s.acked:
            key = next(m.key for m in stream if m.seq == seq)
            if key is not None:  # every earlier message of the key is finished already
                earlier = [m.seq for m in stream if m.key == key and m.seq < seq]
                assert set(earlier) <= set(acked) | set(dead)
        acked += s.acked
        dead += s.dead
        rec = s.record
        window = [m for m in window if m.seq >= rec.cursor and m.seq not in rec.done]
    assert sorted(acked + dead) == [m.seq for m in stream]
    assert len(set(acked)) == len(acked)
    assert poison <= set(dead)
