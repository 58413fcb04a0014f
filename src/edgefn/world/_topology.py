"""User-supplied topologies (TOML) and client positions given on the command line.

A topology file lists locations::

    [[locations]]
    id = "fra"                       # alone: the built-in PoP with this IATA code

    [[locations]]
    id = "lab1"                      # a custom location needs city, lat and lon
    city = "Lab"
    lat = 48.1
    lon = 11.6
    country = "Germany"              # optional, picks the carbon intensity
    region = "eu-west"               # optional, else derived from lat/lon
    capacity = 50                    # optional overrides, also allowed with built-in ids
    cost_per_hour = 0.2
    carbon_g_per_kwh = 100
    thermal_soft_c = 70              # its thermal budget: throttled from 70 °C, at the floor
    thermal_hard_c = 85              #   from 85 °C (default 80 and 95)

Every error names the file and the key (``locations[2].lat``) and says what to write instead.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from pathlib import Path
from typing import Any

from edgefn.errors import ConfigError, UsageError
from edgefn.world._cities import cities
from edgefn.world._geo import REGIONS, GeoPoint
from edgefn.world._locations import Location, make_location, pops

__all__ = ["load_topology", "parse_client_location"]

_MAX_LOCATIONS = 10_000
_ALLOWED_KEYS = frozenset(
    {"id", "city", "country", "lat", "lon", "region", "capacity", "cost_per_hour",
     "carbon_g_per_kwh", "thermal_soft_c", "thermal_hard_c"}
)  # fmt: skip
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_LATLON_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*$")


def parse_client_location(text: str) -> GeoPoint:
    """A client position from a PoP code ("NRT"), a city name ("Lagos") or "lat,lon"."""
    forms = 'a PoP IATA code ("fra"), a city name ("Sao Paulo") or "lat,lon" ("48.1,11.6")'
    m = _LATLON_RE.match(text)
    if m:
        lat, lon = float(m.group(1)), float(m.group(2))
        if -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0:
            return GeoPoint(lat, lon)
        raise UsageError(
            f"client location {text!r}: latitude must be in [-90, 90] and longitude in [-180, 180]",
            hint=f"give {forms}",
        )
    key = text.strip().lower()
    for loc in pops():
        if loc.id == key:
            return loc.point
    for city in cities():
        if city.name.lower() == key:
            return city.point
    raise UsageError(f"unknown client location {text!r}", hint=f"give {forms}")


def load_topology(path: str | Path) -> tuple[Location, ...]:
    """Read a topology TOML file; raises ConfigError naming the file and key."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("file not found", path=str(p), hint="check the path") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read: {err}", path=str(p)) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"not valid TOML: {err}", path=str(p), hint="fix the syntax") from None
    entries = data.get("locations")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(
            "no [[locations]] entries",
            path=str(p),
            key="locations",
            hint='add at least one [[locations]] table, for example id = "fra"',
        )
    if len(entries) > _MAX_LOCATIONS:
        raise ConfigError(f"more than {_MAX_LOCATIONS} locations", path=str(p), key="locations")
    out: list[Location] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        loc = _parse_entry(str(p), f"locations[{index}]", entry)
        if loc.id in seen:
            raise ConfigError(
                f"duplicate location id {loc.id!r}",
                path=str(p),
                key=f"locations[{index}].id",
                hint="give every location a distinct id",
            )
        seen.add(loc.id)
        out.append(loc)
    return tuple(out)


def _parse_entry(path: str, key: str, entry: Any) -> Location:
    if not isinstance(entry, dict):
        raise ConfigError("must be a table", path=path, key=key, hint="use [[locations]]")
    unknown = sorted(set(entry) - _ALLOWED_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r}",
            path=path,
            key=f"{key}.{unknown[0]}",
            hint=f"allowed keys: {', '.join(sorted(_ALLOWED_KEYS))}",
        )
    raw_id = entry.get("id")
    if not isinstance(raw_id, str) or not _ID_RE.match(raw_id.lower()):
        raise ConfigError(
            f"id must be a short lowercase name, got {raw_id!r}",
            path=path,
            key=f"{key}.id",
            hint='use letters, digits, "-" or "_" (an IATA code like "fra" takes a built-in PoP)',
        )
    loc = _base_location(path, key, raw_id.lower(), entry)
    return _apply_overrides(path, key, loc, entry)


def _base_location(path: str, key: str, id: str, entry: dict[str, Any]) -> Location:
    builtin = {loc.id: loc for loc in pops()}.get(id)
    if builtin is not None and not {"lat", "lon"} & set(entry):
        return builtin
    for field in ("city", "lat", "lon"):
        if field not in entry:
            raise ConfigError(
                f"missing {field!r} for custom location {id!r}",
                path=path,
                key=f"{key}.{field}",
                hint="a location that is not a built-in PoP needs city, lat and lon",
            )
    city = _expect_str(path, f"{key}.city", entry["city"])
    lat = _expect_number(path, f"{key}.lat", entry["lat"], -90.0, 90.0)
    lon = _expect_number(path, f"{key}.lon", entry["lon"], -180.0, 180.0)
    country = _expect_str(path, f"{key}.country", entry.get("country", ""))
    region = entry.get("region")
    if region is not None and region not in REGIONS:
        raise ConfigError(
            f"unknown region {region!r}",
            path=path,
            key=f"{key}.region",
            hint=f"use one of {', '.join(sorted(REGIONS))} or leave it out",
        )
    return make_location(id, city, country, lat, lon, region)


def _apply_overrides(path: str, key: str, loc: Location, entry: dict[str, Any]) -> Location:
    changes: dict[str, Any] = {}
    if "capacity" in entry:
        cap = entry["capacity"]
        if not isinstance(cap, int) or isinstance(cap, bool) or not 0 <= cap <= 10**9:
            raise ConfigError(
                f"capacity must be a whole number >= 0, got {cap!r}",
                path=path,
                key=f"{key}.capacity",
            )
        changes["capacity"] = cap
    for field in ("cost_per_hour", "carbon_g_per_kwh"):
        if field in entry:
            changes[field] = _expect_number(path, f"{key}.{field}", entry[field], 0.0, 1e9)
    for field in ("thermal_soft_c", "thermal_hard_c"):
        if field in entry:
            changes[field] = _expect_number(path, f"{key}.{field}", entry[field], -50.0, 150.0)
    soft = changes.get("thermal_soft_c", loc.thermal_soft_c)
    hard = changes.get("thermal_hard_c", loc.thermal_hard_c)
    if not soft < hard:
        raise ConfigError(
            f"thermal_soft_c ({soft:g}) must be below thermal_hard_c ({hard:g})",
            path=path,
            key=f"{key}.thermal_soft_c",
            hint="throttling starts at thermal_soft_c and reaches its floor at thermal_hard_c, "
            "e.g. 70 and 85",
        )
    return dataclasses.replace(loc, **changes) if changes else loc


def _expect_str(path: str, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"must be a string, got {value!r}", path=path, key=key)
    return value


def _expect_number(path: str, key: str, value: Any, low: float, high: float) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or not low <= float(value) <= high:
        raise ConfigError(
            f"must be a number in [{low:g}, {high:g}], got {value!r}", path=path, key=key
        )
    return float(value)
