"""Hybrid logical clocks, vector clocks and the Merkle digest."""

from __future__ import annotations

import pytest

from edgefn.state import HLC, ClockDriftError, MerkleTree, Order, VClock, diff
from edgefn.state.hlc import logical_of, pack, physical_ms_of
from edgefn.state.merkle import LEAVES, bucket_of


def test_hlc_now_is_strictly_increasing_even_when_wall_clock_stalls_or_goes_back() -> None:
    clock = HLC()
    stamps = [clock.now(t) for t in (100, 100, 100, 99, 50, 101)]
    assert stamps == sorted(set(stamps))
    assert physical_ms_of(stamps[0]) == 100
    assert logical_of(stamps[2]) == 2
    assert stamps[-1] == pack(101, 0)


def test_hlc_update_moves_past_remote_within_drift() -> None:
    clock = HLC(max_drift_ms=1_000)
    remote = pack(1_500, 7)
    local = clock.update(remote, 1_000)
    assert local > remote
    assert physical_ms_of(local) == 1_500


def test_hlc_refuses_timestamps_too_far_ahead() -> None:
    clock = HLC(max_drift_ms=1_000)
    with pytest.raises(ClockDriftError, match="ahead of the local clock") as info:
        clock.update(pack(5_000, 0), 1_000)
    assert "NTP" in info.value.hint
    assert clock.last == 0, "a refused timestamp must not move the clock"


def test_hlc_counter_overflow_borrows_next_millisecond() -> None:
    clock = HLC(last=pack(10, 0xFFFF))
    assert clock.now(10) == pack(11, 0)


def test_vclock_compare_merge_dominates() -> None:
    a = VClock({"x": 1, "y": 2})
    b = VClock({"x": 2, "y": 1})
    assert a.compare(b) is Order.CONCURRENT
    m = a.merge(b)
    assert m == VClock({"x": 2, "y": 2})
    assert m.dominates(a)
    assert m.dominates(b)
    assert a.compare(m) is Order.BEFORE
    assert m.compare(a) is Order.AFTER
    assert m.compare(VClock({"x": 2, "y": 2, "z": 0})) is Order.EQUAL
    assert a.increment("z").get("z") == 1
    assert m.missing({"x": 3, "y": 1}) == VClock({"x": 3})
    assert a.total() == 3


def test_merkle_diff_finds_exactly_the_differing_buckets() -> None:
    a, b = MerkleTree(), MerkleTree()
    for i in range(200):
        a.toggle(f"k{i}", i + 1)
        b.toggle(f"k{i}", i + 1)
    assert diff(a, b) == []
    b.toggle("k3", 4)  # remove k3 from b
    b.toggle("extra", 99)
    expected = sorted({bucket_of("k3"), bucket_of("extra")})
    assert diff(a, b) == expected
    assert a.root() != b.root()
    rebuilt = MerkleTree(list(b.leaves))
    assert rebuilt.root() == b.root()
    assert len(a.leaves) == LEAVES
