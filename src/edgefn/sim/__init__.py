"""The planet-scale simulator: a deterministic event kernel, a vectorised fast path, scenarios.

See docs/design/0004-simulator.md.
"""

from __future__ import annotations

from edgefn.sim._analytic import (
    PoolTheory,
    QueueTheory,
    erlang_b,
    erlang_c,
    mg1_pollaczek_khinchine,
    mmc_erlang_c,
    single_instance_pool,
)
from edgefn.sim._distributions import DISTRIBUTIONS, Distribution
from edgefn.sim._fastpath import lindley_start_ms, run_fast
from edgefn.sim._kernel import Kernel, KernelStatistics
from edgefn.sim._location import LocationMachine, run_exact
from edgefn.sim._planet import NearestRouter, Placement, Router, build_planet
from edgefn.sim._pool import PoolMachine, PoolSpec, run_pool
from edgefn.sim._requests import LocationOutcome, RequestArrays
from edgefn.sim._rng import numpy_stream, python_stream
from edgefn.sim._runner import NON_DETERMINISTIC_KEYS, SimulationResult, simulate
from edgefn.sim._scenario import Scenario, load_scenario, parse_scenario
from edgefn.sim._traces import Trace, read_azure2019, read_azure2021, trace_arrivals

__all__ = [
    "DISTRIBUTIONS",
    "NON_DETERMINISTIC_KEYS",
    "Distribution",
    "Kernel",
    "KernelStatistics",
    "LocationMachine",
    "LocationOutcome",
    "NearestRouter",
    "Placement",
    "PoolMachine",
    "PoolSpec",
    "PoolTheory",
    "QueueTheory",
    "RequestArrays",
    "Router",
    "Scenario",
    "SimulationResult",
    "Trace",
    "build_planet",
    "erlang_b",
    "erlang_c",
    "lindley_start_ms",
    "load_scenario",
    "mg1_pollaczek_khinchine",
    "mmc_erlang_c",
    "numpy_stream",
    "parse_scenario",
    "python_stream",
    "read_azure2019",
    "read_azure2021",
    "run_exact",
    "run_fast",
    "run_pool",
    "simulate",
    "single_instance_pool",
    "trace_arrivals",
]
