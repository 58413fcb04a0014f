"""A chaos run's history: every operation as its client saw it, and the checkers that judge it.

An :class:`Op` records one client call: when it was invoked and when it returned (client-side,
milliseconds since the run started) and its outcome, in Jepsen's three kinds:

- ``ok`` (and, for a compare-and-set, ``conflict``): it happened, with the result recorded;
- ``fail``: it certainly did not happen (503 ``consistency_unavailable``, a refused connection,
  ``not_ready``): the checkers drop it;
- ``unknown`` (Jepsen's ``info``): it may have happened (503 ``outcome_unknown``, a timeout, a
  connection lost mid-request). For the linearizability checker an unknown write may take
  effect at any point after its invocation, or never: its return time is infinite, whatever
  ``return_ms`` says (that is only when the client gave up, kept for reading the history).
  An unknown read is dropped.

:func:`checks` turns a history plus the replicas' final content into named checks (callables
returning a list of violations, empty when the check passes), so the driver can time each:

- ``linearizable``: strong operations (:func:`edgefn.state.lincheck.check_linearizable`);
- ``sessions``: read-your-writes, monotonic reads and monotonic writes per session client;
- ``reads_observed_writes``: every eventual/session read returned a value some write wrote, with
  that write's stamp (no phantom or torn values);
- ``convergence``: every replica holds the same content after the final heal;
- ``no_lost_writes``: every acknowledged eventual/session write is the final value of its key or
  superseded by a newer one.

Histories travel as JSON lines (:func:`dump_history`, :func:`load_history`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass

from edgefn.state.checkers import (
    HistOp,
    check_convergence,
    check_no_lost_writes,
    check_reads_observed_writes,
    check_sessions,
)
from edgefn.state.events import Item
from edgefn.state.lincheck import LinOp, check_linearizable

__all__ = [
    "OUTCOMES",
    "Check",
    "Op",
    "checks",
    "dump_history",
    "hist_ops",
    "lin_ops",
    "load_history",
]

OUTCOMES = ("ok", "conflict", "fail", "unknown")
Check = tuple[str, Callable[[], list[str]]]


@dataclass(frozen=True, slots=True)
class Op:
    """One client operation. ``seq`` orders one client's operations.

    ``value``: what a write wrote, or what an ok read returned (None: absent).
    ``revision``: an ok strong read's revision, an ok write's new revision, a conflict's current
    revision. ``stamp``: the eventual/session write's stamp, or the stamp of the record read.
    """

    op_id: int
    client: str
    seq: int
    level: str
    kind: str
    key: str
    location: str
    invoke_ms: int
    return_ms: int
    outcome: str
    value: str | None = None
    if_revision: int | None = None
    revision: int = 0
    stamp: tuple[int, str] | None = None
    error: str = ""

    def __post_init__(self) -> None:
        assert self.outcome in OUTCOMES, self.outcome
        assert self.kind in ("get", "put", "cas"), self.kind
        assert self.return_ms >= self.invoke_ms, (self.invoke_ms, self.return_ms)


def lin_ops(history: Iterable[Op]) -> list[LinOp]:
    """The strong operations as the linearizability checker takes them (fails left out)."""
    out = []
    for op in history:
        if op.level != "strong" or op.outcome == "fail":
            continue
        unknown = op.outcome == "unknown"
        value = op.value.encode() if op.value is not None else None
        out.append(
            LinOp(
                op.op_id,
                op.client,
                "get" if op.kind == "get" else "put",
                op.key,
                op.invoke_ms,
                None if unknown else op.return_ms,
                op.outcome,
                value,
                op.revision,
                op.if_revision,
            )
        )
    return out


def hist_ops(history: Iterable[Op]) -> list[HistOp]:
    """The eventual and session operations as the weaker checkers take them."""
    out = []
    for op in history:
        if op.level == "strong":
            continue
        ok = op.outcome == "ok"
        write = op.kind != "get"
        out.append(
            HistOp(
                op.client,
                op.seq,
                "put" if write else "get",
                op.key,
                ok,
                stamp=op.stamp if ok else None,
                value=op.value.encode() if op.value is not None and (ok or write) else None,
                indeterminate=write and op.outcome == "unknown",
                location=op.location,
            )
        )
    return out


def checks(history: list[Op], final: Mapping[str, Mapping[str, Item]]) -> list[Check]:
    """The named checks of a run; ``final``: each location's replica content after the heal."""
    weak = hist_ops(history)
    sessions = {op.client for op in history if op.level == "session"}
    reference = final[min(final)] if final else {}

    def linearizable() -> list[str]:
        result = check_linearizable(lin_ops(history))
        return [] if result.ok else [result.reason]

    return [
        ("linearizable", linearizable),
        ("sessions", lambda: check_sessions(weak, only=sessions)),
        ("reads_observed_writes", lambda: check_reads_observed_writes(weak)),
        ("convergence", lambda: check_convergence(final)),
        ("no_lost_writes", lambda: check_no_lost_writes(weak, reference)),
    ]


def dump_history(history: Iterable[Op]) -> str:
    """JSON lines, one operation per line, in invocation order."""
    ordered = sorted(history, key=lambda o: (o.invoke_ms, o.op_id))
    return "".join(json.dumps(asdict(op), separators=(",", ":")) + "\n" for op in ordered)


def load_history(text: str) -> list[Op]:
    """The inverse of :func:`dump_history`; ``{"header": ...}`` lines are skipped."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        raw = json.loads(line)
        if "header" in raw:
            continue
        if raw.get("stamp") is not None:
            raw["stamp"] = (int(raw["stamp"][0]), str(raw["stamp"][1]))
        out.append(Op(**raw))
    return out
