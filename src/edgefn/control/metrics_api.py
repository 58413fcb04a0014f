"""``GET /v1/metrics`` (scope ``read``): the planet's rollups for Prometheus to scrape.

The answer is the Prometheus text exposition format (OpenMetrics when the scraper asks for it in
``Accept``, as Prometheus does), encoded by prometheus_client from a collector built per request:

- every caller gets the rollup families of ``edgefn.observe.prometheus_export`` (cumulative
  request, cold-start, KV and subrequest counters per location × function × version, a latency
  summary, requests by client region) for the functions it may read: an ``admin`` token every
  function (and the overflow row of keys that did not fit in a node's rollup, function
  ``~overflow``), any other token only its own account's functions, as ``/v1/stats`` answers;
- an ``admin`` token also gets the planet's infrastructure: per-location gauges from what each
  node last reported (how long ago, converged, CPU, memory, disk, sockets, temperatures, power,
  throttling; a figure the host did not measure has no sample, never a made-up one) and the
  telemetry store's own counters. Those are the operator's, not a tenant's.

Bounds: the ``MAX_TRIPLES`` most recently active (location, function, version) triples that served
within ``ACTIVE_S``, as many client-region rows, at most ``MAX_SENSORS`` temperature and power
readings per location; ``edgefn_planet_metrics_omitted_series`` says what the limit left out.
Quantiles are over the last ``WINDOW_S``. The store is read and the answer encoded in a worker
thread (the store reads a WAL snapshot through its own connection there), the service's state on
the event loop. A store-less app (a test's control service) answers 503.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Final

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response

from edgefn.control.auth import ADMIN, Principal
from edgefn.control.errors import ControlError
from edgefn.control.model import NodeResources
from edgefn.control.service import ControlService
from edgefn.observe.prometheus_export import rollup_families
from edgefn.observe.telemetry_store import TelemetryStore

__all__ = ["ACTIVE_S", "MAX_SENSORS", "MAX_TRIPLES", "WINDOW_S", "metrics_endpoint"]

WINDOW_S: Final = 60
ACTIVE_S: Final = 24 * 3600
MAX_TRIPLES: Final = 1000
MAX_SENSORS: Final = 8
_MIB: Final = 2**20
# (metric suffix, help, NodeResources field, factor to base units)
_RESOURCES: Final = (
    ("cpu_percent", "Percent of one core the node's processes used", "cpu_percent", 1),
    ("processes", "Processes of the node (node, zygote, workers)", "processes", 1),
    ("rss_bytes", "Resident memory of the node's processes, summed", "rss_mb", _MIB),
    ("host_memory_bytes", "The host's memory", "host_memory_mb", _MIB),
    ("host_memory_available_bytes", "The host's available memory", "host_memory_available_mb", _MIB),
    ("disk_bytes", "The state disk's size", "disk_mb", _MIB),
    ("disk_free_bytes", "The state disk's free space", "disk_free_mb", _MIB),
    ("open_sockets", "Sockets the node's processes hold open", "open_sockets", 1),
    ("throttle_celsius", "The temperature the node throttles on", "throttle_c", 1),
    ("capacity_ratio", "The admission capacity left by thermal throttling (1: all)", "capacity", 1),
)  # fmt: skip


class MetricsUnavailable(ControlError):
    status = 503
    code = "metrics_unavailable"


class _Families(Collector):
    """A collector over families already built (one per request)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _resource_families(reports: Mapping[str, NodeResources | None]) -> Iterator[Metric]:
    for suffix, doc, field, factor in _RESOURCES:
        family = GaugeMetricFamily(f"edgefn_location_{suffix}", doc, labels=["location"])
        for location, r in reports.items():
            value = _number(getattr(r, field)) if r is not None else None
            if value is not None:
                family.add_metric([location], value * factor)
        yield family
    hot = GaugeMetricFamily(
        "edgefn_location_hot", "1 while thermally throttled", labels=["location"]
    )
    sensors = GaugeMetricFamily(
        "edgefn_location_temperature_celsius", "Thermal zones", labels=["location", "sensor"]
    )
    power = GaugeMetricFamily(
        "edgefn_location_power_watts", "Power readings (RAPL)", labels=["location", "zone"]
    )
    for location, r in reports.items():
        if r is None:
            continue
        hot.add_metric([location], float(r.hot))
        for family, readings in ((sensors, r.thermal_c), (power, r.power_w)):
            for name in sorted(readings)[:MAX_SENSORS]:
                value = _number(readings[name])
                if value is not None:
                    family.add_metric([location, name], value)
    yield from (hot, sensors, power)


def _location_families(service: ControlService, now_ms: int) -> Iterator[Metric]:
    seen = GaugeMetricFamily(
        "edgefn_location_last_seen_age_seconds",
        "Seconds since the location last reported to the core",
        labels=["location", "region"],
    )
    converged = GaugeMetricFamily(
        "edgefn_location_converged",
        "1 when the location applied its desired state",
        labels=["location"],
    )
    reports: dict[str, NodeResources | None] = {}
    for loc in service.location_status():
        if loc.last_seen_ms > 0:
            seen.add_metric([loc.location, loc.region], max(0, now_ms - loc.last_seen_ms) / 1000)
        converged.add_metric([loc.location], float(loc.converged))
        observed = service.observed(loc.location)
        reports[loc.location] = observed.resources if observed is not None else None
    yield from (seen, converged)
    yield from _resource_families(reports)


def _store_families(store: TelemetryStore) -> Iterator[Metric]:
    stats = store.statistics()
    yield GaugeMetricFamily(
        "edgefn_telemetry_store_cells", "Cells in the core's telemetry store", value=stats.cells
    )
    for name, doc, value in (
        ("rollups_ingested", "Rollups stored since the core started", stats.rollups_ingested_total),
        ("duplicates", "Rollups refused as already stored", stats.duplicates_total),
        ("too_old", "Rollups older than the store keeps", stats.too_old_total),
    ):
        yield CounterMetricFamily(f"edgefn_telemetry_{name}", doc, value=value)


def _readable(service: ControlService, principal: Principal) -> set[str] | None:
    """The functions ``principal`` may read the figures of (None: every one)."""
    if ADMIN in principal.scopes:
        return None
    return {f.name for f in service.registry().functions() if f.account == principal.account}


def metrics_endpoint(
    service: ControlService,
    store: TelemetryStore | None,
    principal: Callable[[Request], Principal],
) -> Callable[[Request], object]:
    """The route handler; ``principal(request)`` is the authenticated caller."""

    async def metrics(request: Request) -> Response:
        if store is None:
            raise MetricsUnavailable(
                "this control service keeps no telemetry", hint="run the core with `edgefn core`"
            )
        caller = principal(request)
        now_ms = time.time_ns() // 1_000_000
        readable = _readable(service, caller)
        # The service's state lives on this loop: read it here, the store in the thread.
        planet = (
            [*_location_families(service, now_ms), *_store_families(store)]
            if ADMIN in caller.scopes
            else []
        )
        encode, content_type = choose_encoder(request.headers.get("accept", ""))

        def render() -> bytes:
            totals = store.totals(
                active_since_ms=now_ms - ACTIVE_S * 1000,
                recent_since_ms=now_ms - WINDOW_S * 1000,
                functions=readable,
                limit=MAX_TRIPLES,
            )
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_Families([*rollup_families(totals, window_s=WINDOW_S), *planet]))
            return encode(registry)

        # At the cap a scrape reads and encodes for a good part of a second (docs/design/0024):
        # off the event loop, so the core's ingest and API go on meanwhile.
        body = await asyncio.to_thread(render) if store.reads_in_thread else render()
        return Response(body, headers={"content-type": content_type})

    return metrics
