"""What the dashboard shows, computed from ``ControlService.status()``. Pure: time arrives as data.

Rules (docs/design/0022-dashboard.md).

- Health of a location, as the core sees it, from the age of its last observed-state report
  (nodes report every second) and what that report said, first rule that applies:
  ``unknown`` (never reported), ``unreachable`` (silent for more than ``unreachable_ms``),
  ``stale`` (silent for more than ``stale_ms``), ``degraded`` (reports load errors, or runs hot /
  below full admission capacity), ``healthy``. The core cannot tell a partition from a crash: both
  are silence, so ``partition`` says only what the core knows: ``connected``, ``late`` (stale),
  ``cut_off`` (unreachable) or ``unknown``.
- Position: the latitude and longitude a node reports (its entry of the planet's locations
  file) drawn in an equirectangular projection, ``x = (lon + 180) / 360 * width`` and
  ``y = (90 - lat) / 180 * height``. A position that is missing, not finite or out of range is
  no position (``x`` and ``y`` null): the page lists such a location beside the map, never at a
  made-up place.
- Rollout progress of a function: its current deployment's stage out of its stages (a finished
  deployment is 1.0) and, over its target locations, the share that applied the desired state.
- Every list is bounded (``MAX_LOCATIONS`` locations, ``MAX_VERSIONS_SHOWN`` versions per function
  and location, ``MAX_FUNCTIONS`` functions) and every string from a node cut to ``MAX_TEXT``.

:func:`backdrop_svg` draws the static background of the map (a graticule and one dot per
built-in city and point of presence) once: it holds no planet data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "HEALTH_STATES",
    "MAX_FUNCTIONS",
    "MAX_LOCATIONS",
    "DashboardOptions",
    "Health",
    "backdrop_svg",
    "dashboard_view",
    "location_health",
    "location_view",
    "project",
    "rollout_view",
]

HEALTH_STATES: Final = ("healthy", "degraded", "stale", "unreachable", "unknown")
MAX_LOCATIONS: Final = 1024
MAX_FUNCTIONS: Final = 256
MAX_VERSIONS_SHOWN: Final = 8
MAX_TEXT: Final = 200


@dataclass(frozen=True, slots=True)
class DashboardOptions:
    """Thresholds and the map's size in SVG user units (2:1, as the projection is)."""

    stale_ms: int = 4_000
    unreachable_ms: int = 10_000
    width: int = 1000
    height: int = 500

    def __post_init__(self) -> None:
        assert 0 < self.stale_ms < self.unreachable_ms
        assert self.width > 0
        assert self.height > 0


@dataclass(frozen=True, slots=True)
class Health:
    state: str
    partition: str
    last_seen_age_ms: int | None


def project(lat: object, lon: object, width: float, height: float) -> tuple[float, float] | None:
    """``(x, y)`` of a position in the equirectangular map, or None for no valid position."""
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        return None
    if isinstance(lat, bool) or isinstance(lon, bool):
        return None
    if not (math.isfinite(lat) and math.isfinite(lon)):
        return None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return None
    x = (lon + 180.0) / 360.0 * width
    y = (90.0 - lat) / 180.0 * height
    return round(x, 2), round(y, 2)


def location_health(
    *,
    last_seen_ms: int,
    now_ms: int,
    load_errors: int,
    hot: bool,
    capacity: float,
    options: DashboardOptions,
) -> Health:
    """The health and partition state of one location (see the module's rules)."""
    if last_seen_ms <= 0:
        return Health("unknown", "unknown", None)
    age = max(0, now_ms - last_seen_ms)
    if age > options.unreachable_ms:
        return Health("unreachable", "cut_off", age)
    if age > options.stale_ms:
        return Health("stale", "late", age)
    if load_errors or hot or capacity < 1.0:
        return Health("degraded", "connected", age)
    return Health("healthy", "connected", age)


def _text(value: object) -> str:
    return str(value)[:MAX_TEXT] if value is not None else ""


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _versions(observed: Mapping[str, Any]) -> tuple[dict[str, list[str]], int]:
    """Function -> version ids served there, and the requests counted over all of them."""
    out: dict[str, list[str]] = {}
    requests = 0
    functions = observed.get("functions") or {}
    for fn in sorted(functions)[:MAX_FUNCTIONS]:
        versions = functions[fn] or {}
        out[_text(fn)] = [_text(v) for v in sorted(versions)[:MAX_VERSIONS_SHOWN]]
        for stats in versions.values():
            n = stats.get("requests", 0) if isinstance(stats, Mapping) else 0
            requests += n if isinstance(n, int) and n > 0 else 0
    return out, requests


def _load(resources: Mapping[str, Any] | None, requests: int) -> dict[str, Any]:
    r = resources or {}
    capacity = _number(r.get("capacity", 1.0))
    return {
        "cpu_percent": _number(r.get("cpu_percent")),
        "rss_mb": _number(r.get("rss_mb")),
        "open_sockets": _number(r.get("open_sockets")),
        "capacity": 1.0 if capacity is None else capacity,
        "hot": bool(r.get("hot", False)),
        "requests": requests,
    }


def location_view(
    status: Mapping[str, Any], now_ms: int, options: DashboardOptions
) -> dict[str, Any]:
    """One entry of ``/v1/status``'s ``locations`` as the map draws it."""
    observed = status.get("observed") or {}
    versions, requests = _versions(observed)
    load = _load(observed.get("resources"), requests)
    load_errors = status.get("load_errors") or ()
    health = location_health(
        last_seen_ms=int(status.get("last_seen_ms") or 0),
        now_ms=now_ms,
        load_errors=len(load_errors),
        hot=load["hot"],
        capacity=load["capacity"],
        options=options,
    )
    lat, lon = observed.get("lat"), observed.get("lon")
    at = project(lat, lon, options.width, options.height)
    return {
        "location": _text(status.get("location")),
        "region": _text(status.get("region")),
        "lat": lat if at else None,
        "lon": lon if at else None,
        "x": at[0] if at else None,
        "y": at[1] if at else None,
        "health": health.state,
        "partition": health.partition,
        "last_seen_age_ms": health.last_seen_age_ms,
        "converged": bool(status.get("converged")),
        "applied_generation": int(status.get("applied_generation") or 0),
        "desired_generation": int(status.get("desired_generation") or 0),
        "versions": versions,
        "load": load,
        "load_errors": [[_text(a), _text(b)] for a, b in list(load_errors)[:MAX_VERSIONS_SHOWN]],
    }


def _short(version: Mapping[str, Any] | None) -> str | None:
    return _text(version.get("version_id")) if version else None


def rollout_view(function: Mapping[str, Any], applied: Mapping[str, bool]) -> dict[str, Any]:
    """One entry of ``/v1/status``'s ``functions``: versions and rollout progress.

    ``applied`` maps a location to whether it applied its desired state (``converged``).
    """
    deployment = function.get("deployment") or None
    stage = stages = 0
    progress = 1.0
    if deployment:
        stage, stages = int(deployment.get("stage") or 0), int(deployment.get("stages") or 0)
        if deployment.get("status") == "in_progress":
            progress = min(1.0, stage / stages) if stages > 0 else 0.0
    targets = [_text(t) for t in function.get("targets") or ()][:MAX_LOCATIONS]
    done = sum(1 for t in targets if applied.get(t, False))
    return {
        "function": _text(function.get("function")),
        "active": _short(function.get("active")),
        "previous": _short(function.get("previous")),
        "deployment": None
        if not deployment
        else {
            "id": _text(deployment.get("deployment_id")),
            "version": _text(deployment.get("version_id")),
            "strategy": _text(deployment.get("strategy")),
            "status": _text(deployment.get("status")),
            "stage": stage,
            "stages": stages,
            "reason": _text(deployment.get("reason")),
        },
        "progress": round(progress, 4),
        "targets": len(targets),
        "targets_applied": done,
        "converged": bool(function.get("converged")),
        "waiting_for": [_text(w) for w in function.get("waiting_for") or ()][:MAX_LOCATIONS],
    }


def dashboard_view(
    status: Mapping[str, Any], *, now_ms: int, options: DashboardOptions | None = None
) -> dict[str, Any]:
    """The body of ``GET /v1/dashboard``: the map, the rollouts and a health summary."""
    opts = options or DashboardOptions()
    locations = [
        location_view(loc, now_ms, opts)
        for loc in list(status.get("locations") or ())[:MAX_LOCATIONS]
    ]
    applied = {loc["location"]: loc["converged"] for loc in locations}
    functions = [
        rollout_view(fn, applied) for fn in list(status.get("functions") or ())[:MAX_FUNCTIONS]
    ]
    summary = dict.fromkeys(HEALTH_STATES, 0)
    for loc in locations:
        summary[loc["health"]] += 1
    return {
        "now_ms": now_ms,
        "map": {"width": opts.width, "height": opts.height, "projection": "equirectangular"},
        "thresholds": {"stale_ms": opts.stale_ms, "unreachable_ms": opts.unreachable_ms},
        "health": summary,
        "locations": locations,
        "functions": functions,
    }


def _graticule(width: int, height: int, step_deg: int) -> Iterable[str]:
    for lon in range(-180, 181, step_deg):
        x = (lon + 180) / 360 * width
        yield f'<line class="grid" x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}"/>'
    for lat in range(-90, 91, step_deg):
        y = (90 - lat) / 180 * height
        yield f'<line class="grid" x1="0" y1="{y:.1f}" x2="{width}" y2="{y:.1f}"/>'


def backdrop_svg(
    points: Sequence[tuple[float, float]], *, width: int = 1000, height: int = 500
) -> str:
    """The map's background: a 30° graticule and a dot per ``(lat, lon)`` (cities, PoPs)."""
    dots = []
    for lat, lon in points:
        at = project(lat, lon, width, height)
        if at is not None:
            dots.append(f"M{at[0]:.1f} {at[1]:.1f}h0")
    return "".join(
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}">',
            "<style>.grid{stroke:#2a3442;stroke-width:1}"
            ".land{stroke:#3d5a73;stroke-width:5;stroke-linecap:round;fill:none}</style>",
            f'<rect width="{width}" height="{height}" fill="#0f1722"/>',
            *_graticule(width, height, 30),
            f'<path class="land" d="{"".join(dots)}"/>',
            "</svg>",
        )
    )
