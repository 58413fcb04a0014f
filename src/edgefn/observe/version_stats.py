"""Per-version request statistics that a node reports in its observed state.

Counts are cumulative since the version was activated; latency percentiles come from a bounded
ring of the most recent samples, so memory stays fixed however long a version serves.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

WINDOW = 512


@dataclass(slots=True)
class _Stats:
    requests: int = 0
    errors: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))


class VersionStatsTracker:
    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], _Stats] = {}

    def record(self, function: str, version: str, *, ok: bool, latency_ms: float) -> None:
        s = self._by_key.get((function, version))
        if s is None:
            s = self._by_key[(function, version)] = _Stats()
        s.requests += 1
        if not ok:
            s.errors += 1
        s.latencies_ms.append(latency_ms)

    def snapshot(self) -> dict[str, dict[str, tuple[int, int, float, float]]]:
        """function → version → (requests, errors, p50 ms, p99 ms)."""
        out: dict[str, dict[str, tuple[int, int, float, float]]] = {}
        for (fn, version), s in self._by_key.items():
            lat = sorted(s.latencies_ms)
            p50 = lat[len(lat) // 2] if lat else 0.0
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0.0
            out.setdefault(fn, {})[version] = (s.requests, s.errors, round(p50, 3), round(p99, 3))
        return out

    def forget(self, function: str, keep: set[str]) -> None:
        for key in [k for k in self._by_key if k[0] == function and k[1] not in keep]:
            del self._by_key[key]
