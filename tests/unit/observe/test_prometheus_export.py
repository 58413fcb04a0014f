"""The planet's rollups as Prometheus families: encoded by prometheus_client, parsed back by its
parsers (the text format and OpenMetrics), values checked against the totals they came from."""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from edgefn.observe.prometheus_export import rollup_families
from edgefn.observe.rollup import Accumulator, Sketch
from edgefn.observe.rollup_totals import RegionTotal, Total, Totals

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class _Fixed(Collector):
    def __init__(self, totals: Totals) -> None:
        self.totals = totals

    def collect(self) -> Iterable[Metric]:
        return rollup_families(self.totals, window_s=60)


def _registry(totals: Totals) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(totals))
    return registry


def _samples(text: str, parse: object = text_string_to_metric_families) -> Samples:
    out: Samples = {}
    for family in parse(text):  # type: ignore[operator]
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _sketch(latencies_ms: Iterable[float]) -> Sketch:
    acc = Accumulator(location="fra", epoch="e", start_ms=0)
    for ms in latencies_ms:
        acc.record("fn", "v1", 200, "eu-west", ms)
    rollup = acc.cut(5000)
    assert rollup is not None
    return rollup.rows[0].latency


def _totals() -> Totals:
    rows = [
        Total("fra", "fn", "v1", "2xx", 90, 2, 5, 1, 90 * 10_000),
        Total("fra", "fn", "v1", "5xx", 10, 1, 0, 0, 10 * 50_000),
        Total("nrt", "fn", "v1", "2xx", 7, 0, 0, 0, 7 * 3_000),
    ]
    recent = {
        ("fra", "fn", "v1"): _sketch([10.0] * 90 + [50.0] * 10),
        ("nrt", "fn", "v1"): _sketch([3.0] * 7),
    }
    regions = [RegionTotal("fn", "eu-west", "2xx", 97), RegionTotal("fn", "eu-west", "5xx", 10)]
    return Totals(rows, regions, recent, omitted_triples=2, omitted_regions=0)


def _label(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kw.items()))


def test_counters_and_summary_from_the_totals() -> None:
    got = _samples(generate_latest(_registry(_totals())).decode())
    fra = {"location": "fra", "function": "fn", "version": "v1"}
    assert got[("edgefn_planet_requests_total", _label(**fra, status_class="2xx"))] == 90
    assert got[("edgefn_planet_requests_total", _label(**fra, status_class="5xx"))] == 10
    # Per triple, over its status classes.
    assert got[("edgefn_planet_cold_starts_total", _label(**fra))] == 3
    assert got[("edgefn_planet_kv_operations_total", _label(**fra))] == 5
    assert got[("edgefn_planet_subrequests_total", _label(**fra))] == 1
    assert got[("edgefn_planet_request_duration_seconds_count", _label(**fra))] == 100
    assert math.isclose(got[("edgefn_planet_request_duration_seconds_sum", _label(**fra))], 1.4)
    p50 = got[("edgefn_planet_request_duration_seconds", _label(**fra, quantile="0.5"))]
    p99 = got[("edgefn_planet_request_duration_seconds", _label(**fra, quantile="0.99"))]
    assert math.isclose(p50, 0.010, rel_tol=0.011)
    assert math.isclose(p99, 0.050, rel_tol=0.011)
    region = ("edgefn_planet_client_region_requests_total", _label(
        function="fn", client_region="eu-west", status_class="5xx"))  # fmt: skip
    assert got[region] == 10
    assert got[("edgefn_planet_metrics_omitted_series", _label(kind="triple"))] == 2


def test_quantiles_merge_sketches_across_locations_not_percentiles() -> None:
    """fra: 100 requests at 10-50 ms, nrt: 7 at 3 ms. The planet's median is fra's 10 ms; an
    average of the two medians would be 6.5 ms."""
    got = _samples(generate_latest(_registry(_totals())).decode())
    key = ("edgefn_planet_function_duration_seconds", _label(
        function="fn", version="v1", quantile="0.5"))  # fmt: skip
    assert math.isclose(got[key], 0.010, rel_tol=0.011)


def test_a_triple_without_recent_requests_has_nan_quantiles_and_keeps_its_counts() -> None:
    totals = _totals()
    quiet = Totals(totals.rows, totals.regions, {})
    got = _samples(generate_latest(_registry(quiet)).decode())
    fra = _label(location="fra", function="fn", version="v1", quantile="0.99")
    assert math.isnan(got[("edgefn_planet_request_duration_seconds", fra)])
    count = ("edgefn_planet_request_duration_seconds_count", _label(
        location="fra", function="fn", version="v1"))  # fmt: skip
    assert got[count] == 100
    assert not any(name == "edgefn_planet_function_duration_seconds" for name, _ in got)


def test_openmetrics_encoding_parses_with_the_same_values() -> None:
    """What Prometheus asks for first (Accept: application/openmetrics-text)."""
    text = generate_openmetrics(_registry(_totals())).decode()
    assert text.endswith("# EOF\n")
    got = _samples(text, parse_om)
    fra = _label(location="fra", function="fn", version="v1", status_class="2xx")
    assert got[("edgefn_planet_requests_total", fra)] == 90


def test_empty_totals_give_families_without_samples_but_the_omitted_gauge() -> None:
    got = _samples(generate_latest(_registry(Totals([], [], {}))).decode())
    assert got == {
        ("edgefn_planet_metrics_omitted_series", _label(kind="triple")): 0,
        ("edgefn_planet_metrics_omitted_series", _label(kind="client_region")): 0,
    }
