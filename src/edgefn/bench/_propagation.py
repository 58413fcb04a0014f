"""How long a change takes to reach every location of a running planet: shared by the benchmarks.

``edgefn bench deploy``, ``edgefn bench kv`` and ``edgefn bench planet`` measure the same two
things, so they do it with these functions:

* **deploy** — :func:`time_deploy` starts the clock, deploys a version through the control API
  and polls every location's node (10 ms apart, :func:`wait_version`) until it answers with that
  ``x-edgefn-version``: per location, seconds from the deploy call to the first answer from it.
* **KV** — :func:`kv_propagation` acknowledges an eventual write at one location (origins
  rotate) and polls every other location's replica (every ~20 ms, :func:`first_seen`) until it
  returns the value: per (write, location) pair, milliseconds from the acknowledgement.
  :func:`wait_replicas` waits until every replica is connected and knows all the others.
* **RTT floor** — :func:`path_rtts_ms` (the world model) and :func:`link_path_rtts_ms` (what the
  link emulator of a running planet applies): each location's round trip location → hub → core,
  the least time a message from the core needs to get there and back.

Percentiles: :func:`summary` (nearest rank on ``q·(n-1)``) with ``n``, p50, p99 and max.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from edgefn.errors import PlanetError
from edgefn.planet.client import PlanetClient
from edgefn.planet.commands import hub_sites
from edgefn.world import Location, rtt_ms

__all__ = [
    "NAMESPACE",
    "first_seen",
    "kv_propagation",
    "link_path_rtts_ms",
    "path_rtts_ms",
    "pct",
    "summary",
    "time_deploy",
    "wait_replicas",
    "wait_version",
]

NAMESPACE = "bench"
# Each poll costs the polled node CPU; 20 ms keeps 50 pollers from swamping 2 cores.
_KV_POLL_S = 0.02
_PROPAGATION_TIMEOUT_S = 30.0
_VERSION_POLL_S = 0.01
_REPLICAS_READY_S = 300.0


def pct(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by nearest rank on ``q·(n-1)``; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[idx], 2)


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": pct(values, 50),
        "p99": pct(values, 99),
        "max": round(max(values), 2) if values else float("nan"),
    }


# -- RTT floor ---------------------------------------------------------------------------------


def path_rtts_ms(locations: Sequence[Location]) -> dict[str, float]:
    """Round-trip time of each location's path location → hub → core (the world model)."""
    sites = hub_sites(locations)
    core = locations[0]
    return {
        loc.id: rtt_ms(loc, sites[loc.region]) + rtt_ms(sites[loc.region], core)
        for loc in locations
    }


def link_path_rtts_ms(
    planet: Mapping[str, Any], links: Mapping[str, Mapping[str, Any]]
) -> dict[str, float]:
    """Each location's core → hub → location round trip as the planet's link emulator applies it.

    ``links`` maps link name (``core~hub-<region>``, ``hub-<region>~loc-<id>``) to its statistics
    (``rtt_ms``), as ``PlanetClient.links()`` returns them.
    """
    out: dict[str, float] = {}
    for loc in planet["locations"]:
        hub_link = links.get(f"hub-{loc['region']}~loc-{loc['name']}", {})
        core_link = links.get(f"core~hub-{loc['region']}", {})
        out[loc["name"]] = float(hub_link.get("rtt_ms", 0)) + float(core_link.get("rtt_ms", 0))
    return out


# -- deploy --------------------------------------------------------------------------------------


async def wait_version(url: str, version: str, t0: float, deadline: float) -> float | None:
    """Seconds from ``t0`` until ``url`` answers with ``version``; None past ``deadline``."""
    async with httpx.AsyncClient(timeout=2, trust_env=False) as client:
        while time.monotonic() < deadline:
            try:
                r = await client.get(f"{url}/", headers={"host": "hello.localhost"})
                if r.headers.get("x-edgefn-version") == version:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            await asyncio.sleep(_VERSION_POLL_S)
    return None


def time_deploy(
    client: PlanetClient, name: str, version: str, urls: Mapping[str, str], *, timeout_s: float
) -> dict[str, float | None]:
    """Deploy ``version`` of ``name`` at once; location → seconds until it served it (or None)."""
    t0 = time.monotonic()
    client.deploy(name, version, "immediate")

    async def poll_all() -> dict[str, float | None]:
        deadline = time.monotonic() + timeout_s
        results = await asyncio.gather(
            *(wait_version(u, version, t0, deadline) for u in urls.values())
        )
        return dict(zip(urls, results, strict=True))

    return asyncio.run(poll_all())


# -- KV ------------------------------------------------------------------------------------------


async def _replica_ready(client: httpx.AsyncClient, url: str, count: int) -> tuple[bool, str]:
    try:
        r = await client.get(f"{url}/_edgefn/kvstate/{NAMESPACE}", timeout=10)
    except httpx.HTTPError as err:
        return False, type(err).__name__
    if r.status_code != 200:
        return False, f"HTTP {r.status_code}"
    driver = r.json()["driver"]
    return driver["connected"] and len(driver["members"]) == count, driver["last_setup_error"]


async def wait_replicas(client: httpx.AsyncClient, urls: Mapping[str, str]) -> None:
    """Every location's replica of :data:`NAMESPACE` connected and aware of every other one.

    ``urls`` are the nodes' internal listeners; ``client`` signs with the planet secret.
    """
    deadline = time.monotonic() + _REPLICAS_READY_S
    while True:
        states = await asyncio.gather(
            *(_replica_ready(client, u, len(urls)) for u in urls.values())
        )
        if all(ok for ok, _ in states):
            return
        if time.monotonic() > deadline:
            errors = {err for ok, err in states if not ok}
            raise PlanetError(
                f"{sum(not ok for ok, _ in states)} KV replicas not ready after "
                f"{_REPLICAS_READY_S:.0f} s (errors: {errors})",
                hint="the machine may be overloaded; try fewer --locations",
            )
        await asyncio.sleep(1.0)


async def kv_propagation(
    client: httpx.AsyncClient, urls: Mapping[str, str], writes: int, *, key_prefix: str = "prop"
) -> tuple[list[float], int]:
    """``writes`` eventual writes, origins rotating: (ms to each other location, pairs not seen)."""
    names = list(urls)
    samples: list[float] = []
    misses = 0
    for i in range(writes):
        origin = names[i % len(names)]
        key, value = f"{key_prefix}-{i}", f"v{i}"
        r = await client.put(f"{urls[origin]}/_edgefn/kv/{NAMESPACE}/{key}", content=value)
        r.raise_for_status()
        t0 = time.perf_counter()
        seen = await asyncio.gather(
            *(first_seen(client, urls[n], key, value, t0) for n in names if n != origin)
        )
        samples += [s for s in seen if s is not None]
        misses += sum(1 for s in seen if s is None)
    return samples, misses


async def first_seen(
    client: httpx.AsyncClient, url: str, key: str, value: str, t0: float
) -> float | None:
    """Milliseconds from ``t0`` until the replica at ``url`` returns ``value`` for ``key``."""
    deadline = t0 + _PROPAGATION_TIMEOUT_S
    while time.perf_counter() < deadline:
        try:
            r = await client.get(f"{url}/_edgefn/kv/{NAMESPACE}/{key}")
        except httpx.HTTPError:
            pass  # a busy node: poll again
        else:
            if r.status_code == 200 and r.json().get("value") == value:
                return (time.perf_counter() - t0) * 1000
        await asyncio.sleep(_KV_POLL_S)
    return None
