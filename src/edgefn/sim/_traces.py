"""Readers for the Azure Functions public traces, for trace replay.

* 2019 format (Shahrad et al., ATC'20), ``invocations_per_function_md.anon.dNN.csv``:
  ``HashOwner,HashApp,HashFunction,Trigger,1..1440`` — invocations per minute of one day.
  Replay spreads each minute's invocations uniformly over that minute (as the vHive in-vitro
  loader does); the trace has no per-invocation service times.
* 2021 format (Zhang et al., SOSP'21): ``app,func,end_timestamp,duration`` in seconds, one row
  per invocation. The arrival is ``end_timestamp - duration`` and the service time is the
  measured duration.

Errors name the file and the line. Reading is bounded by ``max_rows``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefn.errors import ScenarioError

__all__ = ["Trace", "read_azure2019", "read_azure2021", "trace_arrivals"]

_MAX_ROWS = 5_000_000


@dataclass(frozen=True, slots=True)
class Trace:
    """A replayable trace: per-invocation arrival (ms) and function index; maybe service (ms)."""

    arrival_ms: np.ndarray
    function: np.ndarray
    service_ms: np.ndarray | None
    names: tuple[str, ...]
    triggers: tuple[str, ...] = ()


def _open_rows(path: str) -> tuple[list[str], list[list[str]]]:
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except OSError as err:
        raise ScenarioError(
            f"cannot read trace: {err.strerror}", path=path, hint="check workload.trace"
        ) from err
    if not rows:
        raise ScenarioError("empty trace file", path=path, hint="use a non-empty trace")
    if len(rows) > _MAX_ROWS:
        raise ScenarioError(
            f"trace has more than {_MAX_ROWS} rows",
            path=path,
            hint="cut the trace into smaller files",
        )
    return rows[0], rows[1:]


def read_azure2021(path: str) -> Trace:
    """Read a 2021-format trace, sorted by arrival."""
    header, rows = _open_rows(path)
    if [h.strip() for h in header[:4]] != ["app", "func", "end_timestamp", "duration"]:
        raise ScenarioError(
            f"unexpected header {header[:4]}",
            path=path,
            key="line 1",
            hint="expected app,func,end_timestamp,duration (Azure 2021 format)",
        )
    ids: dict[str, int] = {}
    fn = np.empty(len(rows), dtype=np.int64)
    end = np.empty(len(rows))
    dur = np.empty(len(rows))
    for i, row in enumerate(rows):
        try:
            end[i], dur[i] = float(row[2]), float(row[3])
        except (IndexError, ValueError) as err:
            raise ScenarioError(
                f"bad row {row[:4]}",
                path=path,
                key=f"line {i + 2}",
                hint="end_timestamp and duration must be numbers",
            ) from err
        fn[i] = ids.setdefault(f"{row[0]}/{row[1]}", len(ids))
    arrival = np.maximum(end - dur, 0.0) * 1000.0
    order = np.argsort(arrival, kind="stable")
    return Trace(arrival[order], fn[order], dur[order] * 1000.0, tuple(ids))


def read_azure2019(path: str) -> tuple[np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """Per-minute invocation counts (functions × minutes), function names and triggers."""
    header, rows = _open_rows(path)
    if [h.strip() for h in header[:4]] != ["HashOwner", "HashApp", "HashFunction", "Trigger"]:
        raise ScenarioError(
            f"unexpected header {header[:4]}",
            path=path,
            key="line 1",
            hint="expected HashOwner,HashApp,HashFunction,Trigger,1..1440",
        )
    minutes = len(header) - 4
    counts = np.zeros((len(rows), minutes), dtype=np.int64)
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ScenarioError(
                f"{len(row)} fields, header has {len(header)}",
                path=path,
                key=f"line {i + 2}",
                hint="every row needs all minute columns",
            )
        try:
            counts[i] = [int(x) for x in row[4:]]
        except ValueError as err:
            raise ScenarioError(
                "a minute count is not an integer",
                path=path,
                key=f"line {i + 2}",
                hint="fix the row",
            ) from err
    names = tuple(f"{r[1]}/{r[2]}" for r in rows)
    return counts, names, tuple(r[3] for r in rows)


def trace_arrivals(path: str, fmt: str, rng: np.random.Generator) -> Trace:
    """Replayable arrivals from a trace file in ``fmt`` ('azure2019' or 'azure2021')."""
    if fmt == "azure2021":
        return read_azure2021(path)
    counts, names, triggers = read_azure2019(path)
    fn_idx, minute = np.nonzero(counts)
    reps = counts[fn_idx, minute]
    fn = np.repeat(fn_idx, reps)
    arrival = (np.repeat(minute, reps) + rng.random(int(reps.sum()))) * 60_000.0
    order = np.argsort(arrival, kind="stable")
    return Trace(arrival[order], fn[order], None, names, triggers)
