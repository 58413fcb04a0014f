"""Per-node Prometheus metrics (served at ``/_edgefn/metrics``).

Each node has its own registry so that several nodes in one process (tests, benchmarks) do not mix.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class NodeMetrics:
    def __init__(self, location: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["location", "function"]
        self.requests = Counter(
            "edgefn_requests_total",
            "Requests by function and status",
            [*labels, "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "edgefn_errors_total",
            "Failed requests by error kind",
            [*labels, "error"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "edgefn_request_duration_seconds",
            "Time to the response's first byte",
            labels,
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.cold_starts = Counter(
            "edgefn_cold_starts_total",
            "Requests that paid a cold start",
            labels,
            registry=self.registry,
        )
        self.pool_workers = Gauge(
            "edgefn_pool_workers",
            "Sandbox workers per function version",
            [*labels, "version"],
            registry=self.registry,
        )
        self.scheduled_runs = Counter(
            "edgefn_scheduled_runs_total",
            "Cron ticks this location ran, by outcome (ok or the error kind)",
            [*labels, "outcome"],
            registry=self.registry,
        )
        self.cache_requests = Counter(
            "edgefn_cache_requests_total",
            "Origin requests by what answered them at this location's edge cache (x-edgefn-cache:"
            " HIT, REVALIDATED, MISS, STALE, BYPASS); the hit ratio is HIT+REVALIDATED+STALE over"
            " all",
            [*labels, "cache"],
            registry=self.registry,
        )
        self.location = location
        # labels() costs a lock and a dict lookup per call; keep the children per function.
        self._children: dict[tuple[str, str], Counter] = {}
        self._latency: dict[str, object] = {}

    def count(self, function: str, status: int, cold: bool) -> None:
        key = (function, str(status))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(self.location, function, key[1])
        child.inc()
        if cold:
            self.cold_starts.labels(self.location, function).inc()

    def cache_request(self, function: str, status: str) -> None:
        self.cache_requests.labels(self.location, function, status).inc()

    def observe_latency(self, function: str, seconds: float) -> None:
        child = self._latency.get(function)
        if child is None:
            child = self._latency[function] = self.latency.labels(self.location, function)
        child.observe(seconds)  # type: ignore[attr-defined]

    def render(self) -> bytes:
        return generate_latest(self.registry)
