"""``edgefn bench sim``: simulated requests per second, single queue and a planet day.

The single queue is the M/M/10 of ``examples/scenarios/mmc.toml`` run long enough for millions
of requests, as independent replications on all cores. The planet day is 300 PoPs, 1,000
functions and ``requests_per_day`` requests (10⁸ by default) with cold starts and a 10-minute
keep-alive. Both are built in memory so the benchmark does not depend on the working directory.

The single queue runs ``single_runs`` times (same seed): the figure is the median rate, every
run's rate is listed, and ``single_queue_identical`` says whether the runs' results agreed
(they must: only the wall time may differ). One run's rate on this VM varies by up to ~1.5×
from minute to minute, so one run alone says little.
"""

from __future__ import annotations

import os
import platform
from typing import Any

from edgefn.sim._runner import NON_DETERMINISTIC_KEYS, simulate
from edgefn.sim._scenario import parse_scenario

__all__ = ["run_bench"]


def _single(replications: int) -> dict[str, Any]:
    return {
        "run": {"duration_s": 2_000_000, "seed": 1, "replications": replications},
        "locations": [{"name": "q", "servers": 10}],
        "workload": {"arrivals": "poisson", "rate_per_s": 2.0},
        "service": {"distribution": "exponential", "mean_ms": 3000},
        "cold_start": {"enabled": False},
    }


def _planet(requests_per_day: float) -> dict[str, Any]:
    return {
        "run": {"duration_s": 86_400, "seed": 7},
        "world": {
            "pops": 300,
            "servers": 0,
            "requests_per_day": requests_per_day,
            "functions": 1000,
        },
        "service": {"distribution": "lognormal", "mean_ms": 100, "scv": 2.0},
        "cold_start": {"enabled": True, "distribution": "lognormal", "mean_ms": 400, "scv": 0.5},
        "policies": {"placement": "popularity", "routing": "nearest"},
    }


def run_bench(
    *, requests_per_day: float = 1e8, workers: int = 0, single_runs: int = 3
) -> dict[str, Any]:
    """Run both benchmarks and return their figures."""
    runs = [
        simulate(parse_scenario(_single(4), path="bench-single-queue"), workers=workers)
        for _ in range(max(1, single_runs))
    ]
    outcomes = [{k: v for k, v in r.items() if k not in NON_DETERMINISTIC_KEYS} for r in runs]
    rates = [r["sim_requests_per_s"] for r in runs]
    single = runs[rates.index(sorted(rates)[(len(rates) - 1) // 2])]
    planet = simulate(
        parse_scenario(_planet(requests_per_day), path="bench-planet"), workers=workers
    )
    return {
        "single_queue_requests": single["requests_simulated"],
        "single_queue_wall_s": single["wall_s"],
        "single_queue_sim_requests_per_s": single["sim_requests_per_s"],
        "single_queue_runs_sim_requests_per_s": rates,
        "single_queue_median_of": len(runs),
        "single_queue_identical": all(o == outcomes[0] for o in outcomes),
        "planet_requests": planet["requests_simulated"],
        "planet_wall_s": planet["wall_s"],
        "planet_sim_requests_per_s": planet["sim_requests_per_s"],
        "planet_response_ms": planet["response_ms"],
        "planet_cold_start_fraction": planet["cold_start_fraction"],
        "planet_p_wait": planet["p_wait"],
        "workers": planet["workers"],
        "cpus": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "python": platform.python_version(),
        "targets": {"sim_requests_per_s": 4_000_000, "planet_1e8_wall_s": 120},
    }
