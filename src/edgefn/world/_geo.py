"""Points on the globe, great-circle distance and the region hierarchy.

The hierarchy has two levels: six continents (``NA``, ``SA``, ``EU``, ``AF``, ``AS``, ``OC``)
and ten regions below them (``REGIONS``). :func:`region_of` assigns a coordinate to a region with a
short list of latitude/longitude rules, checked in order; the rules follow coastlines and seas
closely enough for routing and planning (the Mediterranean, the Red Sea, the Urals), not for
cartography. Because every location and client city gets its region from its coordinates, the
same point always lands in the same region, whichever dataset it came from.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

__all__ = [
    "CONTINENTS",
    "CONTINENT_REGIONS",
    "EARTH_RADIUS_KM",
    "REGIONS",
    "GeoPoint",
    "HasLatLon",
    "cell_of",
    "cell_point",
    "haversine_km",
    "region_of",
]

EARTH_RADIUS_KM = 6371.0088

CONTINENTS: MappingProxyType[str, str] = MappingProxyType(
    {
        "AF": "Africa",
        "AS": "Asia",
        "EU": "Europe",
        "NA": "North America",
        "OC": "Oceania",
        "SA": "South America",
    }
)

REGIONS: MappingProxyType[str, tuple[str, str]] = MappingProxyType(
    {
        "af": ("Africa", "AF"),
        "as-east": ("East and South-East Asia, Siberia", "AS"),
        "as-south": ("South and Central Asia", "AS"),
        "eu-east": ("Eastern and Northern Europe, Turkey", "EU"),
        "eu-west": ("Western and Central Europe", "EU"),
        "me": ("Middle East", "AS"),
        "na-east": ("North America east of 100°W, Central America, Caribbean", "NA"),
        "na-west": ("North America west of 100°W, Alaska, Hawaii", "NA"),
        "oc": ("Oceania", "OC"),
        "sa": ("South America", "SA"),
    }
)

CONTINENT_REGIONS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {
        cont: tuple(sorted(code for code, (_, c) in REGIONS.items() if c == cont))
        for cont in CONTINENTS
    }
)


class HasLatLon(Protocol):
    """Anything with a position: GeoPoint, Location, City."""

    @property
    def lat(self) -> float: ...

    @property
    def lon(self) -> float: ...


@dataclass(frozen=True, slots=True)
class GeoPoint:
    """A position in degrees (WGS84 latitude, longitude)."""

    lat: float
    lon: float

    def __post_init__(self) -> None:
        assert -90.0 <= self.lat <= 90.0, self.lat
        assert -180.0 <= self.lon <= 180.0, self.lon


def haversine_km(a: HasLatLon, b: HasLatLon) -> float:
    """Great-circle distance in km between two positions."""
    la1 = math.radians(a.lat)
    la2 = math.radians(b.lat)
    dlat = la2 - la1
    dlon = math.radians(b.lon - a.lon)
    h = math.sin(dlat / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin(dlon / 2) ** 2
    return 2.0 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def _is_oceania(lat: float, lon: float) -> bool:
    # Australia, New Zealand and the Pacific islands south of the equator; New Guinea by longitude.
    if lat < -10.0 and (lon >= 110.0 or lon <= -140.0):
        return True
    return lat < 0.0 and lon > 130.0


def _is_africa(lat: float, lon: float) -> bool:
    if lon < -26.0 or lon >= 60.0:
        return False
    if lon < -1.0:  # the Strait of Gibraltar: Tangier is Africa, Malaga is Europe
        return lat < 36.0
    if lon < 11.5:  # Algeria and Tunisia against Spain, the Balearics and Sardinia
        return lat < 37.4
    if lon < 34.0:  # Libya and Egypt against Malta, Crete and Cyprus
        return lat < 34.0
    # East of Suez the Horn and the islands are Africa, Arabia is the Middle East.
    return lat < 12.5 or (lat < 16.0 and lon < 43.0)


def _is_middle_east(lat: float, lon: float) -> bool:
    if 34.0 <= lon < 63.0 and 12.5 <= lat < 36.5:
        return True
    return 44.0 <= lon < 63.0 and 36.5 <= lat < 39.5  # northern Iran


def region_of(lat: float, lon: float) -> str:
    """Return the region code (a key of ``REGIONS``) of a coordinate."""
    if _is_oceania(lat, lon):
        return "oc"
    if lon < -30.0 or (lon > 170.0 and lat > 50.0):  # the Americas (and the Aleutians)
        if lat < 7.0 or (lat < 12.6 and lon > -77.5):
            return "sa"
        return "na-west" if lon < -100.0 or lon > 0.0 else "na-east"
    if _is_africa(lat, lon):
        return "af"
    if _is_middle_east(lat, lon):
        return "me"
    if lon < 60.0:  # Europe up to the Urals, with Turkey and the Caucasus
        return "eu-west" if lon < 16.0 else "eu-east"
    if (lon < 92.0 and lat < 37.0) or (lon < 80.0 and lat < 45.0):
        return "as-south"
    return "as-east"


# -- cells: a position to a whole degree (about 100 km), as ``"lat,lon"`` -----------------------

_CELL = re.compile(r"(-?\d{1,3}),(-?\d{1,3})")


def cell_of(lat: float, lon: float) -> str:
    """The cell of a (valid) coordinate: ``"35,140"``."""
    return f"{round(lat)},{round(lon)}"


def cell_point(cell: str) -> tuple[float, float] | None:
    """(lat, lon) of a cell, or None if ``cell`` is not one."""
    m = _CELL.fullmatch(cell)
    if m is None:
        return None
    lat, lon = int(m.group(1)), int(m.group(2))
    return (float(lat), float(lon)) if -90 <= lat <= 90 and -180 <= lon <= 180 else None
