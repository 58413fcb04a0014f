"""The core's telemetry store: node rollups in SQLite, in three retention tiers.

Tiers (``TIERS``): 10 s buckets kept for an hour, 1 min buckets for a day, 1 h buckets for 30
days. :meth:`TelemetryStore.ingest` adds a rollup's rows to the bucket of its start time in the
finest tier that still covers that age (a backfill older than an hour goes straight to the
1-minute tier), in one transaction with the rollup's id, so a rollup delivered twice (a lost
acknowledgement, a redelivery after a core restart) counts once: ``seen`` holds every stored
``(location, epoch, seq range)`` and a rollup overlapping one is refused as a duplicate.
:meth:`compact` moves buckets that aged out of their tier into the next one (merging counts and
sketches) and drops what is older than 30 days. Every figure lives in exactly one tier at a time,
so :meth:`stats` sums all three over the window. A coarse bucket counts in a window if it starts
inside it.

Sketches are stored as msgpack of :class:`~edgefn.observe.rollup.Sketch` (the DDSketch bins).
Figures are per (location, function, version, status class, client region); :meth:`stats`
groups them by location and client region.

Cumulative totals, for Prometheus (docs/design/0024-prometheus.md). The tiers forget what is
older than 30 days, so their sums can go down; a Prometheus counter must not. ``totals`` (per
location, function, version, status class) and ``region_totals`` (per function, client region,
status class) are added to in the same transaction as the tiers and never compacted: each row
only grows. A row is deleted only when its series has been idle for 30 days, and ``totals`` is
pruned a whole (location, function, version) at a time, because the exposition sums a triple's
status classes (cold starts, the latency summary's count and sum): pruning one status class of a
live triple would make those sums go down. A store created before these tables existed seeds
them once from its cells.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from edgefn.errors import UsageError
from edgefn.observe.rollup import (
    OVERFLOW,
    STATUS_CLASSES,
    Rollup,
    Row,
    Sketch,
    merge_sketches,
    quantiles,
)
from edgefn.observe.rollup_totals import RegionTotal, Total, Totals

__all__ = [
    "TIERS",
    "TOTALS_KEEP_MS",
    "WINDOW_MAX_S",
    "LocationStats",
    "StoreStatistics",
    "TelemetryStore",
    "Tier",
    "parse_window",
]

_MINUTE_MS = 60_000
_HOUR_MS = 60 * _MINUTE_MS
_DAY_MS = 24 * _HOUR_MS


@dataclass(frozen=True, slots=True)
class Tier:
    bucket_ms: int
    keep_ms: int


TIERS = (Tier(10_000, _HOUR_MS), Tier(_MINUTE_MS, _DAY_MS), Tier(_HOUR_MS, 30 * _DAY_MS))
WINDOW_MAX_S = TIERS[-1].keep_ms // 1000
# Rollup ids are kept for dedupe this long after they arrived: longer than any node buffers one
# (an hour of rollups, merged further back) plus the stream's redelivery.
_SEEN_KEEP_MS = 26 * _HOUR_MS
# A total idle this long (its location, function and version served nothing) is forgotten.
TOTALS_KEEP_MS = 30 * _DAY_MS
_WINDOW = re.compile(r"(\d{1,7})([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    tier INTEGER NOT NULL, bucket_ms INTEGER NOT NULL, location TEXT NOT NULL,
    function TEXT NOT NULL, version TEXT NOT NULL, status TEXT NOT NULL, region TEXT NOT NULL,
    requests INTEGER NOT NULL, cold INTEGER NOT NULL, kv INTEGER NOT NULL, sub INTEGER NOT NULL,
    latency_us INTEGER NOT NULL, sketch BLOB NOT NULL, cpu_us INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tier, bucket_ms, location, function, version, status, region)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cells_by_function ON cells (function, bucket_ms);
CREATE TABLE IF NOT EXISTS seen (
    location TEXT NOT NULL, epoch TEXT NOT NULL, seq_first INTEGER NOT NULL,
    seq_last INTEGER NOT NULL, received_ms INTEGER NOT NULL,
    PRIMARY KEY (location, epoch, seq_first)
) WITHOUT ROWID;
"""
_TOTALS_SCHEMA = """
CREATE TABLE totals (
    location TEXT NOT NULL, function TEXT NOT NULL, version TEXT NOT NULL, status TEXT NOT NULL,
    requests INTEGER NOT NULL, cold INTEGER NOT NULL, kv INTEGER NOT NULL, sub INTEGER NOT NULL,
    latency_us INTEGER NOT NULL, last_ms INTEGER NOT NULL,
    PRIMARY KEY (location, function, version, status)
) WITHOUT ROWID;
CREATE TABLE region_totals (
    function TEXT NOT NULL, region TEXT NOT NULL, status TEXT NOT NULL,
    requests INTEGER NOT NULL, last_ms INTEGER NOT NULL,
    PRIMARY KEY (function, region, status)
) WITHOUT ROWID;
INSERT INTO totals SELECT location, function, version, status, SUM(requests), SUM(cold),
    SUM(kv), SUM(sub), SUM(latency_us), MAX(bucket_ms) FROM cells
    GROUP BY location, function, version, status;
INSERT INTO region_totals SELECT function, region, status, SUM(requests), MAX(bucket_ms)
    FROM cells GROUP BY function, region, status;
"""
_ADD_TOTAL = """
INSERT INTO totals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (location, function, version, status) DO UPDATE SET
    requests = requests + excluded.requests, cold = cold + excluded.cold, kv = kv + excluded.kv,
    sub = sub + excluded.sub, latency_us = latency_us + excluded.latency_us,
    last_ms = MAX(last_ms, excluded.last_ms)
"""
_ADD_REGION_TOTAL = """
INSERT INTO region_totals VALUES (?, ?, ?, ?, ?)
ON CONFLICT (function, region, status) DO UPDATE SET
    requests = requests + excluded.requests, last_ms = MAX(last_ms, excluded.last_ms)
"""

# requests, cold, kv, sub, latency_us, sketch, cpu_us
_Cell = tuple[int, int, int, int, int, Sketch, int]
_ENC = msgspec.msgpack.Encoder()
_DEC = msgspec.msgpack.Decoder(Sketch)


def _function_filter(functions: Collection[str]) -> tuple[str, tuple[str, ...]]:
    """`` AND function IN (?, ...)`` and its parameters."""
    names = tuple(sorted(functions))
    return f" AND function IN ({', '.join('?' * len(names))})", names


def _recent(
    db: sqlite3.Connection,
    kept: set[tuple[str, ...]],
    since_ms: int,
    only: str,
    names: tuple[str, ...],
) -> dict[tuple[str, str, str], Sketch]:
    """The 10 s tier's sketches since ``since_ms``, merged per kept triple."""
    parts: dict[tuple[str, str, str], list[Sketch]] = {}
    cells = db.execute(
        "SELECT location, function, version, sketch FROM cells WHERE tier = 0 AND "
        "bucket_ms >= ?" + only,
        (since_ms, *names),
    )
    for location, function, version, sk in cells:
        key = (location, function, version)
        if key in kept:
            parts.setdefault(key, []).append(_DEC.decode(sk))
    return {key: merge_sketches(*sketches) for key, sketches in parts.items()}


def parse_window(text: str) -> int:
    """Seconds in a window such as ``30s``, ``5m``, ``2h``, ``7d`` (10 s .. 30 days)."""
    m = _WINDOW.fullmatch(text.strip())
    hint = "give a number and a unit: 30s, 5m, 2h or 7d (at least 10s, at most 30d)"
    if m is None:
        raise UsageError(f"--window {text!r} is not a duration", hint=hint)
    seconds = int(m.group(1)) * _UNIT_S[m.group(2)]
    if not 10 <= seconds <= WINDOW_MAX_S:
        raise UsageError(f"--window {text!r} is out of range", hint=hint)
    return seconds


@dataclass(slots=True)
class LocationStats:
    """One (location, client region) over a window."""

    location: str
    client_region: str
    requests: int = 0
    by_status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUS_CLASSES, 0))
    cold_starts: int = 0
    kv_ops: int = 0
    subrequests: int = 0
    latency_us: int = 0
    sketch: Sketch = field(default_factory=Sketch)
    cpu_us: int = 0

    def add(self, status: str, cell: _Cell) -> None:
        self.requests += cell[0]
        self.by_status[status] = self.by_status.get(status, 0) + cell[0]
        self.cold_starts += cell[1]
        self.kv_ops += cell[2]
        self.subrequests += cell[3]
        self.latency_us += cell[4]
        self.sketch = merge_sketches(self.sketch, cell[5])
        self.cpu_us += cell[6]

    def absorb(self, other: LocationStats) -> None:
        """Add ``other``'s figures to these (a location's total over its client regions)."""
        self.requests += other.requests
        for status, n in other.by_status.items():
            self.by_status[status] = self.by_status.get(status, 0) + n
        self.cold_starts += other.cold_starts
        self.kv_ops += other.kv_ops
        self.subrequests += other.subrequests
        self.latency_us += other.latency_us
        self.sketch = merge_sketches(self.sketch, other.sketch)
        self.cpu_us += other.cpu_us

    def as_json(self) -> dict[str, object]:
        p50, p95, p99 = quantiles(self.sketch, (0.5, 0.95, 0.99))
        n = self.requests
        return {
            "location": self.location,
            "client_region": self.client_region,
            "requests": n,
            "by_status": dict(self.by_status),
            "error_rate": round(self.by_status.get("5xx", 0) / n, 6) if n else 0.0,
            "latency_ms_p50": p50,
            "latency_ms_p95": p95,
            "latency_ms_p99": p99,
            "latency_ms_mean": round(self.latency_us / n / 1000, 3) if n else None,
            "cold_starts": self.cold_starts,
            "cold_start_rate": round(self.cold_starts / n, 6) if n else 0.0,
            "kv_ops": self.kv_ops,
            "subrequests": self.subrequests,
            # The function's own CPU time per request (its worker measures the invocation's
            # task: docs/design/0019-telemetry.md), mean over the requests.
            "cpu_ms": round(self.cpu_us / n / 1000, 3) if n else None,
        }


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    rollups_ingested_total: int
    duplicates_total: int
    too_old_total: int
    cells: int


class TelemetryStore:
    """SQLite at ``path`` (WAL). ``ingest`` rollups, ``compact`` now and then, ``stats`` to read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(cells)")}
        if "cpu_us" not in columns:  # a store made before CPU time was recorded
            self._db.execute("ALTER TABLE cells ADD COLUMN cpu_us INTEGER NOT NULL DEFAULT 0")
        if not self._has_table("totals"):
            self._db.executescript(f"BEGIN IMMEDIATE; {_TOTALS_SCHEMA} COMMIT;")
        self._ingested = 0
        self._duplicates = 0
        self._too_old = 0

    def close(self) -> None:
        self._db.close()

    def _has_table(self, name: str) -> bool:
        found = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return found is not None

    # -- writing ------------------------------------------------------------------------------
    def ingest(self, rollup: Rollup, *, now_ms: int) -> bool:
        """Store ``rollup`` once: False if it (or part of its range) was stored before."""
        age = now_ms - rollup.start_ms
        tier = next((i for i, t in enumerate(TIERS) if age < t.keep_ms - t.bucket_ms), None)
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if self._seen(rollup):
                db.execute("ROLLBACK")
                self._duplicates += 1
                return False
            db.execute(
                "INSERT INTO seen VALUES (?, ?, ?, ?, ?)",
                (rollup.location, rollup.epoch, rollup.seq_first, rollup.seq_last, now_ms),
            )
            if tier is None:
                self._too_old += 1
            else:
                bucket = rollup.start_ms - rollup.start_ms % TIERS[tier].bucket_ms
                self._add(tier, bucket, rollup.location, rollup.rows)
                self._add_totals(rollup.location, rollup.rows, now_ms)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._ingested += 1
        return True

    def _seen(self, rollup: Rollup) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM seen WHERE location = ? AND epoch = ? AND seq_first <= ? "
            "AND seq_last >= ? LIMIT 1",
            (rollup.location, rollup.epoch, rollup.seq_last, rollup.seq_first),
        ).fetchone()
        return row is not None

    def _add(self, tier: int, bucket: int, location: str, rows: Iterable[Row]) -> None:
        for r in rows:
            cell = (
                r.requests,
                r.cold_starts,
                r.kv_ops,
                r.subrequests,
                r.latency_us_sum,
                r.latency,
                r.cpu_us_sum,
            )
            self._upsert(
                tier, bucket, (location, r.function, r.version, r.status, r.client_region), cell
            )

    def _add_totals(self, location: str, rows: Iterable[Row], now_ms: int) -> None:
        """Add to the cumulative totals (only ever up; see the module docstring)."""
        for r in rows:
            self._db.execute(
                _ADD_TOTAL,
                (
                    location,
                    r.function,
                    r.version,
                    r.status,
                    r.requests,
                    r.cold_starts,
                    r.kv_ops,
                    r.subrequests,
                    r.latency_us_sum,
                    now_ms,
                ),
            )
            self._db.execute(
                _ADD_REGION_TOTAL, (r.function, r.client_region, r.status, r.requests, now_ms)
            )

    def _upsert(
        self, tier: int, bucket: int, key: tuple[str, str, str, str, str], cell: _Cell
    ) -> None:
        where = (tier, bucket, *key)
        old = self._db.execute(
            "SELECT requests, cold, kv, sub, latency_us, sketch, cpu_us FROM cells WHERE tier = ? "
            "AND bucket_ms = ? AND location = ? AND function = ? AND version = ? AND status = ? "
            "AND region = ?",
            where,
        ).fetchone()
        if old is not None:
            cell = (
                cell[0] + old[0],
                cell[1] + old[1],
                cell[2] + old[2],
                cell[3] + old[3],
                cell[4] + old[4],
                merge_sketches(cell[5], _DEC.decode(old[5])),
                cell[6] + old[6],
            )
        self._db.execute(
            "INSERT OR REPLACE INTO cells (tier, bucket_ms, location, function, version, status, "
            "region, requests, cold, kv, sub, latency_us, sketch, cpu_us) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*where, *cell[:5], _ENC.encode(cell[5]), cell[6]),
        )

    def compact(self, *, now_ms: int) -> int:
        """Move aged-out buckets one tier down, drop expired ones; returns cells moved."""
        db = self._db
        moved = 0
        db.execute("BEGIN IMMEDIATE")
        try:
            for tier, t in enumerate(TIERS):
                cutoff = now_ms - t.keep_ms
                old = db.execute(
                    "SELECT bucket_ms, location, function, version, status, region, requests, "
                    "cold, kv, sub, latency_us, sketch, cpu_us FROM cells WHERE tier = ? AND "
                    "bucket_ms + ? <= ?",
                    (tier, t.bucket_ms, cutoff),
                ).fetchall()
                db.execute(
                    "DELETE FROM cells WHERE tier = ? AND bucket_ms + ? <= ?",
                    (tier, t.bucket_ms, cutoff),
                )
                if tier + 1 < len(TIERS):
                    width = TIERS[tier + 1].bucket_ms
                    for b, *key, n, cold, kv, sub, lat, sk, cpu in old:
                        cell = (n, cold, kv, sub, lat, _DEC.decode(sk), cpu)
                        self._upsert(tier + 1, b - b % width, tuple(key), cell)
                        moved += 1
            db.execute("DELETE FROM seen WHERE received_ms < ?", (now_ms - _SEEN_KEEP_MS,))
            self._prune_totals(now_ms - TOTALS_KEEP_MS)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return moved

    def _prune_totals(self, cutoff_ms: int) -> None:
        # A whole (location, function, version) at once: its status classes are summed.
        self._db.execute(
            "DELETE FROM totals WHERE (location, function, version) IN (SELECT location, "
            "function, version FROM totals GROUP BY location, function, version "
            "HAVING MAX(last_ms) < ?)",
            (cutoff_ms,),
        )
        self._db.execute("DELETE FROM region_totals WHERE last_ms < ?", (cutoff_ms,))

    # -- reading ------------------------------------------------------------------------------
    def has_data(self, function: str) -> bool:
        return (
            self._db.execute(
                "SELECT 1 FROM cells WHERE function = ? LIMIT 1", (function,)
            ).fetchone()
            is not None
        )

    def stats(self, function: str, *, since_ms: int) -> list[LocationStats]:
        """``function``'s figures from buckets starting at or after ``since_ms``, every tier."""
        out: dict[tuple[str, str], LocationStats] = {}
        rows = self._db.execute(
            "SELECT location, region, status, requests, cold, kv, sub, latency_us, sketch, "
            "cpu_us FROM cells WHERE function = ? AND bucket_ms >= ? ORDER BY location, region",
            (function, since_ms),
        )
        for location, region, status, n, cold, kv, sub, lat, sk, cpu in rows:
            entry = out.get((location, region))
            if entry is None:
                entry = out[(location, region)] = LocationStats(location, region)
            entry.add(status, (n, cold, kv, sub, lat, _DEC.decode(sk), cpu))
        return [out[k] for k in sorted(out)]

    def overflow_requests(self, *, since_ms: int) -> int:
        """Requests of keys that did not fit in a node's rollup (function unknown), all tiers."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(requests), 0) FROM cells WHERE function = ? AND bucket_ms >= ?",
            (OVERFLOW, since_ms),
        ).fetchone()
        return int(row[0])

    @property
    def reads_in_thread(self) -> bool:
        """Whether :meth:`totals` may run in another thread than the ingest's: it then reads
        through a connection of its own, in one WAL snapshot that an ingest in progress cannot
        tear. Not for ``:memory:``, whose data only the store's own connection sees."""
        return str(self.path) != ":memory:"

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        if not self.reads_in_thread:
            yield self._db
            return
        uri = self.path.resolve().as_uri() + "?mode=ro"
        db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            db.execute("BEGIN")  # every query below reads the same snapshot
            yield db
        finally:
            db.close()

    def totals(
        self,
        *,
        active_since_ms: int,
        recent_since_ms: int,
        functions: Collection[str] | None = None,
        limit: int,
    ) -> Totals:
        """Cumulative totals of the ``limit`` most recently active (location, function,
        version) triples active since ``active_since_ms`` (and as many region rows), of
        ``functions`` (None: every function, the overflow row too), with their recent sketches."""
        assert limit > 0
        if functions is not None and not functions:
            return Totals([], [], {})
        only, names = ("", ()) if functions is None else _function_filter(functions)
        with self._snapshot() as db:
            triples = db.execute(
                "SELECT location, function, version FROM totals WHERE 1 = 1"
                + only
                + " GROUP BY location, function, version HAVING MAX(last_ms) >= ? "
                "ORDER BY MAX(last_ms) DESC, location, function, version",
                (*names, active_since_ms),
            ).fetchall()
            kept = {tuple(t) for t in triples[:limit]}
            rows = [
                Total(*row)
                for row in db.execute(
                    "SELECT location, function, version, status, requests, cold, kv, sub, "
                    "latency_us FROM totals WHERE 1 = 1"
                    + only
                    + " ORDER BY location, function, version, status",
                    names,
                )
                if tuple(row[:3]) in kept
            ]
            regions = db.execute(
                "SELECT function, region, status, requests FROM region_totals WHERE last_ms >= ?"
                + only
                + " ORDER BY last_ms DESC, function, region, status",
                (active_since_ms, *names),
            ).fetchall()
            recent = _recent(db, kept, recent_since_ms, only, names)
        return Totals(
            rows,
            [RegionTotal(*r) for r in sorted(regions[:limit])],
            recent,
            omitted_triples=len(triples) - len(kept),
            omitted_regions=max(0, len(regions) - limit),
        )

    def tier_cells(self) -> dict[int, int]:
        return dict(self._db.execute("SELECT tier, COUNT(*) FROM cells GROUP BY tier").fetchall())

    def statistics(self) -> StoreStatistics:
        cells = self._db.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
        return StoreStatistics(
            rollups_ingested_total=self._ingested,
            duplicates_total=self._duplicates,
            too_old_total=self._too_old,
            cells=int(cells),
        )
