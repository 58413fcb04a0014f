"""What a node's traffic driver reports about itself (``TrafficDriver.statistics``)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TrafficStatistics"]


@dataclass(frozen=True, slots=True)
class TrafficStatistics:
    served_here: int
    forwarded: int
    failovers: int
    forward_failed: int
    rate_limited: int
    shed: int
    stripped_headers: int
    no_route: int
    peers_known: int
    unhealthy: tuple[str, ...]
    admission_limit: int
    admission_inflight: int
    admission_queued: int
    overloaded: bool
    celsius: float | None = None
    hot: bool = False
    capacity: float = 1.0
