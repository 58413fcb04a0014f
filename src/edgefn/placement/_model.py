"""The placement model: functions, sites, client regions, demand, weights, and the plan.

Units. Demand is in requests per second per (function, client region). A site has ``capacity``
units; a unit is one CPU core and 1,024 MB of memory, priced at ``cost_per_hour`` and drawing
``_WATTS_PER_CORE`` when busy. A replica of function f at site i reserves ``memory_mb`` and costs
``memory_mb / 1024 * cost_per_hour`` per hour (the fixed cost of facility location); serving one
request per second uses ``cpu_ms_per_request / 1000`` cores (the variable cost).

Objective (all terms per hour)::

    alpha * sum d_fc * rtt_ci * x_fci          demand-weighted latency, (request/s) * ms
  + beta  * dollars per hour                   fixed replica cost + variable CPU cost
  + gamma * kg CO2e per hour                   busy-core and reserved-memory power x grid intensity

``alpha``/``beta``/``gamma`` are :class:`Weights`; the default values make one dollar per hour
worth 1,000 request-ms, i.e. shaving 10 ms off 100 requests/s is worth a dollar an hour.

Constraints: each function at >= ``replicas_min`` sites; the availability of "at least one replica
up" >= ``availability_min`` (sites fail independently; sum of -log10(1 - a_i) over chosen sites >=
-log10(1 - A), linear in y); CPU and memory capacity per site, shared by all functions; an
optional budget in dollars per hour; and SLA: a client region may only be served from sites
within ``sla_ms`` when at least one site of the topology meets it, otherwise the pair is reported in
``unmet_sla`` and any site may serve it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edgefn.placement._routing import RoutingWeights
from edgefn.world import LatencyModel, Location, rtt_ms

FloatArray = npt.NDArray[np.float64]

__all__ = [
    "Client",
    "FunctionSpec",
    "PlacementPlan",
    "PlacementProblem",
    "Site",
    "Weights",
    "build_problem",
]

_WATTS_PER_CORE = 15.0
_WATTS_PER_GB = 0.4
MAX_FUNCTIONS = 100_000
MAX_SITES = 5_000
MAX_CLIENTS = 10_000


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    name: str
    replicas_min: int = 1
    sla_ms: float | None = None
    cpu_ms_per_request: float = 5.0
    memory_mb: float = 128.0
    availability_min: float = 0.0

    def __post_init__(self) -> None:
        assert self.replicas_min >= 1, self.replicas_min
        assert self.cpu_ms_per_request >= 0.0, self.cpu_ms_per_request
        assert self.memory_mb >= 0.0, self.memory_mb
        assert 0.0 <= self.availability_min < 1.0, self.availability_min

    @property
    def nines_required(self) -> float:
        return -math.log10(1.0 - self.availability_min) if self.availability_min > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Site:
    id: str
    lat: float
    lon: float
    capacity: float
    cost_per_hour: float
    carbon_g_per_kwh: float
    availability: float = 0.99

    def __post_init__(self) -> None:
        assert 0.0 < self.availability < 1.0, self.availability

    @classmethod
    def from_location(cls, loc: Location, *, availability: float = 0.99) -> Site:
        return cls(
            loc.id, loc.lat, loc.lon, float(loc.capacity), loc.cost_per_hour,
            loc.carbon_g_per_kwh, availability,
        )  # fmt: skip

    @property
    def nines(self) -> float:
        return -math.log10(1.0 - self.availability)


@dataclass(frozen=True, slots=True)
class Client:
    id: str
    lat: float
    lon: float
    utc_offset_h: float = 0.0


@dataclass(frozen=True, slots=True)
class Weights:
    latency: float = 1.0
    cost: float = 1000.0
    carbon: float = 0.0

    def __post_init__(self) -> None:
        assert self.latency >= 0, self
        assert self.cost >= 0, self
        assert self.carbon >= 0, self


@dataclass(frozen=True, eq=False)
class PlacementProblem:
    """All inputs of one planning run. ``demand_rps[f, c]``; ``latency_ms[c, i]``."""

    functions: tuple[FunctionSpec, ...]
    sites: tuple[Site, ...]
    clients: tuple[Client, ...]
    demand_rps: FloatArray
    latency_ms: FloatArray
    weights: Weights = field(default_factory=Weights)
    budget_per_hour: float | None = None

    def __post_init__(self) -> None:
        nf, ns, nc = len(self.functions), len(self.sites), len(self.clients)
        assert 0 < nf <= MAX_FUNCTIONS, nf
        assert 0 < ns <= MAX_SITES, ns
        assert 0 < nc <= MAX_CLIENTS, nc
        assert self.demand_rps.shape == (nf, nc), self.demand_rps.shape
        assert self.latency_ms.shape == (nc, ns), self.latency_ms.shape
        assert len({f.name for f in self.functions}) == nf, "function names must be distinct"
        assert len({s.id for s in self.sites}) == ns, "site ids must be distinct"

    # Per-site coefficients (vectors over sites) used by every solver.
    def price_per_core(self) -> FloatArray:
        """Objective cost of one busy core-hour at each site (dollars and carbon, weighted)."""
        price = np.array([s.cost_per_hour for s in self.sites])
        carbon_kg = np.array([s.carbon_g_per_kwh for s in self.sites]) * _WATTS_PER_CORE / 1e6
        w = self.weights
        out: FloatArray = w.cost * price + w.carbon * carbon_kg
        return out

    def price_per_gb(self) -> FloatArray:
        """Objective cost of reserving 1 GB for an hour at each site."""
        price = np.array([s.cost_per_hour for s in self.sites])
        carbon_kg = np.array([s.carbon_g_per_kwh for s in self.sites]) * _WATTS_PER_GB / 1e6
        w = self.weights
        out: FloatArray = w.cost * price + w.carbon * carbon_kg
        return out

    def fixed_cost(self) -> FloatArray:
        """``F[f, i]``: objective cost of a replica of f at i."""
        mem_gb = np.array([f.memory_mb / 1024.0 for f in self.functions])
        out: FloatArray = np.outer(mem_gb, self.price_per_gb())
        return out

    def assign_cost(self, f: int) -> tuple[Any, Any, Any]:
        """For function f: client indices with demand, their costs ``a[c, i]`` and SLA mask."""
        spec = self.functions[f]
        clients = np.flatnonzero(self.demand_rps[f] > 0)
        d = self.demand_rps[f, clients]
        lat = self.latency_ms[clients]
        per_req = (
            self.weights.latency * lat + spec.cpu_ms_per_request / 1000.0 * self.price_per_core()
        )
        a: FloatArray = d[:, None] * per_req
        if spec.sla_ms is None:
            allowed = np.ones(a.shape, dtype=bool)
        else:
            allowed = lat <= spec.sla_ms
            allowed[~allowed.any(axis=1)] = True  # unmeetable: any site may serve it
        return clients, a, allowed

    def replicas_needed(self, f: int) -> int:
        """Fewest sites any feasible placement of function f can use.

        The larger of ``replicas_min``, the sites needed for the availability target even at the
        most available site, and the sites needed to hold the function's CPU load even at the
        largest site (capacity is shared with other functions, so it may need more, never less).
        """
        spec = self.functions[f]
        best_nines = max(s.nines for s in self.sites)
        cap_max = max(s.capacity for s in self.sites)
        load = float(self.demand_rps[f].sum()) * spec.cpu_ms_per_request / 1e3
        by_nines = math.ceil(spec.nines_required / best_nines - 1e-9)
        by_load = math.ceil(load / cap_max - 1e-9) if cap_max > 0 else 1
        return min(max(spec.replicas_min, by_nines, by_load), len(self.sites))

    def unmet_sla(self) -> tuple[tuple[str, str], ...]:
        """(client, function) pairs with demand that no site can serve within the SLA."""
        out: list[tuple[str, str]] = []
        best = self.latency_ms.min(axis=1)
        for f, spec in enumerate(self.functions):
            if spec.sla_ms is None:
                continue
            for c in np.flatnonzero((self.demand_rps[f] > 0) & (best > spec.sla_ms)):
                out.append((self.clients[c].id, spec.name))
        return tuple(out)


@dataclass(frozen=True, slots=True)
class PlacementPlan:
    """A solved placement. ``gap = (objective - bound) / objective``; bound is a proven lower bound."""

    status: str
    method: str
    objective: float
    bound: float
    gap: float
    placement: Mapping[str, tuple[str, ...]]
    routing: RoutingWeights
    cost_per_hour: float
    carbon_kg_per_hour: float
    mean_latency_ms: float
    latency_by_client_ms: Mapping[str, float]
    unmet_sla: tuple[tuple[str, str], ...]
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "method": self.method,
            "objective": self.objective,
            "bound": self.bound,
            "gap": self.gap,
            "cost_per_hour": self.cost_per_hour,
            "carbon_kg_per_hour": self.carbon_kg_per_hour,
            "mean_latency_ms": self.mean_latency_ms,
            "placement": {k: list(v) for k, v in self.placement.items()},
            "latency_by_client_ms": dict(self.latency_by_client_ms),
            "unmet_sla": [list(p) for p in self.unmet_sla],
            "routing": self.routing.to_json(),
            "notes": list(self.notes),
        }


def build_problem(
    functions: Sequence[FunctionSpec],
    locations: Sequence[Location],
    clients: Sequence[Client],
    demand: Mapping[tuple[str, str], float],
    *,
    weights: Weights | None = None,
    budget_per_hour: float | None = None,
    model: LatencyModel | None = None,
) -> PlacementProblem:
    """Assemble a problem from world locations and ``demand[(client_id, function)] = rps``."""
    sites = tuple(Site.from_location(loc) for loc in locations)
    f_index = {f.name: k for k, f in enumerate(functions)}
    c_index = {c.id: k for k, c in enumerate(clients)}
    dem = np.zeros((len(functions), len(clients)))
    for (client, fn), rps in demand.items():
        dem[f_index[fn], c_index[client]] += rps
    measure = model.rtt_ms if model is not None else rtt_ms
    lat = np.array([[measure(c, s) for s in sites] for c in clients])
    return PlacementProblem(
        tuple(functions), sites, tuple(clients), dem, lat, weights or Weights(), budget_per_hour
    )
