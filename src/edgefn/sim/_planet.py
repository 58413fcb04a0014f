"""Planet scenarios: world PoPs, client cities, functions, placement, routing, faults.

Setup (:func:`build_planet`, deterministic, in the parent process):

* PoPs come from :mod:`edgefn.world` (``spread(n)`` or ids); each has ``servers`` workers (its
  ``capacity`` unless the scenario overrides it), a cost and a carbon intensity.
* Client demand: every city in ``world.cities()`` sends a share of ``requests_per_day``
  proportional to its population, shaped by the diurnal curve in its own time zone.
* Functions: explicit ``[[functions]]`` or a generated population with Zipf popularity and
  lognormal mean service times (median ``[service] mean_ms``, sigma ``service_sigma``).
* Placement (a pluggable :class:`Placement`: a functions × PoPs boolean mask) and routing (a
  pluggable :class:`Router`: for each epoch, each (city, function) flow goes to one PoP or is
  unroutable) are computed once per *epoch*; an epoch is a stretch of time with the same set of
  faults in force (a PoP down, a region partitioned).

Simulation (:func:`run_planet_job`, one chunk of PoPs per job, any process): the day is cut into
intervals (15 minutes, split further at fault boundaries) in which every flow's rate is constant,
so each flow's count in an interval is Poisson and its arrivals are uniform — an exact sample of
the piecewise-constant process. A PoP's requests are merged, sorted and run through the same
location model as queue scenarios (fast or exact path). A PoP that goes down loses its warm
instances: its arrivals are simulated per up-period. Response time = client↔PoP RTT from the
world's latency model + wait + cold start + service.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edgefn.errors import ScenarioError
from edgefn.routing import RouteRequest, RoutingPolicy
from edgefn.sim._arrivals import PEAK_HOUR, diurnal_factor
from edgefn.sim._distributions import Distribution
from edgefn.sim._fastpath import run_fast
from edgefn.sim._local import make_keep_alive, zipf_weights
from edgefn.sim._location import run_exact
from edgefn.sim._planner import PlannerRouter, plan_placement
from edgefn.sim._requests import RequestArrays
from edgefn.sim._rng import numpy_stream
from edgefn.sim._scenario import Scenario
from edgefn.sim._tally import Tally, TallyShape
from edgefn.world import City, Location, cities, get_location, haversine_km, rtt_ms, spread

__all__ = [
    "EdgefnRouter",
    "NearestRouter",
    "Placement",
    "PlanetJob",
    "PlanetModel",
    "PlanetPart",
    "Router",
    "build_planet",
    "run_planet_job",
]

INTERVAL_MS = 15 * 60_000.0
WATTS_PER_BUSY_WORKER = 30.0


@dataclass(frozen=True, slots=True)
class Placement:
    """Which PoPs run which function: ``mask[f, l]``."""

    mask: np.ndarray
    source: str
    # placement = "planner": the routing LP's weights per (city, function), and the plan summary.
    weights: Mapping[tuple[str, str], tuple[tuple[str, float], ...]] | None = None
    summary: Mapping[str, Any] | None = None


class Router(Protocol):
    """Routes every (city, function) flow of one epoch to a PoP index, or -1 (unroutable)."""

    def assign(self, placement: np.ndarray, reachable: np.ndarray) -> np.ndarray:
        """``placement``: functions × PoPs; ``reachable``: cities × PoPs. Returns cities × functions."""


@dataclass(frozen=True, slots=True)
class NearestRouter:
    """Each flow goes to the lowest-RTT reachable PoP running the function."""

    rtt_ms: np.ndarray  # cities × PoPs

    def assign(self, placement: np.ndarray, reachable: np.ndarray) -> np.ndarray:
        out = np.full((self.rtt_ms.shape[0], placement.shape[0]), -1, dtype=np.int32)
        masks, inverse = np.unique(placement, axis=0, return_inverse=True)
        for m, mask in enumerate(masks):
            ok = reachable & mask[None, :]
            best = np.where(ok, self.rtt_ms, np.inf).argmin(axis=1).astype(np.int32)
            best[~ok.any(axis=1)] = -1
            out[:, inverse.ravel() == m] = best[:, None]
        return out


@dataclass(frozen=True, slots=True)
class EdgefnRouter:
    """The platform's own :class:`edgefn.routing.RoutingPolicy` picks the PoP for each flow.

    A client enters at its nearest reachable PoP (anycast); the policy at that ingress scores
    the reachable PoPs running the function (RTT from the ingress + forwarding cost + penalties)
    and picks one. There are no load reports in a precomputed epoch, so the policy routes on
    RTT alone. The client's RTT is then counted to the chosen PoP directly: the extra
    ingress-to-target hop of a forwarded request is not modelled.
    """

    rtt_ms: np.ndarray  # cities × PoPs
    pop_rtt_ms: np.ndarray  # PoPs × PoPs
    pop_ids: tuple[str, ...]

    def assign(self, placement: np.ndarray, reachable: np.ndarray) -> np.ndarray:
        index = {p: i for i, p in enumerate(self.pop_ids)}
        policy = RoutingPolicy(lambda a, b: float(self.pop_rtt_ms[index[a], index[b]]))
        out = np.full((self.rtt_ms.shape[0], placement.shape[0]), -1, dtype=np.int32)
        masks, inverse = np.unique(placement, axis=0, return_inverse=True)
        ingress = np.where(reachable, self.rtt_ms, np.inf).argmin(axis=1)
        for c in range(self.rtt_ms.shape[0]):
            if not reachable[c].any():
                continue
            for m, mask in enumerate(masks):
                cands = [self.pop_ids[i] for i in np.flatnonzero(mask & reachable[c])]
                if not cands:
                    continue
                d = policy.decide(
                    RouteRequest(self.pop_ids[ingress[c]], f"group{m}", cands, now_ms=0)
                )
                if d.target is not None:
                    out[c, inverse.ravel() == m] = index[d.target]
        return out


@dataclass(frozen=True, slots=True)
class PlanetModel:
    """Everything a job needs, precomputed and picklable."""

    scenario: Scenario
    pops: tuple[Location, ...]
    servers: np.ndarray  # per PoP
    city_region: tuple[str, ...]
    rtt_ms: np.ndarray  # cities × PoPs
    city_rate_per_s: np.ndarray  # intervals × cities
    interval_edges_ms: np.ndarray  # intervals + 1
    interval_epoch: np.ndarray  # intervals
    assignment: np.ndarray  # epochs × cities × functions -> PoP index or -1
    down: np.ndarray  # epochs × PoPs
    function_weight: np.ndarray
    function_names: tuple[str, ...]
    function_service: tuple[Distribution, ...]
    function_memory_mb: np.ndarray
    placement: Placement


@dataclass(frozen=True, slots=True)
class PlanetJob:
    model: PlanetModel
    seed: int
    replication: int
    pops: tuple[int, ...]


@dataclass(slots=True)
class PlanetPart:
    """A job's result: one tally per PoP and one per client region."""

    by_pop: dict[int, Tally]
    by_region: dict[str, Tally]


def _pops(s: Scenario) -> tuple[Location, ...]:
    assert s.world is not None
    if isinstance(s.world.pops, int):
        return spread(s.world.pops)
    return tuple(get_location(i) for i in s.world.pops)


def _functions(
    s: Scenario,
) -> tuple[np.ndarray, tuple[str, ...], tuple[Distribution, ...], np.ndarray, np.ndarray]:
    assert s.world is not None
    if s.functions:
        w = np.array([f.weight for f in s.functions], dtype=float)
        return (
            w / w.sum(),
            tuple(f.name for f in s.functions),
            tuple(f.service for f in s.functions),
            np.array([f.memory_mb for f in s.functions]),
            np.array([f.replicas for f in s.functions]),
        )
    n = s.world.functions
    rng = numpy_stream(s.run.seed, "world", "functions")
    means = s.service.mean_ms * rng.lognormal(0.0, s.world.service_sigma, n)
    dists = tuple(Distribution(s.service.kind, float(m), s.service.scv) for m in means)
    return (
        zipf_weights(n, s.world.zipf_s),
        tuple(f"fn{i:05d}" for i in range(n)),
        dists,
        np.full(n, s.cold_start.memory_mb),
        np.zeros(n, dtype=np.int64),
    )


def _spread_order(pops: tuple[Location, ...], cs: tuple[City, ...]) -> list[int]:
    """PoPs in farthest-point order, starting at the one nearest the biggest city."""
    big = max(cs, key=lambda c: c.population)
    first = min(range(len(pops)), key=lambda i: haversine_km(big, pops[i]))
    order = [first]
    dist = np.array([haversine_km(pops[first], p) for p in pops])
    while len(order) < len(pops):
        nxt = int(dist.argmax())
        order.append(nxt)
        dist = np.minimum(dist, [haversine_km(pops[nxt], p) for p in pops])
        dist[order] = -1.0
    return order


def _placement(
    s: Scenario,
    pops: tuple[Location, ...],
    cs: tuple[City, ...],
    weight: np.ndarray,
    replicas: np.ndarray,
) -> Placement:
    n_pop = len(pops)
    mask = np.zeros((len(weight), n_pop), dtype=bool)
    if s.policies.placement == "everywhere":
        mask[:] = True
        return Placement(mask, "everywhere")
    # Popularity: the most popular function runs everywhere, the tail on fewer, well spread PoPs.
    order = np.array(_spread_order(pops, cs))
    want = np.ceil(n_pop * np.sqrt(weight / weight.max())).astype(np.int64)
    want = np.clip(want, min(s.policies.min_replicas, n_pop), n_pop)
    # An explicit replica count in [[functions]] overrides the popularity rule.
    want = np.where(replicas > 0, np.minimum(replicas, n_pop), want)
    for f, k in enumerate(want):
        mask[f, order[:k]] = True
    return Placement(mask, "popularity")


def _intervals(s: Scenario) -> np.ndarray:
    duration_ms = s.run.duration_s * 1000.0
    edges = set(np.arange(0.0, duration_ms, INTERVAL_MS).tolist()) | {duration_ms}
    for f in s.faults:
        edges |= {min(f.start_s * 1000.0, duration_ms), min(f.end_s * 1000.0, duration_ms)}
    return np.array(sorted(edges))


def _fault_state(
    s: Scenario, pops: tuple[Location, ...], cs: tuple[City, ...], t_ms: float
) -> tuple[np.ndarray, np.ndarray]:
    """(PoP down mask, cities × PoPs reachability) at time ``t_ms``."""
    down = np.zeros(len(pops), dtype=bool)
    reach = np.ones((len(cs), len(pops)), dtype=bool)
    pop_region = np.array([p.region for p in pops])
    city_region = np.array([c.region for c in cs])
    ids = [p.id for p in pops]
    for f in s.faults:
        if not f.start_s * 1000.0 <= t_ms < f.end_s * 1000.0:
            continue
        if f.kind == "location_down":
            down[ids.index(f.target)] = True
        else:
            inside_c = city_region == f.target
            inside_p = pop_region == f.target
            reach &= inside_c[:, None] == inside_p[None, :]
    return down, reach & ~down[None, :]


def _planned(
    s: Scenario,
    pops: tuple[Location, ...],
    servers: np.ndarray,
    cs: tuple[City, ...],
    rtt: np.ndarray,
    functions: tuple[np.ndarray, tuple[str, ...], tuple[Distribution, ...], np.ndarray, np.ndarray],
) -> Placement:
    """``placement = "planner"``: solve the scenario's placement problem (see ``_planner``)."""
    assert s.world is not None
    weight, names, service, memory, replicas = functions
    want = np.where(replicas > 0, replicas, s.policies.min_replicas)
    planned = plan_placement(
        pops=pops, servers=servers, cities=cs, rtt_ms=rtt, function_names=names,
        function_weight=weight, service_mean_ms=[d.mean_ms for d in service],
        memory_mb=memory, replicas_min=want, requests_per_day=s.world.requests_per_day,
        peak_factor=float(diurnal_factor(np.array([PEAK_HOUR]), s.world.peak_to_trough)[0]),
    )  # fmt: skip
    return Placement(planned.mask, "planner", planned.weights, planned.summary)


def build_planet(s: Scenario) -> PlanetModel:
    """Precompute PoPs, demand, placement and the routing of every epoch."""
    assert s.world is not None
    pops = _pops(s)
    ids = {p.id for p in pops}
    for i, f in enumerate(s.faults):
        if f.kind == "location_down" and f.target not in ids:
            raise ScenarioError(
                f"fault names PoP {f.target!r}, not in this world",
                path=s.path,
                key=f"faults[{i}].location",
                hint=f"use one of the scenario's PoPs, e.g. {sorted(ids)[:5]}",
            )
    cs = cities()
    servers = np.array([s.world.servers or p.capacity for p in pops], dtype=np.int64)
    rtt = np.array([[rtt_ms(c, p) for p in pops] for c in cs])
    functions = _functions(s)
    weight, names, service, memory, replicas = functions
    if s.policies.placement == "planner":
        placement = _planned(s, pops, servers, cs, rtt, functions)
    else:
        placement = _placement(s, pops, cs, weight, replicas)
    edges = _intervals(s)
    mid_h = (edges[:-1] + edges[1:]) / 2.0 / 3_600_000.0
    pop_w = np.array([c.population for c in cs], dtype=float)
    tz = np.array([c.utc_offset_h for c in cs])
    shape = diurnal_factor((mid_h[:, None] + tz[None, :]) % 24.0, s.world.peak_to_trough)
    rate = s.world.requests_per_day / 86_400.0 * (pop_w / pop_w.sum())[None, :] * shape
    router = _router(s, rtt, pops, cs, names, placement)
    states: dict[bytes, int] = {}
    epoch_of = np.zeros(len(edges) - 1, dtype=np.int64)
    downs, assigns = [], []
    for k in range(len(edges) - 1):
        down, reach = _fault_state(s, pops, cs, float((edges[k] + edges[k + 1]) / 2.0))
        key = down.tobytes() + reach.tobytes()
        if key not in states:
            states[key] = len(states)
            downs.append(down)
            assigns.append(router.assign(placement.mask, reach))
        epoch_of[k] = states[key]
    return PlanetModel(
        scenario=s,
        pops=pops,
        servers=servers,
        city_region=tuple(c.region for c in cs),
        rtt_ms=rtt,
        city_rate_per_s=rate,
        interval_edges_ms=edges,
        interval_epoch=epoch_of,
        assignment=np.stack(assigns),
        down=np.stack(downs),
        function_weight=weight,
        function_names=names,
        function_service=service,
        function_memory_mb=memory,
        placement=placement,
    )


def _router(s: Scenario, rtt: np.ndarray, pops: tuple[Location, ...], cs: tuple[City, ...],
            names: tuple[str, ...], placement: Placement) -> Router:  # fmt: skip
    if placement.weights is not None:
        pop_rtt = np.array([[rtt_ms(a, b) for b in pops] for a in pops])
        return PlannerRouter(rtt, pop_rtt, tuple(p.id for p in pops),
                             tuple(c.name for c in cs), names, placement.weights)  # fmt: skip
    if s.policies.routing == "edgefn":
        pop_rtt = np.array([[rtt_ms(a, b) for b in pops] for a in pops])
        return EdgefnRouter(rtt, pop_rtt, tuple(p.id for p in pops))
    return NearestRouter(rtt)


def _pop_requests(
    m: PlanetModel, seed: int, rep: int, pop: int, flows: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[RequestArrays, np.ndarray]:
    """Sample one PoP's requests; also return each request's client city."""
    rng = numpy_stream(seed, "rep", rep, "pop", pop, "arrivals")
    times, city, fn = [], [], []
    edges = m.interval_edges_ms
    for k in range(len(edges) - 1):
        cs, fs = flows[int(m.interval_epoch[k])]
        if len(cs) == 0:
            continue
        dt = edges[k + 1] - edges[k]
        counts = rng.poisson(m.city_rate_per_s[k, cs] * m.function_weight[fs] * dt / 1000.0)
        nz = counts > 0
        c, f, counts = cs[nz], fs[nz], counts[nz]
        total = int(counts.sum())
        times.append(edges[k] + rng.random(total) * dt)
        city.append(np.repeat(c, counts))
        fn.append(np.repeat(f, counts))
    if not times:
        e = np.empty(0)
        return RequestArrays(e, e.astype(np.int64), e, e), e.astype(np.int64)
    t = np.concatenate(times)
    order = np.argsort(t, kind="stable")
    t, c_arr, f_arr = t[order], np.concatenate(city)[order], np.concatenate(fn)[order]
    return RequestArrays(
        t,
        f_arr.astype(np.int64),
        _service(m, seed, rep, pop, f_arr),
        m.scenario.cold_start.duration.sample(
            numpy_stream(seed, "rep", rep, "pop", pop, "cold"), len(t)
        ),
    ), c_arr


def _service(m: PlanetModel, seed: int, rep: int, pop: int, fn: np.ndarray) -> np.ndarray:
    """Service times: unit-mean draws of each function's shape, scaled by its mean."""
    rng = numpy_stream(seed, "rep", rep, "pop", pop, "service")
    out = np.empty(len(fn))
    shapes: dict[tuple[str, float], list[int]] = {}
    for f, d in enumerate(m.function_service):
        shapes.setdefault((d.kind, d.scv), []).append(f)
    means = np.array([d.mean_ms for d in m.function_service])
    for (kind, scv), members in sorted(shapes.items()):
        sel = np.isin(fn, members) if len(shapes) > 1 else np.ones(len(fn), dtype=bool)
        out[sel] = Distribution(kind, 1.0, scv).sample(rng, int(sel.sum())) * means[fn[sel]]
    return out


def _flows_of(
    m: PlanetModel, pops: tuple[int, ...]
) -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
    out: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {p: [] for p in pops}
    n_fn = m.assignment.shape[2]
    for a in m.assignment:
        flat = a.ravel()
        order = np.argsort(flat, kind="stable")
        sorted_pops = flat[order]
        for p in pops:
            lo, hi = np.searchsorted(sorted_pops, [p, p + 1])
            idx = order[lo:hi]
            out[p].append((idx // n_fn, idx % n_fn))
    return out


def _up_segments(m: PlanetModel, pop: int) -> list[tuple[float, float]]:
    """Time spans in which ``pop`` is up; instances do not survive between them."""
    spans: list[tuple[float, float]] = []
    edges = m.interval_edges_ms
    start: float | None = None
    for k in range(len(edges) - 1):
        up = not m.down[int(m.interval_epoch[k]), pop]
        if up and start is None:
            start = float(edges[k])
        if not up and start is not None:
            spans.append((start, float(edges[k])))
            start = None
    if start is not None:
        spans.append((start, math.inf))
    return spans


def run_planet_job(job: PlanetJob) -> PlanetPart:
    """Simulate a chunk of PoPs for one replication."""
    m, s = job.model, job.model.scenario
    shape = _shape(s)
    part = PlanetPart({}, {})
    flows = _flows_of(m, job.pops)
    regions = np.array(m.city_region)
    for pop in job.pops:
        req, city = _pop_requests(m, job.seed, job.replication, pop, flows[pop])
        tally = Tally(shape)
        for lo, hi in _up_segments(m, pop):
            sel = (req.arrival_ms >= lo) & (req.arrival_ms < hi)
            seg = RequestArrays(
                req.arrival_ms[sel], req.function[sel], req.service_ms[sel], req.cold_ms[sel]
            )
            if len(seg) == 0:
                continue
            out = _run_location(m, seg, int(m.servers[pop]))
            wait = out.wait_ms(seg)
            busy = out.busy_ms(seg)
            resp = m.rtt_ms[city[sel], pop] + wait + busy
            tally.add(seg.arrival_ms, wait, resp, busy, out.cold)
            seg_regions = regions[city[sel]]
            for r in np.unique(seg_regions):
                k = seg_regions == r
                t = part.by_region.setdefault(str(r), Tally(shape))
                t.add(seg.arrival_ms[k], wait[k], resp[k], busy[k], out.cold[k])
        part.by_pop[pop] = tally
    return part


def _run_location(m: PlanetModel, req: RequestArrays, servers: int):  # type: ignore[no-untyped-def]
    s = m.scenario
    assert s.world is not None
    policy = make_keep_alive(s.cold_start)
    if s.run.engine == "exact":
        return run_exact(
            req,
            servers=servers,
            keep_alive=policy,
            function_names=m.function_names,
            memory_mb=m.function_memory_mb.tolist(),
            memory_budget_mb=s.world.memory_budget_mb,
        )
    return run_fast(req, servers=servers, keep_alive=policy, function_names=m.function_names)


def _shape(s: Scenario) -> TallyShape:
    duration_ms = s.run.duration_s * 1000.0
    return TallyShape(
        warmup_ms=s.run.warmup_s * 1000.0,
        duration_ms=duration_ms,
        batches=s.run.batches,
        timeline_bin_ms=max(duration_ms / 144.0, 1.0),
    )
