"""The core's telemetry store: dedupe by (location, epoch, seq), tiers, compaction, queries."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from edgefn.errors import UsageError
from edgefn.observe.rollup import Accumulator, Rollup, merge_rollups
from edgefn.observe.rollup_totals import Totals
from edgefn.observe.telemetry_store import TelemetryStore, parse_window

HOUR = 3_600_000
NOW = 400 * 24 * HOUR  # some day, at midnight


def _rollup(location: str, seq: int, start_ms: int, statuses: dict[int, int]) -> Rollup:
    acc = Accumulator(location=location, epoch="e1", start_ms=start_ms)
    acc._seq = seq
    for status, n in statuses.items():
        for i in range(n):
            acc.record("fn", "v1", status, "eu-west", 10.0 + i, cold=i == 0, cpu_us=250)
    acc.record("other", "v1", 200, "na-east", 1.0)
    rollup = acc.cut(start_ms + 5_000)
    assert rollup is not None
    return rollup


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TelemetryStore]:
    s = TelemetryStore(tmp_path / "telemetry.sqlite")
    yield s
    s.close()


def test_a_rollup_counts_once_however_often_it_arrives(store: TelemetryStore) -> None:
    r1 = _rollup("fra", 1, NOW - 20_000, {200: 8, 503: 2})
    r2 = _rollup("fra", 2, NOW - 15_000, {200: 5})
    assert store.ingest(r1, now_ms=NOW)
    assert not store.ingest(r1, now_ms=NOW)  # a redelivery
    assert store.ingest(r2, now_ms=NOW)
    # A merged rollup overlapping stored numbers is refused whole (never sent by a real node).
    assert not store.ingest(merge_rollups(r1, r2), now_ms=NOW)
    (row,) = store.stats("fn", since_ms=NOW - 60_000)
    out = row.as_json()
    assert (out["location"], out["client_region"], out["requests"]) == ("fra", "eu-west", 15)
    assert out["by_status"] == {"2xx": 13, "3xx": 0, "4xx": 0, "5xx": 2}
    assert out["error_rate"] == pytest.approx(2 / 15, abs=1e-6)
    assert out["cold_starts"] == 3
    assert out["cpu_ms"] == 0.25  # mean CPU time per request
    assert 9.5 <= out["latency_ms_p50"] <= 15
    assert store.statistics().duplicates_total == 2
    # The same numbers from another boot (epoch) of the node are new rollups.
    assert store.ingest(msgspec.structs.replace(r1, epoch="e2"), now_ms=NOW)


def test_tiers_compact_without_losing_a_request(store: TelemetryStore) -> None:
    """Rollups of the last 2 days, compacted as time passes: totals stay, resolution drops."""
    sent = 0
    for i in range(48):
        start = NOW - i * HOUR + 1_000
        store.ingest(_rollup("ams", i + 1, start, {200: 3, 404: 1}), now_ms=NOW)
        sent += 4
    tiers = store.tier_cells()
    assert set(tiers) == {0, 1, 2}  # the last hour at 10 s, the last day at 1 min, then 1 h
    store.compact(now_ms=NOW)
    window = 3 * 24 * HOUR
    total = sum(r.requests for r in store.stats("fn", since_ms=NOW - window))
    assert total == sent
    assert sum(r.cpu_us for r in store.stats("fn", since_ms=NOW - window)) == sent * 250
    later = NOW + 2 * 24 * HOUR
    store.compact(now_ms=later)
    assert set(store.tier_cells()) == {2}
    assert sum(r.requests for r in store.stats("fn", since_ms=NOW - window)) == sent
    assert sum(r.cpu_us for r in store.stats("fn", since_ms=NOW - window)) == sent * 250
    store.compact(now_ms=NOW + 40 * 24 * HOUR)
    assert store.tier_cells() == {}
    # Older than the last tier keeps: remembered as seen, counted nowhere.
    assert store.ingest(_rollup("ams", 999, NOW - 31 * 24 * HOUR, {200: 1}), now_ms=NOW)
    assert store.statistics().too_old_total == 1


def test_stats_group_by_location_and_client_region(store: TelemetryStore) -> None:
    store.ingest(_rollup("fra", 1, NOW - 10_000, {200: 2}), now_ms=NOW)
    store.ingest(_rollup("nrt", 1, NOW - 10_000, {500: 1}), now_ms=NOW)
    got = [(r.location, r.client_region, r.requests) for r in store.stats("fn", since_ms=0)]
    assert got == [("fra", "eu-west", 2), ("nrt", "eu-west", 1)]
    assert store.stats("nope", since_ms=0) == []
    assert store.stats("fn", since_ms=NOW) == []  # the window starts after the buckets


def test_parse_window() -> None:
    assert [parse_window(x) for x in ("10s", "5m", "2h", "30d", " 90s ")] == [
        10, 300, 7200, 2_592_000, 90,
    ]  # fmt: skip
    for bad in ("", "5", "m", "5w", "-5m", "1.5h", "9s", "31d"):
        with pytest.raises(UsageError, match="--window"):
            parse_window(bad)


def _totals(
    store: TelemetryStore, now_ms: int, *, limit: int = 100, functions: set[str] | None = None
) -> Totals:
    """What the metrics route asks: active in the last day, sketches of the last minute."""
    return store.totals(
        active_since_ms=now_ms - 24 * HOUR,
        recent_since_ms=now_ms - 60_000,
        functions=functions,
        limit=limit,
    )


def _requests(totals: Totals) -> dict[tuple[str, str, str], int]:
    return {(t.location, t.function, t.status): t.requests for t in totals.rows}


def test_totals_only_grow_through_compaction_and_expiry(store: TelemetryStore) -> None:
    """40 days of one rollup a day: the tiers forget what is older than 30 days, the
    cumulative totals (what Prometheus counters are made of) never go down."""
    last: dict[tuple[str, str, str], int] = {}
    for day in range(40):
        now = NOW + day * 24 * HOUR
        store.ingest(_rollup("ams", day + 1, now - 20_000, {200: 3, 500: 1}), now_ms=now)
        store.compact(now_ms=now)
        got = _requests(_totals(store, now))
        assert all(got[k] >= n for k, n in last.items()), (day, got, last)
        last = got
    assert last == {
        ("ams", "fn", "2xx"): 120,
        ("ams", "fn", "5xx"): 40,
        ("ams", "other", "2xx"): 40,
    }
    assert sum(r.requests for r in store.stats("fn", since_ms=0)) < 160  # the tiers forgot
    row = next(t for t in _totals(store, now).rows if t.status == "2xx" and t.function == "fn")
    assert (row.cold_starts, row.version) == (40, "v1")
    assert row.latency_us == 40 * (10_000 + 11_000 + 12_000)
    regions = {
        (r.function, r.client_region, r.status): r.requests for r in _totals(store, now).regions
    }
    assert regions == {("fn", "eu-west", "2xx"): 120, ("fn", "eu-west", "5xx"): 40,
                       ("other", "na-east", "2xx"): 40}  # fmt: skip


def test_totals_count_a_redelivered_rollup_once(store: TelemetryStore) -> None:
    r1 = _rollup("fra", 1, NOW - 20_000, {200: 8})
    assert store.ingest(r1, now_ms=NOW)
    assert not store.ingest(r1, now_ms=NOW)
    assert _requests(_totals(store, NOW))[("fra", "fn", "2xx")] == 8


def test_an_idle_triple_is_forgotten_whole_after_30_days(store: TelemetryStore) -> None:
    """A triple's status classes go together: the 5xx row idle for 31 days stays while its 2xx
    row is active (the exposition sums them), and both go once the whole triple is idle."""
    store.ingest(_rollup("fra", 1, NOW - 20_000, {200: 1, 500: 1}), now_ms=NOW)
    later = NOW + 31 * 24 * HOUR
    store.ingest(_rollup("fra", 2, later - 20_000, {200: 1}), now_ms=later)
    store.compact(now_ms=later)
    got = _requests(_totals(store, later))
    assert got[("fra", "fn", "5xx")] == 1, got
    assert got[("fra", "fn", "2xx")] == 2, got
    much_later = later + 31 * 24 * HOUR
    store.compact(now_ms=much_later)
    assert _totals(store, much_later, limit=10) == Totals([], [], {})
    # Nothing active in the last day: nothing is exposed, though the rows are still stored.
    assert _totals(store, later + 2 * 24 * HOUR).rows == []


def test_totals_limit_by_recent_activity_and_filter_by_function(store: TelemetryStore) -> None:
    for i, loc in enumerate(("ams", "fra", "nrt")):
        store.ingest(_rollup(loc, 1, NOW - 20_000, {200: 2}), now_ms=NOW - 1000 * (3 - i))
    top = _totals(store, NOW, limit=2)
    # nrt arrived last, then fra; per triple ("fn" and "other" at each location).
    assert {(t.location, t.function) for t in top.rows} == {("nrt", "fn"), ("nrt", "other")}
    assert (top.omitted_triples, top.omitted_regions) == (4, 0)
    only = _totals(store, NOW, functions={"other"})
    assert {t.function for t in only.rows} == {"other"}
    assert {r.function for r in only.regions} == {"other"}
    assert set(only.recent) == {(loc, "other", "v1") for loc in ("ams", "fra", "nrt")}
    assert _totals(store, NOW, functions=set()) == Totals([], [], {})
    # The recent sketches are the 10 s tier's since recent_since_ms, per triple.
    sketch = _totals(store, NOW).recent[("fra", "fn", "v1")]
    assert sum(sketch.bins) + sketch.zero == 2
    assert _totals(store, NOW + 10 * 60_000).recent == {}


def test_a_store_from_before_totals_seeds_them_from_its_cells(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    s = TelemetryStore(path)
    s.ingest(_rollup("fra", 1, NOW - 20_000, {200: 3, 404: 1}), now_ms=NOW)
    s.close()
    with sqlite3.connect(path) as db:
        db.executescript("DROP TABLE totals; DROP TABLE region_totals;")
    s = TelemetryStore(path)
    try:
        assert _requests(_totals(s, NOW)) == {
            ("fra", "fn", "2xx"): 3, ("fra", "fn", "4xx"): 1, ("fra", "other", "2xx"): 1,
        }  # fmt: skip
        s.ingest(_rollup("fra", 2, NOW - 10_000, {200: 1}), now_ms=NOW)
        assert _requests(_totals(s, NOW))[("fra", "fn", "2xx")] == 4
    finally:
        s.close()


def test_totals_read_a_snapshot_that_an_ingest_in_progress_cannot_tear(
    store: TelemetryStore,
) -> None:
    """The metrics route reads totals in a worker thread while the ingest writes on the loop:
    the read sees committed rollups only (its own connection, one WAL snapshot)."""
    assert store.reads_in_thread
    store.ingest(_rollup("fra", 1, NOW - 20_000, {200: 2}), now_ms=NOW)
    before = _requests(_totals(store, NOW))
    store._db.execute("BEGIN IMMEDIATE")  # an ingest half done: totals added, not committed
    store._add_totals("fra", _rollup("fra", 2, NOW - 15_000, {200: 5}).rows, NOW)
    try:
        assert _requests(_totals(store, NOW)) == before
    finally:
        store._db.execute("ROLLBACK")
    assert not TelemetryStore(Path(":memory:")).reads_in_thread


def test_a_store_from_before_cpu_time_gets_the_column(tmp_path: Path) -> None:
    """A store whose cells table has no ``cpu_us`` (made before CPU time was recorded) gains it:
    its old cells count 0 µs, new rollups add theirs."""
    path = tmp_path / "old.sqlite"
    s = TelemetryStore(path)
    s.ingest(_rollup("fra", 1, NOW - 20_000, {200: 2}), now_ms=NOW)
    s.close()
    with sqlite3.connect(path) as db:
        # The cells table as it was made then: the same, without the cpu_us column.
        (schema,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'cells'").fetchone()
        old = schema.replace(" cpu_us INTEGER NOT NULL DEFAULT 0,", "")
        assert "cpu_us" not in old
        cols = "tier, bucket_ms, location, function, version, status, region, requests, cold, "
        cols += "kv, sub, latency_us, sketch"
        db.executescript(
            f"ALTER TABLE cells RENAME TO c2; {old}; INSERT INTO cells SELECT {cols} FROM c2; "
            "DROP TABLE c2;"
        )
    s = TelemetryStore(path)
    try:
        assert [r.cpu_us for r in s.stats("fn", since_ms=0)] == [0]
        s.ingest(_rollup("fra", 2, NOW - 20_000, {200: 2}), now_ms=NOW)  # the same bucket
        ((row,),) = [s.stats("fn", since_ms=0)]
        assert (row.requests, row.cpu_us) == (4, 500)
    finally:
        s.close()
