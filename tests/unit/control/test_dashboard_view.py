"""The dashboard's pure view model (edgefn.control.dashboard_view) and its shipped assets."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefn.control.dashboard import SECURITY_HEADERS, DashboardAssets
from edgefn.control.dashboard_view import (
    HEALTH_STATES,
    MAX_LOCATIONS,
    MAX_TEXT,
    DashboardOptions,
    backdrop_svg,
    dashboard_view,
    location_health,
    location_view,
    project,
    rollout_view,
)

OPTS = DashboardOptions(stale_ms=4_000, unreachable_ms=10_000, width=1000, height=500)
NOW = 1_000_000


def _status(location: str = "fra", *, seen_ms: int = NOW - 500, **observed: Any) -> dict[str, Any]:
    """One entry of ControlService.status()["locations"], as the API serialises it."""
    return {
        "location": location,
        "region": "eu",
        "url": "http://127.0.0.1:1",
        "applied_generation": 3,
        "desired_generation": 3,
        "last_seen_ms": seen_ms,
        "load_errors": [],
        "converged": True,
        "observed": {
            "location": location,
            "generation": 3,
            "functions": {"hello": {"v2": {"requests": 7}, "v1": {"requests": 3}}},
            "lat": 50.1,
            "lon": 8.7,
            "resources": {"cpu_percent": 12.5, "capacity": 1.0, "hot": False},
            **observed,
        },
    }


def test_projection_corners_and_centre() -> None:
    """Equirectangular: (90, -180) is the top left, (-90, 180) the bottom right, (0, 0) the middle."""
    assert project(90, -180, 1000, 500) == (0.0, 0.0)
    assert project(-90, 180, 1000, 500) == (1000.0, 500.0)
    assert project(0, 0, 1000, 500) == (500.0, 250.0)
    assert project(50.1, 8.7, 1000, 500) == (524.17, 110.83)


@pytest.mark.parametrize(
    ("lat", "lon"),
    [
        (None, 0),
        (0, None),
        ("50", "8"),
        (True, 0),
        (math.nan, 0),
        (0, math.inf),
        (90.01, 0),
        (-90.5, 0),
        (0, 180.5),
        (0, -181),
    ],
)
def test_no_position_for_missing_or_invalid_coordinates(lat: object, lon: object) -> None:
    assert project(lat, lon, 1000, 500) is None


@given(st.floats(-90, 90), st.floats(-180, 180))
def test_projection_stays_on_the_map_and_inverts(lat: float, lon: float) -> None:
    at = project(lat, lon, 1000, 500)
    assert at is not None
    x, y = at
    assert 0 <= x <= 1000
    assert 0 <= y <= 500
    assert abs((x / 1000 * 360 - 180) - lon) < 0.01
    assert abs((90 - y / 500 * 180) - lat) < 0.01


@pytest.mark.parametrize(
    ("seen_ms", "errors", "hot", "capacity", "expected"),
    [
        (0, 0, False, 1.0, ("unknown", "unknown", None)),
        (NOW - 10_001, 0, False, 1.0, ("unreachable", "cut_off", 10_001)),
        (NOW - 10_000, 0, False, 1.0, ("stale", "late", 10_000)),
        (NOW - 4_001, 0, False, 1.0, ("stale", "late", 4_001)),
        (NOW - 4_000, 0, False, 1.0, ("healthy", "connected", 4_000)),
        (NOW - 100, 1, False, 1.0, ("degraded", "connected", 100)),
        (NOW - 100, 0, True, 1.0, ("degraded", "connected", 100)),
        (NOW - 100, 0, False, 0.5, ("degraded", "connected", 100)),
        (NOW + 50, 0, False, 1.0, ("healthy", "connected", 0)),  # a report "from the future"
        (NOW - 60_000, 3, True, 0.1, ("unreachable", "cut_off", 60_000)),  # silence wins
    ],
)
def test_health_rules_in_order(
    seen_ms: int, errors: int, hot: bool, capacity: float, expected: tuple[str, str, int | None]
) -> None:
    h = location_health(
        last_seen_ms=seen_ms,
        now_ms=NOW,
        load_errors=errors,
        hot=hot,
        capacity=capacity,
        options=OPTS,
    )
    assert (h.state, h.partition, h.last_seen_age_ms) == expected
    assert h.state in HEALTH_STATES


def test_location_view_of_a_healthy_location() -> None:
    view = location_view(_status(), NOW, OPTS)
    assert view["location"] == "fra"
    assert (view["x"], view["y"]) == (524.17, 110.83)
    assert (view["health"], view["partition"]) == ("healthy", "connected")
    assert view["versions"] == {"hello": ["v1", "v2"]}
    assert view["load"]["requests"] == 10
    assert view["load"]["cpu_percent"] == 12.5


def test_location_view_distrusts_what_a_node_reported() -> None:
    """Bad coordinates: no position (never a made-up one); bad numbers count as nothing."""
    hostile = _status(
        "x" * 1000,
        lat="50",
        lon=1e308 * 10,
        functions={"f": {"v": {"requests": -5}, "w": {"requests": "9"}, "z": None}},
        resources={"cpu_percent": math.nan, "capacity": "full", "hot": 1},
    )
    view = location_view(hostile, NOW, OPTS)
    assert len(view["location"]) == MAX_TEXT
    assert (view["x"], view["y"], view["lat"], view["lon"]) == (None, None, None, None)
    assert view["load"]["requests"] == 0
    assert view["load"]["cpu_percent"] is None
    assert view["load"]["capacity"] == 1.0
    assert view["health"] == "degraded"  # hot=1 is truthy: the node says it is hot


def test_location_view_without_observed_state() -> None:
    """The reconciler knows the location but its observed state is gone (e.g. a purged key)."""
    entry = {**_status(), "observed": None}
    view = location_view(entry, NOW, OPTS)
    assert (view["x"], view["versions"], view["load"]["requests"]) == (None, {}, 0)


def _function(status: str | None, stage: int = 1, stages: int = 3) -> dict[str, Any]:
    deployment = (
        None
        if status is None
        else {
            "deployment_id": "d1",
            "function": "hello",
            "version_id": "v2",
            "strategy": "canary",
            "status": status,
            "stage": stage,
            "stages": stages,
            "started_ms": 1,
        }
    )
    return {
        "function": "hello",
        "active": {"version_id": "v1", "sha256": "ab"},
        "previous": None,
        "deployment": deployment,
        "targets": ["fra", "nrt", "iad"],
        "converged": False,
        "waiting_for": ["iad"],
    }


@pytest.mark.parametrize(
    ("status", "stage", "stages", "progress"),
    [
        ("in_progress", 1, 3, 0.3333),
        ("in_progress", 0, 3, 0.0),
        ("in_progress", 5, 3, 1.0),
        ("in_progress", 1, 0, 0.0),
        ("completed", 3, 3, 1.0),
        ("rolled_back", 1, 3, 1.0),
        (None, 0, 0, 1.0),
    ],
)
def test_rollout_progress(status: str | None, stage: int, stages: int, progress: float) -> None:
    view = rollout_view(_function(status, stage, stages), {"fra": True, "nrt": True, "iad": False})
    assert view["progress"] == progress
    assert (view["targets"], view["targets_applied"]) == (3, 2)
    assert view["waiting_for"] == ["iad"]
    assert view["active"] == "v1"
    assert (view["deployment"] is None) == (status is None)


def test_dashboard_view_counts_health_and_bounds_locations() -> None:
    locations = [_status("a"), _status("b", seen_ms=NOW - 20_000), _status("c", seen_ms=0)]
    view = dashboard_view(
        {"locations": locations, "functions": [_function("in_progress")]}, now_ms=NOW, options=OPTS
    )
    assert [loc["health"] for loc in view["locations"]] == ["healthy", "unreachable", "unknown"]
    assert view["health"] == {
        "healthy": 1,
        "degraded": 0,
        "stale": 0,
        "unreachable": 1,
        "unknown": 1,
    }
    assert view["functions"][0]["targets_applied"] == 0  # fra, nrt, iad are not among a, b, c
    many = dashboard_view(
        {"locations": [_status(str(i)) for i in range(MAX_LOCATIONS + 5)]}, now_ms=NOW
    )
    assert len(many["locations"]) == MAX_LOCATIONS


def test_backdrop_is_svg_with_a_graticule_and_only_valid_points() -> None:
    svg = backdrop_svg([(0, 0), (90, -180), (math.nan, 0), (100, 0)], width=1000, height=500)
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{ns}line")) == 13 + 7  # every 30° of longitude and latitude
    (dots,) = root.findall(f"{ns}path")
    assert dots.get("d") == "M500.0 250.0h0M0.0 0.0h0"


def test_assets_are_self_contained() -> None:
    """Nothing fetched from elsewhere: no URL but this origin's, no inline script (CSP)."""
    assets = DashboardAssets.load(DashboardOptions())
    texts = {
        "index.html": assets.page.decode(),
        **{k: v.decode() for k, (_, v) in assets.assets.items()},
    }
    assert set(texts) == {"index.html", "dashboard.js", "dashboard.css", "world.svg"}
    for name, text in texts.items():
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)
        assert "@import" not in text
    html = texts["index.html"]
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/dashboard/dashboard.js" defer>']
    assert not re.findall(r"\son[a-z]+\s*=", html)  # no inline event handlers either
    assert "innerHTML" not in texts["dashboard.js"]  # API data goes in as text only
    assert "script-src 'self'" in SECURITY_HEADERS["content-security-policy"]
