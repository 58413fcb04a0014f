"""The namespace's home: a linearizable compare-and-set register per key (pure model).

In production the home is a JetStream KV bucket ``edgefn-kvhome`` (keys ``<namespace>.<key>``) (Raft-replicated); this
class is the same contract as a pure object, used by the deterministic simulation and as the
reference the driver's JetStream mapping follows:

- one revision counter per namespace, like a JetStream stream sequence: every successful put or
  delete takes the next number. A key's revision therefore only grows and is unique across the
  namespace, so it works as a *fencing token*: a writer holding revision R can only overwrite the
  state it read.
- ``if_revision=R`` succeeds only if the key's current revision is R; ``if_revision=0`` only if
  the key is absent (JetStream ``create``). Otherwise the outcome is ``conflict`` with the current
  revision.
- a delete removes the key; a later read sees revision 0. Expiry is data: a record whose
  ``expires_at_ms`` is at or before the operation's ``now_ms`` reads as absent.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgefn.state.messages import StrongOp, StrongOutcome, StrongRecord

__all__ = ["HomeRegister", "HomeStatistics"]


@dataclass(frozen=True, slots=True)
class HomeStatistics:
    keys: int
    revision: int
    operations: int
    conflicts: int


class HomeRegister:
    """All strong keys of one namespace. Change it only through :meth:`apply`."""

    def __init__(self, *, keys_max: int = 1_000_000) -> None:
        self._records: dict[str, StrongRecord] = {}
        self._revision = 0
        self._operations = 0
        self._conflicts = 0
        self._keys_max = keys_max

    def apply(self, op: StrongOp) -> StrongOutcome:
        """Execute one strong operation atomically."""
        self._operations += 1
        if op.kind == "get":
            return StrongOutcome("ok", record=self._current(op.key, op.now_ms))
        if op.kind == "list":
            return self._list(op)
        current = self._current(op.key, op.now_ms)
        current_revision = current.revision if current is not None else 0
        if op.if_revision is not None and op.if_revision != current_revision:
            self._conflicts += 1
            return StrongOutcome("conflict", record=current, revision=current_revision)
        if op.kind == "delete":
            if current is None:
                return StrongOutcome("ok", revision=0)
            self._revision += 1
            del self._records[op.key]
            return StrongOutcome("ok", revision=0)
        assert op.kind == "put", op.kind
        if current is None and len(self._records) >= self._keys_max:
            return StrongOutcome("unreachable", reason="home is full")
        self._revision += 1
        record = StrongRecord(op.key, op.value, self._revision, op.metadata, op.expires_at_ms)
        self._records[op.key] = record
        return StrongOutcome("ok", record=record, revision=self._revision)

    def _current(self, key: str, now_ms: int) -> StrongRecord | None:
        record = self._records.get(key)
        if record is None:
            return None
        if record.expires_at_ms and record.expires_at_ms <= now_ms:
            del self._records[key]
            return None
        return record

    def _list(self, op: StrongOp) -> StrongOutcome:
        keys = sorted(k for k in self._records if k.startswith(op.prefix) and k > op.cursor)
        out: list[StrongRecord] = []
        for key in keys:
            record = self._current(key, op.now_ms)
            if record is not None:
                out.append(record)
            if len(out) >= op.limit:
                break
        cursor = out[-1].key if len(out) >= op.limit else ""
        return StrongOutcome("ok", records=tuple(out), cursor=cursor)

    def snapshot(self) -> dict[str, StrongRecord]:
        """A copy of the current records (tests and checkers)."""
        return dict(self._records)

    def check_invariants(self) -> None:
        for key, record in self._records.items():
            assert record.key == key, (key, record.key)
            assert 0 < record.revision <= self._revision, (record.revision, self._revision)
        assert len(self._records) <= self._keys_max

    def statistics(self) -> HomeStatistics:
        return HomeStatistics(
            keys=len(self._records),
            revision=self._revision,
            operations=self._operations,
            conflicts=self._conflicts,
        )
