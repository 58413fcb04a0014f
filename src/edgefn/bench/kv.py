"""``edgefn bench kv``: the replicated KV measured on a real local planet with emulated links.

One run starts ``edgefn up --locations N`` (every link between node, hub and core delays by the
world model's RTT), deploys a small function binding namespace ``bench``, and measures (the KV
calls go to each node's internal listener, ``internal_url``, signed with the planet secret):

* **propagation** — an eventual write acknowledged at one location (origins rotate), then every
  location's replica is polled (every ~20 ms, through ``/_edgefn/kv``) until it returns the value:
  per location, acknowledgement → first seen. p50/p99/max over all (write, location) pairs, beside
  the slowest replication path's RTT (location → hub → core, round trip) and the modelled one-way
  floor of the worst pair (origin → core → target), so queueing shows as the difference.
* **function reads** — ``env.BENCH.get`` timed with ``perf_counter`` *inside* the function (local
  replica, eventual), p50/p99, at a few locations.
* **strong writes** — ``put(..., consistency="strong")`` through ``/_edgefn/kv`` at the location
  nearest the core (the home) and at the one farthest from it, client-observed, p50/p99.
* **writes/s per location** — closed-loop eventual puts at one location (16 in flight) for
  ``duration_s``: acknowledged writes per second, each durable in SQLite and published to the
  stream.

The planet is stopped by ``edgefn down`` (and its supervisor killed by pid) whatever happens.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import httpx

from edgefn._internal_auth import InternalAuth, planet_secret
from edgefn.bench._planet import cli, detached_planet
from edgefn.bench._propagation import (
    NAMESPACE,
    kv_propagation,
    path_rtts_ms,
    summary,
    wait_replicas,
)
from edgefn.world import spread

FUNCTION = '''"""Times a local KV read from inside the function."""
import time

from edgefn import Response


async def fetch(request, env, ctx):
    key = request.query.get("key", "k")
    t0 = time.perf_counter()
    value = await env.BENCH.get(key)
    read_ms = (time.perf_counter() - t0) * 1000
    return Response.json({"read_ms": read_ms, "found": value is not None})
'''
MANIFEST = """name = "kvbench"
main = "main.py"

[[kv_namespaces]]
binding = "BENCH"
namespace = "bench"

[limits]
cpu_ms = 500
timeout_ms = 10000
"""


def run(
    *, locations: int, writes: int, reads: int, strong: int, duration_s: float
) -> dict[str, Any]:
    t_start = time.monotonic()
    with detached_planet(locations=locations, prefix="edgefn-bench-kv-") as (planet, state):
        up_s = time.monotonic() - t_start
        fn_dir = state / "kvbench"
        fn_dir.mkdir()
        (fn_dir / "main.py").write_text(FUNCTION)
        (fn_dir / "edgefn.toml").write_text(MANIFEST)
        cli("deploy", str(fn_dir), "--wait", state_dir=state)
        urls = {loc["name"]: loc["url"] for loc in planet["locations"]}
        internal = {loc["name"]: loc["internal_url"] for loc in planet["locations"]}
        rtts = path_rtts_ms(list(spread(locations)))
        secret = planet_secret(state)
        result = asyncio.run(
            _measure(urls, internal, secret, rtts, writes, reads, strong, duration_s)
        )
    worst = max(rtts.values())
    floor = max(rtts.values()) / 2 + sorted(rtts.values())[-2] / 2 if len(rtts) > 1 else worst
    return {
        "benchmark": "kv",
        "locations": locations,
        "planet_up_s": round(up_s, 1),
        "machine": {"cores": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)},
        "slowest_link_rtt_ms": round(worst, 1),
        "propagation_floor_ms": round(floor, 1),
        **result,
    }


async def _measure(
    public: dict[str, str],
    urls: dict[str, str],
    secret: bytes,
    rtts: dict[str, float],
    writes: int,
    reads: int,
    strong: int,
    duration_s: float,
) -> dict[str, Any]:
    # ``urls`` are the internal listeners (KV endpoints, every request signed with the planet
    # secret); ``public`` the listeners users reach, for the function reads.
    limits = httpx.Limits(max_connections=len(urls) * 4 + 32)
    auth = InternalAuth(secret)
    async with httpx.AsyncClient(timeout=30, limits=limits, auth=auth, trust_env=False) as client:
        await wait_replicas(client, urls)
        propagation, misses = await kv_propagation(client, urls, writes)
        names = list(urls)
        read_ms = await _function_reads(client, [public[n] for n in names[:3]], reads)
        near = min(rtts, key=lambda n: rtts[n])
        far = max(rtts, key=lambda n: rtts[n])
        strong_near, near_503 = await _strong_writes(client, urls[near], strong)
        strong_far, far_503 = await _strong_writes(client, urls[far], strong)
        rate = await _write_rate(client, urls[names[-1]], duration_s)
    return {
        "propagation_ms": summary(propagation),
        "propagation_not_seen_in_30s": misses,
        "function_read_ms": summary(read_ms),
        "strong_write_ms": {
            "near": {
                "location": near,
                "path_rtt_ms": round(rtts[near], 1),
                "unavailable_503": near_503,
                **summary(strong_near),
            },
            "far": {
                "location": far,
                "path_rtt_ms": round(rtts[far], 1),
                "unavailable_503": far_503,
                **summary(strong_far),
            },
        },
        "writes_per_s_per_location": rate,
    }


async def _function_reads(client: Any, urls: list[str], reads: int) -> list[float]:
    out: list[float] = []
    headers = {"host": "kvbench.localhost"}
    for i in range(reads):
        r = await client.get(f"{urls[i % len(urls)]}/?key=prop-0", headers=headers, auth=None)
        r.raise_for_status()
        out.append(float(r.json()["read_ms"]))
    return out


async def _strong_writes(client: Any, url: str, n: int) -> tuple[list[float], int]:
    """Latencies of acknowledged strong writes, and how many answered 503 (home too slow)."""
    out: list[float] = []
    unavailable = 0
    for i in range(n):
        t0 = time.perf_counter()
        r = await client.put(
            f"{url}/_edgefn/kv/{NAMESPACE}/strong-{i}",
            params={"consistency": "strong"},
            content=b"x",
        )
        if r.status_code == 503:
            unavailable += 1
            continue
        r.raise_for_status()
        out.append((time.perf_counter() - t0) * 1000)
    return out, unavailable


async def _write_rate(client: Any, url: str, duration_s: float, in_flight: int = 16) -> float:
    done = 0
    stop_at = time.perf_counter() + duration_s

    async def writer(w: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < stop_at:
            r = await client.put(f"{url}/_edgefn/kv/{NAMESPACE}/rate-{w}-{i}", content=b"v")
            r.raise_for_status()  # eventual writes never wait for other locations
            done += 1
            i += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(in_flight)))
    return round(done / (time.perf_counter() - t0), 1)
