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
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    import httpx

    from edgefn.routing import LoadResult, LoadSummary, plan_arrivals, select_clients

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


async def run_traffic_bench(*, quick: bool = False) -> dict[str, Any]:
    raise NotImplementedError
