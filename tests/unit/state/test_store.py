"""The SQLite store: WAL mode, one transaction per Persist, recovery after restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edgefn.state import Consistency, Get, GetDone, Persist, Put, Replica, ReplicaConfig
from edgefn.state.store import KVStoreError, SqliteStore


def _run(replica: Replica, store: SqliteStore, event: object) -> list[object]:
    out = replica.handle(event)  # type: ignore[arg-type]
    for ins in out:
        if isinstance(ins, Persist):
            store.apply(ins)
    return out  # type: ignore[return-value]


def test_store_is_wal_and_recovers_a_replica_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    store = SqliteStore(path)
    assert store.journal_mode() == "wal"
    config = ReplicaConfig(replica_id="a", replicas=("a", "b"))
    replica = Replica(config)
    for i in range(5):
        _run(replica, store, Put(i, f"k{i}", f"v{i}".encode(), 1_000 + i))
    _run(replica, store, Put(9, "k0", b"again", 2_000, Consistency.SESSION))
    stats = store.statistics()
    assert stats.entries == 5
    assert stats.log_rows == 6
    assert stats.transactions == 6
    store.close()

    reopened = SqliteStore(path)
    fresh = Replica(config)
    fresh.handle(reopened.recover(now_ms=3_000))
    fresh.check_invariants()
    assert fresh.entries == replica.entries
    assert fresh.own_seq == 6
    assert fresh.clock.last >= replica.clock.last
    assert [r.entry.seq for r in fresh.log] == [1, 2, 3, 4, 5, 6]
    out = fresh.handle(Get(10, "k0", 3_000))
    (reply,) = out
    assert isinstance(reply.result, GetDone)  # type: ignore[union-attr]
    assert reply.result.item.value == b"again"  # type: ignore[union-attr]
    # A new write continues the sequence rather than reusing a number.
    out = _run(fresh, reopened, Put(11, "k9", b"n", 3_001))
    assert fresh.own_seq == 7
    reopened.close()


def test_unopenable_store_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(KVStoreError, match="cannot open KV store") as info:
        SqliteStore(tmp_path / "missing-dir" / "x.sqlite3")
    assert "missing-dir" in info.value.message
    assert info.value.hint


def test_corrupt_row_is_reported_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "bad.sqlite3"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO entries (key, body) VALUES ('k', x'c1')")
    db.commit()
    db.close()
    store = SqliteStore(path)
    with pytest.raises(KVStoreError, match="cannot read") as info:
        store.recover(0)
    assert "anti-entropy" in info.value.hint
    store.close()


def test_a_store_opened_in_one_thread_closes_from_another(tmp_path: Path) -> None:
    # A LocalKVDriver's finalizer closes its store in whatever thread the garbage collector runs
    # in; with SQLite's same-thread check that close raised inside the finalizer, which pytest
    # reports as an unraisable exception in an unrelated test.
    import threading  # lazy: only this test starts a thread

    opened: list[SqliteStore] = []
    thread = threading.Thread(target=lambda: opened.append(SqliteStore(tmp_path / "t.sqlite3")))
    thread.start()
    thread.join(timeout=10)
    (store,) = opened
    assert store.members() == ()
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        store.members()
