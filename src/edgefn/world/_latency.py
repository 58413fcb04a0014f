"""The latency model: round-trip time between two positions.

``rtt_ms(a, b) = LOCAL_RTT_MS + c1 * d + c2 * sqrt(d)`` with ``d`` the great-circle distance in km.
The constants were fitted by :mod:`edgefn.world.fit` to WonderProxy's measured RTTs between 245
servers in 2020 (59,887 pairs; least squares on relative error against the average RTT); the raw
measurements are not shipped. ``c1`` is close to the speed of light in fibre (1/100 ms per km for a
round trip) times the usual path stretch; the sqrt term carries the extra detour of short paths.
At d = 0 the model gives ``LOCAL_RTT_MS``: two points in one metro still cross a few routers.

:class:`LatencyModel` overrides the fit with measured values where they are known (by location id,
either order), so a deployment can plug in its own matrix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TypeVar

from edgefn.world._geo import HasLatLon, haversine_km

__all__ = ["LOCAL_RTT_MS", "LatencyModel", "nearest", "rtt_from_distance_ms", "rtt_ms"]

LOCAL_RTT_MS = 1.0
# Printed by `python -m edgefn.world.fit SERVERS PINGS` on the WonderProxy 2020-07-19 files.
_C1_MS_PER_KM = 0.0162734
_C2_MS_PER_SQRT_KM = 0.118081

_L = TypeVar("_L", bound=HasLatLon)


def rtt_from_distance_ms(distance_km: float) -> float:
    """The fitted model as a function of great-circle distance."""
    assert distance_km >= 0.0, distance_km
    return LOCAL_RTT_MS + _C1_MS_PER_KM * distance_km + _C2_MS_PER_SQRT_KM * math.sqrt(distance_km)


def rtt_ms(a: HasLatLon, b: HasLatLon) -> float:
    """Modelled round-trip time in ms between any two positions (GeoPoint, Location, City)."""
    return rtt_from_distance_ms(haversine_km(a, b))


class LatencyModel:
    """RTTs from a measured matrix where known, from the fitted model elsewhere.

    ``matrix`` maps ``(location_id, location_id)`` to a measured RTT in ms; one direction is enough.
    """

    def __init__(self, matrix: Mapping[tuple[str, str], float] | None = None) -> None:
        self._matrix: dict[tuple[str, str], float] = {}
        for (a, b), value in (matrix or {}).items():
            if not (value >= 0.0 and math.isfinite(value)):
                raise ValueError(f"latency matrix entry ({a}, {b}) = {value!r} is not a finite RTT")
            self._matrix[(a.lower(), b.lower())] = float(value)

    def __len__(self) -> int:
        return len(self._matrix)

    def rtt_ms(self, a: HasLatLon, b: HasLatLon) -> float:
        """Measured RTT when both ends are locations in the matrix, else the fitted model."""
        id_a = getattr(a, "id", None)
        id_b = getattr(b, "id", None)
        if isinstance(id_a, str) and isinstance(id_b, str) and self._matrix:
            key = (id_a.lower(), id_b.lower())
            found = self._matrix.get(key)
            if found is None:
                found = self._matrix.get((key[1], key[0]))
            if found is not None:
                return found
        return rtt_ms(a, b)


def nearest(point: HasLatLon, locations: Sequence[_L], *, model: LatencyModel | None = None) -> _L:
    """The location with the lowest RTT from ``point`` (first in order on ties)."""
    if not locations:
        raise ValueError("nearest() needs at least one location")
    measure = model.rtt_ms if model is not None else rtt_ms
    best = locations[0]
    best_ms = measure(point, best)
    for loc in locations[1:]:
        candidate_ms = measure(point, loc)
        if candidate_ms < best_ms:
            best, best_ms = loc, candidate_ms
    return best
