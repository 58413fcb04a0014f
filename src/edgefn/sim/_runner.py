"""Run a scenario (any number of replications, on several cores) and build its JSON result.

Jobs are (replication, location) for queue scenarios and (replication, chunk of PoPs) for
planet scenarios. Their tallies are merged in a fixed order, so the result is a pure function of
the scenario and the seed; only ``wall_s`` and ``sim_requests_per_s`` depend on the machine.
Confidence intervals come from replications when there are several, else from batch means.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from edgefn.sim._local import LocalJob, run_local_job, tally_shape
from edgefn.sim._parallel import default_workers, map_jobs
from edgefn.sim._planet import (
    WATTS_PER_BUSY_WORKER,
    PlanetJob,
    PlanetModel,
    build_planet,
    run_planet_job,
)
from edgefn.sim._rng import numpy_stream
from edgefn.sim._scenario import Scenario
from edgefn.sim._tally import Tally, replication_ci

__all__ = ["NON_DETERMINISTIC_KEYS", "SimulationResult", "simulate"]

# Keys whose values depend on the machine, not on the scenario and seed.
NON_DETERMINISTIC_KEYS = ("wall_s", "sim_requests_per_s", "workers")


class SimulationResult(dict[str, Any]):
    """The JSON result, plus the merged tallies the report plots (not serialised)."""

    tallies: dict[str, Tally]
    region_tallies: dict[str, Tally]
    location_meta: list[dict[str, Any]]


def simulate(
    scenario: Scenario,
    *,
    seed: int | None = None,
    replications: int | None = None,
    workers: int = 0,
) -> SimulationResult:
    """Run ``scenario`` and return its result (see the design record for the keys)."""
    run = replace(
        scenario.run,
        seed=scenario.run.seed if seed is None else seed,
        replications=replications or scenario.run.replications,
    )
    s = replace(scenario, run=run)
    workers = workers or s.run.workers or default_workers()
    t0 = time.perf_counter()
    placement: dict[str, Any] | None = None
    if s.world is None:
        reps, by_loc, by_region, meta = _run_local(s, workers)
    else:
        m = build_planet(s)
        placement = {"source": m.placement.source, "replicas": int(m.placement.mask.sum())}
        if m.placement.summary is not None:
            placement["plan"] = dict(m.placement.summary)
        reps, by_loc, by_region, meta = _run_planet(m, workers)
    wall = time.perf_counter() - t0
    out = _result(s, reps, by_loc, by_region, meta, wall, workers)
    if placement is not None:
        out["placement"] = placement
    return out


def _run_local(
    s: Scenario, workers: int
) -> tuple[list[Tally], list[Tally], dict[str, Tally], list[dict[str, Any]]]:
    jobs = [
        LocalJob(s, s.run.seed, r, i)
        for r in range(s.run.replications)
        for i in range(len(s.locations))
    ]
    tallies = map_jobs(run_local_job, jobs, workers=workers)
    n_loc = len(s.locations)
    reps = [_sum(tallies[r * n_loc : (r + 1) * n_loc]) for r in range(s.run.replications)]
    by_loc = [_sum(tallies[i::n_loc]) for i in range(n_loc)]
    by_region: dict[str, Tally] = {}
    for loc, t in zip(s.locations, by_loc, strict=True):
        by_region.setdefault(loc.region, Tally(t.shape))
        by_region[loc.region] += t
    meta = [
        {
            "name": loc.name,
            "region": loc.region,
            "servers": loc.servers,
            "cost_per_hour": loc.cost_per_hour,
            "carbon_g_per_kwh": loc.carbon_g_per_kwh,
        }
        for loc in s.locations
    ]
    return reps, by_loc, by_region, meta


def _run_planet(
    m: PlanetModel, workers: int
) -> tuple[list[Tally], list[Tally], dict[str, Tally], list[dict[str, Any]]]:
    s = m.scenario
    n_pop = len(m.pops)
    # Chunks interleave PoPs so that big and small ones are spread over the workers. Their
    # number is fixed, not tied to the worker count, so float sums merge in the same order
    # however many processes run them (same seed, same JSON).
    n_chunks = min(n_pop, 32)
    chunks = [tuple(range(c, n_pop, n_chunks)) for c in range(n_chunks)]
    jobs = [PlanetJob(m, s.run.seed, r, ch) for r in range(s.run.replications) for ch in chunks]
    parts = map_jobs(run_planet_job, jobs, workers=workers)
    shape = tally_shape(s)
    reps: list[Tally] = []
    by_pop = [Tally(shape) for _ in range(n_pop)]
    by_region: dict[str, Tally] = {}
    for r in range(s.run.replications):
        rep = Tally(shape)
        for part in parts[r * n_chunks : (r + 1) * n_chunks]:
            for pop in sorted(part.by_pop):
                rep += part.by_pop[pop]
                by_pop[pop] += part.by_pop[pop]
            for region in sorted(part.by_region):
                by_region.setdefault(region, Tally(shape))
                by_region[region] += part.by_region[region]
        rep.add_failed(_failed(m, r))
        reps.append(rep)
    meta = [
        {
            "name": p.id,
            "city": p.city,
            "region": p.region,
            "lat": p.lat,
            "lon": p.lon,
            "servers": int(m.servers[i]),
            "cost_per_hour": p.cost_per_hour,
            "carbon_g_per_kwh": p.carbon_g_per_kwh,
            "functions_placed": int(m.placement.mask[:, i].sum()),
        }
        for i, p in enumerate(m.pops)
    ]
    return reps, by_pop, dict(sorted(by_region.items())), meta


def _failed(m: PlanetModel, rep: int) -> int:
    """Requests of unroutable flows (no reachable PoP runs the function) in one replication."""
    expected = 0.0
    edges = m.interval_edges_ms
    for k in range(len(edges) - 1):
        a = m.assignment[int(m.interval_epoch[k])]
        unroutable = a < 0
        if unroutable.any():
            rate = m.city_rate_per_s[k][:, None] * m.function_weight[None, :]
            expected += float(rate[unroutable].sum()) * (edges[k + 1] - edges[k]) / 1000.0
    return int(numpy_stream(m.scenario.run.seed, "rep", rep, "failed").poisson(expected))


def _sum(tallies: list[Tally]) -> Tally:
    total = Tally(tallies[0].shape)
    for t in tallies:
        total += t
    return total


def _result(
    s: Scenario,
    reps: list[Tally],
    by_loc: list[Tally],
    by_region: dict[str, Tally],
    meta: list[dict[str, Any]],
    wall: float,
    workers: int,
) -> SimulationResult:
    total = _sum(reps)
    servers = sum(int(m["servers"]) for m in meta) * len(reps)
    out = SimulationResult(
        scenario=s.name,
        kind="queue" if s.world is None else "planet",
        engine=s.run.engine,
        seed=s.run.seed,
        replications=s.run.replications,
        duration_s=s.run.duration_s,
        warmup_s=s.run.warmup_s,
    )
    out.update(total.summary(servers))
    if len(reps) > 1:
        out["ci95"] = replication_ci(
            {
                "wait_ms_mean": [t.wait_sum / max(t.n, 1) for t in reps],
                "response_ms_mean": [t.response_sum / max(t.n, 1) for t in reps],
                "p_wait": [t.waited / max(t.n, 1) for t in reps],
                "cold_start_fraction": [t.cold / max(t.n, 1) for t in reps],
            }
        )
    else:
        out["ci95"] = total.batch_ci()
    cost, carbon = 0.0, 0.0
    locations: dict[str, Any] = {}
    for m, t in zip(meta, by_loc, strict=True):
        busy_h = t.busy_ms / 3_600_000.0 / len(reps)
        block: dict[str, Any] = dict(m)
        block.update(t.summary(int(m["servers"]) * len(reps)))
        block["cost_usd"] = round(busy_h * float(m["cost_per_hour"]), 4)
        block["carbon_g"] = round(
            busy_h * WATTS_PER_BUSY_WORKER / 1000.0 * float(m["carbon_g_per_kwh"]), 3
        )
        cost += block["cost_usd"]
        carbon += block["carbon_g"]
        locations[str(m["name"])] = block
    out["cost_usd"] = round(cost, 4)
    out["carbon_g"] = round(carbon, 3)
    out["regions"] = {r: t.summary(0) for r, t in by_region.items()}
    out["locations"] = locations
    out["cold_start_timeline"] = {
        "bin_s": total.shape.timeline_bin_ms / 1000.0,
        "requests": total.timeline[:, 0].astype(np.int64).tolist(),
        "cold": total.timeline[:, 1].astype(np.int64).tolist(),
    }
    out["workers"] = workers
    out["wall_s"] = round(wall, 3)
    simulated = int(total.timeline[:, 0].sum())
    out["requests_simulated"] = simulated
    out["sim_requests_per_s"] = round(simulated / wall, 1) if wall > 0 else 0.0
    out.tallies = {"total": total}
    out.region_tallies = by_region
    out.location_meta = meta
    return out
