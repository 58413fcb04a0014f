"""Demand prediction: requests = base x geographic share x diurnal factor (local time).

Observed counts ``n(region, utc_hour)`` are modelled as ``base * geo[region] * diurnal[local_hour]``
with ``local_hour = (utc_hour + utc_offset[region]) mod 24`` (rounded to the hour), ``geo`` summing
to 1 and ``diurnal`` averaging 1. Fitting alternates the two closed-form updates of Poisson
maximum likelihood (iterative proportional fitting): geo from each region's total over its
expected diurnal weight, diurnal from each local hour's total over its expected geographic weight.
It stops when the relative change falls under ``tol`` or after ``max_iter`` rounds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edgefn.errors import PlanInputError

__all__ = ["DemandModel", "Observation", "fit_demand"]

_HOURS = 24


@dataclass(frozen=True, slots=True)
class Observation:
    region: str
    utc_hour: int  # hours since any epoch; only utc_hour mod 24 matters
    requests: float


@dataclass(frozen=True, slots=True)
class DemandModel:
    base: float  # requests per hour summed over all regions, on an average hour
    geo: Mapping[str, float]
    diurnal: tuple[float, ...]  # 24 factors by local hour, mean 1
    utc_offset_h: Mapping[str, float]
    iterations: int

    def predict(self, region: str, utc_hour: int) -> float:
        """Expected requests from ``region`` in the hour starting at ``utc_hour``."""
        if region not in self.geo:
            raise PlanInputError(f"region {region!r} was not in the fitted data", key=region,
                                 hint="fit with observations from this region")  # fmt: skip
        local = _local_hour(utc_hour, self.utc_offset_h[region])
        return self.base * self.geo[region] * self.diurnal[local]


def _local_hour(utc_hour: int, offset_h: float) -> int:
    return round(utc_hour + offset_h) % _HOURS


def fit_demand(
    observations: Iterable[Observation],
    utc_offset_h: Mapping[str, float],
    *,
    max_iter: int = 200,
    tol: float = 1e-9,
) -> DemandModel:
    """Fit base, geographic shares and the diurnal curve to observed hourly counts."""
    cells: dict[tuple[str, int], float] = {}
    hours_seen: set[int] = set()
    for obs in observations:
        if obs.region not in utc_offset_h:
            raise PlanInputError(f"no UTC offset for region {obs.region!r}", key=obs.region,
                                 hint="give every observed region its time-zone offset")  # fmt: skip
        if obs.requests < 0:
            raise PlanInputError(f"negative count {obs.requests} for {obs.region!r}",
                                 key=obs.region)  # fmt: skip
        key = (obs.region, obs.utc_hour)
        cells[key] = cells.get(key, 0.0) + obs.requests
        hours_seen.add(obs.utc_hour)
    if not cells or sum(cells.values()) <= 0:
        raise PlanInputError("no requests observed", hint="pass at least one positive count")
    regions = sorted({r for r, _ in cells})
    geo = {r: 1.0 / len(regions) for r in regions}
    diurnal = [1.0] * _HOURS
    by_region = {r: 0.0 for r in regions}
    by_local = [0.0] * _HOURS
    exposure = [0] * _HOURS  # (region, hour) cells observed at each local hour
    for (r, _), n in cells.items():
        by_region[r] += n
    for r in regions:
        for h in hours_seen:
            local = _local_hour(h, utc_offset_h[r])
            by_local[local] += cells.get((r, h), 0.0)
            exposure[local] += 1
    rounds = 0
    for iteration in range(1, max_iter + 1):
        rounds = iteration
        old = list(diurnal)
        for r in regions:
            weight = sum(diurnal[_local_hour(h, utc_offset_h[r])] for h in hours_seen)
            geo[r] = by_region[r] / weight
        for local in range(_HOURS):
            weight = sum(geo[r] for r in regions for h in hours_seen
                         if _local_hour(h, utc_offset_h[r]) == local)  # fmt: skip
            diurnal[local] = by_local[local] / weight if weight > 0 else 0.0
        seen = [d for d, e in zip(diurnal, exposure, strict=True) if e > 0]
        mean = sum(seen) / len(seen)
        diurnal = [d / mean if e > 0 else 1.0 for d, e in zip(diurnal, exposure, strict=True)]
        if max(abs(a - b) for a, b in zip(diurnal, old, strict=True)) < tol:
            break
    geo_sum = sum(geo.values())
    shares = {r: g / geo_sum for r, g in geo.items()}
    return DemandModel(geo_sum, shares, tuple(diurnal), dict(utc_offset_h), rounds)
