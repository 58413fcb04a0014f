"""`edgefn plan` (OR-Library instances or a world topology; `--apply NAME`: re-plan a live smart
function now) and `edgefn bench plan`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from edgefn.cli._output import emit_json, fail, fail_from, print_table
from edgefn.cli._planet import StateDir, _client
from edgefn.errors import EdgefnError

_DEFAULT_ORLIB_DIR = "tests/data/orlib"
# The largest OR-Library capacitated instances (100 facilities x 1,000 customers) at the capacities
# Beasley publishes optima for (OR-Library's capopt). The files are not shipped (1.2 MB each):
# `edgefn bench plan --large-dir DIR` reads capa.txt, capb.txt and capc.txt from DIR.
_LARGE_OPTIMA = {
    "capa": ((8000, 19240822.449), (10000, 18438046.543), (12000, 17765201.949),
             (14000, 17160439.012)),
    "capb": ((5000, 13656379.578), (6000, 13361927.449), (7000, 13198556.434),
             (8000, 13082516.496)),
    "capc": ((5000, 11646596.974), (5750, 11570340.289), (6500, 11518743.744),
             (7250, 11505767.394)),
}  # fmt: skip


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A rich progress bar on stderr fed by the solvers' progress callbacks."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        tasks: dict[str, Any] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield report


def _pool_mapper(workers: int) -> tuple[Callable[..., list[Any]] | None, int]:
    """A process-pool ``map`` for the planner's independent chunks of functions (the driver side:
    the planner itself stays pure). One worker: no pool, no chunks."""
    import os

    n = workers or max(1, len(os.sched_getaffinity(0)))
    if n <= 1:
        return None, 1

    def mapper(fn: Callable[[Any], Any], jobs: Any) -> list[Any]:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(n, len(jobs))) as pool:
            return list(pool.map(fn, jobs))

    return mapper, n


def solve_orlib_file(
    path: str,
    capacity: float | None,
    uncapacitated: bool,
    time_limit_s: float,
    method: str = "auto",
) -> dict[str, Any]:
    from edgefn.placement import read_orlib, solve_facility

    problem = read_orlib(path, capacity=capacity)
    if uncapacitated:
        problem = problem.uncapacitated()
    start = time.perf_counter()
    if method == "lagrangian" and (problem.capacity is None or problem.open_exactly is not None):
        fail("--method lagrangian solves capacitated instances only (cap*, capa/capb/capc)",
             hint="use --method milp or auto for uncapacitated and p-median instances")  # fmt: skip
    result = solve_facility(problem, time_limit_s=time_limit_s, method=method)  # type: ignore[arg-type]
    solve_s = time.perf_counter() - start
    return {
        "instance": Path(path).stem,
        "objective": result.objective,
        "status": result.status,
        "bound": result.bound,
        "gap": result.gap,
        "open": [i + 1 for i in result.open],
        "method": result.method,
        "nodes": result.nodes,
        "solve_s": round(solve_s, 4),
    }


def _world_problem(topology: str, demand: str, functions: str) -> tuple[Any, Any]:
    from edgefn.placement import build_problem, read_demand, read_functions
    from edgefn.world import load_topology, pops

    locations = pops() if topology == "world" else load_topology(topology)
    spec = read_functions(functions)
    clients, rates = read_demand(demand, spec.functions)
    problem = build_problem(spec.functions, locations, clients, rates, weights=spec.weights,
                            budget_per_hour=spec.budget_per_hour)  # fmt: skip
    return problem, spec


def _plan_value(topology: str, demand: str, functions: str, time_limit: float) -> dict[str, Any]:
    from edgefn.placement import plan_value

    problem, spec = _world_problem(topology, demand, functions)
    start = time.perf_counter()
    out = plan_value(problem, spec.economics, time_limit_s=time_limit)
    out["solve_s"] = round(time.perf_counter() - start, 3)
    return out


def _plan_world(topology: str, demand: str, functions: str, method: str, time_limit: float,
                show_progress: bool, workers: int = 0) -> tuple[dict[str, Any], Any]:  # fmt: skip
    from edgefn.placement import plan

    problem, _ = _world_problem(topology, demand, functions)
    start = time.perf_counter()
    with _progress(show_progress) as report:
        mapper, chunks = _pool_mapper(workers)
        result = plan(problem, method=method, time_limit_s=time_limit, progress=report,  # type: ignore[arg-type]
                      mapper=mapper, chunks=chunks)  # fmt: skip
    out = result.to_json()
    out["solve_s"] = round(time.perf_counter() - start, 3)
    return out, result


def register(app: typer.Typer, bench: typer.Typer) -> None:
    @app.command("plan")
    def plan_cmd(
        orlib: Annotated[str | None, typer.Option(help="OR-Library cap*/pmed* file")] = None,
        capacity: Annotated[float | None, typer.Option(help="capacity for capa/capb/capc")] = None,
        uncapacitated: Annotated[bool, typer.Option(help="ignore capacities (UFLP)")] = False,
        time_limit: Annotated[float, typer.Option(help="solver time limit, seconds")] = 60.0,
        topology: Annotated[str | None, typer.Option(help="'world' or a topology TOML")] = None,
        demand: Annotated[str | None, typer.Option(help="demand CSV client,function,rps")] = None,
        functions: Annotated[str | None, typer.Option(help="functions TOML")] = None,
        method: Annotated[str, typer.Option(help="auto, milp or lagrangian")] = "auto",
        objective: Annotated[
            str,
            typer.Option(help="cost (weighted latency + dollars) or value (value - cost, $/h)"),
        ] = "cost",
        routing_out: Annotated[str | None, typer.Option(help="write routing weights JSON")] = None,
        workers: Annotated[int, typer.Option(help="processes for the planner (0: all CPUs)")] = 0,
        apply: Annotated[
            str | None,
            typer.Option(
                "--apply",
                metavar="FUNCTION",
                help="re-plan this smart function on the running planet now, from the demand "
                "observed, and deploy the change",
            ),
        ] = None,
        state_dir: StateDir = None,
        json_: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    ) -> None:
        """Solve a placement: an OR-Library instance, or functions over a topology; or, with
        --apply, re-plan a smart function of the running planet."""
        if apply is not None:
            if orlib or topology or demand or functions or routing_out:
                fail("--apply re-plans a running function from its observed demand",
                     hint="drop --orlib/--topology/--demand/--functions/--routing-out")  # fmt: skip
            _apply(apply, state_dir, json_)
            return
        if method not in ("auto", "milp", "lagrangian"):
            fail(f"unknown --method {method!r}", hint="use auto, milp or lagrangian")
        if time_limit <= 0:
            fail(f"--time-limit must be > 0, got {time_limit}")
        if objective not in ("cost", "value"):
            fail(f"unknown --objective {objective!r}", hint="use cost or value")
        if objective == "value" and (orlib is not None or method != "auto"):
            fail("--objective value plans functions over a topology and chooses its own method",
                 hint="drop --orlib and --method")  # fmt: skip
        try:
            if orlib is not None:
                if topology or demand or functions:
                    fail("--orlib cannot be combined with --topology/--demand/--functions")
                out = solve_orlib_file(orlib, capacity, uncapacitated, time_limit, method)
                if json_:
                    emit_json(out)
                else:
                    print_table(f"OR-Library {out['instance']}", list(out), [list(out.values())])
                return
            if not (topology and demand and functions):
                fail("give --orlib FILE, or all of --topology, --demand and --functions",
                     hint="see examples/plan/ for input files")  # fmt: skip
            if objective == "value":
                out = _plan_value(topology, demand, functions, time_limit)
            else:
                out, _ = _plan_world(topology, demand, functions, method, time_limit, not json_,
                                     workers)  # fmt: skip
        except EdgefnError as err:
            fail_from(err)
        if routing_out:
            Path(routing_out).write_text(json.dumps(out["routing"], indent=1), encoding="utf-8")
        if json_:
            emit_json(out)
            return
        if objective == "value":
            _print_value(out)
        else:
            _print_world(out)

    @bench.command("plan")
    def bench_plan(
        orlib_dir: Annotated[str, typer.Option(help="directory of OR-Library files")] = (
            _DEFAULT_ORLIB_DIR
        ),
        sites: Annotated[int, typer.Option(help="world instance: locations")] = 300,
        functions: Annotated[int, typer.Option(help="world instance: functions")] = 1000,
        clients: Annotated[int, typer.Option(help="world instance: client regions")] = 500,
        workers: Annotated[int, typer.Option(help="processes for the planner (0: all CPUs)")] = 0,
        large_dir: Annotated[
            str | None,
            typer.Option(
                help="directory with OR-Library capa.txt, capb.txt, capc.txt (not shipped)"
            ),
        ] = None,
        large_time_limit: Annotated[
            float, typer.Option(help="time limit per large instance, seconds")
        ] = 60.0,
        json_: Annotated[bool, typer.Option("--json", help="print JSON and write --out")] = False,
        out: Annotated[str, typer.Option(help="result file")] = "benchmarks/results/plan.json",
    ) -> None:
        """OR-Library instances vs their optima, and the synthetic world instance."""
        if large_time_limit <= 0:
            fail(f"--large-time-limit must be > 0, got {large_time_limit}")
        try:
            if large_dir is not None:
                result = _bench_large(large_dir, large_time_limit, not json_)
            else:
                result = _bench(orlib_dir, sites, functions, clients, not json_, workers)
        except EdgefnError as err:
            fail_from(err)
        if json_:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
            emit_json(result)
            return
        rows = [[r["instance"], r["mode"], r["objective"], r["optimum"], r["match"], r["solve_s"]]
                for r in result["orlib"]]  # fmt: skip
        print_table("OR-Library", ["instance", "mode", "objective", "optimum", "match", "s"], rows)
        if "world" in result:
            print_table("world", list(result["world"]), [list(result["world"].values())])
        else:
            typer.echo(f"all optimal within {result['time_limit_s']:g} s: "
                       f"{result['orlib_all_optimal']}; slowest {result['max_solve_s']:.1f} s")  # fmt: skip


def _apply(name: str, state_dir: Path | None, json_: bool) -> None:
    client = _client(state_dir)
    try:
        out = client.api_call("POST", f"/v1/functions/{name}/placement", json={})
    except EdgefnError as err:
        fail_from(err)
    if json_:
        emit_json(out)
        return
    demand = ", ".join(f"{d['region']} {d['share']:.0%}" for d in out["demand"][:6])
    print_table(
        f"smart placement of {name}",
        ["before", "now", "moved", "mean RTT ms", "demand" + ("" if out["observed"] else " (stand-in)")],
        [[", ".join(out["before"]), ", ".join(out["locations"]), "yes" if out["moved"] else "no",
          f"{out['mean_rtt_ms']:.1f}", demand]],
    )  # fmt: skip
    typer.echo(f"why: {out['reason']}")


def _print_world(out: dict[str, Any]) -> None:
    print_table(
        f"plan: {out['status']} ({out['method']}), objective {out['objective']:.1f}, "
        f"bound {out['bound']:.1f}, gap {out['gap']:.2%}",
        ["function", "locations"],
        [[f, " ".join(locs)] for f, locs in out["placement"].items()],
    )
    worst = sorted(out["latency_by_client_ms"].items(), key=lambda kv: -kv[1])[:15]
    print_table("predicted latency by client region (worst 15)", ["client", "ms"],
                [[c, f"{ms:.1f}"] for c, ms in worst])  # fmt: skip
    print_table("totals", ["cost $/h", "carbon kg/h", "mean latency ms", "unmet SLA", "solve s"],
                [[f"{out['cost_per_hour']:.2f}", f"{out['carbon_kg_per_hour']:.3f}",
                  f"{out['mean_latency_ms']:.1f}", len(out["unmet_sla"]), out["solve_s"]]])  # fmt: skip


def _print_value(out: dict[str, Any]) -> None:
    fns = out["functions"]
    print_table(
        f"plan ({out['status']}): net value {out['net_value']:.3f} $/h = value "
        f"{out['value']:.3f} - cost {out['cost']:.3f}",
        ["function", "replicas", "value $/h", "cost $/h", "net $/h", "locations"],
        [[f, fn["replicas"], f"{fn['value']:.4f}", f"{fn['cost']:.4f}",
          f"{fn['net_value']:.4f}", " ".join(fn["locations"])] for f, fn in fns.items()],
    )  # fmt: skip
    parts = ("value_latency", "value_availability", "cost_deployment", "cost_capacity",
             "cost_transfer", "cost_coordination")  # fmt: skip
    print_table("breakdown ($/h)", ["function", *(p.replace("_", " ") for p in parts)],
                [[f, *(f"{fn[p]:.4f}" for p in parts)] for f, fn in fns.items()])  # fmt: skip
    print_table("by location ($/h)", ["location", "replicas", "value", "cost", "net value"],
                [[loc, v["replicas"], f"{v['value']:.4f}", f"{v['cost']:.4f}",
                  f"{v['net_value']:.4f}"] for loc, v in sorted(out["locations"].items())])  # fmt: skip
    for note in out["notes"]:
        typer.echo(f"note: {note}")


def _optima(directory: Path) -> dict[str, float]:
    found: dict[str, float] = {}
    for name in ("capopt.txt", "pmedopt.txt"):
        path = directory / name
        if path.exists():
            for line in path.read_text(encoding="ascii").splitlines()[1:]:
                parts = line.split()
                if len(parts) == 2:
                    found[parts[0]] = float(parts[1])
    return found


def _bench(orlib_dir: str, sites: int, functions: int, clients: int,
           show: bool, workers: int = 0) -> dict[str, Any]:  # fmt: skip
    directory = Path(orlib_dir)
    if not directory.is_dir():
        fail(f"OR-Library directory not found: {orlib_dir}", hint="pass --orlib-dir DIR")
    optima = _optima(directory)
    uncap = {}
    if (directory / "uncapopt.txt").exists():
        for line in (directory / "uncapopt.txt").read_text(encoding="ascii").splitlines():
            parts = line.split()
            if len(parts) == 2:
                uncap[parts[0]] = float(parts[1])
    jobs = [(n, "p-median" if n.startswith("pmed") else "capacitated", opt)
            for n, opt in sorted(optima.items())]  # fmt: skip
    jobs += [(name, "uncapacitated", opt) for name, opt in sorted(uncap.items())]
    results = []
    with _progress(show) as report:
        for k, (name, mode, opt) in enumerate(jobs):
            path = directory / f"{name}.txt"
            if not path.exists():
                continue
            r = solve_orlib_file(str(path), None, mode == "uncapacitated", 120.0)
            match = abs(r["objective"] - opt) <= 1e-6 * max(1.0, abs(opt)) + 1e-3
            results.append({"instance": name, "mode": mode, "objective": r["objective"],
                            "optimum": opt, "match": match, "status": r["status"],
                            "solve_s": r["solve_s"]})  # fmt: skip
            if report is not None:
                report("or-library", k + 1, len(jobs))
        world = _bench_world(sites, functions, clients, report, workers)
    return {
        "orlib": results,
        "orlib_all_optimal": all(r["match"] for r in results),
        "world": world,
    }


def _bench_large(directory: str, time_limit_s: float, show: bool) -> dict[str, Any]:
    """capa/capb/capc at their published capacities, each against its optimum and the limit."""
    base = Path(directory)
    missing = [f"{n}.txt" for n in _LARGE_OPTIMA if not (base / f"{n}.txt").is_file()]
    if missing:
        fail(f"{directory}: missing {', '.join(missing)}",
             hint="download capa.txt, capb.txt and capc.txt from OR-Library "
                  "(people.brunel.ac.uk/~mastjjb/jeb/orlib/capinfo.html) into that directory")  # fmt: skip
    jobs = [(n, cap, opt) for n, caps in _LARGE_OPTIMA.items() for cap, opt in caps]
    results = []
    with _progress(show) as report:
        for k, (name, cap, opt) in enumerate(jobs):
            r = solve_orlib_file(str(base / f"{name}.txt"), float(cap), False, time_limit_s)
            match = r["status"] == "optimal" and abs(r["objective"] - opt) <= 1e-6 * abs(opt)
            results.append({"instance": f"{name}-{cap}", "mode": "capacitated",
                            "objective": r["objective"], "optimum": opt, "match": match,
                            "status": r["status"], "gap": r["gap"], "method": r["method"],
                            "nodes": r["nodes"], "solve_s": r["solve_s"]})  # fmt: skip
            if report is not None:
                report("or-library large", k + 1, len(jobs))
    return {
        "orlib": results,
        "orlib_all_optimal": all(r["match"] for r in results),
        "time_limit_s": time_limit_s,
        "max_solve_s": max(r["solve_s"] for r in results),
    }


def _bench_world(sites: int, functions: int, clients: int, report: Any,
                 workers: int = 0) -> dict[str, Any]:  # fmt: skip
    from edgefn.placement import plan, world_instance

    start = time.perf_counter()
    problem = world_instance(n_sites=sites, n_functions=functions, n_clients=clients)
    built = time.perf_counter() - start
    mapper, chunks = _pool_mapper(workers)
    start = time.perf_counter()
    result = plan(problem, method="lagrangian", progress=report, mapper=mapper, chunks=chunks)
    solve_s = time.perf_counter() - start
    return {
        "sites": sites,
        "functions": functions,
        "clients": clients,
        "workers": chunks,
        "build_s": round(built, 3),
        "solve_s": round(solve_s, 3),
        "status": result.status,
        "objective": result.objective,
        "bound": result.bound,
        "gap": result.gap,
        "gap_at_most_1pct": result.gap <= 0.01,
        "mean_latency_ms": result.mean_latency_ms,
        "cost_per_hour": result.cost_per_hour,
        "notes": list(result.notes),
    }
