"""``edgefn tail NAME``: live request events and console lines of a function, from every location.

The command streams ``GET /v1/tail/{name}`` (NDJSON) from the control API; the filters travel to
the nodes, which sample to their bandwidth budget (errors always kept). Each event carries the
sampled fraction of its kind at its location: ``sample 0.25`` means about one request in four like
it is shown. ``--json`` prints each event as one JSON object a line; ``--limit N`` stops after N
events. Rules: :mod:`edgefn.observe.tail`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from edgefn.cli._output import fail, fail_from
from edgefn.cli._planet import JsonOut, StateDir, _client
from edgefn.errors import EdgefnError

Function = Annotated[str, typer.Argument(help="Function name")]
Location = Annotated[
    list[str] | None, typer.Option("--location", help="Only this location (repeatable)")
]
Status = Annotated[str, typer.Option("--status", help="Only this status class: 1xx … 5xx")]
Search = Annotated[
    str, typer.Option("--search", help="Only requests whose path, id or log lines contain TEXT")
]
Sample = Annotated[
    float, typer.Option("--sample", help="Show about this fraction of requests (0-1]; errors all")
]
Limit = Annotated[int, typer.Option("--limit", help="Stop after N events (0: until Ctrl-C)")]


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("tail")(tail)


def tail(
    name: Function,
    location: Location = None,
    status: Status = "",
    search: Search = "",
    sample: Sample = 1.0,
    limit: Limit = 0,
    state_dir: StateDir = None,
    json_out: JsonOut = False,
) -> None:
    """Live requests and logs of a function from every location (sampled to a budget)."""
    from edgefn.observe.tail import SEARCH_MAX, parse_sample, parse_status_class

    try:
        parse_status_class(status)
        parse_sample(sample)
    except EdgefnError as err:
        fail_from(err)
    if limit < 0:
        fail(f"--limit {limit} is negative", hint="give a number of events, or 0 for no limit")
    if len(search) > SEARCH_MAX:
        fail(f"--search is over {SEARCH_MAX} characters", hint="search a shorter text")
    params = [("location", loc) for loc in location or ()]
    params += [(k, v) for k, v in (("status", status), ("search", search)) if v]
    if sample != 1.0:
        params.append(("sample", repr(sample)))
    try:
        _stream(state_dir, name, params, limit=limit, json_out=json_out)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _stream(
    state_dir: Path | None, name: str, params: list[tuple[str, str]], *, limit: int, json_out: bool
) -> None:
    client = _client(state_dir)
    lines = client.tail(name, params)
    shown = 0
    try:
        for line in lines:
            kind = line.get("type")
            if kind == "session" and not json_out:
                sys.stderr.write(f"tailing {name} (session {line.get('session')}); Ctrl-C stops\n")
            elif kind == "dropped":
                sys.stderr.write(f"… {line.get('count')} events dropped (this client too slow)\n")
            elif kind == "request":
                line.pop("type")
                out = json.dumps(line, separators=(",", ":")) if json_out else _pretty(line)
                sys.stdout.write(out + "\n")
                sys.stdout.flush()
                shown += 1
                if limit and shown >= limit:
                    return
    except EdgefnError as err:
        fail_from(err)
    finally:
        lines.close()  # leaves the stream: the core sees the client go and ends the session
        client.close()


def _pretty(e: dict[str, Any]) -> str:
    from datetime import UTC, datetime

    at = datetime.fromtimestamp(int(e.get("ts_ms", 0)) / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]
    flags = " cold" if e.get("cold") else ""
    head = (
        f"{at} {e.get('location', '?'):<8} {e.get('status', 0):>3} "
        f"{float(e.get('duration_ms', 0.0)):>8.1f} ms  {e.get('method', '')} {e.get('path', '')}"
        f"  v={str(e.get('version', ''))[:12] or '-'}{flags}  sample {e.get('sample', 1.0):g}"
        f"  [{e.get('request_id', '')}]"
    )
    logs = [f"    {level}: {message}" for level, message in e.get("logs", ())]
    return "\n".join([head, *logs])
