"""Queue scenarios: explicit ``[[locations]]``, each an independent FIFO multi-server queue.

A location receives ``share / sum(shares)`` of the workload. Its requests are sampled up front
from per-component random streams keyed by (replication, location), so a location's result does
not depend on which process ran it or on the other locations. Each job returns a :class:`Tally`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgefn.runtime.keepalive import FixedKeepAlive, HybridHistogramPolicy, KeepAlivePolicy
from edgefn.sim._arrivals import workload_arrivals_ms
from edgefn.sim._fastpath import run_fast
from edgefn.sim._location import run_exact
from edgefn.sim._pool import run_pool
from edgefn.sim._requests import LocationOutcome, RequestArrays
from edgefn.sim._rng import numpy_stream
from edgefn.sim._scenario import ColdStartSpec, Scenario
from edgefn.sim._tally import Tally, TallyShape
from edgefn.sim._traces import trace_arrivals

__all__ = ["LocalJob", "make_keep_alive", "run_local_job", "tally_shape", "zipf_weights"]


@dataclass(frozen=True, slots=True)
class LocalJob:
    """One location of one replication."""

    scenario: Scenario
    seed: int
    replication: int
    location: int


def tally_shape(s: Scenario) -> TallyShape:
    duration_ms = s.run.duration_s * 1000.0
    return TallyShape(
        warmup_ms=s.run.warmup_s * 1000.0,
        duration_ms=duration_ms,
        batches=s.run.batches,
        timeline_bin_ms=max(duration_ms / 144.0, 1.0),
    )


def make_keep_alive(c: ColdStartSpec) -> KeepAlivePolicy | None:
    """The scenario's keep-alive policy, or None when cold starts are off."""
    if not c.enabled:
        return None
    if c.keep_alive == "hybrid":
        return HybridHistogramPolicy()
    return FixedKeepAlive(keep_alive_ms=int(c.keep_alive_s * 1000.0))


def zipf_weights(n: int, s: float) -> np.ndarray:
    """Normalised Zipf popularity of ``n`` items (rank 1 most popular)."""
    w = np.arange(1, n + 1, dtype=float) ** -s
    return np.asarray(w / w.sum())


def _requests(job: LocalJob) -> tuple[RequestArrays, tuple[str, ...]]:
    s = job.scenario
    w = s.workload
    key = ("rep", job.replication, "loc", job.location)
    duration_ms = s.run.duration_s * 1000.0
    shares = np.array([loc.share for loc in s.locations])
    share = float(shares[job.location] / shares.sum())
    service: np.ndarray | None = None
    if w.arrivals == "trace":
        tr = trace_arrivals(
            w.trace, w.trace_format, numpy_stream(job.seed, "rep", job.replication, "trace")
        )
        owner = numpy_stream(job.seed, "rep", job.replication, "split").choice(
            len(shares), size=len(tr.arrival_ms), p=shares / shares.sum()
        )
        mine = (owner == job.location) & (tr.arrival_ms < duration_ms)
        arrival, fn, names = tr.arrival_ms[mine], tr.function[mine], tr.names
        if tr.service_ms is not None:
            service = tr.service_ms[mine]
    else:
        arrival = workload_arrivals_ms(w, duration_ms, share, numpy_stream(job.seed, *key, "arr"))
        if w.functions == 1:  # every request is f0; the "function" stream is not drawn from
            fn = np.zeros(len(arrival), dtype=np.int64)
        else:
            cdf = np.cumsum(zipf_weights(w.functions, w.zipf_s))
            u = numpy_stream(job.seed, *key, "function").random(len(arrival))
            fn = np.minimum(np.searchsorted(cdf, u), w.functions - 1)
        names = tuple(f"f{i}" for i in range(w.functions))
    n = len(arrival)
    if service is None:
        service = s.service.sample(numpy_stream(job.seed, *key, "service"), n)
    if s.cold_start.enabled:
        cold = s.cold_start.duration.sample(numpy_stream(job.seed, *key, "cold"), n)
    else:  # never read with cold starts off (every request is warm); each stream is its own
        cold = np.zeros(n)
    return RequestArrays(arrival, fn.astype(np.int64), service, cold), names


def run_local_job(job: LocalJob) -> Tally:
    """Simulate one location of one replication."""
    s = job.scenario
    loc = s.locations[job.location]
    req, names = _requests(job)
    policy = make_keep_alive(s.cold_start)
    if s.cold_start.pool is not None:
        assert policy is not None
        return _run_pool_job(s, loc.name, req, names, policy)
    out: LocationOutcome
    if s.run.engine == "exact":
        out = run_exact(
            req,
            servers=loc.servers,
            keep_alive=policy,
            function_names=names,
            memory_mb=[s.cold_start.memory_mb] * len(names),
            memory_budget_mb=loc.memory_budget_mb,
        )
    else:
        assert loc.memory_budget_mb == math.inf or policy is None
        out = run_fast(req, servers=loc.servers, keep_alive=policy, function_names=names)
    tally = Tally(tally_shape(s))
    wait = out.wait_ms(req)
    busy = out.busy_ms(req)
    tally.add(req.arrival_ms, wait, wait + busy, busy, out.cold)
    return tally


def _run_pool_job(
    s: Scenario, location: str, req: RequestArrays, names: tuple[str, ...], policy: KeepAlivePolicy
) -> Tally:
    """Instance pools (``[cold_start] instance_concurrency``): no shared queue; see _pool.py."""
    assert s.cold_start.pool is not None
    shape = tally_shape(s)
    out = run_pool(
        req,
        spec=s.cold_start.pool,
        keep_alive=policy,
        function_names=names,
        location=location,
        window_ms=(shape.warmup_ms, shape.duration_ms),
        batches=shape.batches,
    )
    tally = Tally(shape)
    ok = out.served
    arrival = req.arrival_ms[ok]
    wait = out.start_ms[ok] - arrival
    busy = out.busy_ms[ok]
    tally.add(arrival, wait, wait + busy, busy, out.cold[ok])
    tally.add_failed(int(out.tally.rejected_by_batch.sum()))
    tally.pool = out.tally
    return tally
