"""``edgefn stats NAME [--window 5m] [--json]``: a function's figures from the telemetry rollups.

Per location (where requests were answered) and client region: requests, error rate (5xx),
p50/p95/p99 latency, cold-start rate and mean CPU ms per request, read from the
core's store through ``GET /v1/stats/NAME`` (scope ``read``). Figures lag the requests by up to
one rollup period (5 s) plus delivery; a location cut off from its hub reports after the heal.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from edgefn.cli._output import emit_json, fail_from, print_table
from edgefn.cli._planet import JsonOut, StateDir, _client
from edgefn.errors import EdgefnError


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("stats")(stats)


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:g}"


def _pct(value: Any) -> str:
    return f"{100 * float(value):.2f}%"


def _rows(out: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for r in [*out["rows"], *out["totals"]]:
        rows.append(
            (
                r["location"],
                r["client_region"],
                str(r["requests"]),
                _pct(r["error_rate"]),
                _ms(r["latency_ms_p50"]),
                _ms(r["latency_ms_p95"]),
                _ms(r["latency_ms_p99"]),
                _pct(r["cold_start_rate"]),
                _ms(r["cpu_ms"]),
            )
        )
    return rows


def stats(
    name: Annotated[str, typer.Argument(help="Function name")],
    window: Annotated[str, typer.Option(help="How far back: 30s, 5m, 2h, 7d (10s..30d)")] = "5m",
    state_dir: StateDir = None,
    json_out: JsonOut = False,
) -> None:
    """Requests, error rate, latency percentiles and cold starts of NAME, per location and
    client region, over the last --window."""
    from edgefn.observe.telemetry_store import parse_window

    try:
        parse_window(window)  # a bad window fails here, before the planet is asked
    except EdgefnError as err:
        fail_from(err)
    client = _client(state_dir)
    try:
        out = client.api_call("GET", f"/v1/stats/{name}", params={"window": window})
    except EdgefnError as err:
        fail_from(err)
    if json_out:
        emit_json(out)
        return
    if not out["rows"]:
        typer.echo(f"{name}: no requests in the last {window}")
        return
    columns = ("location", "client region", "requests", "errors", "p50 ms", "p95 ms", "p99 ms")
    print_table(
        f"{name} over the last {window} (rows with client region * are location totals)",
        (*columns, "cold starts", "cpu ms"),
        _rows(out),
    )
    if out.get("overflow_requests"):
        typer.echo(
            f"{out['overflow_requests']} requests of keys over a node's rollup limit are not shown"
        )
