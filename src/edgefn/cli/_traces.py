"""``edgefn traces NAME`` and ``edgefn trace TRACE_ID``: kept traces from the core's span store.

``traces NAME`` lists the function's latest kept traces (``GET /v1/traces?function=NAME``): trace
id, start, duration, spans, error, locations and the sampling probability each was kept at.
``trace ID`` prints one trace as a tree of spans (``GET /v1/traces/ID``), each with its duration,
location and main attributes; ``--json`` prints the spans as the API gives them. A request's
trace id is its ``x-edgefn-trace-id`` response header. Both need scope ``read`` and show only the
spans of functions the caller's account owns (admin: all).
"""

from __future__ import annotations

import datetime
from typing import Annotated, Any

import typer

from edgefn.cli._output import emit_json, fail, fail_from, print_table
from edgefn.cli._planet import JsonOut, StateDir, _client
from edgefn.errors import EdgefnError

_KINDS = {0: "internal", 1: "server", 2: "client", 3: "producer", 4: "consumer"}
_SHOWN = ("http.response.status_code", "url.full", "edgefn.cold_start", "error.type")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("traces")(traces)
    app.command("trace")(trace)


def traces(
    name: Annotated[str, typer.Argument(help="Function name")],
    limit: Annotated[int, typer.Option(help="How many of the latest kept traces (1..200)")] = 20,
    state_dir: StateDir = None,
    json_out: JsonOut = False,
) -> None:
    """The latest kept traces of NAME (errors and slow requests always; others sampled)."""
    if not 1 <= limit <= 200:
        fail(f"--limit {limit} is out of range", hint="use 1 to 200")
    try:
        out = _client(state_dir).api_call(
            "GET", "/v1/traces", params={"function": name, "limit": str(limit)}
        )
    except EdgefnError as err:
        fail_from(err)
    if json_out:
        emit_json(out)
        return
    if not out["traces"]:
        typer.echo(f"{name}: no kept traces yet")
        return
    rows = [
        (
            t["trace_id"],
            datetime.datetime.fromtimestamp(t["start_ms"] / 1000, datetime.UTC).strftime(
                "%H:%M:%S.%f"
            )[:-3],
            f"{t['duration_ms']:g}",
            str(t["spans"]),
            "yes" if t["error"] else "",
            ",".join(t["locations"]),
            f"{t['probability']:g}",
        )
        for t in out["traces"]
    ]
    columns = ("trace id", "start (UTC)", "ms", "spans", "error", "locations", "probability")
    print_table(f"kept traces of {name}", columns, rows)


def trace(
    trace_id: Annotated[str, typer.Argument(help="A trace id (x-edgefn-trace-id header)")],
    state_dir: StateDir = None,
    json_out: JsonOut = False,
) -> None:
    """One trace as a tree of spans with their durations."""
    tid = trace_id.strip().lower()
    if len(tid) != 32 or any(c not in "0123456789abcdef" for c in tid):
        fail(f"trace id {trace_id!r} is not 32 hex digits", hint="copy it from x-edgefn-trace-id")
    try:
        out = _client(state_dir).api_call("GET", f"/v1/traces/{tid}")
    except EdgefnError as err:
        fail_from(err)
    if json_out:
        emit_json(out)
        return
    for line in tree_lines(out["spans"]):
        typer.echo(line)


def tree_lines(spans: list[dict[str, Any]]) -> list[str]:
    """The spans as an indented tree: children under their parent, in start order."""
    ids = {s["span_id"] for s in spans}
    children: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        parent = s["parent_id"] if s["parent_id"] in ids else ""
        children.setdefault(parent, []).append(s)
    t0 = min((s["start_ns"] for s in spans), default=0)
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=lambda x: x["start_ns"]):
            lines.append(_line(s, depth, t0))
            if depth < 64:
                walk(s["span_id"], depth + 1)

    walk("", 0)
    return lines


def _line(s: dict[str, Any], depth: int, t0: int) -> str:
    attrs = s.get("attributes", {})
    shown = " ".join(f"{k}={attrs[k]}" for k in _SHOWN if k in attrs)
    status = " ERROR" if s["status"] == 2 else ""
    offset_ms = (s["start_ns"] - t0) / 1e6
    return (
        f"{'  ' * depth}{s['name']} [{_KINDS.get(s['kind'], '?')}] {s['function']}@{s['location']}"
        f" +{offset_ms:.1f}ms {s['duration_ms']:.2f}ms{status} {shown}".rstrip()
    )
