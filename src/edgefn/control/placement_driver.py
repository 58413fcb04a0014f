"""The control service's smart placement: demand from the core's telemetry, choices by
:func:`~edgefn.control.smart_placement.choose`, re-planned every ``interval_s``.

Demand comes first from the rollups' demand cells (the clients' positions to a degree, counted
by :class:`DemandWindow` as the telemetry ingest stores each rollup): a world region spans a
continent, and a replica placed at a region's population centre can be far from where its
clients actually are. Before the window has any (a core that just started), the telemetry
store's per-region counts stand in.

``SmartPlacement`` keeps the last choice of each function (what ``edgefn status`` shows as the
reason it runs where it does); the control service asks it at a smart function's deploy and on
its re-plan timer (control/service.py), and turns a changed choice into a
:class:`~edgefn.control.events.PlacementChosen` for the reconciler. Demand is the requests the
telemetry store holds for the function over the last ``window_s``, per client region (where the
clients are, not where they were served); requests of an unknown position are left out.
See docs/design/0029-smart-placement.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from edgefn.control.registry import ManifestSummary
from edgefn.control.smart_placement import (
    PlacementChoice,
    SmartOptions,
    SmartSite,
    SmartSpec,
    choose,
)
from edgefn.observe.rollup import Rollup
from edgefn.observe.telemetry_store import TelemetryStore

__all__ = ["DemandWindow", "SmartPlacement", "spec_of", "telemetry_demand"]

Demand = Callable[[str], Mapping[str, float]]


_BUCKET_MS = 60_000
_MAX_CELLS_PER_BUCKET = 50_000


class DemandWindow:
    """Requests per (function, client cell) over the last ``window_s``, in one-minute buckets.

    ``add`` is the telemetry ingest's ``on_stored`` (a rollup that reached the store, so from
    the node of its subject, checked by ``decode_rollup``). Bounded: at most
    ``_MAX_CELLS_PER_BUCKET`` keys per bucket (more are not counted: ``dropped``).
    """

    def __init__(self, *, window_s: float = 300.0, clock: Callable[[], int] | None = None) -> None:
        self.window_ms = int(window_s * 1000)
        self._clock = clock or (lambda: time.time_ns() // 1_000_000)
        self._buckets: dict[int, dict[tuple[str, str], int]] = {}
        self.dropped = 0

    def add(self, rollup: Rollup) -> None:
        if not rollup.demand:
            return
        # Bucketed by the core's clock when stored, not the node's end_ms (a node's clock, or a
        # node, could put its demand in the future and keep it in the window).
        bucket = self._buckets.setdefault(self._clock() // _BUCKET_MS, {})
        for d in rollup.demand:
            if d.key in bucket:
                bucket[d.key] += d.requests
            elif len(bucket) < _MAX_CELLS_PER_BUCKET:
                bucket[d.key] = d.requests
            else:
                self.dropped += d.requests
        self._prune()

    def _prune(self) -> None:
        oldest = (self._clock() - self.window_ms) // _BUCKET_MS
        for b in [b for b in self._buckets if b < oldest]:
            del self._buckets[b]

    def demand(self, function: str) -> dict[str, float]:
        """Requests per cell (``"lat,lon"``) of ``function`` in the window."""
        self._prune()
        out: dict[str, float] = {}
        for bucket in self._buckets.values():
            for (fn, cell), n in bucket.items():
                if fn == function:
                    out[cell] = out.get(cell, 0.0) + n
        return out


def telemetry_demand(
    store: TelemetryStore, *, window: DemandWindow | None = None, window_s: float = 300.0
) -> Demand:
    """A function's demand over the last ``window_s``: per client cell from ``window`` when it
    has any, else per client region from ``store``."""

    def demand(function: str) -> dict[str, float]:
        if window is not None and (cells := window.demand(function)):
            return cells
        since_ms = time.time_ns() // 1_000_000 - int(window_s * 1000)
        out: dict[str, float] = {}
        for row in store.stats(function, since_ms=since_ms):
            if row.client_region != "unknown":
                out[row.client_region] = out.get(row.client_region, 0.0) + row.requests
        return out

    return demand


def spec_of(name: str, manifest: ManifestSummary) -> SmartSpec:
    return SmartSpec(name, manifest.min_replicas, manifest.max_latency_ms, manifest.regions)


@dataclass
class SmartPlacement:
    """Choices for smart functions. ``demand`` None: no telemetry (the planet's cities stand in)."""

    demand: Demand | None = None
    interval_s: float = 60.0
    options: SmartOptions = field(default_factory=SmartOptions)
    choices: dict[str, PlacementChoice] = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.interval_s > 0, self.interval_s

    async def choose(
        self, spec: SmartSpec, sites: Sequence[SmartSite], current: Sequence[str]
    ) -> PlacementChoice:
        """The next placement of ``spec.function`` (the solver runs in a thread: ~0.1 s)."""
        observed = self.demand(spec.function) if self.demand is not None else {}
        choice = await asyncio.to_thread(choose, spec, sites, observed, current, self.options)
        self.choices[spec.function] = choice
        return choice

    def forget(self, function: str) -> None:
        self.choices.pop(function, None)
