"""SQLite store of one replica: carries out :class:`Persist` and rebuilds :class:`Restarted`.

This is a driver (it does I/O). The database runs in WAL mode with ``synchronous=FULL``, so a
transaction that returned from :meth:`SqliteStore.apply` survives a crash or power loss: the
replica acknowledges a write only after its ``Persist`` was applied here.

Tables (values are msgpack, the same encoding as the wire):

- ``entries(key PRIMARY KEY, body)``: the current entry (value or tombstone) of every key;
- ``meta(id = 0, body)``: the applied frontier, own write counter and clock high-water mark;
- ``log(seq PRIMARY KEY, body)``: this replica's own recent writes, for replay to peers;
- ``members(name PRIMARY KEY)``: every replica of the namespace this one has learned of, so a
  replica restarted while cut off still waits for all of them before collecting tombstones.

Each ``Persist`` is one transaction, so entries, frontier and log never disagree after a crash.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import msgspec

from edgefn.errors import KVError
from edgefn.state.events import Persist, ReplicaMeta, Restarted
from edgefn.state.messages import Replication
from edgefn.state.records import Entry

__all__ = ["KVStoreError", "SqliteStore", "StoreStatistics"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, body BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 0), body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS members (name TEXT PRIMARY KEY) WITHOUT ROWID;
"""


class KVStoreError(KVError):
    """The replica's SQLite file cannot be opened, or holds data this version cannot read."""


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    path: str
    entries: int
    log_rows: int
    transactions: int


_ENCODER = msgspec.msgpack.Encoder()
_ENTRY = msgspec.msgpack.Decoder(Entry)
_META = msgspec.msgpack.Decoder(ReplicaMeta)
_REPLICATION = msgspec.msgpack.Decoder(Replication)


class SqliteStore:
    """One replica's durable state in one SQLite file."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        assert synchronous in ("FULL", "NORMAL", "OFF"), synchronous
        self.path = str(path)
        self._transactions = 0
        try:
            # One thread at a time uses the store, but its owner's finalizer may close it from
            # whichever thread the garbage collector runs in (this SQLite is serialized:
            # sqlite3.threadsafety == 3), so the same-thread check would only turn that close
            # into an "Exception ignored" warning.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as err:
            raise KVStoreError(
                f"cannot open KV store {self.path}: {err}",
                hint="check that the directory exists and is writable, and the file is a "
                "SQLite database written by edgefn",
            ) from None
        if self.path != ":memory:" and str(mode).lower() != "wal":
            raise KVStoreError(
                f"KV store {self.path} could not switch to WAL mode (got {mode!r})",
                hint="put the store on a local file system that supports shared memory",
            )

    def apply(self, persist: Persist) -> None:
        """Carry out one ``Persist`` instruction as one durable transaction."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT OR REPLACE INTO entries (key, body) VALUES (?, ?)",
                [(e.key, _ENCODER.encode(e)) for e in persist.upserts],
            )
            db.executemany("DELETE FROM entries WHERE key = ?", [(k,) for k in persist.removes])
            db.execute(
                "INSERT OR REPLACE INTO meta (id, body) VALUES (0, ?)",
                (_ENCODER.encode(persist.meta),),
            )
            db.executemany(
                "INSERT OR REPLACE INTO log (seq, body) VALUES (?, ?)",
                [(r.entry.seq, _ENCODER.encode(r)) for r in persist.log_append],
            )
            db.execute("DELETE FROM log WHERE seq < ?", (persist.log_keep_from_seq,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._transactions += 1

    def recover(self, now_ms: int) -> Restarted:
        """Read everything back as the event that restores a fresh :class:`Replica`."""
        try:
            entries = tuple(
                _ENTRY.decode(body)
                for (body,) in self._db.execute("SELECT body FROM entries ORDER BY key")
            )
            row = self._db.execute("SELECT body FROM meta WHERE id = 0").fetchone()
            meta = _META.decode(row[0]) if row is not None else ReplicaMeta((), 0, 0)
            log = tuple(
                _REPLICATION.decode(body)
                for (body,) in self._db.execute("SELECT body FROM log ORDER BY seq")
            )
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            raise KVStoreError(
                f"KV store {self.path} holds a row this version cannot read: {err}",
                hint="restore the file from a backup, or delete it and let anti-entropy "
                "refill the replica from its peers",
            ) from None
        return Restarted(entries=entries, meta=meta, now_ms=now_ms, log=log)

    def add_members(self, names: tuple[str, ...]) -> None:
        """Remember replicas of the namespace (durably; membership only grows)."""
        self._db.executemany(
            "INSERT OR IGNORE INTO members (name) VALUES (?)", [(n,) for n in names]
        )

    def members(self) -> tuple[str, ...]:
        return tuple(n for (n,) in self._db.execute("SELECT name FROM members ORDER BY name"))

    def journal_mode(self) -> str:
        return str(self._db.execute("PRAGMA journal_mode").fetchone()[0])

    def statistics(self) -> StoreStatistics:
        (entries,) = self._db.execute("SELECT count(*) FROM entries").fetchone()
        (log_rows,) = self._db.execute("SELECT count(*) FROM log").fetchone()
        return StoreStatistics(self.path, int(entries), int(log_rows), self._transactions)

    def close(self) -> None:
        self._db.close()
