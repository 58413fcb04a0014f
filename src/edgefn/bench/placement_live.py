"""``edgefn bench placement``: smart placement on a real planet, side by side with "everywhere".

One planet (``--locations``, 12 by default, modelled RTTs, re-plan every 5 s) runs the same
trivial function twice: ``smartfn`` with ``[placement] mode = "smart"`` (``min_replicas = 1``)
and ``everyfn`` placed everywhere. Clients come from East Asia, then from Europe (``edgefn load``'s
generator: Poisson arrivals from population-weighted cities). In each phase a warm-up load lets
the telemetry observe the demand and the placement follow it (every failure in it counts: a move
must not fail requests); then the measured load goes to both functions, one after the other.

Reported per phase: where the smart function runs and why, every placement it took, the failed
requests, the mean and p50/p99 latency of both functions, and the routing LP's lower bound for
the smart placement: the clients' population-weighted mean modelled RTT of the platform's path
to their best chosen location (to the nearest location, then forwarded; uncapacitated, so the
LP routes every client to its best replica), with the straight-line RTT beside it. The ratios say
how far the smart function is from that bound and from the "everywhere" deploy; the difference
between the bound and "everywhere" is the platform's own path (entry, node, forwarding), which
no placement removes.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from edgefn.bench.traffic import BenchPlanet, run_load
from edgefn.control.smart_placement import SmartSite, path_rtt_ms
from edgefn.placement import Client
from edgefn.world import cities, rtt_ms

__all__ = ["run_placement_bench"]

PHASES = (
    ("east-asia", "Tokyo,Shanghai,Beijing,Osaka,Seoul"),
    ("europe", "Paris,London,Madrid,Berlin,Milan"),
)
_CODE = 'from edgefn import Response\n\nasync def fetch(request, env, ctx):\n    return Response("ok")\n'


def _function(root: Path, name: str, placement: str) -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "edgefn.toml").write_text(f'name = "{name}"\nmain = "main.py"\n{placement}')
    (d / "main.py").write_text(_CODE)
    return d


def lp_bound_ms(
    city_names: Sequence[str], every_site: Sequence[SmartSite], placed: Sequence[str]
) -> tuple[float, float]:
    """The routing LP's bound for ``placed``, uncapacitated (every client to its best replica):
    the population-weighted mean RTT of the platform's path (to the nearest location, then
    forwarded; :func:`~edgefn.control.smart_placement.path_rtt_ms`), and of a straight line."""
    chosen = [c for c in cities() if c.name in set(city_names)]
    people = sum(c.population for c in chosen)
    targets = [s for s in every_site if s.id in set(placed)]
    path = direct = 0.0
    for c in chosen:
        client = Client(c.name, c.lat, c.lon)
        share = c.population / people
        path += share * min(path_rtt_ms(client, t, every_site) for t in targets)
        direct += share * min(rtt_ms(client, t) for t in targets)
    return path, direct


def _status(planet: BenchPlanet, name: str) -> tuple[dict[str, Any], list[list[str]]]:
    creds = json.loads((planet.state / "credentials.json").read_text())
    r = httpx.get(
        f"{creds['api_url']}/v1/status",
        headers={"authorization": f"Bearer {creds['token']}"},
        timeout=10,
    )
    r.raise_for_status()
    status = r.json()
    fn = next(f for f in status["functions"] if f["function"] == name)
    moves = [
        e["locations"]
        for e in status["recent_events"]
        if e["type"] == "PlacementChosen" and e["function"] == name
    ]
    return fn, moves


def _figures(run: Any) -> dict[str, Any]:
    o = run.summary["overall"]
    return {
        "requests": o["requests"],
        "failed": o["failed"],
        "mean_ms": round(o["mean_ms"], 1),
        "p50_ms": round(o["p50_ms"], 1),
        "p99_ms": round(o["p99_ms"], 1),
        "served_by": run.summary["served_by"],
    }


async def run_placement_bench(
    *,
    locations: int = 12,
    quick: bool = False,
    progress: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    warm_s, measure_s, rps = (20.0, 10.0, 20.0) if quick else (40.0, 20.0, 20.0)
    root = Path(tempfile.mkdtemp(prefix="edgefn-bench-placement-"))
    smart = _function(root / "fns", "smartfn", '[placement]\nmode = "smart"\nmin_replicas = 1\n')
    every = _function(root / "fns", "everyfn", "")
    result: dict[str, Any] = {
        "setup": {
            "locations": locations,
            "emulate_rtt": True,
            "replan_interval_s": 5,
            "rps": rps,
            "warm_s": warm_s,
            "measure_s": measure_s,
        },
        "phases": {},
    }
    extra = ("--replan-interval-s", "5")
    with BenchPlanet(root, "smart", locations=locations, extra_args=extra) as planet:
        sites = [
            SmartSite(loc["name"], loc["region"], loc["lat"], loc["lon"])
            for loc in planet.info["locations"]
        ]
        planet.deploy(smart)
        planet.deploy(every)
        first, _ = _status(planet, "smartfn")
        result["initial_placement"] = first["targets"]
        for phase, clients in PHASES:
            progress(f"{phase}: warm-up {warm_s:g} s")
            entry = planet.info["entry_url"]
            t0 = time.monotonic()
            warm = await run_load(
                entry_url=entry, name="smartfn", rps=rps, duration_s=warm_s, clients=clients
            )
            progress(f"{phase}: measuring")
            measured = await run_load(
                entry_url=entry, name="smartfn", rps=rps, duration_s=measure_s, clients=clients,
                seed=1,
            )  # fmt: skip
            baseline = await run_load(
                entry_url=entry, name="everyfn", rps=rps, duration_s=measure_s, clients=clients,
                seed=1,
            )  # fmt: skip
            fn, moves = _status(planet, "smartfn")
            bound, direct = lp_bound_ms(clients.split(","), sites, fn["targets"])
            s, e = _figures(measured), _figures(baseline)
            result["phases"][phase] = {
                "clients": clients,
                "placed": fn["targets"],
                "reason": fn["placement"]["reason"],
                "placements_so_far": moves,
                "warm_up": _figures(warm),
                "smart": s,
                "everywhere": e,
                "lp_bound_rtt_ms": round(bound, 1),
                "straight_line_rtt_ms": round(direct, 1),
                "smart_mean_over_bound": round(s["mean_ms"] / bound, 3) if bound else None,
                "smart_p50_over_bound": round(s["p50_ms"] / bound, 3) if bound else None,
                "smart_mean_over_everywhere": round(s["mean_ms"] / e["mean_ms"], 3),
                "phase_s": round(time.monotonic() - t0, 1),
            }
    return result
