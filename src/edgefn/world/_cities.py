"""Client populations: the largest metropolitan areas of the world.

``data/cities.csv`` lists about 350 metro areas (every one above ~5 million people, and the
largest metro of every country that hosts a PoP) with an approximate population and the UTC offset
of standard time. Populations are rounded public figures (UN World Urbanization Prospects 2018
agglomerations, Demographia); they weight demand, so a 10 % error in one city is harmless.
Region and continent come from the coordinates through :func:`edgefn.world.region_of`.
"""

from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass
from importlib import resources

from edgefn.world._geo import REGIONS, GeoPoint, region_of

__all__ = ["City", "cities"]


@dataclass(frozen=True, slots=True)
class City:
    """A metro area whose users send requests."""

    name: str
    country: str
    lat: float
    lon: float
    population: int
    utc_offset_h: float
    region: str
    continent: str

    @property
    def point(self) -> GeoPoint:
        return GeoPoint(self.lat, self.lon)


@functools.cache
def cities() -> tuple[City, ...]:
    """The built-in client cities, largest population first (ties by name)."""
    text = resources.files("edgefn.world").joinpath("data/cities.csv").read_text(encoding="utf-8")
    out: list[City] = []
    for row in csv.DictReader(io.StringIO(text)):
        lat, lon = float(row["lat"]), float(row["lon"])
        region = region_of(lat, lon)
        out.append(
            City(
                name=row["name"],
                country=row["country"],
                lat=lat,
                lon=lon,
                population=int(row["population"]),
                utc_offset_h=float(row["utc_offset_h"]),
                region=region,
                continent=REGIONS[region][1],
            )
        )
    out.sort(key=lambda c: (-c.population, c.name))
    return tuple(out)
