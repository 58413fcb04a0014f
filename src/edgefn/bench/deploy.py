"""``edgefn bench deploy``: how fast a deploy reaches every location of a planet, and what it costs
on the long-haul links.

A planet of ``locations`` real PoPs is started (``edgefn up --detach``, emulated RTTs on every
backbone link). A fresh version of ``examples/hello`` is uploaded; the clock starts when the control
API accepts the deployment (``202``). Every location's node is then polled directly (10 ms apart)
until it answers with the new ``x-edgefn-version``; that time is the location's convergence time.
Reported: p50/p99/max over locations, the slowest backbone path's RTT (core→hub + hub→location,
the time a message needs to get there and back at the least), the target (max ≤ slowest RTT +
250 ms), and the bytes the deploy put on the core↔hub (long-haul) links against the bundle's size
× the number of hubs (a bundle should cross each long-haul link once).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgefn.bench._propagation import link_path_rtts_ms, time_deploy
from edgefn.bundle import build_bundle
from edgefn.bus.credentials import load_credentials
from edgefn.bus.jetstream import connect
from edgefn.planet.bundles import region_cache_statistics
from edgefn.planet.client import PlanetClient


def _edgefn(*args: str, timeout: float = 600) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "edgefn.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if res.returncode != 0:
        raise RuntimeError(f"edgefn {' '.join(args)} failed:\n{res.stderr}")
    return res.stdout


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))] * 1000, 1)


def run(
    *,
    locations: int = 50,
    examples: Path = Path("examples"),
    entry_port: int = 0,
    timeout_s: float = 120.0,
) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="edgefn-bench-deploy-"))
    work = Path(tempfile.mkdtemp(prefix="edgefn-bench-fn-"))
    port = entry_port or _free_port()
    t_up = time.monotonic()
    _edgefn(
        "up",
        "--locations",
        str(locations),
        "--detach",
        "--json",
        "--state-dir",
        str(state),
        "--entry-port",
        str(port),
        "--no-emulate-rtt",
    )
    up_s = time.monotonic() - t_up
    try:
        client = PlanetClient(state)
        fn = work / "hello"
        shutil.copytree(examples / "hello", fn)
        # Warm-up deploy so that every node has fetched one bundle and loaded hello once.
        first = client.upload(fn)
        client.deploy("hello", first["version_id"], "immediate")
        client.wait_converged("hello", first["version_id"], timeout_s=timeout_s)
        manifest = fn / "edgefn.toml"
        manifest.write_text(manifest.read_text().replace('"Hello"', f'"Hello {time.time_ns()}"'))
        bundle = build_bundle(fn)
        before = {x["name"]: x for x in client.links()}
        caches_before = _cache_stats(client.planet)
        uploaded = client.upload(fn)
        version = uploaded["version_id"]
        urls = {loc["name"]: loc["url"] for loc in client.planet["locations"]}
        times = time_deploy(client, "hello", version, urls, timeout_s=timeout_s)
        client.wait_converged("hello", version, timeout_s=timeout_s)
        time.sleep(0.5)  # let the last observed-state reports cross the links
        after = {x["name"]: x for x in client.links()}
        caches_after = _cache_stats(client.planet)
        planet = client.planet
    except Exception:
        _edgefn("down", "--state-dir", str(state))
        sys.stderr.write(f"bench deploy failed; the planet's logs are kept in {state}\n")
        raise
    else:
        _edgefn("down", "--state-dir", str(state))
        shutil.rmtree(state, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = _report(
        times, before, after, planet, bundle_bytes=len(bundle.data), up_s=up_s, locations=locations
    )
    caches = {}
    for region, st in caches_after.items():
        was = caches_before.get(region, {})
        caches[region] = {k: st[k] - was.get(k, 0) for k in ("bytes_from_core", "pushed", "misses")}
    result["region_caches"] = caches
    crossings = {round(c["bytes_from_core"] / len(bundle.data), 2) for c in caches.values()}
    result["bundle_crossings_per_long_haul_link"] = sorted(crossings)
    return result


def _cache_stats(planet: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Each region cache's counters, asked over NATS through the core."""
    creds = load_credentials(Path(planet["admin_creds"])) if planet.get("admin_creds") else None

    async def ask() -> dict[str, dict[str, int]]:
        nc = await connect(planet["core"]["client_url"], name="bench-deploy", creds=creds)
        try:
            return {r: await region_cache_statistics(nc, r) for r in planet["regions"]}
        finally:
            await nc.close()

    return asyncio.run(ask())


def _report(
    times: dict[str, float | None],
    before: dict[str, Any],
    after: dict[str, Any],
    planet: dict[str, Any],
    *,
    bundle_bytes: int,
    up_s: float,
    locations: int,
) -> dict[str, Any]:
    done = [t for t in times.values() if t is not None]
    path_rtt = link_path_rtts_ms(planet, after)
    slowest = max(path_rtt.values()) if path_rtt else 0.0
    long_haul = [n for n in after if n.startswith("core~hub-")]

    def delta(name: str) -> int:
        a, b = after[name], before.get(name, {})
        return int(
            a["bytes_forward"]
            + a["bytes_backward"]
            - b.get("bytes_forward", 0)
            - b.get("bytes_backward", 0)
        )

    long_haul_bytes = sum(delta(n) for n in long_haul)
    max_ms = _pct(done, 1.0) if done else None
    return {
        "benchmark": "deploy",
        "locations": locations,
        "hubs": len(long_haul),
        "planet_start_s": round(up_s, 1),
        "converged_locations": len(done),
        "convergence_ms": {"p50": _pct(done, 0.5), "p99": _pct(done, 0.99), "max": max_ms}
        if done
        else None,
        "slowest_path_rtt_ms": round(slowest, 1),
        "target_max_ms": round(slowest + 250, 1),
        "target_met": bool(
            done and len(done) == len(times) and max_ms is not None and max_ms <= slowest + 250
        ),
        "bundle_bytes": bundle_bytes,
        "long_haul_bytes_during_deploy": long_haul_bytes,
        "long_haul_bytes_per_hub": round(long_haul_bytes / max(1, len(long_haul))),
        "per_location_ms": {
            k: (round(v * 1000, 1) if v is not None else None)
            for k, v in sorted(times.items(), key=lambda kv: kv[1] or 1e9)
        },
        "note": "long_haul_bytes_* count all traffic on core-hub links during the deploy window "
        "(desired/observed state, heartbeats, load reports); region_caches counts the bundle "
        "bytes each hub received from the core",
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dumps(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2)
