"""``edgefn simulate`` and ``edgefn bench sim``: arguments in, :mod:`edgefn.sim` calls out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgefn.cli._output import emit_json, fail_from, print_table
from edgefn.errors import EdgefnError


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add the simulator's commands."""

    @app.command("simulate")
    def simulate_cmd(
        scenario: Annotated[Path, typer.Argument(help="scenario TOML file")],
        seed: Annotated[int | None, typer.Option(help="override [run] seed")] = None,
        replications: Annotated[
            int | None, typer.Option(min=1, max=1000, help="independent replications")
        ] = None,
        workers: Annotated[int, typer.Option(min=0, help="processes (0: all CPUs)")] = 0,
        json_out: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
        report: Annotated[
            Path | None, typer.Option(help="write PNG plots + index.html here")
        ] = None,
    ) -> None:
        """Simulate a scenario: latency, waiting, utilisation, cold starts, cost and carbon."""
        from edgefn.sim import load_scenario, simulate

        try:
            result = simulate(
                load_scenario(scenario), seed=seed, replications=replications, workers=workers
            )
        except EdgefnError as err:
            fail_from(err)
        if report is not None:
            from edgefn.sim._report import write_report

            write_report(result, report)
        if json_out:
            emit_json(dict(result))
            return
        _print_summary(result)

    @bench.command("sim")
    def bench_sim(
        json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
        out: Annotated[Path, typer.Option(help="result file")] = Path(
            "benchmarks/results/sim.json"
        ),
        requests_per_day: Annotated[
            float, typer.Option(help="planet-day requests")
        ] = 100_000_000.0,
        workers: Annotated[int, typer.Option(min=0, help="processes (0: all CPUs)")] = 0,
    ) -> None:
        """Simulated requests per second: single queue and a 300-PoP, 1,000-function planet day."""
        from edgefn.sim._bench import run_bench

        result = run_bench(requests_per_day=requests_per_day, workers=workers)
        if json_out:
            out.parent.mkdir(parents=True, exist_ok=True)
            import json

            out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
            emit_json(result)
            return
        rows = [(k, v) for k, v in result.items() if not isinstance(v, dict)]
        print_table("bench sim", ["metric", "value"], rows)


def _print_summary(r: dict[str, Any]) -> None:
    rows = [
        ("requests", r["requests"]),
        ("failed", r["failed"]),
        ("wait_ms mean/p95/p99", _trio(r["wait_ms"])),
        ("response_ms mean/p95/p99", _trio(r["response_ms"])),
        ("p_wait", r["p_wait"]),
        ("utilization", r.get("utilization", "")),
        ("cold_start_fraction", r["cold_start_fraction"]),
        ("cost_usd / carbon_g", f"{r['cost_usd']} / {r['carbon_g']}"),
        ("wall_s", r["wall_s"]),
        ("sim_requests_per_s", r["sim_requests_per_s"]),
    ]
    print_table(f"simulate {r['scenario']}", ["metric", "value"], rows)


def _trio(d: dict[str, float]) -> str:
    return f"{d['mean']} / {d['p95']} / {d['p99']}"
