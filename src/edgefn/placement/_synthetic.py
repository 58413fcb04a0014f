"""A synthetic planet-scale instance for benchmarks and tests, deterministic from a seed.

Sites are ``spread(n_sites)`` PoPs. Client regions are the built-in cities, topped up with points
scattered (±2°) around population-weighted cities when more are asked for. Each function gets a
total rate from a lognormal (median 20 requests/s, heavy tail), an audience (30 % global, 35 % one
continent, 35 % one region) over which its demand follows population, 1–3 replicas, an SLA of
60–150 ms on half of them, 2–20 ms CPU per request, 128–512 MB and, for a fifth, a 99.99 %
availability target (two sites at 99 % each give 99.99 %).
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np

from edgefn.placement._model import Client, FunctionSpec, PlacementProblem, Site, Weights
from edgefn.world import REGIONS, cities, region_of, rtt_ms, spread

__all__ = ["world_instance"]


def world_instance(
    *, n_sites: int = 300, n_functions: int = 1000, n_clients: int = 500, seed: int = 0
) -> PlacementProblem:
    rng = random.Random(seed)
    sites = tuple(Site.from_location(loc) for loc in spread(n_sites))
    clients, pops, conts, regs = _clients(n_clients, rng)
    functions: list[FunctionSpec] = []
    demand = np.zeros((n_functions, len(clients)))
    for k in range(n_functions):
        functions.append(
            FunctionSpec(
                name=f"fn{k:04d}",
                replicas_min=rng.choice((1, 1, 2, 3)),
                sla_ms=rng.choice((None, 60.0, 100.0, 150.0)) if rng.random() < 0.5 else None,
                cpu_ms_per_request=round(rng.uniform(2.0, 20.0), 1),
                memory_mb=rng.choice((128.0, 256.0, 512.0)),
                availability_min=0.9999 if rng.random() < 0.2 else 0.0,
            )
        )
        total = 20.0 * math.exp(rng.gauss(0.0, 1.5))
        kind = rng.random()
        if kind < 0.30:
            mask = np.ones(len(clients), dtype=bool)
        elif kind < 0.65:
            mask = conts == rng.choice(sorted(set(conts.tolist())))
        else:
            mask = regs == rng.choice(sorted(set(regs.tolist())))
        weight = np.where(mask, pops, 0.0)
        demand[k] = total * weight / weight.sum()
    lat = np.array([[rtt_ms(c, s) for s in sites] for c in clients])
    return PlacementProblem(tuple(functions), sites, clients, demand, lat, Weights())


def _clients(n: int, rng: random.Random) -> tuple[tuple[Client, ...], Any, Any, Any]:
    base = cities()[:n]
    out = [Client(c.name, c.lat, c.lon, c.utc_offset_h) for c in base]
    pops = [float(c.population) for c in base]
    weights = [c.population for c in cities()]
    while len(out) < n:
        c = rng.choices(cities(), weights=weights)[0]
        lat = max(-89.0, min(89.0, c.lat + rng.uniform(-2.0, 2.0)))
        lon = max(-179.9, min(179.9, c.lon + rng.uniform(-2.0, 2.0)))
        out.append(Client(f"{c.name}~{len(out)}", lat, lon, c.utc_offset_h))
        pops.append(c.population / 10.0)
    regs = [region_of(c.lat, c.lon) for c in out]
    conts = [REGIONS[r][1] for r in regs]
    return tuple(out), np.array(pops), np.array(conts), np.array(regs)
