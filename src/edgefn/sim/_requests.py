"""The request arrays both queue engines consume and the outcome arrays they produce.

A location's workload is four parallel numpy arrays sorted by arrival time: arrival time, function
index, base service time and the cold-start duration the request pays if it finds no loaded
instance. Sampling everything up front is what makes the exact and the fast engine comparable on
identical inputs, and it keeps each component's random stream independent of the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LocationOutcome", "RequestArrays"]


@dataclass(frozen=True, slots=True)
class RequestArrays:
    """One location's requests, sorted by ``arrival_ms``."""

    arrival_ms: np.ndarray
    function: np.ndarray
    service_ms: np.ndarray
    cold_ms: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.arrival_ms)
        assert len(self.function) == n
        assert len(self.service_ms) == n
        assert len(self.cold_ms) == n

    def __len__(self) -> int:
        return len(self.arrival_ms)

    def check_sorted(self) -> None:
        """Assert arrivals are in time order."""
        if len(self) > 1:
            assert bool(np.all(np.diff(self.arrival_ms) >= 0.0))


@dataclass(frozen=True, slots=True)
class LocationOutcome:
    """What happened to each request: when it got a worker, and whether it paid a cold start."""

    start_ms: np.ndarray
    cold: np.ndarray
    evictions: int = 0
    prewarms: int = 0

    def wait_ms(self, requests: RequestArrays) -> np.ndarray:
        """Time each request queued for a worker."""
        return np.asarray(self.start_ms - requests.arrival_ms)

    def busy_ms(self, requests: RequestArrays) -> np.ndarray:
        """Worker time each request used (service plus its cold start, if any)."""
        if not self.cold.any():
            return requests.service_ms
        return np.asarray(requests.service_ms + np.where(self.cold, requests.cold_ms, 0.0))
