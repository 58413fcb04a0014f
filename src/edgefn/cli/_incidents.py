"""``edgefn incidents [--state S] [--json]``, ``edgefn incidents ack ID``, ``... resolve ID``.

Incidents come from the core's anomaly detector over the telemetry rollups and its connectivity
tracking (docs/design/0021-incidents.md), read through ``GET /v1/incidents`` (scope ``read``);
``ack`` and ``resolve`` are ``POST /v1/incidents/ID/ack|resolve`` (scope ``admin``).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from edgefn.cli._output import emit_json, fail, fail_from, print_table
from edgefn.cli._planet import JsonOut, StateDir, _client
from edgefn.errors import EdgefnError

_STATES = ("open", "acknowledged", "resolved")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    incidents = typer.Typer(
        help="Incidents: anomalies and unreachable locations, one per cause.",
        invoke_without_command=True,
    )
    incidents.callback()(list_incidents)
    incidents.command("ack")(ack)
    incidents.command("resolve")(resolve)
    app.add_typer(incidents, name="incidents")


def _when(ms: Any) -> str:
    import datetime as dt

    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(int(ms) / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def list_incidents(
    ctx: typer.Context,
    state: Annotated[
        str | None, typer.Option(help="Only incidents in this state: open, acknowledged, resolved")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first (1..1000)")] = 50,
    state_dir: StateDir = None,
    json_out: JsonOut = False,
) -> None:
    """List incidents, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    if state is not None and state not in _STATES:
        fail(f"--state {state!r} is not known", hint="use open, acknowledged or resolved")
    if not 1 <= limit <= 1000:
        fail(f"--limit {limit} is out of range", hint="use 1 to 1000")
    params: dict[str, str] = {"limit": str(limit)}
    if state:
        params["state"] = state
    try:
        out = _client(state_dir).api_call("GET", "/v1/incidents", params=params)
    except EdgefnError as err:
        fail_from(err)
    if json_out:
        emit_json(out)
        return
    if not out["incidents"]:
        typer.echo("no incidents")
        return
    rows = [
        (
            str(i["id"]),
            i["state"],
            i["severity"],
            _when(i["since_ms"]),
            str(i["requests_affected"]),
            i["title"],
        )
        for i in out["incidents"]
    ]
    print_table("incidents", ("id", "state", "severity", "since", "affected", "what"), rows)


def _change(op: str, incident_id: str, state_dir: Any, json_out: bool) -> None:
    if not incident_id.isdigit():
        fail(f"incident id {incident_id!r} is not a number", hint="`edgefn incidents` lists ids")
    try:
        out = _client(state_dir).api_call("POST", f"/v1/incidents/{incident_id}/{op}")
    except EdgefnError as err:
        fail_from(err)
    if json_out:
        emit_json(out)
        return
    typer.echo(f"incident {out['id']} {out['state']}: {out['title']}")


def ack(
    incident_id: Annotated[str, typer.Argument(metavar="ID", help="Incident id")],
    state_dir: StateDir = None,
    json_out: JsonOut = False,
) -> None:
    """Acknowledge an open incident: someone is on it (it stops escalating)."""
    _change("ack", incident_id, state_dir, json_out)


def resolve(
    incident_id: Annotated[str, typer.Argument(metavar="ID", help="Incident id")],
    state_dir: StateDir = None,
    json_out: JsonOut = False,
) -> None:
    """Resolve an incident (open or acknowledged)."""
    _change("resolve", incident_id, state_dir, json_out)
