"""What the load generator sends, and what it saw: both pure, so ``edgefn load`` is a thin driver.

:func:`plan_arrivals` builds an **open-loop** schedule: request send times do not depend on
responses (a closed loop would slow down exactly when the platform does, hiding overload; see
Schroeder et al., "Open versus closed", NSDI 2006). Arrivals form a Poisson process of rate ``rps``
over ``[0, duration_s)`` (or evenly spaced with ``process="uniform"``); each request comes from a
client city drawn with probability proportional to its population, from :func:`edgefn.world.cities`
or the cities chosen with :func:`select_clients` (``--clients world`` or ``--clients
Tokyo,Lagos``). All randomness comes from the ``random.Random`` passed in, so a seed replays the
same schedule. The schedule is bounded by ``max_requests``.

:class:`LoadSummary` aggregates :class:`LoadResult` records as responses come back: per client
region and overall the request count, failures (status 0 for "no response", or >= 500), latency
p50/p99/ mean (nearest-rank, over requests that got a response), status counts and which location
served them (from ``x-edgefn-location``). It keeps at most ``max_samples`` latencies; beyond that
results are still counted but their latencies are dropped and the summary says ``truncated``.
"""

from __future__ import annotations

import bisect
import difflib
import itertools
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from edgefn.errors import UsageError
from edgefn.world import cities

__all__ = [
    "ClientCity",
    "LoadResult",
    "LoadSummary",
    "PlannedRequest",
    "percentile",
    "plan_arrivals",
    "select_clients",
]

MAX_REQUESTS = 1_000_000


class ClientCity(Protocol):
    """What the planner needs of a city (``edgefn.world.City`` has it)."""

    @property
    def name(self) -> str: ...
    @property
    def population(self) -> int: ...
    @property
    def region(self) -> str: ...


class PlannedRequest(NamedTuple):
    send_at_s: float
    client_city: str
    region: str


def _world_cities() -> tuple[ClientCity, ...]:
    return cities()


def select_clients(spec: str, available: Sequence[ClientCity] | None = None) -> list[ClientCity]:
    """The cities named by ``--clients``: ``world`` (all) or comma-separated names (any case)."""
    pool = list(available) if available is not None else list(_world_cities())
    text = spec.strip()
    if text.lower() == "world":
        return pool
    by_name = {city.name.lower(): city for city in pool}
    chosen: list[ClientCity] = []
    for raw in text.split(","):
        name = raw.strip()
        city = by_name.get(name.lower())
        if city is None:
            close = difflib.get_close_matches(name, [c.name for c in pool], n=3)
            suggestion = f"did you mean {', '.join(close)}? " if close else ""
            raise UsageError(
                f"--clients: unknown city {name!r}",
                hint=f'{suggestion}give "world" or comma-separated names of built-in cities',
            )
        if city not in chosen:
            chosen.append(city)
    return chosen


def plan_arrivals(
    *,
    rps: float,
    duration_s: float,
    rng: random.Random,
    clients: Sequence[ClientCity] | None = None,
    process: str = "poisson",
    max_requests: int = MAX_REQUESTS,
) -> list[PlannedRequest]:
    """The open-loop schedule, sorted by send time. Raises UsageError on bad arguments."""
    if not (math.isfinite(rps) and rps > 0):
        raise UsageError(f"--rps must be a number > 0, got {rps!r}", hint="for example --rps 50")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise UsageError(
            f"--duration must be a number of seconds > 0, got {duration_s!r}",
            hint="for example --duration 10",
        )
    if rps * duration_s > max_requests:
        raise UsageError(
            f"--rps {rps:g} for --duration {duration_s:g} s is {rps * duration_s:.0f} requests, "
            f"more than the {max_requests} one run may plan",
            hint="lower --rps or --duration, or run several times",
        )
    if process not in ("poisson", "uniform"):
        raise UsageError(f"unknown arrival process {process!r}", hint='use "poisson" or "uniform"')
    pool = [c for c in (clients if clients is not None else _world_cities()) if c.population > 0]
    if not pool:
        raise UsageError("no client city with a population > 0", hint="check --clients")
    cumulative = list(itertools.accumulate(c.population for c in pool))
    total = cumulative[-1]
    out: list[PlannedRequest] = []
    t = rng.expovariate(rps) if process == "poisson" else 0.0
    while t < duration_s and len(out) < max_requests:
        city = pool[bisect.bisect_right(cumulative, rng.random() * total)]
        out.append(PlannedRequest(t, city.name, city.region))
        t = t + rng.expovariate(rps) if process == "poisson" else (len(out)) / rps
    return out


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One request's outcome; ``status`` 0 means no response (connection error, timeout)."""

    region: str
    client_city: str
    status: int
    latency_ms: float
    served_by: str | None = None


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(slots=True)
class _Group:
    requests: int = 0
    failed: int = 0
    latencies: list[float] | None = None

    def stats(self) -> dict[str, Any]:
        values = sorted(self.latencies or [])
        return {
            "requests": self.requests,
            "failed": self.failed,
            "failed_fraction": self.failed / self.requests if self.requests else 0.0,
            "p50_ms": percentile(values, 50),
            "p99_ms": percentile(values, 99),
            "mean_ms": math.fsum(values) / len(values) if values else math.nan,
        }


class LoadSummary:
    """Accumulates :class:`LoadResult` records into the report ``edgefn load`` prints."""

    def __init__(self, *, max_samples: int = 2 * MAX_REQUESTS) -> None:
        assert max_samples >= 0, max_samples
        self.max_samples = max_samples
        self._regions: dict[str, _Group] = {}
        self._overall = _Group(latencies=[])
        self._status: Counter[int] = Counter()
        self._served_by: Counter[str] = Counter()
        self._samples = 0
        self._truncated = False

    def add(self, result: LoadResult) -> None:
        group = self._regions.get(result.region)
        if group is None:
            group = self._regions[result.region] = _Group(latencies=[])
        failed = result.status == 0 or result.status >= 500
        for g in (group, self._overall):
            g.requests += 1
            g.failed += failed
        self._status[result.status] += 1
        if result.served_by:
            self._served_by[result.served_by] += 1
        if result.status == 0 or not math.isfinite(result.latency_ms):
            return
        if self._samples >= self.max_samples:
            self._truncated = True
            return
        self._samples += 1
        assert group.latencies is not None
        assert self._overall.latencies is not None
        group.latencies.append(result.latency_ms)
        self._overall.latencies.append(result.latency_ms)

    @property
    def requests(self) -> int:
        return self._overall.requests

    def to_json(self) -> dict[str, Any]:
        """Plain data: overall and per-region stats, status and served-by counts."""
        return {
            "requests": self._overall.requests,
            "overall": self._overall.stats(),
            "regions": {name: self._regions[name].stats() for name in sorted(self._regions)},
            "status": {str(code): n for code, n in sorted(self._status.items())},
            "served_by": dict(sorted(self._served_by.items(), key=lambda kv: (-kv[1], kv[0]))),
            "truncated": self._truncated,
        }
