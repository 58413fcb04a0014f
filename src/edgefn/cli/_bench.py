"""``edgefn bench runtime|deploy|chaos|planet|observe``: benchmarks (JSON, committed under benchmarks/results/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from edgefn.cli._output import emit_json, fail, fail_from, print_table
from edgefn.errors import EdgefnError


def register(app: typer.Typer, bench: typer.Typer) -> None:
    bench.command("runtime")(bench_runtime)
    bench.command("deploy")(bench_deploy)
    bench.command("chaos")(bench_chaos)
    bench.command("planet")(bench_planet)
    bench.command("observe")(bench_observe)


def bench_chaos(
    duration: Annotated[float, typer.Option(help="Seconds of workload and faults")] = 120.0,
    seed: Annotated[int | None, typer.Option(help="Seed of the plan (default: random)")] = None,
    locations: Annotated[int, typer.Option(help="Locations in the planet")] = 4,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    out: Annotated[Path | None, typer.Option(help="Also write the JSON here")] = None,
    failures_dir: Annotated[
        Path, typer.Option(help="Where a failing run saves its history and seed")
    ] = Path("benchmarks/results/chaos-failures"),
) -> None:
    """Jepsen-style: strong, session and eventual clients under partitions, kills and slow links.

    Exits 1 when a checker fails (the history and seed are saved; the path is printed).
    """
    import secrets

    from edgefn.bench import chaos

    if duration < 5 or not 2 <= locations <= 12:
        fail("--duration must be >= 5 s and --locations from 2 to 12")
    seed = seed if seed is not None else secrets.randbelow(2**31)
    try:
        if json_out:
            result = chaos.run(
                duration_s=duration, seed=seed, locations=locations, failures_dir=failures_dir
            )
        else:
            result = _chaos_with_progress(chaos, duration, seed, locations, failures_dir)
    except EdgefnError as err:
        fail_from(err)
    target = out or (Path("benchmarks/results/chaos.json") if json_out else None)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(result, indent=2) + "\n")
    if json_out:
        emit_json(result)
    else:
        _print_chaos(result)
    if not result["passed"]:
        typer.echo(
            f"chaos run failed; history and seed saved in {result['failure_file']}", err=True
        )
        raise typer.Exit(1)


def _chaos_with_progress(
    chaos: Any, duration: float, seed: int, locations: int, failures_dir: Path
) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(f"chaos seed {seed}: starting the planet", total=duration * 1000)

        def progress(phase: str, done_ms: int, total_ms: int) -> None:
            bar.update(task, description=f"chaos seed {seed}: {phase}", completed=done_ms)

        result: dict[str, Any] = chaos.run(
            duration_s=duration,
            seed=seed,
            locations=locations,
            failures_dir=failures_dir,
            on_progress=progress,
        )
    return result


def _print_chaos(result: dict[str, Any]) -> None:
    rows: list[list[Any]] = [
        ["seed", result["seed"]],
        ["locations", ", ".join(result["locations"])],
        ["operations", result["ops_total"]],
        *([f"  {k}", v] for k, v in result["ops"].items()),
        ["unknown outcomes", result["unknown_outcomes"]],
        ["nemesis events", ", ".join(f"{k} {v}" for k, v in result["nemesis_events"].items())],
    ]
    for name, check in result["checks"].items():
        verdict = "pass" if check["ok"] else f"FAIL: {check['violations'][:1]}"
        rows.append([f"check {name}", f"{verdict} ({check['elapsed_ms']} ms)"])
    print_table("edgefn bench chaos", ["measure", "value"], rows)


def bench_deploy(
    locations: Annotated[int, typer.Option(help="Locations in the planet")] = 50,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    out: Annotated[Path | None, typer.Option(help="Also write the JSON here")] = None,
) -> None:
    """Time from a deploy being accepted to every location serving it; long-haul bytes."""
    from edgefn.bench import deploy

    if not 1 <= locations <= 300:
        fail("--locations must be from 1 to 300")
    if not json_out:
        typer.echo(f"starting a {locations}-location planet and deploying ...", err=True)
    result = deploy.run(locations=locations)
    target = out or (Path("benchmarks/results/deploy.json") if json_out else None)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(result, indent=2) + "\n")
    if json_out:
        emit_json(result)
        return
    c = result["convergence_ms"] or {}
    print_table(
        "edgefn bench deploy",
        ["measure", "value"],
        [
            ["locations converged", f"{result['converged_locations']} / {locations}"],
            ["convergence p50 / p99 / max", f"{c.get('p50')} / {c.get('p99')} / {c.get('max')} ms"],
            ["slowest backbone path RTT", f"{result['slowest_path_rtt_ms']} ms"],
            ["target (max <= RTT + 250 ms)", "met" if result["target_met"] else "missed"],
            [
                "bundle / long-haul bytes per hub",
                f"{result['bundle_bytes']} / {result['long_haul_bytes_per_hub']}",
            ],
        ],
    )


def bench_runtime(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    samples: Annotated[int, typer.Option(help="Cold starts to measure per function")] = 30,
    concurrency: Annotated[int, typer.Option(help="Concurrent connections for throughput")] = 64,
    duration: Annotated[
        float, typer.Option(help="Seconds of load per server (wrk: whole seconds)")
    ] = 6.0,
    idle_workers: Annotated[int, typer.Option(help="Idle warm workers to measure PSS on")] = 40,
    load_generator: Annotated[
        str, typer.Option(help="auto (wrk when on PATH, else asyncio), wrk or asyncio")
    ] = "auto",
    profile: Annotated[
        Path | None,
        typer.Option(help="Record py-spy profiles of the node and a worker under load into DIR"),
    ] = None,
    rounds: Annotated[
        int, typer.Option(help="Rounds over all servers; each server keeps its median round")
    ] = 1,
    out: Annotated[Path | None, typer.Option(help="Also write the JSON here")] = None,
) -> None:
    """Cold start; warm throughput vs bare granian, bare uvicorn (and workerd); idle memory."""
    from edgefn.bench import runtime

    if samples < 1 or concurrency < 1 or duration <= 0 or idle_workers < 1 or rounds < 1:
        fail("--samples, --concurrency, --duration, --idle-workers and --rounds must be positive")
    if load_generator not in ("auto", "wrk", "asyncio"):
        fail(f"--load-generator {load_generator!r}: use auto, wrk or asyncio")
    if profile is not None and not runtime.profiler_available():
        fail("--profile needs py-spy, which is not installed", hint="pip install 'edgefn[dev]'")
    if not json_out:
        typer.echo(
            "running: cold starts, throughput (node vs bare servers), idle memory ...", err=True
        )
    try:
        result = runtime.run(
            samples=samples,
            concurrency=concurrency,
            duration_s=duration,
            idle_workers=idle_workers,
            load_generator=load_generator,  # type: ignore[arg-type]  # checked above
            profile_dir=profile,
            rounds=rounds,
        )
    except EdgefnError as err:
        fail_from(err)
    target = out or (Path("benchmarks/results/runtime.json") if json_out else None)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(result, indent=2) + "\n")
    summary = runtime.profile_summary(result)
    if json_out:
        if summary is not None:
            typer.echo(summary, err=True)
        emit_json(result)
        return
    _print_runtime(result)
    if summary is not None:
        typer.echo(summary)


def _print_runtime(result: dict[str, Any]) -> None:
    cs, warm, mem = result["cold_start"], result["warm"], result["idle_memory"]

    def served(label: str) -> str:
        r = warm[label]
        return r if isinstance(r, str) else f"{r['rps']} ({r['p50_ms']} / {r['p99_ms']} ms)"

    print_table(
        "edgefn bench runtime",
        ["measure", "value"],
        [
            [
                "cold start p50/p99 (stdlib)",
                f"{cs['stdlib']['p50_ms']} / {cs['stdlib']['p99_ms']} ms",
            ],
            [
                "cold start p50/p99 (numpy, preloaded)",
                f"{cs['preloaded_numpy']['p50_ms']} / {cs['preloaded_numpy']['p99_ms']} ms",
            ],
            ["python -c pass p50", f"{result['process_start']['python_c_pass']['p50_ms']} ms"],
            ["load generator", warm["load_generator"]],
            *(
                [f"{label} rps (p50 / p99)", served(label)]
                for label in (
                    "edgefn_node",
                    "edgefn_node_relaxed",
                    "bare_granian",
                    "bare_uvicorn",
                    "workerd",
                )
            ),
            *(
                [name, warm.get(key, "-")]
                for name, key in (
                    ("node / bare granian", "ratio_node_vs_bare_granian"),
                    ("node / bare uvicorn", "ratio_node_vs_bare_uvicorn"),
                    ("node / workerd", "ratio_node_vs_workerd"),
                )
            ),
            [
                "idle worker PSS",
                f"{mem['pss_mb_mean']} MB → {mem['idle_workers_per_4gib']} per 4 GiB",
            ],
        ],
    )


def bench_planet(
    locations: Annotated[
        list[int],
        typer.Option(help="Locations in the planet; repeat (6, then 12) for a scaling table"),
    ] = [12],  # noqa: B006 - typer reads list defaults; it is never mutated
    window: Annotated[float, typer.Option(help="Seconds of the idle measurement window")] = 20.0,
    settle: Annotated[float, typer.Option(help="Seconds to let the planet settle first")] = 10.0,
    deploys: Annotated[int, typer.Option(help="Deploys timed for propagation")] = 3,
    writes: Annotated[int, typer.Option(help="KV writes timed for propagation")] = 10,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    out: Annotated[Path | None, typer.Option(help="Also write the JSON here")] = None,
) -> None:
    """Idle CPU, memory and messages per location; deploy and KV propagation vs the RTT floor.

    With --json each run is also written to benchmarks/results/planet-<N>.json (and a scaling
    table over several --locations to benchmarks/results/planet-scaling.json).
    """
    from edgefn.bench import planet

    if any(not 2 <= n <= 300 for n in locations):
        fail("--locations must be from 2 to 300", hint="e.g. --locations 12")
    if len(set(locations)) != len(locations):
        fail(
            "--locations lists the same planet size twice", hint="e.g. --locations 6 --locations 12"
        )
    if window <= 0 or settle < 0:
        fail("--window must be > 0 s and --settle >= 0 s", hint="e.g. --window 20 --settle 10")
    if not 1 <= deploys <= 50 or not 1 <= writes <= 1000:
        fail("--deploys must be from 1 to 50 and --writes from 1 to 1000")
    runs = []
    try:
        for n in locations:
            kwargs: dict[str, Any] = {
                "locations": n,
                "window_s": window,
                "settle_s": settle,
                "deploys": deploys,
                "writes": writes,
            }
            result = planet.run(**kwargs) if json_out else _planet_with_progress(planet, kwargs)
            if json_out:
                _write_json(Path(f"benchmarks/results/planet-{n}.json"), result)
            runs.append(result)
    except EdgefnError as err:
        fail_from(err)
    doc: dict[str, Any] = runs[0]
    if len(runs) > 1:
        doc = {"benchmark": "planet-scaling", "scaling": planet.scaling(runs), "runs": runs}
        if json_out:
            _write_json(Path("benchmarks/results/planet-scaling.json"), doc)
    if out is not None:
        _write_json(out, doc)
    if json_out:
        emit_json(doc)
        return
    for result in runs:
        _print_planet(result)
    if len(runs) > 1:
        _print_scaling(doc["scaling"])


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _planet_with_progress(planet: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("bench planet", total=None)
        result: dict[str, Any] = planet.run(
            **kwargs, on_progress=lambda msg: bar.update(task, description=msg)
        )
    return result


def _print_planet(result: dict[str, Any]) -> None:
    cpu, mem, t = result["idle"]["cpu"], result["idle"]["memory"], result["targets"]
    dep, kv = (
        result["deploy_propagation"]["location_ms"],
        result["kv_propagation"]["propagation_ms"],
    )

    def verdict(name: str) -> str:
        x = t[name]
        return f"{x['value']} (target <= {x['target']}: {'met' if x['met'] else 'missed'})"

    rows: list[list[Any]] = [
        ["idle CPU, % of one core, total", cpu["total_pct_of_one_core"]],
        ["idle CPU, % of one core per location", verdict("idle_pct_of_one_core_per_location")],
        ["idle cores total", verdict("idle_cores_total")],
        *([f"  {role}", pct] for role, pct in cpu["by_role_pct_of_one_core"].items()),
        ["PSS per location (all processes / N)", f"{mem['pss_per_location_mb']} MB"],
        [
            "edge PSS per location (node+zygote+workers)",
            f"{mem['edge_pss_per_location_mb']['mean']} MB",
        ],
        *(
            [
                f"msgs/s per location: {a}",
                f"sent {m['sent_per_s_per_location']}, received {m['received_per_s_per_location']}",
            ]
            for a, m in result["idle"]["messages"].items()
        ),
        ["deploy p50 / p99 / max", f"{dep['p50']} / {dep['p99']} / {dep['max']} ms"],
        ["deploy, last location", verdict("deploy_last_location_max_ms")],
        ["KV p50 / p99 / max", f"{kv['p50']} / {kv['p99']} / {kv['max']} ms"],
        ["KV p99", verdict("kv_propagation_p99_ms")],
        ["slowest path RTT", f"{result['rtt_floor']['slowest_path_rtt_ms']} ms"],
    ]
    print_table(
        f"edgefn bench planet ({result['locations']} locations)", ["measure", "value"], rows
    )


def _print_scaling(table: dict[str, Any]) -> None:
    ns = [str(n) for n in table["locations"]]
    rows = [
        [activity, *(row["msgs_per_s_per_location"][n] for n in ns), row["exponent"]]
        for activity, row in table["messages"].items()
    ]
    cpu = table["cpu_pct_of_one_core_per_location"]
    rows.append(["CPU % of one core", *(cpu[n] for n in ns), table["cpu_exponent"]])
    print_table(
        "msgs/s per location vs N (exponent ~2: grows with N squared in total)",
        ["activity", *(f"N={n}" for n in ns), "exponent"],
        rows,
    )


def bench_observe(
    part: Annotated[str, typer.Option(help="all, overhead (on vs off) or planet")] = "all",
    locations: Annotated[int, typer.Option(help="Locations of the planet part")] = 12,
    failing: Annotated[int, typer.Option(help="Locations (in eu-west) where a function fails")] = 5,
    healthy_seconds: Annotated[
        float, typer.Option(help="Seconds of edgefn load traffic on the healthy planet")
    ] = 60.0,
    healthy_rps: Annotated[float, typer.Option(help="Requests/s of the healthy run")] = 40.0,
    idle_seconds: Annotated[float, typer.Option(help="Seconds of the idle bytes window")] = 30.0,
    tail_events: Annotated[int, typer.Option(help="Tail events timed")] = 100,
    stats_trials: Annotated[int, typer.Option(help="Requests timed into edgefn stats")] = 6,
    rounds: Annotated[
        int, typer.Option(help="Overhead rounds per configuration (off, on, ...)")
    ] = 4,
    duration: Annotated[float, typer.Option(help="Seconds of wrk per overhead round")] = 5.0,
    concurrency: Annotated[int, typer.Option(help="wrk connections")] = 32,
    pin: Annotated[
        bool,
        typer.Option(
            help="Overhead part: run the nodes under test on a CPU of their own, the rest on the others"
        ),
    ] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    out: Annotated[Path | None, typer.Option(help="Also write the JSON here")] = None,
) -> None:
    """Observability: node throughput on vs off, rollup bytes, request → tail/stats, fault → incident.

    With --json the result is also written to benchmarks/results/observe.json.
    """
    from edgefn.bench import observe

    _check_observe(part, locations, failing, healthy_seconds, healthy_rps, idle_seconds)
    if tail_events < 1 or stats_trials < 1 or rounds < 1 or duration < 1 or concurrency < 1:
        fail(
            "--tail-events, --stats-trials, --rounds and --concurrency must be >= 1, "
            "--duration >= 1 s",
            hint="e.g. --rounds 4 --duration 5",
        )
    kwargs: dict[str, Any] = {
        "part": part,
        "locations": locations,
        "failing": failing,
        "healthy_s": healthy_seconds,
        "healthy_rps": healthy_rps,
        "idle_s": idle_seconds,
        "tail_events": tail_events,
        "stats_trials": stats_trials,
        "rounds": rounds,
        "duration_s": duration,
        "concurrency": concurrency,
        "pin": pin,
    }
    try:
        result = observe.run(**kwargs) if json_out else _planet_with_progress(observe, kwargs)
    except EdgefnError as err:
        fail_from(err)
    target = out or (Path("benchmarks/results/observe.json") if json_out else None)
    if target is not None:
        _write_json(target, result)
    if json_out:
        emit_json(result)
    else:
        _print_observe(result)


def _check_observe(
    part: str, locations: int, failing: int, healthy_s: float, rps: float, idle_s: float
) -> None:
    if part not in ("all", "overhead", "planet"):
        fail(f"--part {part!r} is not known", hint="use all, overhead or planet")
    if not 2 <= locations <= 30:
        fail(f"--locations {locations} is out of range", hint="use 2 to 30 (default 12)")
    if not 1 <= failing < locations or failing > 20:
        fail(
            f"--failing {failing} must be from 1 to {min(20, locations - 1)} "
            f"(fewer than --locations {locations})",
            hint="e.g. --locations 12 --failing 5",
        )
    if healthy_s < 1 or rps <= 0 or idle_s < 1:
        fail(
            "--healthy-seconds and --idle-seconds must be >= 1, --healthy-rps > 0",
            hint="e.g. --healthy-seconds 600 --healthy-rps 40",
        )


def _print_observe(result: dict[str, Any]) -> None:
    rows: list[list[Any]] = []
    if "overhead" in result:
        o = result["overhead"]
        for config in ("off", "on"):
            c = o[config]
            rows.append(
                [
                    f"node, observability {config}: rps (p50 / p99)",
                    f"{c['rps_median']} ({c['p50_ms_median']} / {c['p99_ms_median']} ms)",
                ]
            )
        rows.append(["throughput on / off (median of pairs)", o["ratio_on_vs_off"]])
    if "planet" in result:
        pl, h = result["planet"], result["healthy"]
        idle, serving = pl["idle_bytes_per_node_per_minute"], h["serving_bytes_per_node_per_minute"]
        rows += [
            ["planet locations / up in", f"{len(pl['locations'])} / {pl['planet_up_s']} s"],
            ["rollup bytes/node/min idle (mean / max)", f"{idle['mean']} / {idle['max']}"],
            ["rollup bytes/node/min serving", f"{serving['mean']} / {serving['max']}"],
            ["request -> tail p50 / p99", _p50_p99(pl["tail"]["latency_ms"])],
            ["request -> stats p50 / p99", _p50_p99(pl["stats"]["latency_ms"])],
            [f"healthy run ({h['seconds']:g} s) incidents", h["incidents_total"]],
            ["fault -> incident", f"{result['fault']['incident_s']} s"],
            ["fault -> webhook", f"{result['fault']['webhook_s']} s"],
        ]
    for name, t in result["targets"].items():
        rows.append([f"target {name}", f"{t['value']} ({'met' if t['met'] else 'MISSED'})"])
    print_table("edgefn bench observe", ["measure", "value"], rows)


def _p50_p99(s: dict[str, Any]) -> str:
    return f"{s['p50']} / {s['p99']} ms (n={s['n']})"
