"""Helpers for simulator tests: in-memory scenarios."""

from __future__ import annotations

from typing import Any


def queue_scenario(
    *,
    rate_per_s: float,
    servers: int,
    distribution: str = "exponential",
    mean_ms: float = 1000.0,
    scv: float = 1.0,
    duration_s: float = 100_000.0,
    seed: int = 1,
    engine: str = "fast",
    warmup_s: float = 0.0,
    cold_start: dict[str, Any] | None = None,
    functions: int = 1,
) -> dict[str, Any]:
    """A single-location scenario document."""
    return {
        "run": {"duration_s": duration_s, "seed": seed, "engine": engine, "warmup_s": warmup_s},
        "locations": [{"name": "q", "servers": servers}],
        "workload": {"arrivals": "poisson", "rate_per_s": rate_per_s, "functions": functions},
        "service": {"distribution": distribution, "mean_ms": mean_ms, "scv": scv},
        "cold_start": cold_start or {"enabled": False},
    }
