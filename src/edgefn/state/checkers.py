"""Checkers for the weaker KV guarantees, over histories recorded by clients.

Each checker takes plain records (:class:`HistOp`) so the same code judges the deterministic
simulation and histories recorded against a real planet. A write is identified by its stamp
``(hlc, origin)``; a read reports the stamp of the record it saw (also a tombstone's), or None
when the replica had no record at all (never written, or the tombstone was collected).

- :func:`check_sessions`: per session, read-your-writes and monotonic reads (a read of a key returns
  a write no older than any write to that key the session made or saw), and monotonic writes
  (a session's write to a key is newer than everything it saw of that key).
- :func:`check_causal`: the same rule over the session's *causal past*: what it wrote and read,
  plus, transitively, the past of every causal write it read.
- :func:`check_reads_observed_writes`: every read returned what some write wrote: the value of
  the write whose stamp it reports (or of a write whose outcome is unknown), or nothing.
- :func:`check_convergence`: every replica holds the same content.
- :func:`check_no_lost_writes`: the final content of every key is at least as new as every
  acknowledged write to it.

Each returns a list of human-readable violations (empty means the history passed).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from edgefn.state.events import Item
from edgefn.state.records import Stamp

__all__ = [
    "HistOp",
    "check_causal",
    "check_convergence",
    "check_no_lost_writes",
    "check_reads_observed_writes",
    "check_sessions",
]

_NONE: Stamp = (0, "")
_ANY: Stamp = (1 << 80, "")


@dataclass(frozen=True, slots=True)
class HistOp:
    """One completed client operation at the eventual/session/causal levels.

    ``kind``: get, put or delete. ``stamp``: the write's stamp (put/delete) or the stamp of the
    record read (get; None if there was no record). ``ok`` False means failed or unanswered; a
    write that is not ok may still have taken effect (``indeterminate``) unless it failed cleanly.
    """

    session: str
    index: int
    kind: str
    key: str
    ok: bool
    stamp: Stamp | None = None
    value: bytes | None = None
    causal: bool = False
    indeterminate: bool = False
    location: str = ""


class _Ctx:
    """Per key, the newest write a session depends on, and whether that write was a delete.

    ``deletes`` holds, per key, the newest delete anywhere in the history (``_ANY`` if some delete
    has an unknown stamp): a read that finds no record is fine if such a delete is newer than what
    the session depends on, because its tombstone may since have been collected.
    """

    __slots__ = ("by_key", "deletes")

    def __init__(self, deletes: Mapping[str, Stamp]) -> None:
        self.by_key: dict[str, tuple[Stamp, bool]] = {}
        self.deletes = deletes

    def add(self, key: str, stamp: Stamp, is_delete: bool) -> None:
        if stamp > self.by_key.get(key, (_NONE, False))[0]:
            self.by_key[key] = (stamp, is_delete)

    def join(self, other: Mapping[str, tuple[Stamp, bool]]) -> None:
        for key, (stamp, is_delete) in other.items():
            self.add(key, stamp, is_delete)

    def violates_read(self, key: str, stamp: Stamp | None) -> bool:
        needed, is_delete = self.by_key.get(key, (_NONE, False))
        if stamp is None:
            # No record at all: fine only if a delete at least as new as what we depend on
            # exists, whose tombstone has since been collected.
            return needed != _NONE and not is_delete and self.deletes.get(key, _NONE) < needed
        return stamp < needed


def _sessions(ops: Iterable[HistOp]) -> dict[str, list[HistOp]]:
    out: dict[str, list[HistOp]] = {}
    for op in ops:
        out.setdefault(op.session, []).append(op)
    for seq in out.values():
        seq.sort(key=lambda o: o.index)
    return out


def check_sessions(ops: Iterable[HistOp], *, only: Collection[str] | None = None) -> list[str]:
    """Read-your-writes, monotonic reads and monotonic writes, per session and key.

    ``ops`` is the whole history (other sessions' deletes matter); ``only`` limits which
    sessions are judged (those that asked for the guarantee).
    """
    return _check(ops, transitive=False, only=only)


def check_causal(ops: Iterable[HistOp], *, only: Collection[str] | None = None) -> list[str]:
    """Reads never return a write older than one in the session's causal past."""
    return _check(ops, transitive=True, only=only)


def _check(ops: Iterable[HistOp], *, transitive: bool, only: Collection[str] | None) -> list[str]:
    ops = list(ops)
    # The causal past recorded at each causal write, looked up when someone reads that write.
    past: dict[Stamp, dict[str, tuple[Stamp, bool]]] = {}
    violations: list[str] = []
    deletes: dict[str, Stamp] = {}
    for op in ops:
        if op.kind == "delete" and (op.ok or op.indeterminate):
            stamp = op.stamp if op.ok and op.stamp is not None else _ANY
            deletes[op.key] = max(deletes.get(op.key, _NONE), stamp)
    sessions = _sessions(ops)
    if transitive:
        # Pasts must exist before any session reads them: compute all sessions once first.
        for seq in sessions.values():
            _walk(seq, past, deletes, None, transitive)
    for name, seq in sorted(sessions.items()):
        if only is None or name in only:
            _walk(seq, past, deletes, violations, transitive, name)
    return violations


def _walk(
    seq: list[HistOp],
    past: dict[Stamp, dict[str, tuple[Stamp, bool]]],
    deletes: Mapping[str, Stamp],
    violations: list[str] | None,
    transitive: bool,
    name: str = "",
) -> None:
    ctx = _Ctx(deletes)
    for op in seq:
        if not op.ok:
            continue
        if op.kind == "get":
            if violations is not None and ctx.violates_read(op.key, op.stamp):
                violations.append(
                    f"session {name}: op #{op.index} read {op.key!r} at {op.location} and got "
                    f"write {op.stamp}, older than {ctx.by_key[op.key][0]} it depends on"
                )
            if op.stamp is not None:
                ctx.add(op.key, op.stamp, op.value is None)
                if transitive and op.stamp in past:
                    ctx.join(past[op.stamp])
            continue
        assert op.stamp is not None, op
        needed = ctx.by_key.get(op.key, (_NONE, False))[0]
        if violations is not None and op.stamp <= needed:
            violations.append(
                f"session {name}: op #{op.index} wrote {op.key!r} at {op.location} with stamp "
                f"{op.stamp}, not newer than {needed} it had already seen"
            )
        if transitive and op.causal:
            past[op.stamp] = dict(ctx.by_key)
        ctx.add(op.key, op.stamp, op.kind == "delete")


def check_reads_observed_writes(ops: Iterable[HistOp]) -> list[str]:
    """No phantom, torn or misattributed reads: each read's (stamp, value) was written.

    A read reporting a stamp must return the value the write with that stamp wrote (a tombstone
    for a delete); a stamp no acknowledged write reported may belong to a write whose outcome is
    unknown, with the same key and value. A read reporting no record must return nothing.
    """
    ops = list(ops)
    by_stamp: dict[Stamp, HistOp] = {}
    unknown: set[tuple[str, str, bytes | None]] = set()
    for op in ops:
        if op.kind == "get":
            continue
        if op.ok and op.stamp is not None:
            by_stamp[op.stamp] = op
        elif op.indeterminate:
            unknown.add((op.key, op.kind, op.value if op.kind == "put" else None))
    violations = []
    for op in ops:
        if op.kind != "get" or not op.ok:
            continue
        if op.stamp is None:
            if op.value is not None:
                violations.append(
                    f"session {op.session}: op #{op.index} read {op.key!r} at {op.location} and "
                    f"got {op.value!r} without a stamp"
                )
            continue
        write = by_stamp.get(op.stamp)
        kind = "put" if op.value is not None else "delete"
        if write is not None:
            matches = (write.key, write.kind) == (op.key, kind) and (
                kind == "delete" or write.value == op.value
            )
        else:
            matches = (op.key, kind, op.value) in unknown
        if not matches:
            violations.append(
                f"session {op.session}: op #{op.index} read {op.key!r} at {op.location} and got "
                f"{op.value!r} with stamp {op.stamp}, which no write (acknowledged or unknown) "
                f"wrote"
            )
    return violations


def check_convergence(contents: Mapping[str, Mapping[str, Item]]) -> list[str]:
    """All replicas hold identical content; report the keys where they differ."""
    names = sorted(contents)
    if not names:
        return []
    ref_name = names[0]
    ref = contents[ref_name]
    violations = []
    for name in names[1:]:
        other = contents[name]
        for key in sorted(set(ref) | set(other)):
            if ref.get(key) != other.get(key):
                violations.append(
                    f"replicas {ref_name} and {name} differ on {key!r}: "
                    f"{ref.get(key)} vs {other.get(key)}"
                )
    return violations


def check_no_lost_writes(ops: Iterable[HistOp], final: Mapping[str, Item]) -> list[str]:
    """Every acknowledged write is the final value of its key or superseded by a newer write."""
    newest: dict[str, HistOp] = {}
    unknown_deletes: set[str] = set()
    for op in ops:
        if op.kind == "get":
            continue
        if op.kind == "delete" and (op.ok or op.indeterminate):
            unknown_deletes.add(op.key)
        if op.ok and op.stamp is not None:
            best = newest.get(op.key)
            if best is None or op.stamp > best.stamp:  # type: ignore[operator]
                newest[op.key] = op
    violations = []
    for key, op in sorted(newest.items()):
        item = final.get(key)
        assert op.stamp is not None
        if item is None:
            if op.kind == "put" and key not in unknown_deletes:
                violations.append(f"acknowledged put {op.stamp} of {key!r} was lost (key absent)")
            continue
        assert item.stamp is not None, item
        if item.stamp < op.stamp:
            violations.append(
                f"acknowledged {op.kind} {op.stamp} of {key!r} was lost: final write is "
                f"{item.stamp}"
            )
        elif item.stamp == op.stamp and (op.kind == "delete" or item.value != op.value):
            violations.append(f"final value of {key!r} does not match write {op.stamp}")
    return violations
