"""The core's span store: the spans of kept traces in SQLite, with bounded retention.

One row per span, keyed by ``(trace_id, span_id)``: a batch delivered twice (a lost
acknowledgement, a retried publish) stores each span once. :meth:`SpanStore.compact` drops spans
that arrived more than ``keep_ms`` ago (default a day) and, past ``max_spans`` rows, the oldest
arrivals, so the file stays bounded whatever the traffic.

Reading: :meth:`SpanStore.trace` gives a trace's spans, optionally only those of some functions
(the API shows a caller only the spans of functions their account owns: one trace may cross
functions of several accounts through subrequests); :meth:`SpanStore.recent` summarises the
latest traces of one function.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from edgefn.observe.spans import SpanRecord

__all__ = ["KEEP_MS", "MAX_SPANS", "SpanStore", "StoreStatistics", "TraceSummary"]

KEEP_MS = 24 * 3600 * 1000
MAX_SPANS = 1_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_id TEXT NOT NULL,
    remote_parent INTEGER NOT NULL, name TEXT NOT NULL, kind INTEGER NOT NULL,
    start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, status INTEGER NOT NULL,
    location TEXT NOT NULL, function TEXT NOT NULL, probability REAL NOT NULL,
    reason TEXT NOT NULL, attributes BLOB NOT NULL, received_ms INTEGER NOT NULL,
    PRIMARY KEY (trace_id, span_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS spans_by_function ON spans (function, start_ns);
CREATE INDEX IF NOT EXISTS spans_by_arrival ON spans (received_ms);
"""
_COLUMNS = (
    "trace_id, span_id, parent_id, remote_parent, name, kind, start_ns, end_ns, status, "
    "location, function, probability, reason, attributes"
)
_ENC = msgspec.msgpack.Encoder()
_DEC = msgspec.msgpack.Decoder(dict[str, str | int | float | bool])


@dataclass(frozen=True, slots=True)
class TraceSummary:
    trace_id: str
    start_ns: int
    duration_ms: float
    spans: int
    error: bool
    locations: tuple[str, ...]
    probability: float

    def as_json(self) -> dict[str, object]:
        return {
            "trace_id": self.trace_id,
            "start_ms": self.start_ns // 1_000_000,
            "duration_ms": round(self.duration_ms, 3),
            "spans": self.spans,
            "error": self.error,
            "locations": list(self.locations),
            "probability": self.probability,
        }


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    spans: int
    stored_total: int
    duplicates_total: int
    compacted_total: int


class SpanStore:
    """Spans in one SQLite file. ``ingest``, ``trace``, ``recent``, ``compact``, ``close``."""

    def __init__(self, path: Path, *, keep_ms: int = KEEP_MS, max_spans: int = MAX_SPANS) -> None:
        assert keep_ms > 0, keep_ms
        assert max_spans > 0, max_spans
        self.path = path
        self.keep_ms = keep_ms
        self.max_spans = max_spans
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._stored = 0
        self._duplicates = 0
        self._compacted = 0

    def close(self) -> None:
        self._db.close()

    def ingest(self, spans: Sequence[SpanRecord], *, now_ms: int) -> list[SpanRecord]:
        """Store ``spans``; returns those that were new (a duplicate is ignored and counted)."""
        new: list[SpanRecord] = []
        with self._transaction():
            for s in spans:
                cur = self._db.execute(
                    f"INSERT OR IGNORE INTO spans ({_COLUMNS}, received_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        s.trace_id, s.span_id, s.parent_id, int(s.remote_parent), s.name, s.kind,
                        s.start_ns, s.end_ns, s.status, s.location, s.function, s.probability,
                        s.reason, _ENC.encode(s.attributes), now_ms,
                    ),
                )  # fmt: skip
                if cur.rowcount == 1:
                    new.append(s)
        self._stored += len(new)
        self._duplicates += len(spans) - len(new)
        return new

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def trace(self, trace_id: str, *, functions: set[str] | None = None) -> list[SpanRecord]:
        """The spans of ``trace_id`` in start order (only those of ``functions`` if given)."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM spans WHERE trace_id = ? ORDER BY start_ns, span_id",
            (trace_id,),
        ).fetchall()
        spans = [_record(r) for r in rows]
        if functions is not None:
            spans = [s for s in spans if s.function in functions]
        return spans

    def functions_of(self, trace_id: str) -> set[str]:
        rows = self._db.execute(
            "SELECT DISTINCT function FROM spans WHERE trace_id = ?", (trace_id,)
        ).fetchall()
        return {str(r[0]) for r in rows}

    def recent(self, function: str, *, limit: int = 20) -> list[TraceSummary]:
        """The latest ``limit`` traces with spans of ``function``, newest first."""
        rows = self._db.execute(
            "SELECT trace_id, MIN(start_ns), MAX(end_ns), COUNT(*), MAX(status), "
            "GROUP_CONCAT(DISTINCT location), MIN(probability) FROM spans "
            "WHERE trace_id IN (SELECT trace_id FROM spans WHERE function = ? "
            "GROUP BY trace_id ORDER BY MAX(start_ns) DESC LIMIT ?) AND function = ? "
            "GROUP BY trace_id ORDER BY MIN(start_ns) DESC",
            (function, limit, function),
        ).fetchall()
        return [
            TraceSummary(
                trace_id=str(tid),
                start_ns=int(start),
                duration_ms=(int(end) - int(start)) / 1e6,
                spans=int(n),
                error=int(status) == 2,
                locations=tuple(sorted(str(locs).split(","))),
                probability=float(p),
            )
            for tid, start, end, n, status, locs, p in rows
        ]

    def compact(self, *, now_ms: int) -> int:
        """Drop spans older than ``keep_ms`` and the oldest beyond ``max_spans``; how many."""
        with self._transaction():
            dropped = self._db.execute(
                "DELETE FROM spans WHERE received_ms < ?", (now_ms - self.keep_ms,)
            ).rowcount
            excess = self.count() - self.max_spans
            if excess > 0:
                dropped += self._drop_oldest(excess)
        self._compacted += dropped
        return dropped

    def _drop_oldest(self, n: int) -> int:
        keys = self._db.execute(
            "SELECT trace_id, span_id FROM spans ORDER BY received_ms, trace_id LIMIT ?", (n,)
        ).fetchall()
        self._db.executemany("DELETE FROM spans WHERE trace_id = ? AND span_id = ?", keys)
        return len(keys)

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM spans").fetchone()[0])

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            spans=self.count(),
            stored_total=self._stored,
            duplicates_total=self._duplicates,
            compacted_total=self._compacted,
        )


def _record(row: tuple[object, ...]) -> SpanRecord:
    (tid, sid, parent, remote, name, kind, start, end, status, loc, fn, p, reason, attrs) = row
    assert isinstance(attrs, bytes), type(attrs)
    return SpanRecord(
        trace_id=str(tid),
        span_id=str(sid),
        parent_id=str(parent),
        remote_parent=bool(remote),
        name=str(name),
        kind=int(str(kind)),
        start_ns=int(str(start)),
        end_ns=int(str(end)),
        status=int(str(status)),
        location=str(loc),
        function=str(fn),
        probability=float(str(p)),
        reason=str(reason),
        attributes=_DEC.decode(attrs),
    )
