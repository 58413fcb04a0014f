"""Linearizability checker for strong KV operations (Wing & Gong 1993, with Lowe's memoisation).

Input: a history of completed and indeterminate operations, as Knossos and Porcupine take them.
An indeterminate one (``outcome="unknown"``: the client timed out, lost the connection or got
``KVOutcomeUnknown``) may or may not have taken effect, at any point after its invocation: its
return time is infinite (``return_ms`` None). An operation that certainly did nothing
(``outcome="fail"``: ``KVUnavailable``, a refused connection) is left out, as is an unknown read.
The history is split by key (P-compositionality: a history of independent registers is
linearizable iff each register's sub-history is), and each key is checked by depth-first search:

- a *candidate* is an operation not yet linearized whose invocation precedes the earliest return
  among the remaining completed operations (it could be the next one to take effect);
- the model (:func:`_step`) says which states may follow applying the candidate to the current
  state, given the candidate's recorded outcome; for each, recurse;
- the search succeeds once every completed operation is linearized (indeterminate ones may be
  left out: they never took effect);
- (set of linearized operations, model state) pairs already explored are cached, which is what
  keeps the search polynomial on realistic histories (Lowe 2017).

Model: a compare-and-set register with revisions, as the home implements it. The state is
``(value, revision, floor)`` with ``floor`` the highest revision the key ever had (revisions come
from one namespace-wide counter, so a new write's revision exceeds ``floor`` but need not be
``floor + 1``). A put with ``if_revision=R`` succeeds iff the current revision is R; ``R=0``
means absent. A conflict outcome must report the revision current at its linearization point.
An indeterminate write that did take effect gets a revision observed elsewhere in the key's
history or a fresh one (``floor + 1/2``: only order matters).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["LinOp", "LinResult", "check_linearizable"]

Revision = int | Fraction
State = tuple[bytes | None, Revision, Revision]


@dataclass(frozen=True, slots=True)
class LinOp:
    """One strong operation as a client saw it.

    ``kind``: get, put or delete. ``outcome``: ok, conflict, fail (certainly not done; ignored)
    or unknown (indeterminate; then ``return_ms`` is None). For ok gets, ``value``/``revision`` are what was read (None/0 when
    absent); for ok puts, ``revision`` is the new revision; for conflicts, the current revision.
    """

    op_id: int
    client: str
    kind: str
    key: str
    invoke_ms: int
    return_ms: int | None
    outcome: str
    value: bytes | None = None
    revision: int = 0
    if_revision: int | None = None


@dataclass(frozen=True, slots=True)
class LinResult:
    ok: bool
    key: str = ""
    reason: str = ""
    explored: int = 0


def check_linearizable(ops: Iterable[LinOp], *, states_max: int = 2_000_000) -> LinResult:
    """Check every key's sub-history; return the first key that is not linearizable."""
    by_key: dict[str, list[LinOp]] = {}
    for op in ops:
        assert op.outcome in ("ok", "conflict", "fail", "unknown"), op
        assert (op.return_ms is None) == (op.outcome == "unknown"), op
        if op.outcome == "fail" or (op.outcome == "unknown" and op.kind == "get"):
            continue  # it did nothing (or only read): no effect and nothing to check
        by_key.setdefault(op.key, []).append(op)
    explored = 0
    for key in sorted(by_key):
        result = _check_key(key, by_key[key], states_max)
        explored += result.explored
        if not result.ok:
            return result
    return LinResult(True, explored=explored)


def _check_key(
    key: str, ops: Sequence[LinOp], states_max: int, *, simplify: bool = True
) -> LinResult:
    deadlines: dict[int, int] = {}
    if simplify:
        ops, deadlines = _simplify(ops)
    ops = sorted(ops, key=lambda o: (o.invoke_ms, o.op_id))
    observed = sorted({o.revision for o in ops if o.revision > 0})
    completed_mask = 0
    returns: list[int] = []
    for i, op in enumerate(ops):
        done_ms = op.return_ms if op.return_ms is not None else deadlines.get(op.op_id)
        returns.append(done_ms if done_ms is not None else 0)
        if done_ms is not None:
            completed_mask |= 1 << i
    seen: set[tuple[int, State]] = set()
    # Iterative DFS: each frame is (linearized mask, state).
    stack: list[tuple[int, State]] = [(0, (None, 0, 0))]
    while stack:
        mask, state = stack.pop()
        if mask & completed_mask == completed_mask:
            return LinResult(True, explored=len(seen))
        if (mask, state) in seen:
            continue
        seen.add((mask, state))
        if len(seen) > states_max:
            return LinResult(False, key, f"undecided after {states_max} states", len(seen))
        horizon = min(
            returns[i] for i in range(len(ops)) if not mask >> i & 1 and completed_mask >> i & 1
        )
        for i, op in enumerate(ops):
            if mask >> i & 1 or op.invoke_ms > horizon:
                continue
            for nxt in _step(state, op, observed):
                stack.append((mask | 1 << i, nxt))
    first = min((o for o in ops if o.return_ms is not None), key=lambda o: o.invoke_ms)
    return LinResult(
        False,
        key,
        f"no linearization of {len(ops)} operations on key {key!r} (first: {first})",
        len(seen),
    )


def _simplify(ops: Sequence[LinOp]) -> tuple[list[LinOp], dict[int, int]]:
    """Shrink the search around unknown writes without changing the verdict.

    Each pending unknown write multiplies the states to explore (it may apply after any prefix),
    so two rules remove them where the history decides:

    - *read*: an unknown put whose value no other put of the key wrote, and that some completed
      get returned, certainly applied before that get: it becomes a completed operation that
      returned when the earliest such get returned (its interval only shrinks from infinity to
      a bound every valid linearization meets);
    - *unobservable*: an unknown put whose value no completed get returned, on a key where every
      conflict's revision and every ``if_revision`` is one that an acknowledged write or a read
      reported (or 0), is dropped. Had it applied, the only operations that could tell would read
      its value or report its revision, which no valid linearization shares with another write;
      without it every later write still fits (a lower ``floor`` only admits more), so a
      linearization with it gives one without it.

    Returns the remaining operations and the deadlines (``op_id`` → return time) of the read ones.
    """
    put_values: dict[bytes | None, int] = {}
    for op in ops:
        if op.kind == "put":
            put_values[op.value] = put_values.get(op.value, 0) + 1
    first_read: dict[bytes, int] = {}
    explained = {0}
    for op in ops:
        if op.outcome == "ok" and op.value is not None and op.kind == "get":
            assert op.return_ms is not None
            first_read[op.value] = min(first_read.get(op.value, op.return_ms), op.return_ms)
        if op.outcome == "ok":
            explained.add(op.revision)
    referenced = {o.revision for o in ops if o.outcome == "conflict"}
    referenced |= {o.if_revision for o in ops if o.if_revision is not None}
    unobservable = referenced <= explained
    kept: list[LinOp] = []
    deadlines: dict[int, int] = {}
    for op in ops:
        if op.outcome != "unknown" or op.kind != "put" or op.value is None:
            kept.append(op)
        elif put_values[op.value] == 1 and op.value in first_read:
            deadlines[op.op_id] = first_read[op.value]
            kept.append(op)
        elif op.value not in first_read and unobservable:
            continue
        else:
            kept.append(op)
    return kept, deadlines


def _step(state: State, op: LinOp, observed: Sequence[int]) -> list[State]:
    value, revision, floor = state
    current = revision if value is not None else 0
    if op.kind == "get":
        got = (op.value, op.revision if op.value is not None else 0)
        return [state] if got == (value, current) else []
    matches = op.if_revision is None or op.if_revision == current
    if op.outcome == "conflict":
        return [state] if not matches and op.revision == current else []
    if not matches:
        return []
    if op.outcome == "ok":
        if op.kind == "delete":
            bumped = floor + 1 if value is not None else floor
            return [(None, 0, bumped)]
        if op.revision <= floor:
            return []
        return [(op.value, op.revision, op.revision)]
    # Indeterminate write that took effect: revision unknown.
    if op.kind == "delete":
        return [(None, 0, floor + Fraction(1, 2) if value is not None else floor)]
    fresh: list[Revision] = [r for r in observed if r > floor]
    fresh.append(floor + Fraction(1, 2))
    return [(op.value, r, r) for r in fresh]
