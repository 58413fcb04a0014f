"""Locations where functions run, and the built-in set of real Cloudflare PoPs.

``data/pops.csv`` holds 327 Cloudflare data centres (IATA code, city, country, airport
coordinates); see ``data/ATTRIBUTION.md`` for sources and licences. Region and continent come from
the coordinates, cost and carbon from :mod:`edgefn.world._countries`.

:func:`spread` orders all PoPs once: the first pick is the medoid (least total distance to all
others), then one PoP per continent not yet covered (the farthest from those already chosen),
then plain farthest-point order. ``spread(n)`` is the first ``n`` of that order, so it is
deterministic and ``spread(n)`` is a prefix of ``spread(n + 1)``.
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any

from edgefn.errors import UsageError
from edgefn.world._cities import cities
from edgefn.world._countries import carbon_for, cost_for
from edgefn.world._geo import (
    CONTINENTS,
    EARTH_RADIUS_KM,
    REGIONS,
    GeoPoint,
    HasLatLon,
    region_of,
)

__all__ = ["Location", "get_location", "pops", "spread"]


@dataclass(frozen=True, slots=True)
class Location:
    """A place that runs functions. ``id`` is a lowercase code (IATA for built-in PoPs)."""

    id: str
    city: str
    country: str
    lat: float
    lon: float
    region: str
    continent: str
    capacity: int = 100
    cost_per_hour: float = 0.11
    carbon_g_per_kwh: float = 400.0
    # Thermal budget (°C): admission is throttled from soft to hard (edgefn.routing.thermal).
    thermal_soft_c: float = 80.0
    thermal_hard_c: float = 95.0

    def __post_init__(self) -> None:
        assert self.id == self.id.lower(), self.id
        assert self.region in REGIONS, self.region
        assert self.continent in CONTINENTS, self.continent
        assert self.capacity >= 0, self.capacity

    @property
    def point(self) -> GeoPoint:
        return GeoPoint(self.lat, self.lon)


def make_location(
    id: str, city: str, country: str, lat: float, lon: float, region: str | None = None
) -> Location:
    """A location with region, continent, cost and carbon derived from its position and country."""
    reg = region if region is not None else region_of(lat, lon)
    continent = REGIONS[reg][1]
    return Location(
        id=id.lower(),
        city=city,
        country=country,
        lat=lat,
        lon=lon,
        region=reg,
        continent=continent,
        cost_per_hour=cost_for(reg),
        carbon_g_per_kwh=carbon_for(country, continent),
    )


@functools.cache
def pops() -> tuple[Location, ...]:
    """The built-in Cloudflare PoPs, sorted by id."""
    text = resources.files("edgefn.world").joinpath("data/pops.csv").read_text(encoding="utf-8")
    rows = csv.DictReader(io.StringIO(text))
    out = [
        make_location(r["id"], r["city"], r["country"], float(r["lat"]), float(r["lon"]))
        for r in rows
    ]
    out.sort(key=lambda loc: loc.id)
    return tuple(out)


@functools.cache
def _by_id() -> MappingProxyType[str, Location]:
    return MappingProxyType({loc.id: loc for loc in pops()})


def get_location(id: str) -> Location:
    """The built-in PoP with this IATA code (any case)."""
    found = _by_id().get(id.strip().lower())
    if found is not None:
        return found
    close = difflib.get_close_matches(id.strip().lower(), list(_by_id()), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see `edgefn locations` for the list"
    raise UsageError(f"unknown location {id!r}: not a built-in PoP (IATA code)", hint=hint)


@functools.cache
def _spread_order() -> tuple[Location, ...]:
    """PoPs in the order a planet of n locations should take them.

    First one PoP per continent, most populous continent first: the PoP nearest that continent's
    largest metro area. Then greedy population-weighted
    p-median over the whole world: each step adds the PoP that most reduces the sum over the
    built-in metro areas of population x distance to the nearest chosen PoP. So small planets sit
    where people are (Tokyo, New York, Sao Paulo, ...), not at geographic extremes. Ties break by id.
    """
    # lazy: numpy costs ~150 ms and every node process imports edgefn.world; only spread() needs it.
    import numpy as np

    locs = pops()
    metros = cities()
    weight = np.array([float(c.population) for c in metros])
    dist = _distances_km(np, locs, metros)
    ids = [loc.id for loc in locs]
    chosen: list[int] = []
    by_continent: dict[str, float] = {}
    for c in metros:
        by_continent[c.continent] = by_continent.get(c.continent, 0.0) + c.population
    for continent in sorted(by_continent, key=lambda k: (-by_continent[k], k)):
        on = [i for i, loc in enumerate(locs) if loc.continent == continent]
        if not on:
            continue
        # The continent's largest metro area gets the continent's first PoP.
        biggest = max(
            (j for j, c in enumerate(metros) if c.continent == continent),
            key=lambda j: (metros[j].population, metros[j].name),
        )
        chosen.append(min(on, key=lambda i: (dist[i, biggest], ids[i])))
    best = dist[chosen].min(axis=0)
    taken = set(chosen)
    while len(chosen) < len(locs):
        rest = [i for i in range(len(locs)) if i not in taken]
        cost = np.minimum(dist[rest], best) @ weight
        pick = rest[min(range(len(rest)), key=lambda j: (cost[j], ids[rest[j]]))]
        chosen.append(pick)
        taken.add(pick)
        best = np.minimum(best, dist[pick])
    return tuple(locs[i] for i in chosen)


def _distances_km(np: Any, a: Sequence[HasLatLon], b: Sequence[HasLatLon]) -> Any:
    """The ``len(a) x len(b)`` matrix of :func:`haversine_km`, vectorised (the same formula;
    a Python loop over the 327 x 349 pairs took a quarter of a second of every ``edgefn up``)."""
    la1 = np.radians(np.array([p.lat for p in a]))[:, None]
    la2 = np.radians(np.array([p.lat for p in b]))[None, :]
    dlon = np.radians(np.array([p.lon for p in b])[None, :] - np.array([p.lon for p in a])[:, None])
    h = np.sin((la2 - la1) / 2) ** 2 + np.cos(la1) * np.cos(la2) * np.sin(dlon / 2) ** 2
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(h)))


def spread(n: int) -> tuple[Location, ...]:
    """``n`` PoPs spread over the world where people are: every continent first (see
    :func:`_spread_order`); deterministic, and ``spread(n)`` is a prefix of ``spread(n + 1)``."""
    total = len(pops())
    if not 1 <= n <= total:
        raise UsageError(
            f"cannot spread {n} locations: the built-in set has {total} PoPs",
            hint=f"choose a number of locations from 1 to {total}",
        )
    return _spread_order()[:n]
