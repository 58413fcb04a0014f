"""The value objective: place each function where its net value (value minus cost) is largest.

``edgefn plan --objective value``. The cost objective (``_plan.py``) minimises weighted latency
plus dollars; this one prices latency in dollars the way a business would, and adds what the cost
objective leaves out: the availability a replica set buys and what replicas cost each other.
All figures are dollars per hour.

Costs of a function placed at sites ``S`` (``k = |S|``):

- **deployment** (fixed, per replica): its reserved memory at the site's price plus
  ``deploy_cost_per_hour`` (bundle distribution, warm-up and operations, amortised);
- **capacity** (variable): the busy cores its requests use, at each serving site's price;
- **transfer** (inter-location): every write is replicated to the other ``k - 1`` replicas:
  ``rps * write_fraction * bytes_per_write * (k - 1)`` bytes at ``transfer_per_gb``;
- **coordination**: ``coordination_per_pair_hour`` for each of the ``k (k - 1) / 2`` replica
  pairs (anti-entropy, membership, strong-home traffic).

Value:

- **latency**, logarithmic in the latency reduction: a request from client region ``c`` served
  at site ``i`` is worth ``value_per_million * ln(1 + max(0, L_ref[c] - L[c, i]) / latency_scale_ms)``
  per million requests, where ``L_ref`` is the latency from the function's best single site (the
  centralised deployment the edge competes with). Halving a 100 ms reduction loses less than
  half its value: the first milliseconds matter most;
- **availability**, linear: ``revenue_per_million`` per million requests times the probability
  that at least one replica is up, ``1 - prod(1 - a_i)`` (sites fail independently).

Method. Transfer, coordination and availability depend on the replica set only through ``k`` (and
the chosen sites' availabilities), so for each ``k`` up to ``max_replicas`` the sites that
maximise latency value minus deployment and capacity cost are chosen — by the exact
facility-location MILP (HiGHS, ``solve_facility`` with exactly ``k`` open) when the function has
at most ``EXACT_MAX_PAIRS`` (client, site) pairs, else by greedy addition plus interchange
(Teitz–Bart), which the tests hold against the MILP; the ``k``-dependent terms are added and the
best ``k`` (from the fewest feasible replicas) wins; the search stops ``_PATIENCE`` counts past the
best (the coordination cost grows as ``k`` squared, the latency value at most logarithmically). Every client is served by its cheapest chosen
site. Within one ``k``, sites are not
chosen for their availability (that term is evaluated, not optimised; the defaults give every
site the same availability). Each function is planned on its own; the routing LP then routes
all of them under the sites' shared capacities, and a plan that does not fit is reported as
``infeasible``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgefn.errors import PlanInputError
from edgefn.placement._facility import FacilityProblem, solve_facility
from edgefn.placement._model import FloatArray, PlacementProblem
from edgefn.placement._routing import route

__all__ = ["ECONOMICS_KEYS", "EXACT_MAX_PAIRS", "Economics", "plan_value"]

_FORBIDDEN = 1e12  # the cost of an assignment outside the SLA
EXACT_MAX_PAIRS = 20_000  # (client, site) pairs up to which the sites come from the exact MILP
_SWAP_ROUNDS = 20
_PATIENCE = 4  # replica counts tried past the best before stopping


@dataclass(frozen=True, slots=True)
class Economics:
    """The cost and value model's parameters (the ``[economics]`` table of the functions file)."""

    deploy_cost_per_hour: float = 0.01
    transfer_per_gb: float = 0.02
    write_fraction: float = 0.1
    bytes_per_write: float = 2048.0
    coordination_per_pair_hour: float = 0.002
    value_per_million: float = 0.5
    latency_scale_ms: float = 10.0
    revenue_per_million: float = 2.0
    max_replicas: int = 32

    def __post_init__(self) -> None:
        for key, value in asdict(self).items():
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise PlanInputError(f"must be a number >= 0, got {value!r}",
                                     key=f"economics.{key}")  # fmt: skip
        if not 0 <= self.write_fraction <= 1:
            raise PlanInputError(f"must be from 0 to 1, got {self.write_fraction}",
                                 key="economics.write_fraction")  # fmt: skip
        if self.latency_scale_ms <= 0:
            raise PlanInputError("must be > 0", key="economics.latency_scale_ms",
                                 hint="use 10 (ms)")  # fmt: skip
        if not 1 <= self.max_replicas <= 64:
            raise PlanInputError(f"must be from 1 to 64, got {self.max_replicas}",
                                 key="economics.max_replicas")  # fmt: skip


ECONOMICS_KEYS = frozenset(Economics.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class _Choice:
    k: int
    sites: tuple[int, ...]
    net: float
    breakdown: dict[str, float]
    # Per site of ``sites``: (latency value, capacity cost, requests/s served there).
    by_site: dict[int, tuple[float, float, float]]


def plan_value(
    problem: PlacementProblem, economics: Economics, *, time_limit_s: float = 30.0
) -> dict[str, Any]:
    """The value-maximising placement of every function, with its breakdown (JSON-ready)."""
    functions: dict[str, Any] = {}
    per_location: dict[str, dict[str, float]] = {
        s.id: {"replicas": 0, "value": 0.0, "cost": 0.0} for s in problem.sites
    }
    placement: dict[str, tuple[str, ...]] = {}
    notes: list[str] = []
    for f, spec in enumerate(problem.functions):
        curve, best = _best_k(problem, f, economics, time_limit_s)
        if best is None:
            notes.append(f"{spec.name}: no feasible placement up to {economics.max_replicas} "
                         "replicas (SLA or availability_min)")  # fmt: skip
            continue
        ids = tuple(problem.sites[i].id for i in best.sites)
        placement[spec.name] = ids
        functions[spec.name] = {
            "locations": list(ids),
            "replicas": best.k,
            **best.breakdown,
            "net_value": best.net,
            "net_value_by_replicas": curve,
        }
        _attribute(problem, f, best, economics, per_location)
    complete = len(placement) == len(problem.functions)
    routed = route(problem, placement) if complete else None
    status = "optimal" if routed is not None and routed.status == "optimal" else "infeasible"
    if routed is not None and routed.status != "optimal":
        notes.append("site capacities cannot hold the demand of every function at once")
    totals = {
        key: sum(fn[key] for fn in functions.values())
        for key in ("value_latency", "value_availability", "value", "cost_deployment",
                    "cost_capacity", "cost_transfer", "cost_coordination", "cost", "net_value")
    }  # fmt: skip
    return {
        "objective": "value",
        "status": status,
        "economics": asdict(economics),
        **totals,
        "placement": {k: list(v) for k, v in placement.items()},
        "functions": functions,
        "locations": {
            k: {**v, "net_value": v["value"] - v["cost"]}
            for k, v in per_location.items()
            if v["replicas"]
        },
        "routing": routed.weights.to_json() if routed is not None else {},
        "notes": notes,
    }


@dataclass(frozen=True, slots=True)
class _Terms:
    """One function's per-(client, site) terms: ``assign = cost_cap - value_lat`` (forbidden
    outside the SLA) and the per-site fixed cost."""

    d: FloatArray
    value_lat: FloatArray
    cost_cap: FloatArray
    assign: FloatArray
    fixed: FloatArray


def _terms(problem: PlacementProblem, f: int, eco: Economics) -> _Terms | None:
    clients, _, allowed = problem.assign_cost(f)
    if clients.size == 0:
        return None
    d = problem.demand_rps[f, clients]
    spec = problem.functions[f]
    lat = problem.latency_ms[clients]
    ref = lat[:, int(np.argmin(d @ lat))]  # the best single site's latency, per client
    gain = np.log1p(np.maximum(0.0, ref[:, None] - lat) / eco.latency_scale_ms)
    value_lat = (d * 3600 / 1e6)[:, None] * eco.value_per_million * gain
    price = np.array([s.cost_per_hour for s in problem.sites])
    cost_cap = (d * spec.cpu_ms_per_request / 1e3)[:, None] * price[None, :]
    assign = np.where(allowed, cost_cap - value_lat, _FORBIDDEN)
    fixed = spec.memory_mb / 1024.0 * price + eco.deploy_cost_per_hour
    return _Terms(d, value_lat, cost_cap, assign, fixed)


def _best_k(
    problem: PlacementProblem, f: int, eco: Economics, time_limit_s: float
) -> tuple[dict[str, float], _Choice | None]:
    """Net value for each replica count, and the best choice."""
    t = _terms(problem, f, eco)
    if t is None:
        return {}, None
    spec = problem.functions[f]
    curve: dict[str, float] = {}
    best: _Choice | None = None
    exact = t.assign.size <= EXACT_MAX_PAIRS
    sites: tuple[int, ...] = ()
    for k in range(1, min(eco.max_replicas, len(problem.sites)) + 1):
        sites = _exact_sites(t, k, time_limit_s) if exact else _interchange(t, sites, k)
        if k < problem.replicas_needed(f) or not sites:
            continue
        choice = _evaluate(problem, t, sites, eco)
        if choice is None or choice.breakdown["availability"] < spec.availability_min - 1e-12:
            continue
        curve[str(k)] = choice.net
        if best is None or choice.net > best.net + 1e-12:
            best = choice
        elif k - best.k >= _PATIENCE:
            break  # coordination grows as k squared: past a few worse counts, more only lose
    return curve, best


def _exact_sites(t: _Terms, k: int, time_limit_s: float) -> tuple[int, ...]:
    """The k sites of least fixed-plus-assignment cost: the facility-location MILP (HiGHS)."""
    problem = FacilityProblem(tuple(t.fixed), tuple(t.d), tuple(map(tuple, t.assign.T)), None, k)
    return solve_facility(problem, time_limit_s=time_limit_s).open


def _total(t: _Terms, sites: list[int]) -> float:
    return float(t.fixed[sites].sum() + t.assign[:, sites].min(axis=1).sum())


def _interchange(t: _Terms, previous: tuple[int, ...], k: int) -> tuple[int, ...]:
    """Greedy plus interchange (Teitz and Bart) for large instances: add the site that lowers the
    cost most to the ``k - 1`` sites found before, then swap a chosen site for an unchosen one
    while that lowers it (at most ``_SWAP_ROUNDS`` passes)."""
    sites = list(previous)
    m = t.assign.shape[1]
    current = t.assign[:, sites].min(axis=1) if sites else np.full(t.assign.shape[0], np.inf)
    gains = t.fixed + np.minimum(current[:, None], t.assign).sum(axis=0)
    gains[sites] = np.inf
    sites.append(int(np.argmin(gains)))
    for _ in range(_SWAP_ROUNDS):
        improved = False
        for pos in range(len(sites)):
            others = sites[:pos] + sites[pos + 1 :]
            base = t.assign[:, others].min(axis=1) if others else np.full(t.assign.shape[0], np.inf)
            totals = t.fixed + np.minimum(base[:, None], t.assign).sum(axis=0)
            totals[others] = np.inf
            j = int(np.argmin(totals))
            if totals[j] + float(t.fixed[others].sum()) < _total(t, sites) - 1e-9:
                sites[pos] = j
                improved = True
        if not improved:
            break
    assert len(set(sites)) == len(sites) <= m
    return tuple(sorted(sites))


def _evaluate(
    problem: PlacementProblem, t: _Terms, sites: tuple[int, ...], eco: Economics
) -> _Choice | None:
    """Every client at its cheapest chosen site; value, cost and net of that placement."""
    idx = np.array(sites)
    where = idx[np.argmin(t.assign[:, idx], axis=1)]
    rows = np.arange(len(t.d))
    if float(t.assign[rows, where].max()) >= _FORBIDDEN:
        return None  # some client has no chosen site within the SLA
    k, rps = len(sites), float(t.d.sum())
    avail = 1.0 - math.prod(1.0 - problem.sites[i].availability for i in sites)
    b = {
        "value_latency": float(t.value_lat[rows, where].sum()),
        "value_availability": rps * 3600 / 1e6 * eco.revenue_per_million * avail,
        "cost_deployment": float(t.fixed[idx].sum()),
        "cost_capacity": float(t.cost_cap[rows, where].sum()),
        "cost_transfer": rps * eco.write_fraction * eco.bytes_per_write * (k - 1) * 3600 / 1e9
        * eco.transfer_per_gb,
        "cost_coordination": eco.coordination_per_pair_hour * k * (k - 1) / 2,
        "availability": avail,
    }  # fmt: skip
    b["value"] = b["value_latency"] + b["value_availability"]
    b["cost"] = sum(v for key, v in b.items() if key.startswith("cost_"))
    by_site = {
        int(i): (
            float(t.value_lat[rows, where][where == i].sum()),
            float(t.cost_cap[rows, where][where == i].sum()),
            float(t.d[where == i].sum()),
        )
        for i in sites
    }
    return _Choice(k, sites, b["value"] - b["cost"], b, by_site)


def _attribute(
    problem: PlacementProblem,
    f: int,
    best: _Choice,
    eco: Economics,
    per_location: dict[str, dict[str, float]],
) -> None:
    """Split a function's value and cost over its sites: latency value and capacity cost where
    they arise, availability value by the demand each site serves, deployment cost where it is
    paid, transfer and coordination evenly (every replica sends and receives them)."""
    b = best.breakdown
    total_rps = sum(rps for _, _, rps in best.by_site.values()) or 1.0
    shared = (b["cost_transfer"] + b["cost_coordination"]) / best.k
    memory_gb = problem.functions[f].memory_mb / 1024.0
    for i, (value_lat, cost_cap, rps) in best.by_site.items():
        loc = per_location[problem.sites[i].id]
        own = memory_gb * problem.sites[i].cost_per_hour + eco.deploy_cost_per_hour
        loc["replicas"] += 1
        loc["value"] += value_lat + rps / total_rps * b["value_availability"]
        loc["cost"] += own + cost_cap + shared
