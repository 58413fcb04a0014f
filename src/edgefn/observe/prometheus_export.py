"""The planet's rollups in Prometheus's data model: what the core serves at ``GET /v1/metrics``.

Pure: :func:`rollup_families` turns the telemetry store's cumulative :class:`Totals` into
prometheus_client metric families; the control plane's route reads the store, picks what the
caller may see, and encodes the families (docs/design/0024-prometheus.md). The families::

    edgefn_planet_requests_total{location,function,version,status_class}        counter
    edgefn_planet_cold_starts_total{location,function,version}                  counter
    edgefn_planet_kv_operations_total{location,function,version}                counter
    edgefn_planet_subrequests_total{location,function,version}                  counter
    edgefn_planet_request_duration_seconds{location,function,version}           summary
    edgefn_planet_function_duration_seconds{function,version,quantile}          gauge
    edgefn_planet_client_region_requests_total{function,client_region,status_class}  counter
    edgefn_planet_metrics_omitted_series{kind}                                  gauge

Rules.

- Counters are the store's cumulative totals (requests counted once, at the location that
  answered, since the store began), which only grow, so ``rate()`` and ``increase()`` work; a
  new core store is a counter reset, as Prometheus expects of a restarted target.
- The summary's ``_count`` and ``_sum`` are cumulative too (requests and their latency sum, every
  status class); its quantiles 0.5/0.95/0.99 are of the requests answered in the last
  ``window_s`` (the 10 s tier's DDSketches merged: 1 % relative error), NaN when there were none,
  as a Prometheus client library's summary reports a sliding window. Quantiles of a summary do
  not add across locations in PromQL, so ``edgefn_planet_function_duration_seconds`` gives the
  same quantiles over every location's sketch merged (merging sketches is exact; averaging
  percentiles is not).
- Latency is in seconds, as Prometheus's conventions want; the store keeps µs and ms.
- Label values are the store's, which the ingest bounded (names of at most 64 characters, status
  classes 2xx..5xx, world regions or ``unknown``); the number of series is bounded by the
  store query's limit, and what it left out is reported, never silently dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from edgefn.observe.rollup import Sketch, merge_sketches, quantiles
from edgefn.observe.rollup_totals import Total, Totals

__all__ = ["QUANTILES", "rollup_families"]

QUANTILES = (0.5, 0.95, 0.99)
_TRIPLE = ["location", "function", "version"]


@dataclass(slots=True)
class _Triple:
    """A (location, function, version)'s totals over its status classes."""

    requests: int = 0
    cold_starts: int = 0
    kv_ops: int = 0
    subrequests: int = 0
    latency_us: int = 0

    def add(self, row: Total) -> None:
        self.requests += row.requests
        self.cold_starts += row.cold_starts
        self.kv_ops += row.kv_ops
        self.subrequests += row.subrequests
        self.latency_us += row.latency_us


def _seconds(values_ms: Iterable[float | None]) -> list[float]:
    return [math.nan if v is None else v / 1000 for v in values_ms]


def _triples(rows: Iterable[Total]) -> dict[tuple[str, str, str], _Triple]:
    out: dict[tuple[str, str, str], _Triple] = {}
    for row in rows:
        key = (row.location, row.function, row.version)
        out.setdefault(key, _Triple()).add(row)
    return out


def _requests(rows: Iterable[Total]) -> Metric:
    family = CounterMetricFamily(
        "edgefn_planet_requests",
        "Requests answered at a location, by status class, since the core's store began",
        labels=[*_TRIPLE, "status_class"],
    )
    for r in rows:
        family.add_metric([r.location, r.function, r.version, r.status], r.requests)
    return family


def _per_triple(triples: Mapping[tuple[str, str, str], _Triple]) -> Iterator[Metric]:
    counters = (
        ("cold_starts", "Requests that paid a cold start", "cold_starts"),
        ("kv_operations", "KV operations the requests made", "kv_ops"),
        ("subrequests", "Subrequests (edgefn.fetch) the requests made", "subrequests"),
    )
    for name, doc, field in counters:
        family = CounterMetricFamily(f"edgefn_planet_{name}", doc, labels=_TRIPLE)
        for key, t in triples.items():
            family.add_metric(list(key), getattr(t, field))
        yield family


def _duration(
    triples: Mapping[tuple[str, str, str], _Triple],
    recent: Mapping[tuple[str, str, str], Sketch],
    window_s: int,
) -> Metric:
    name = "edgefn_planet_request_duration_seconds"
    family = Metric(
        name,
        f"Time to the response's first byte: quantiles over the last {window_s} s, "
        "count and sum since the core's store began",
        "summary",
    )
    for key, t in triples.items():
        labels = dict(zip(_TRIPLE, key, strict=True))
        sketch = recent.get(key, Sketch())
        for q, value in zip(QUANTILES, _seconds(quantiles(sketch, QUANTILES)), strict=True):
            family.add_sample(name, {**labels, "quantile": str(q)}, value)
        family.add_sample(f"{name}_count", labels, t.requests)
        family.add_sample(f"{name}_sum", labels, t.latency_us / 1e6)
    return family


def _function_duration(recent: Mapping[tuple[str, str, str], Sketch], window_s: int) -> Metric:
    parts: dict[tuple[str, str], list[Sketch]] = {}
    for (_location, function, version), sketch in sorted(recent.items()):
        parts.setdefault((function, version), []).append(sketch)
    merged = {key: merge_sketches(*sketches) for key, sketches in parts.items()}
    family = GaugeMetricFamily(
        "edgefn_planet_function_duration_seconds",
        f"Time to the response's first byte over the last {window_s} s, every location merged",
        labels=["function", "version", "quantile"],
    )
    for (function, version), sketch in merged.items():
        for q, value in zip(QUANTILES, _seconds(quantiles(sketch, QUANTILES)), strict=True):
            family.add_metric([function, version, str(q)], value)
    return family


def _regions(totals: Totals) -> Metric:
    family = CounterMetricFamily(
        "edgefn_planet_client_region_requests",
        "Requests by the client's region and status class, every location, since the store began",
        labels=["function", "client_region", "status_class"],
    )
    for r in totals.regions:
        family.add_metric([r.function, r.client_region, r.status], r.requests)
    return family


def _omitted(totals: Totals) -> Metric:
    family = GaugeMetricFamily(
        "edgefn_planet_metrics_omitted_series",
        "Active series left out of this answer by its limit: location,function,version triples "
        "(kind=triple) and client region rows (kind=client_region)",
        labels=["kind"],
    )
    family.add_metric(["triple"], totals.omitted_triples)
    family.add_metric(["client_region"], totals.omitted_regions)
    return family


def rollup_families(totals: Totals, *, window_s: int) -> list[Metric]:
    """The metric families of ``totals`` (quantiles of ``totals.recent``, over ``window_s``)."""
    assert window_s > 0
    triples = _triples(totals.rows)
    return [
        _requests(totals.rows),
        *_per_triple(triples),
        _duration(triples, totals.recent, window_s),
        _function_duration(totals.recent, window_s),
        _regions(totals),
        _omitted(totals),
    ]
