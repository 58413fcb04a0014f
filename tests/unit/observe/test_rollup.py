"""The pure telemetry rollup: keys, sketches, cuts, merges (associative, commutative, bounded),
hostile decoding and the node's send buffer under a partition."""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefn.observe.rollup import (
    MAX_DEMAND_CELLS,
    OVERFLOW,
    Accumulator,
    BadRollup,
    DemandCell,
    Rollup,
    RollupBuffer,
    Sketch,
    client_cell,
    client_region,
    decode_rollup,
    encode_rollup,
    merge_rollups,
    merge_sketches,
    quantiles,
    status_class,
)


def _acc(max_keys: int = 256) -> Accumulator:
    return Accumulator(location="fra", epoch="e1", start_ms=1_000, max_keys=max_keys)


def test_status_classes_and_client_regions() -> None:
    assert [status_class(s) for s in (100, 200, 304, 404, 499, 503, 999)] == [
        "2xx", "2xx", "3xx", "4xx", "4xx", "5xx", "5xx",
    ]  # fmt: skip
    assert client_region("50.1109,8.6821") == "eu-west"
    assert client_region("35.6762,139.6503") == "as-east"
    assert [client_region(x) for x in (None, "", "Lagos", "91,0", "1,2,3")] == ["unknown"] * 5


def test_cut_counts_every_request_and_numbers_rollups() -> None:
    acc = _acc()
    assert acc.cut(2_000) is None  # nothing served: no rollup, no sequence number used
    for i in range(100):
        acc.record(
            "fn",
            "v1",
            200 if i % 10 else 503,
            "eu-west",
            float(i),
            cold=i == 0,
            kv_ops=2,
            cpu_us=30,
        )
    r1 = acc.cut(7_000)
    assert r1 is not None
    assert (r1.seq_first, r1.seq_last, r1.start_ms, r1.end_ms) == (1, 1, 2_000, 7_000)
    by_status = {row.status: row for row in r1.rows}
    assert by_status["2xx"].requests == 90
    assert by_status["5xx"].requests == 10
    assert sum(r.cold_starts for r in r1.rows) == 1
    assert sum(r.kv_ops for r in r1.rows) == 200
    assert sum(r.cpu_us_sum for r in r1.rows) == 3_000
    # A rollup row from a node that did not measure CPU time (one field fewer) reads as 0 µs.
    old_row = msgspec.msgpack.encode(r1.rows[0])
    fields = msgspec.msgpack.decode(old_row)
    legacy = msgspec.msgpack.decode(msgspec.msgpack.encode(fields[:-1]), type=type(r1.rows[0]))
    assert (legacy.requests, legacy.cpu_us_sum) == (r1.rows[0].requests, 0)
    acc.record("fn", "v1", 200, "eu-west", 1.0)
    r2 = acc.cut(12_000)
    assert r2 is not None
    assert (r2.seq_first, r2.start_ms) == (2, 7_000)


def test_sketch_quantiles_are_within_the_relative_accuracy() -> None:
    acc = _acc()
    values = [random.Random(3).lognormvariate(2, 1) for _ in range(5_000)]
    for v in values:
        acc.record("fn", "v1", 200, "eu-west", v)
    rollup = acc.cut(2_000)
    assert rollup is not None
    (row,) = rollup.rows
    values.sort()
    for q, got in zip((0.5, 0.95, 0.99), quantiles(row.latency, (0.5, 0.95, 0.99)), strict=True):
        exact = values[int(q * (len(values) - 1))]
        assert got is not None
        assert abs(got - exact) <= 0.011 * exact + 1e-6, (q, got, exact)


def test_keys_beyond_the_cap_go_to_overflow_by_status_class() -> None:
    acc = _acc(max_keys=3)
    for i in range(10):
        acc.record(f"fn{i}", "v1", 200 if i % 2 else 500, "eu-west", 1.0)
    rollup = acc.cut(2_000)
    assert rollup is not None
    assert rollup.requests == 10  # nothing dropped
    overflow = {r.status: r.requests for r in rollup.rows if r.function == OVERFLOW}
    assert overflow == {"2xx": 4, "5xx": 3}
    assert acc.statistics().overflowed_total == 7


_KEYS = st.tuples(
    st.sampled_from(["a", "b", "c", "d"]),
    st.sampled_from(["v1", "v2"]),
    st.sampled_from([200, 302, 404, 500]),
    st.sampled_from(["eu-west", "na-east", "unknown"]),
)
_REQUESTS = st.lists(
    st.tuples(_KEYS, st.floats(0, 5_000), st.booleans(), st.integers(0, 3)), max_size=40
)


def _rollup(requests: list[tuple[tuple[str, str, int, str], float, bool, int]], seq: int) -> Rollup:
    acc = Accumulator(location="fra", epoch="e1", start_ms=seq * 5_000, max_keys=5)
    acc._seq = seq
    for (fn, v, status, region), ms, cold, kv in requests:
        cell = f"{kv * 10},{len(region) * 7}"  # a few cells, from the drawn values
        acc.record(fn, v, status, region, ms, cold=cold, kv_ops=kv, demand_cell=cell)
    acc.record("z", "v1", 200, "eu-west", 1.0)  # never empty
    rollup = acc.cut((seq + 1) * 5_000)
    assert rollup is not None
    return rollup


@settings(max_examples=150, deadline=None)
@given(_REQUESTS, _REQUESTS, _REQUESTS, st.integers(1, 6))
def test_merge_is_associative_and_commutative_and_bounded(
    a: list, b: list, c: list, max_keys: int
) -> None:
    ra, rb, rc = _rollup(a, 1), _rollup(b, 2), _rollup(c, 3)

    def m(x: Rollup, y: Rollup) -> Rollup:
        return merge_rollups(x, y, max_keys=max_keys)

    assert m(ra, rb) == m(rb, ra)
    assert m(m(ra, rb), rc) == m(ra, m(rb, rc))
    merged = m(m(ra, rb), rc)
    assert merged.requests == ra.requests + rb.requests + rc.requests
    assert sum(1 for r in merged.rows if r.function != OVERFLOW) <= max_keys
    assert all(r.latency.count == r.requests for r in merged.rows)
    assert decode_rollup(encode_rollup(merged)) == merged
    cells = sum(d.requests for d in merged.demand) + merged.demand_dropped
    assert cells == len(a) + len(b) + len(c)  # every request with a position, counted once


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.floats(0.001, 3_600_000.0), max_size=20), max_size=6))
def test_merging_many_sketches_at_once_equals_merging_them_in_pairs(
    latencies: list[list[float]],
) -> None:
    """``merge_sketches(*many)`` (one allocation) is the pairwise sum, whatever the ranges."""
    sketches = []
    for ms in latencies:
        acc = _acc()
        for x in ms:
            acc.record("f", "v1", 200, "eu-west", x)
        rollup = acc.cut(5_000)
        sketches.append(rollup.rows[0].latency if rollup else Sketch())
    pairwise = Sketch()
    for sk in sketches:
        pairwise = merge_sketches(pairwise, sk)
    at_once = merge_sketches(*sketches)
    assert at_once.count == pairwise.count == sum(map(len, latencies))
    assert quantiles(at_once, (0.5, 0.99)) == quantiles(pairwise, (0.5, 0.99))
    trimmed = [(s.offset, s.bins, s.zero) for s in (at_once, pairwise)]
    assert trimmed[0] == trimmed[1]


def test_decode_refuses_what_breaks_a_rule() -> None:
    good = _rollup([(("a", "v1", 200, "eu-west"), 3.0, False, 0)], 1)
    assert decode_rollup(encode_rollup(good)) == good
    row = good.rows[0]
    bad_rows = [
        msgspec.structs.replace(row, status="6xx"),
        msgspec.structs.replace(row, requests=row.requests + 1),  # sketch counts differ
        msgspec.structs.replace(row, function="x" * 65),
        msgspec.structs.replace(row, cold_starts=-1),
    ]
    for bad in bad_rows:
        with pytest.raises(BadRollup):
            decode_rollup(encode_rollup(msgspec.structs.replace(good, rows=[bad])))
    for bad_rollup in (
        msgspec.structs.replace(good, rows=[row, row]),
        msgspec.structs.replace(good, seq_first=5, seq_last=4),
        msgspec.structs.replace(good, location="x" * 100),
    ):
        with pytest.raises(BadRollup):
            decode_rollup(encode_rollup(bad_rollup))
    with pytest.raises(BadRollup, match="does not decode"):
        decode_rollup(b"\x00garbage")
    with pytest.raises(BadRollup, match="over"):
        decode_rollup(b"x" * 100, max_bytes=10)


def test_buffer_merges_the_oldest_unsent_and_never_changes_what_it_sent() -> None:
    """A node cut off for longer than its buffer: rollups it has tried to send stay as they
    were; the others merge in pairs, and no request is lost."""
    buf = RollupBuffer(capacity=5, window=2)
    rollups = [_rollup([], seq) for seq in range(1, 31)]
    buf.push(rollups[0])
    buf.push(rollups[1])
    sent = buf.take()  # tried, never acknowledged (the hub is gone)
    assert [r.seq_first for r in sent] == [1, 2]
    for r in rollups[2:]:
        buf.push(r)
        buf.check_invariants()
    queued = buf.take()
    assert queued[:2] == sent  # resent exactly as first sent
    assert buf.statistics().buffered == 5
    assert buf.statistics().requests_buffered == sum(r.requests for r in rollups)
    while batch := buf.take():
        for r in batch:
            buf.acked(r.rollup_id)
        buf.check_invariants()
    assert buf.statistics().acked_total == 5


def test_demand_cells_count_client_positions_and_stay_bounded() -> None:
    assert client_cell("35.68,139.69") == "36,140"
    assert client_cell("-33.9,18.4") == "-34,18"
    for bad in (None, "", "Tokyo", "95,10", "10,190"):
        assert client_cell(bad) == ""
    acc = _acc()
    for i in range(MAX_DEMAND_CELLS + 10):
        acc.record("f", "v1", 200, "eu-west", 1.0, demand_cell=f"{i % 90},{i // 90}")
    acc.record("f", "v1", 200, "eu-west", 1.0, demand_cell="0,0")  # a cell already counted
    acc.record("f", "v1", 200, "eu-west", 1.0)  # no position: no cell
    rollup = acc.cut(5_000)
    assert rollup is not None
    assert len(rollup.demand) == MAX_DEMAND_CELLS
    assert rollup.demand_dropped == 10
    assert next(d.requests for d in rollup.demand if d.cell == "0,0") == 2
    assert decode_rollup(encode_rollup(rollup)) == rollup


def test_decode_refuses_forged_demand_cells() -> None:
    good = _rollup([(("a", "v1", 200, "eu-west"), 3.0, False, 0)], 1)
    for demand in (
        [DemandCell("a", "Tokyo", 1)],
        [DemandCell("a", "91,0", 1)],
        [DemandCell("a", "1.5,2", 1)],
        [DemandCell("a", "1,2", 1), DemandCell("a", "1,2", 3)],
        [DemandCell("a", "1,2", -1)],
    ):
        with pytest.raises(BadRollup):
            decode_rollup(encode_rollup(msgspec.structs.replace(good, demand=demand)))
