"""Open-loop load through the anycast entry (``edgefn load``) and the traffic benchmark.

:func:`run_load` sends the schedule of :func:`edgefn.routing.plan_arrivals` (Poisson arrivals from
population-weighted client cities) to the planet's anycast entry, each request tagged with its
city's position in ``x-edgefn-client-location`` and ``Host: <name>.localhost``. Sending is open
loop: a request leaves at its planned time whatever the earlier ones are doing; at most
``max_in_flight`` are outstanding and a request that would exceed that is counted as ``not_sent``
(the generator, not the platform, was the bottleneck). Results go into a
:class:`~edgefn.routing.LoadSummary`; with ``keep_timeline`` every (send time, status, served-by)
is kept too, for the failover figures of :func:`run_traffic_bench`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from edgefn.bus import free_port
from edgefn.errors import PlanetError
from edgefn.routing import LoadResult, LoadSummary, plan_arrivals, select_clients

__all__ = ["LoadRun", "run_load"]


@dataclass(frozen=True, slots=True)
class LoadRun:
    summary: dict[str, Any]
    not_sent: int
    elapsed_s: float
    timeline: tuple[tuple[float, int, str, float], ...] = ()


async def run_load(
    *,
    entry_url: str,
    name: str,
    rps: float,
    duration_s: float,
    clients: str = "world",
    seed: int = 0,
    max_in_flight: int = 256,
    timeout_s: float = 30.0,
    keep_timeline: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> LoadRun:
    """Drive open-loop traffic for ``name`` through ``entry_url``; see the module docstring."""
    chosen = select_clients(clients)
    where = {c.name: f"{c.lat:.4f},{c.lon:.4f}" for c in chosen}  # type: ignore[attr-defined]
    plan = plan_arrivals(rps=rps, duration_s=duration_s, rng=random.Random(seed), clients=chosen)
    summary = LoadSummary()
    timeline: list[tuple[float, int, str, float]] = []
    in_flight = 0
    not_sent = 0
    done = 0
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits, trust_env=False) as client:

        async def one(send_at: float, city: str, region: str) -> None:
            nonlocal in_flight, done
            t0 = time.perf_counter()
            status, served = 0, ""
            try:
                response = await client.get(
                    entry_url + "/",
                    headers={"host": f"{name}.localhost", "x-edgefn-client-location": where[city]},
                )
                status = response.status_code
                served = response.headers.get("x-edgefn-location", "")
            except httpx.HTTPError:
                pass
            latency_ms = (time.perf_counter() - t0) * 1000
            summary.add(LoadResult(region, city, status, latency_ms, served or None))
            if keep_timeline:
                timeline.append((send_at, status, served, latency_ms))
            in_flight -= 1
            done += 1

        start = time.perf_counter()
        tasks: set[asyncio.Task[None]] = set()
        for i, planned in enumerate(plan):
            delay = start + planned.send_at_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight >= max_in_flight:
                not_sent += 1
                continue
            in_flight += 1
            task = asyncio.create_task(one(planned.send_at_s, planned.client_city, planned.region))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if on_progress is not None and i % 20 == 0:
                on_progress(done, len(plan))
        if tasks:
            await asyncio.gather(*tasks)
        if on_progress is not None:
            on_progress(done, len(plan))
        elapsed = time.perf_counter() - start
    return LoadRun(summary.to_json(), not_sent, elapsed, tuple(sorted(timeline)))


def default_out() -> Path:
    return Path("benchmarks/results/traffic.json")


# One request at a time per worker, 50 ms each: a fixed service capacity of about 20 requests/s
# per location that costs almost no CPU, so the two shared cores are not what saturates.
_SLOW = """
import asyncio
from edgefn import Response

_lock = asyncio.Lock()

async def fetch(request, env, ctx):
    async with _lock:
        await asyncio.sleep(0.05)
    return Response.json({"served_by": request.edge.location})
"""
CAPACITY_RPS = 20.0


def bench_cli(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 240) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "edgefn.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if res.returncode != 0:
        raise PlanetError(f"edgefn {' '.join(args)} failed:\n{res.stderr[-2000:]}")
    return res.stdout


def _function(root: Path, name: str, extra: str = "") -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "edgefn.toml").write_text(f'name = "{name}"\nmain = "main.py"\n{extra}')
    (d / "main.py").write_text(_SLOW)
    return d


class BenchPlanet:
    """A benchmark planet started with ``edgefn up --detach`` and stopped with ``down``."""

    def __init__(
        self, root: Path, routing: str, *, locations: int = 3, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.state = root / f"planet-{routing}"
        self.env = {**os.environ, "EDGEFN_ROUTING": routing}
        self.info: dict[str, Any] = {}
        self.locations = locations
        self.extra_args = extra_args

    def __enter__(self) -> BenchPlanet:
        port = str(free_port())
        args = ["up", "--detach", "--json", "--locations", str(self.locations)]
        args += ["--entry-port", port, *self.extra_args]
        out = bench_cli([*args, "--state-dir", str(self.state)], env=self.env)
        self.info = json.loads(out)
        return self

    def deploy(self, directory: Path) -> None:
        bench_cli(["deploy", str(directory), "--wait", "--state-dir", str(self.state)])

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            bench_cli(["down", "--state-dir", str(self.state)], timeout=90)
        pid = int(self.info.get("supervisor_pid", 0))
        if pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def _latency(run: LoadRun) -> dict[str, Any]:
    o = run.summary["overall"]
    return {
        "requests": o["requests"],
        "failed_fraction": round(o["failed_fraction"], 4),
        "mean_ms": round(o["mean_ms"], 1),
        "p50_ms": round(o["p50_ms"], 1),
        "p99_ms": round(o["p99_ms"], 1),
        "served_by": run.summary["served_by"],
        "status": run.summary["status"],
    }


async def _failover(planet: BenchPlanet, duration_s: float, rps: float) -> dict[str, Any]:
    victim = planet.info["locations"][1]["name"]
    kill_after_s = duration_s / 3
    load = asyncio.create_task(
        run_load(
            entry_url=planet.info["entry_url"],
            name="slow",
            rps=rps,
            duration_s=duration_s,
            keep_timeline=True,
            seed=2,
        )
    )
    start = time.perf_counter()
    await asyncio.sleep(kill_after_s)
    kill_at = time.perf_counter() - start
    await asyncio.to_thread(bench_cli, ["net", "kill", victim, "--state-dir", str(planet.state)])
    run = await load
    await asyncio.to_thread(bench_cli, ["net", "revive", victim, "--state-dir", str(planet.state)])
    after = [(t, s, by) for t, s, by, _ in run.timeline if t >= kill_at]
    bad = [t for t, s, by in after if s == 0 or s >= 500 or by == victim]
    failed = [t for t, s, _, _ in run.timeline if s == 0 or s >= 500]
    return {
        "victim": victim,
        "requests": len(run.timeline),
        "failed": len(failed),
        "failed_fraction": round(len(failed) / max(1, len(run.timeline)), 4),
        "moved_within_s": round(max(bad) - kill_at, 3) if bad else 0.0,
        "target": "failed < 1 %, traffic moved within 2 s",
    }


async def _overload(planet: BenchPlanet, duration_s: float) -> dict[str, Any]:
    last = planet.info["locations"][-1]
    out: dict[str, Any] = {"location": last["name"], "capacity_rps": CAPACITY_RPS}
    for factor in (1, 2, 3):
        run = await run_load(
            entry_url=planet.info["entry_url"],
            name="slow1",
            rps=CAPACITY_RPS * factor,
            duration_s=duration_s,
            seed=factor,
        )
        ok = run.summary["status"].get("200", 0)
        out[f"{factor}x"] = {
            "offered_rps": CAPACITY_RPS * factor,
            "goodput_rps": round(ok / run.elapsed_s, 1),
            "shed_503": run.summary["status"].get("503", 0),
            "admitted_p99_ms": round(run.summary["overall"]["p99_ms"], 1),
            "status": run.summary["status"],
        }
    return out


async def run_traffic_bench(*, quick: bool = False) -> dict[str, Any]:
    """Nearest-only vs edgefn routing, failover under ``net kill``, 1x/2x/3x overload."""
    duration = 4.0 if quick else 12.0
    world_rps = 30.0
    root = Path(tempfile.mkdtemp(prefix="edgefn-bench-traffic-"))
    slow = _function(root / "fns", "slow")
    result: dict[str, Any] = {
        "setup": {
            "locations": 3,
            "emulate_rtt": True,
            "service": "50 ms per request, one at a time per worker (about 20 rps per location)",
            "world_rps": world_rps,
            "phase_s": duration,
        }
    }
    with BenchPlanet(root, "nearest") as planet:
        await asyncio.to_thread(planet.deploy, slow)
        base = await run_load(
            entry_url=planet.info["entry_url"], name="slow", rps=world_rps, duration_s=duration
        )
    with BenchPlanet(root, "smart") as planet:
        only_last = planet.info["locations"][-1]["region"]
        slow1 = _function(
            root / "fns", "slow1", f'[placement]\nmode = "regions"\nregions = ["{only_last}"]\n'
        )
        await asyncio.to_thread(planet.deploy, slow)
        await asyncio.to_thread(planet.deploy, slow1)
        smart = await run_load(
            entry_url=planet.info["entry_url"], name="slow", rps=world_rps, duration_s=duration
        )
        result["latency"] = {"nearest_only": _latency(base), "edgefn": _latency(smart)}
        result["failover"] = await _failover(planet, duration, world_rps / 2)
        result["overload"] = await _overload(planet, duration)
    result["lp_bound"] = "not computed: edgefn.placement.route was not wired into this bench"
    return result
