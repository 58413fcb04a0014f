"""``edgefn demo``: what ``make demo`` runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from edgefn.cli._output import emit_json, fail


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    locations: Annotated[int, typer.Option(help="How many locations")] = 6,
    seconds: Annotated[
        float | None, typer.Option(help="Stop after this long (default $DEMO_SECONDS; 0 = Ctrl-C)")
    ] = None,
    state_dir: Annotated[Path, typer.Option(help="State directory")] = Path(".edgefn/demo"),
    entry_port: Annotated[int, typer.Option(help="Port of the anycast entry")] = 8787,
    examples: Annotated[Path, typer.Option(help="Where the example functions are")] = Path(
        "examples"
    ),
    json_out: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary at the end")
    ] = False,
) -> None:
    """Start a local planet, deploy the examples and serve users around the world (live table)."""
    from edgefn._loop import run
    from edgefn.planet.credentials import dashboard_hint
    from edgefn.planet.demo import Demo

    if seconds is None:
        raw = os.environ.get("DEMO_SECONDS", "0") or "0"
        try:
            seconds = float(raw)
        except ValueError:
            fail(f"DEMO_SECONDS={raw!r} is not a number", hint="e.g. DEMO_SECONDS=30 make demo")
    if not (examples / "hello" / "edgefn.toml").exists():
        fail(f"{examples}/hello not found", hint="run from the repository root or pass --examples")
    d = Demo(
        locations=locations,
        seconds=seconds,
        state_dir=state_dir,
        examples=examples,
        entry_port=entry_port,
    )
    typer.echo(f"starting a {locations}-location planet in {state_dir} ...", err=True)
    d.start_planet()
    typer.echo(dashboard_hint(d.planet["api_url"], d.planet["credentials"]), err=True)
    try:
        d.deploy(examples / "hello")
        d.deploy(examples / "echo-stream")
        d.deploy(examples / "durable-counter")
        run(d.run_traffic())
    except KeyboardInterrupt:
        pass
    finally:
        typer.echo("taking the planet down ...", err=True)
        d.stop_planet()
    summary = d.summary()
    if json_out:
        emit_json(summary)
    else:
        typer.echo(
            f"{summary['requests_ok']} requests served, {summary['requests_failed']} failed, "
            f"median latency {summary['latency_ms_p50']} ms"
        )
