"""The control service's smart placement: demand from the core's telemetry, choices by
:func:`~edgefn.control.smart_placement.choose`, re-planned every ``interval_s``.

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
from edgefn.observe.telemetry_store import TelemetryStore

__all__ = ["SmartPlacement", "spec_of", "telemetry_demand"]

Demand = Callable[[str], Mapping[str, float]]


def telemetry_demand(store: TelemetryStore, *, window_s: float = 300.0) -> Demand:
    """Requests per client region of a function over the last ``window_s``, from ``store``."""

    def demand(function: str) -> dict[str, float]:
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
