"""The world model: locations, client cities, regions, latency. Pure data and functions.

See docs/design/0002-world-model.md.
"""

from __future__ import annotations

from edgefn.world._cities import City, cities
from edgefn.world._geo import (
    CONTINENT_REGIONS,
    CONTINENTS,
    REGIONS,
    GeoPoint,
    HasLatLon,
    cell_of,
    cell_point,
    haversine_km,
    region_of,
)
from edgefn.world._latency import LOCAL_RTT_MS, LatencyModel, nearest, rtt_from_distance_ms, rtt_ms
from edgefn.world._locations import Location, get_location, make_location, pops, spread
from edgefn.world._topology import load_topology, parse_client_location

__all__ = [
    "CONTINENTS",
    "CONTINENT_REGIONS",
    "LOCAL_RTT_MS",
    "REGIONS",
    "City",
    "GeoPoint",
    "HasLatLon",
    "LatencyModel",
    "Location",
    "cell_of",
    "cell_point",
    "cities",
    "get_location",
    "haversine_km",
    "load_topology",
    "make_location",
    "nearest",
    "parse_client_location",
    "pops",
    "region_of",
    "rtt_from_distance_ms",
    "rtt_ms",
    "spread",
]
