"""``edgefn load`` (open-loop traffic through the anycast entry) and ``edgefn bench traffic``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgefn.cli._output import emit_json, fail, fail_from, print_table
from edgefn.errors import EdgefnError

JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON")]


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("load")(load)
    bench.command("traffic")(bench_traffic)
    bench.command("placement")(bench_placement)


def load(
    name: Annotated[str, typer.Argument(help="Function name (sent as Host: NAME.localhost)")],
    rps: Annotated[float, typer.Option(help="Mean requests per second (Poisson)")] = 20.0,
    duration: Annotated[float, typer.Option(help="Seconds of sending")] = 10.0,
    clients: Annotated[
        str, typer.Option(help='"world" or comma-separated city names (population-weighted)')
    ] = "world",
    seed: Annotated[int, typer.Option(help="Seed of the arrival schedule")] = 0,
    max_in_flight: Annotated[int, typer.Option(help="Bound on outstanding requests")] = 256,
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", help="The planet's state directory")
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """Send open-loop traffic from client cities through the planet's anycast entry."""
    from edgefn._loop import run
    from edgefn.bench.traffic import run_load
    from edgefn.planet.client import default_state_dir
    from edgefn.planet.supervisor import read_planet

    if max_in_flight < 1:
        fail(f"--max-in-flight {max_in_flight} must be >= 1", hint="for example 256")
    try:
        planet = read_planet(state_dir or default_state_dir())
        kwargs: dict[str, Any] = {
            "entry_url": planet["entry_url"],
            "name": name,
            "rps": rps,
            "duration_s": duration,
            "clients": clients,
            "seed": seed,
            "max_in_flight": max_in_flight,
        }
        result = run(run_load(**kwargs)) if json_out else _with_progress(run, run_load, kwargs)
    except EdgefnError as err:
        fail_from(err)
    out = {"function": name, "rps": rps, "duration_s": duration, "clients": clients}
    out |= {"not_sent": result.not_sent, "elapsed_s": round(result.elapsed_s, 3)}
    out |= result.summary
    if json_out:
        emit_json(out)
        return
    _print_summary(out)


def _with_progress(run: Any, run_load: Any, kwargs: dict[str, Any]) -> Any:
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task(f"load {kwargs['name']}", total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        return run(run_load(**kwargs, on_progress=update))


def _print_summary(out: dict[str, Any]) -> None:
    rows = [
        [region, s["requests"], s["failed"], f"{s['p50_ms']:.1f}", f"{s['p99_ms']:.1f}"]
        for region, s in out["regions"].items()
    ]
    o = out["overall"]
    rows.append(["(all)", o["requests"], o["failed"], f"{o['p50_ms']:.1f}", f"{o['p99_ms']:.1f}"])
    print_table(
        f"edgefn load {out['function']}: {out['rps']:g} rps for {out['duration_s']:g} s",
        ["client region", "requests", "failed", "p50 ms", "p99 ms"],
        rows,
    )
    print_table("status", ["status", "count"], list(out["status"].items()))
    print_table("served by", ["location", "count"], list(out["served_by"].items()))
    if out["not_sent"]:
        typer.echo(f"{out['not_sent']} requests not sent: --max-in-flight was reached")


def bench_traffic(
    json_out: JsonOut = False,
    out: Annotated[Path, typer.Option(help="Where --json writes the result")] = Path(
        "benchmarks/results/traffic.json"
    ),
    quick: Annotated[bool, typer.Option(help="Shorter phases (smoke run)")] = False,
) -> None:
    """Routing vs nearest-only latency, failover under a killed location, overload shedding."""

    from edgefn._loop import run
    from edgefn.bench.traffic import run_traffic_bench

    try:
        result = run(run_traffic_bench(quick=quick))
    except EdgefnError as err:
        fail_from(err)
    if json_out:
        _write(out, result)
    emit_json(result)


def _write(out: Path, result: dict[str, Any]) -> None:
    import json

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


def bench_placement(
    locations: Annotated[int, typer.Option(help="Locations of the planet")] = 12,
    json_out: JsonOut = False,
    out: Annotated[Path, typer.Option(help="Where --json writes the result")] = Path(
        "benchmarks/results/placement.json"
    ),
    quick: Annotated[bool, typer.Option(help="Shorter phases (smoke run)")] = False,
) -> None:
    """Smart placement on a real planet: where it runs, failures in its moves, and its latency
    against the routing LP's bound and an "everywhere" deploy."""

    from edgefn._loop import run
    from edgefn.bench.placement_live import run_placement_bench

    if not 2 <= locations <= 60:
        fail(f"--locations {locations} is out of range", hint="use 2 to 60")
    try:
        result = run(
            run_placement_bench(
                locations=locations,
                quick=quick,
                progress=lambda msg: typer.echo(msg, err=True),
            )
        )
    except EdgefnError as err:
        fail_from(err)
    if json_out:
        _write(out, result)
        emit_json(result)
        return
    rows = []
    for phase, r in result["phases"].items():
        s, e = r["smart"], r["everywhere"]
        rows.append(
            [
                phase,
                " ".join(r["placed"]),
                f"{r['warm_up']['failed'] + s['failed']}",
                f"{s['mean_ms']:.1f}",
                f"{e['mean_ms']:.1f}",
                f"{r['lp_bound_rtt_ms']:.1f}",
                f"{r['smart_mean_over_bound']:.2f}",
            ]
        )
    print_table(
        "smart placement",
        ["clients", "runs at", "failed", "smart mean ms", "everywhere ms", "LP bound ms", "ratio"],
        rows,
    )
