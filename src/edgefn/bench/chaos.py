"""``edgefn bench chaos``: the Jepsen-style chaos suite on a fresh local planet, for S seconds.

One run starts ``edgefn up --locations N`` (links delayed by the world model's RTT), deploys the
chaos function (:func:`edgefn.chaos.driver.write_function`) with ``edgefn deploy --wait``, runs
the seeded workload and nemesis (:func:`edgefn.chaos.driver.run_chaos`), heals the planet, waits
for convergence, runs the checkers and stops the planet by pid. The result holds the figures
(operations per level/kind/outcome, unknown outcomes, nemesis events, each checker's verdict and
time); a failing run also writes its history and seed to a JSON-lines file it names
(``failure_file``), which ``--seed`` replays with the same plan.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from edgefn.bench._planet import cli, detached_planet
from edgefn.chaos.driver import (
    ProgressFn,
    evaluate,
    run_chaos,
    save_failure,
    summarize,
    write_function,
)
from edgefn.chaos.plan import ChaosOptions

__all__ = ["run"]


def run(
    *,
    duration_s: float,
    seed: int,
    locations: int,
    failures_dir: Path,
    on_progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """One chaos run on a planet of its own; the summary (``passed`` False when a check fails)."""
    options = ChaosOptions(seed=seed, duration_ms=int(duration_s * 1000))
    t0 = time.monotonic()
    with detached_planet(locations=locations, prefix="edgefn-bench-chaos-") as (planet, state):
        up_s = time.monotonic() - t0
        cli("deploy", str(write_function(state / "chaos-fn")), "--wait", state_dir=state)
        result = asyncio.run(run_chaos(planet, state, options, on_progress=on_progress))
    verdicts = evaluate(result)
    summary = summarize(result, verdicts)
    summary["timings_s"] = {"planet_up": round(up_s, 1), **summary["timings_s"]}
    summary["machine"] = {"cores": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}
    summary["failure_file"] = (
        None if summary["passed"] else str(save_failure(result, verdicts, failures_dir))
    )
    return {"benchmark": "chaos", **summary}
