"""What the telemetry store's cumulative totals read as (``TelemetryStore.totals``): plain data,
shared by the store that fills it and the pure Prometheus export that formats it."""

from __future__ import annotations

from dataclasses import dataclass

from edgefn.observe.rollup import Sketch

__all__ = ["RegionTotal", "Total", "Totals"]


@dataclass(frozen=True, slots=True)
class Total:
    """Everything one (location, function, version, status class) served since the store began."""

    location: str
    function: str
    version: str
    status: str
    requests: int
    cold_starts: int
    kv_ops: int
    subrequests: int
    latency_us: int


@dataclass(frozen=True, slots=True)
class RegionTotal:
    """Requests of one function by clients of one region, in one status class, since the start."""

    function: str
    client_region: str
    status: str
    requests: int


@dataclass(frozen=True, slots=True)
class Totals:
    """The cumulative figures of the most recently active series, and how many were left out.

    ``recent`` merges the 10 s tier's sketches from ``since_ms`` per (location, function,
    version) of ``rows``; ``omitted_triples`` and ``omitted_regions`` count the (location,
    function, version) triples and the region rows that were active but over the limit.
    """

    rows: list[Total]
    regions: list[RegionTotal]
    recent: dict[tuple[str, str, str], Sketch]
    omitted_triples: int = 0
    omitted_regions: int = 0
