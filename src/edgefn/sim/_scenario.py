"""Scenario files: TOML in, a validated frozen :class:`Scenario` out.

Two shapes share one schema. A *queue* scenario lists ``[[locations]]`` explicitly (one location
is the single queue used for validation) and draws its load from ``[workload]``. A *planet*
scenario has a ``[world]`` table: PoPs from the world model (by count or by id), client demand
from city populations with a diurnal curve per time zone, ``[[functions]]`` (or a generated
heavy-tailed population of them), ``[policies]`` for placement, routing and keep-alive, and
``[[faults]]`` (location outages and region partitions on a schedule).

Every error is a :class:`~edgefn.errors.ScenarioError` naming the file and the dotted key, and
unknown keys are errors too (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefn.errors import ScenarioError
from edgefn.sim._distributions import DISTRIBUTIONS, Distribution
from edgefn.sim._pool import PoolSpec
from edgefn.sim._schema import Table

__all__ = [
    "ColdStartSpec",
    "FaultSpec",
    "FunctionSpec",
    "LocationSpec",
    "PolicySpec",
    "RunSpec",
    "Scenario",
    "WorkloadSpec",
    "WorldSpec",
    "load_scenario",
    "parse_scenario",
]

ARRIVALS = ("bursty", "diurnal", "poisson", "trace")
TRACE_FORMATS = ("azure2019", "azure2021")
ENGINES = ("exact", "fast")
KEEP_ALIVE = ("fixed", "hybrid")
PLACEMENTS = ("everywhere", "planner", "popularity")
ROUTINGS = ("edgefn", "nearest")
FAULTS = ("location_down", "partition")


@dataclass(frozen=True, slots=True)
class RunSpec:
    duration_s: float
    seed: int = 1
    warmup_s: float = 0.0
    engine: str = "fast"
    replications: int = 1
    batches: int = 30
    workers: int = 0  # 0: as many processes as CPUs


@dataclass(frozen=True, slots=True)
class LocationSpec:
    name: str
    servers: int  # 0 with instance pools: each function's instances serve, no shared queue
    share: float = 1.0
    memory_budget_mb: float = math.inf
    region: str = "local"
    cost_per_hour: float = 0.0
    carbon_g_per_kwh: float = 0.0


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    arrivals: str = "poisson"
    rate_per_s: float = 1.0
    functions: int = 1
    zipf_s: float = 1.0
    peak_to_trough: float = 3.0
    utc_offset_h: float = 0.0
    burst_every_s: float = 3600.0
    burst_duration_s: float = 60.0
    burst_factor: float = 10.0
    trace: str = ""
    trace_format: str = "azure2021"


@dataclass(frozen=True, slots=True)
class ColdStartSpec:
    enabled: bool = False
    duration: Distribution = field(default_factory=lambda: Distribution("deterministic", 500.0))
    keep_alive: str = "fixed"
    keep_alive_s: float = 600.0
    memory_mb: float = 128.0
    pool: PoolSpec | None = None  # instance pools (instance_concurrency set), else one instance


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    name: str
    weight: float
    service: Distribution
    memory_mb: float = 128.0
    replicas: int = 0  # 0: decided by the placement policy


@dataclass(frozen=True, slots=True)
class WorldSpec:
    pops: int | tuple[str, ...] = 300
    servers: int = 0  # 0: each Location's capacity
    requests_per_day: float = 1e6
    peak_to_trough: float = 3.0
    functions: int = 100
    zipf_s: float = 1.0
    service_sigma: float = 1.0
    memory_budget_mb: float = math.inf


@dataclass(frozen=True, slots=True)
class PolicySpec:
    placement: str = "popularity"
    min_replicas: int = 3
    routing: str = "nearest"


@dataclass(frozen=True, slots=True)
class FaultSpec:
    kind: str
    target: str
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class Scenario:
    path: str
    run: RunSpec
    workload: WorkloadSpec
    service: Distribution
    cold_start: ColdStartSpec
    locations: tuple[LocationSpec, ...] = ()
    world: WorldSpec | None = None
    functions: tuple[FunctionSpec, ...] = ()
    policies: PolicySpec = field(default_factory=PolicySpec)
    faults: tuple[FaultSpec, ...] = ()

    @property
    def name(self) -> str:
        return Path(self.path).stem if self.path else "scenario"


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario TOML file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ScenarioError(
            f"cannot read scenario: {err.strerror}", path=str(p), hint="check the path"
        ) from err
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(f"not valid TOML: {err}", path=str(p), hint="fix the syntax") from err
    return parse_scenario(data, path=str(p))


def parse_scenario(data: dict[str, Any], *, path: str = "") -> Scenario:
    """Validate a parsed TOML document."""
    root = Table(data, path, "")
    root.check_keys(
        {"run", "locations", "workload", "service", "cold_start", "world", "functions"}
        | {"policies", "faults"}
    )
    run = _run(root.table("run"))
    world_t = root.opt_table("world")
    locs = root.array("locations")
    if world_t is None and not locs:
        raise ScenarioError(
            "no [[locations]] and no [world]",
            path=path,
            hint="add [[locations]] (a queue scenario) or a [world] table (a planet scenario)",
        )
    if world_t is not None and locs:
        raise ScenarioError(
            "both [[locations]] and [world]",
            path=path,
            key="locations",
            hint="use [[locations]] for a queue scenario or [world] for a planet, not both",
        )
    workload = _workload(root.table("workload") if world_t is None else root.opt_table("workload"))
    cold_start = _cold_start(root.opt_table("cold_start"))
    scenario = Scenario(
        path=path,
        run=run,
        workload=workload,
        service=_distribution(root.opt_table("service"), "exponential", 100.0, 1.0),
        cold_start=cold_start,
        locations=tuple(_location(t, pools=cold_start.pool is not None) for t in locs),
        world=_world(world_t) if world_t is not None else None,
        functions=tuple(_function(t) for t in root.array("functions")),
        policies=_policies(root.opt_table("policies")),
        faults=tuple(_fault(t, run.duration_s) for t in root.array("faults")),
    )
    _cross_checks(scenario)
    return scenario


def _run(t: Table) -> RunSpec:
    t.check_keys({"duration_s", "seed", "warmup_s", "engine", "replications", "batches", "workers"})
    duration = t.number("duration_s", minimum=1e-3)
    warmup = t.number("warmup_s", 0.0, minimum=0.0)
    if warmup >= duration:
        raise t.error("warmup_s", "must be shorter than duration_s", "lower warmup_s")
    return RunSpec(
        duration_s=duration,
        seed=t.integer("seed", 1),
        warmup_s=warmup,
        engine=t.choice("engine", ENGINES, "fast"),
        replications=t.integer("replications", 1, minimum=1, maximum=1000),
        batches=t.integer("batches", 30, minimum=2, maximum=1000),
        workers=t.integer("workers", 0, minimum=0, maximum=256),
    )


def _location(t: Table, *, pools: bool) -> LocationSpec:
    t.check_keys(
        {"name", "servers", "share", "memory_budget_mb", "region", "cost_per_hour"}
        | {"carbon_g_per_kwh"}
    )
    if pools:
        for key, hint in (
            ("servers", "cap instances with [cold_start] max_instances instead"),
            ("memory_budget_mb", "cap instances with [cold_start] max_instances instead"),
        ):
            if key in t.data:
                raise t.error(
                    key,
                    "not used with instance pools ([cold_start] instance_concurrency): "
                    "each function's instances serve its requests, there is no shared worker queue",
                    f"remove {key}; {hint}",
                )
    return LocationSpec(
        name=t.string("name"),
        servers=0 if pools else t.integer("servers", minimum=1, maximum=1_000_000),
        share=t.number("share", 1.0, minimum=0.0),
        memory_budget_mb=t.number("memory_budget_mb", math.inf, minimum=0.0),
        region=t.string("region", "local"),
        cost_per_hour=t.number("cost_per_hour", 0.0, minimum=0.0),
        carbon_g_per_kwh=t.number("carbon_g_per_kwh", 0.0, minimum=0.0),
    )


def _workload(t: Table | None) -> WorkloadSpec:
    if t is None:
        return WorkloadSpec()
    t.check_keys(
        {"arrivals", "rate_per_s", "functions", "zipf_s", "peak_to_trough", "utc_offset_h"}
        | {"burst_every_s", "burst_duration_s", "burst_factor", "trace", "trace_format"}
    )
    arrivals = t.choice("arrivals", ARRIVALS, "poisson")
    trace = t.string("trace", "")
    if arrivals == "trace" and not trace:
        raise t.error("trace", "arrivals = 'trace' needs a trace file", "set trace = 'file.csv'")
    if trace:
        base = Path(t.path).parent if t.path else Path()
        trace = str(base / trace)
    return WorkloadSpec(
        arrivals=arrivals,
        rate_per_s=t.number("rate_per_s", 1.0, minimum=0.0),
        functions=t.integer("functions", 1, minimum=1, maximum=1_000_000),
        zipf_s=t.number("zipf_s", 1.0, minimum=0.0),
        peak_to_trough=t.number("peak_to_trough", 3.0, minimum=1.0),
        utc_offset_h=t.number("utc_offset_h", 0.0, minimum=-12.0, maximum=14.0),
        burst_every_s=t.number("burst_every_s", 3600.0, minimum=1e-3),
        burst_duration_s=t.number("burst_duration_s", 60.0, minimum=0.0),
        burst_factor=t.number("burst_factor", 10.0, minimum=0.0),
        trace=trace,
        trace_format=t.choice("trace_format", TRACE_FORMATS, "azure2021"),
    )


def _distribution(
    t: Table | None, kind: str, mean_ms: float, scv: float, extra: frozenset[str] = frozenset()
) -> Distribution:
    if t is None:
        return Distribution(kind, mean_ms, scv)
    t.check_keys({"distribution", "mean_ms", "scv"} | extra)
    kind = t.choice("distribution", DISTRIBUTIONS, kind)
    mean = t.number("mean_ms", mean_ms, minimum=1e-9)
    scv = t.number("scv", scv, minimum=0.0)
    if kind == "hyperexponential" and scv < 1.0:
        raise t.error("scv", f"hyperexponential needs scv >= 1, got {scv}", "use scv >= 1")
    if kind == "lognormal" and scv <= 0.0:
        raise t.error("scv", "lognormal needs scv > 0", "use scv > 0 or 'deterministic'")
    return Distribution(kind, mean, scv)


def _cold_start(t: Table | None) -> ColdStartSpec:
    if t is None:
        return ColdStartSpec()
    t.check_keys(
        {"enabled", "distribution", "mean_ms", "scv", "keep_alive", "keep_alive_s"}
        | {"memory_mb", "instance_concurrency", "max_instances"}
    )
    # "fixed" is the older spelling of "deterministic"; any service-time distribution works.
    kind = t.choice("distribution", ("fixed", *DISTRIBUTIONS), "fixed")
    mean = t.number("mean_ms", 500.0, minimum=0.0)
    scv = t.number("scv", 0.25, minimum=1e-6)
    if kind == "hyperexponential" and scv < 1.0:
        raise t.error("scv", f"hyperexponential needs scv >= 1, got {scv}", "use scv >= 1")
    if kind == "fixed":
        kind = "deterministic"
    dist = Distribution(kind, max(mean, 1e-9), 0.0 if kind == "deterministic" else scv)
    enabled = t.boolean("enabled", False)
    pool: PoolSpec | None = None
    if "instance_concurrency" in t.data:
        if not enabled:
            raise t.error(
                "instance_concurrency",
                "instance pools need cold starts on (a new instance starts cold)",
                "set enabled = true in [cold_start]",
            )
        pool = PoolSpec(
            instance_concurrency=t.integer("instance_concurrency", minimum=1, maximum=1_000_000),
            max_instances=(
                t.integer("max_instances", minimum=1, maximum=100_000_000)
                if "max_instances" in t.data
                else 0
            ),
        )
    elif "max_instances" in t.data:
        raise t.error(
            "max_instances",
            "max_instances caps an instance pool, and there is none",
            "add instance_concurrency = 1 (scale per request) or remove max_instances",
        )
    return ColdStartSpec(
        enabled=enabled,
        duration=dist,
        keep_alive=t.choice("keep_alive", KEEP_ALIVE, "fixed"),
        keep_alive_s=t.number("keep_alive_s", 600.0, minimum=0.0),
        memory_mb=t.number("memory_mb", 128.0, minimum=0.0),
        pool=pool,
    )


def _world(t: Table) -> WorldSpec:
    t.check_keys(
        {"pops", "servers", "requests_per_day", "peak_to_trough", "functions", "zipf_s"}
        | {"service_sigma", "memory_budget_mb"}
    )
    raw = t.raw("pops", 300)
    pops: int | tuple[str, ...]
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1:
        pops = raw
    elif isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        pops = tuple(raw)
    else:
        raise t.error(
            "pops",
            f"expected a count >= 1 or a list of PoP ids, got {raw!r}",
            "write pops = 300 or pops = ['fra', 'iad']",
        )
    return WorldSpec(
        pops=pops,
        servers=t.integer("servers", 0, minimum=0, maximum=1_000_000),
        requests_per_day=t.number("requests_per_day", 1e6, minimum=0.0, maximum=1e12),
        peak_to_trough=t.number("peak_to_trough", 3.0, minimum=1.0),
        functions=t.integer("functions", 100, minimum=1, maximum=100_000),
        zipf_s=t.number("zipf_s", 1.0, minimum=0.0),
        service_sigma=t.number("service_sigma", 1.0, minimum=0.0),
        memory_budget_mb=t.number("memory_budget_mb", math.inf, minimum=0.0),
    )


def _function(t: Table) -> FunctionSpec:
    t.check_keys({"name", "weight", "distribution", "mean_ms", "scv", "memory_mb", "replicas"})
    return FunctionSpec(
        name=t.string("name"),
        weight=t.number("weight", 1.0, minimum=0.0),
        service=_distribution(
            t, "exponential", 100.0, 1.0, frozenset({"name", "weight", "memory_mb", "replicas"})
        ),
        memory_mb=t.number("memory_mb", 128.0, minimum=0.0),
        replicas=t.integer("replicas", 0, minimum=0, maximum=100_000),
    )


def _policies(t: Table | None) -> PolicySpec:
    if t is None:
        return PolicySpec()
    t.check_keys({"placement", "min_replicas", "routing", "keep_alive"})
    return PolicySpec(
        placement=t.choice("placement", PLACEMENTS, "popularity"),
        min_replicas=t.integer("min_replicas", 3, minimum=1, maximum=100_000),
        routing=t.choice("routing", ROUTINGS, "nearest"),
    )


def _fault(t: Table, duration_s: float) -> FaultSpec:
    t.check_keys({"kind", "location", "region", "start_s", "end_s"})
    kind = t.choice("kind", FAULTS)
    key = "location" if kind == "location_down" else "region"
    start = t.number("start_s", minimum=0.0)
    end = t.number("end_s", duration_s, minimum=0.0)
    if end <= start:
        raise t.error("end_s", f"must be after start_s ({start})", "fix the fault window")
    return FaultSpec(kind=kind, target=t.string(key), start_s=start, end_s=end)


def _cross_checks(s: Scenario) -> None:
    if s.cold_start.pool is not None and s.world is not None:
        raise ScenarioError(
            "instance pools are simulated for queue scenarios only, not yet for [world] planets",
            path=s.path,
            key="cold_start.instance_concurrency",
            hint="remove instance_concurrency, or use [[locations]] instead of [world]",
        )
    names = [loc.name for loc in s.locations]
    if len(set(names)) != len(names):
        raise ScenarioError(
            "location names repeat",
            path=s.path,
            key="locations",
            hint="give every [[locations]] a distinct name",
        )
    if s.locations and sum(loc.share for loc in s.locations) <= 0.0:
        raise ScenarioError(
            "all location shares are 0",
            path=s.path,
            key="locations.share",
            hint="give at least one location a share > 0",
        )
    if s.run.engine == "fast" and s.cold_start.enabled:
        budgets = [loc.memory_budget_mb for loc in s.locations]
        if s.world is not None:
            budgets.append(s.world.memory_budget_mb)
        if any(b != math.inf for b in budgets):
            raise ScenarioError(
                "a memory budget needs the exact engine (LRU eviction is modelled there only)",
                path=s.path,
                key="run.engine",
                hint="set engine = 'exact' in [run], or drop memory_budget_mb",
            )
