"""Smart placement: where a ``[placement] mode = "smart"`` function runs. Pure.

The control service (control/placement_driver.py) calls :func:`choose` at the function's deploy
and every re-plan interval with the demand the core's telemetry observed (requests per client
region over the last window); the reconciler then deploys the function at the chosen locations
only, and every other location forwards its requests to the replica nearest the client (the
nodes' routing policy, from the locations' beacons).

The planning problem is the planner's (edgefn.placement). Demand comes per client *cell* (the
clients' positions to a whole degree, ``"35,140"``, from the rollups), each cell a client of the
problem at its position; or, from a store that only has regions, per client region, each
region's demand spread over its cities by population (edgefn.world.cities). The cost of
serving a client from a location is the modelled RTT of the path its requests take (to the
client's nearest location, the anycast entry's choice, then forwarded; :func:`path_rtt_ms`);
a replica beyond
``min_replicas`` must lower the demand-weighted mean RTT by at least ``replica_cost_ms``; and,
through :func:`~edgefn.placement.replan`, a location the function does not run at yet costs
``migration_cost_ms`` of mean RTT (the bundle's transfer, the cold starts, the disruption), so a
placement changes only when the new one is that much better: noise in the demand does not make
it flap. ``max_latency_ms`` keeps each client city at most that RTT from its replica when a
location can. Demand is normalised to shares, so both costs are in milliseconds of mean RTT
whatever the request rate. With no demand observed yet, the planet's own cities (those of the
regions that have a location, or of the manifest's ``regions``) stand in for it.

See docs/design/0029-smart-placement.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edgefn.placement import Client, FunctionSpec, PlacementProblem, Site, Weights, replan
from edgefn.world import cell_point, cities, region_of, rtt_ms

__all__ = ["PlacementChoice", "SmartOptions", "SmartSite", "SmartSpec", "choose", "path_rtt_ms"]

# One replica of the function; capacity large enough that the CPU of observed demand never binds
# (the admission controller and forwarding handle overload; placement handles latency).
_MEMORY_MB = 1024.0
_CAPACITY = 1e9
# At most this many cells enter the problem (the busiest): the MILP stays small.
MAX_CELLS = 400


@dataclass(frozen=True, slots=True)
class SmartSpec:
    """The manifest's ``[placement]`` of a smart function."""

    function: str
    min_replicas: int = 2
    max_latency_ms: float | None = None
    regions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SmartSite:
    """A location the function may run at."""

    id: str
    region: str
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class SmartOptions:
    replica_cost_ms: float = 5.0
    migration_cost_ms: float = 10.0
    time_limit_s: float = 10.0

    def __post_init__(self) -> None:
        assert self.replica_cost_ms >= 0, self
        assert self.migration_cost_ms >= 0, self


@dataclass(frozen=True, slots=True)
class PlacementChoice:
    """Where the function runs, and why (``reason`` is for people: status and the audit)."""

    locations: tuple[str, ...]
    mean_rtt_ms: float
    # (client region, share of the demand) largest first; observed=False: the planet's cities
    # stood in for demand not observed yet.
    demand: tuple[tuple[str, float], ...]
    observed: bool
    changed: bool
    reason: str


def _demand(
    spec: SmartSpec, sites: Sequence[SmartSite], observed: Mapping[str, float]
) -> tuple[dict[str, float], bool]:
    """Shares of demand per client region (summing to 1), and whether they were observed."""
    known = {c.region for c in cities()}
    seen = {r: float(n) for r, n in observed.items() if r in known and n > 0}
    total = sum(seen.values())
    if total > 0:
        return {r: n / total for r, n in seen.items()}, True
    regions = set(spec.regions) or {s.region for s in sites}
    stand_in = {r: 1.0 for r in regions if r in known} or dict.fromkeys(known, 1.0)
    return {r: 1.0 / len(stand_in) for r in stand_in}, False


def _clients(shares: Mapping[str, float]) -> tuple[list[Client], list[float]]:
    """Each region's share spread over its cities by population."""
    clients: list[Client] = []
    demand: list[float] = []
    for region in sorted(shares):
        members = [c for c in cities() if c.region == region]
        people = sum(c.population for c in members)
        for c in members:
            clients.append(Client(f"{region}/{c.name}", c.lat, c.lon, c.utc_offset_h))
            demand.append(shares[region] * c.population / people)
    return clients, demand


def _cell_clients(
    cells: Mapping[str, tuple[tuple[float, float], float]],
) -> tuple[list[Client], list[float], dict[str, float]]:
    """A client per cell (the busiest MAX_CELLS), its share of the demand, and the shares per
    world region (for the reason)."""
    busiest = sorted(cells.items(), key=lambda kv: (-kv[1][1], kv[0]))[:MAX_CELLS]
    total = sum(n for _, (_, n) in busiest)
    clients = [Client(key, lat, lon) for key, ((lat, lon), _) in busiest]
    demand = [n / total for _, (_, n) in busiest]
    shares: dict[str, float] = {}
    for c, d in zip(clients, demand, strict=True):
        region = region_of(c.lat, c.lon)
        shares[region] = shares.get(region, 0.0) + d
    return clients, demand, shares


def path_rtt_ms(
    client: Client,
    target: SmartSite,
    every_site: Sequence[SmartSite],
    ingress: SmartSite | None = None,
) -> float:
    """The RTT of a request on this platform's path: the client reaches its nearest location
    (``ingress``, the anycast entry's choice among ``every_site``), which forwards it to
    ``target`` unless it is the target itself."""
    entry = ingress or nearest_site(client, every_site)
    if entry.id == target.id:
        return rtt_ms(client, target)
    return rtt_ms(client, entry) + rtt_ms(entry, target)


def nearest_site(client: Client, every_site: Sequence[SmartSite]) -> SmartSite:
    return min(every_site, key=lambda s: (rtt_ms(client, s), s.id))


def _problem(
    spec: SmartSpec, sites: Sequence[SmartSite], clients: list[Client], demand: list[float],
    options: SmartOptions, every_site: Sequence[SmartSite],
) -> PlacementProblem:  # fmt: skip
    function = FunctionSpec(
        spec.function,
        replicas_min=min(spec.min_replicas, len(sites)),
        sla_ms=spec.max_latency_ms,
        cpu_ms_per_request=0.0,
        memory_mb=_MEMORY_MB,
    )
    planner_sites = tuple(Site(s.id, s.lat, s.lon, _CAPACITY, 1.0, 0.0) for s in sites)
    # The cost of serving a client from a location is the RTT of the path its requests take
    # (to the nearest location, then forwarded), not of a straight line the platform never uses.
    entries = [nearest_site(c, every_site) for c in clients]
    latency = np.array(
        [
            [path_rtt_ms(c, s, every_site, e) for s in sites]
            for c, e in zip(clients, entries, strict=True)
        ]
    )
    return PlacementProblem(
        (function,),
        planner_sites,
        tuple(clients),
        np.array([demand]),
        latency,
        # A replica's fixed cost is memory (1 GB) x price (1.0) x the cost weight.
        Weights(latency=1.0, cost=options.replica_cost_ms, carbon=0.0),
    )


def _mean_rtt(problem: PlacementProblem, placed: Sequence[str]) -> float:
    index = [k for k, s in enumerate(problem.sites) if s.id in placed]
    if not index:
        return math.inf
    nearest = problem.latency_ms[:, index].min(axis=1)
    return float((problem.demand_rps[0] * nearest).sum())


def choose(
    spec: SmartSpec,
    sites: Sequence[SmartSite],
    observed: Mapping[str, float],
    current: Sequence[str] = (),
    options: SmartOptions | None = None,
) -> PlacementChoice:
    """The locations ``spec.function`` should run at, given ``observed`` requests per client
    region and the ``current`` placement (empty: a first placement, nothing to migrate from)."""
    options = options or SmartOptions()
    candidates = sorted(
        (s for s in sites if not spec.regions or s.region in spec.regions), key=lambda s: s.id
    )
    if not candidates:
        raise ValueError(
            f"{spec.function}: no location is in the placement's regions {list(spec.regions)}"
        )
    cells = {
        k: (p, float(n)) for k, n in observed.items() if n > 0 and (p := cell_point(k)) is not None
    }
    if cells:
        clients, demand, shares = _cell_clients(cells)
        was_observed = True
    else:
        shares, was_observed = _demand(spec, candidates, observed)
        clients, demand = _clients(shares)
    problem = _problem(spec, candidates, clients, demand, options, sites)
    ids = {s.id for s in candidates}
    kept = tuple(sorted(set(current) & ids))
    migration = options.migration_cost_ms if kept else 0.0
    result = replan(
        problem,
        {spec.function: kept},
        migration_cost=migration,
        method="milp",
        time_limit_s=options.time_limit_s,
    )
    chosen = tuple(sorted(result.placement.get(spec.function, ()))) or kept
    if not chosen:  # the solver found nothing (it should not): the nearest min_replicas
        chosen = tuple(sorted(s.id for s in candidates[: problem.functions[0].replicas_min]))
    mean = _mean_rtt(problem, chosen)
    ranked = tuple(sorted(((r, round(v, 3)) for r, v in shares.items()), key=lambda x: -x[1]))
    changed = chosen != tuple(sorted(current))
    top = ", ".join(f"{r} {v:.0%}" for r, v in ranked[:4])
    source = "observed demand" if was_observed else "no demand observed yet; the planet's cities"
    why = f"{source} ({top}) -> mean RTT {mean:.0f} ms at {', '.join(chosen)}"
    if kept and not changed:
        why += f"; a move must save {options.migration_cost_ms:g} ms"
    elif kept:
        was = _mean_rtt(problem, kept)
        why += f" (was {was:.0f} ms at {', '.join(kept)})"
    return PlacementChoice(chosen, round(mean, 3), ranked, was_observed, changed, why)
