"""The pure chooser behind the anycast entry (no I/O: lives here because it is the entry's policy)."""

from __future__ import annotations

import pytest

from edgefn.errors import UsageError
from edgefn.planet._anycast_choice import (
    AnycastChooser,
    ConnectFailed,
    EntryLocation,
    HealthChanged,
    LocationsReplaced,
    ProbeResult,
    Routed,
    client_point,
    format_point,
)
from edgefn.world import GeoPoint

FRA = EntryLocation("fra", 50.0333, 8.5706, "http://fra")
AMS = EntryLocation("ams", 52.3086, 4.7639, "http://ams")
IAD = EntryLocation("iad", 38.9445, -77.4558, "http://iad")
PARIS = GeoPoint(48.86, 2.35)
MUNICH = GeoPoint(48.14, 11.58)


def chooser() -> AnycastChooser:
    return AnycastChooser([IAD, FRA, AMS], probe_failures_to_mark_down=2)


def test_ranking_is_by_modelled_rtt() -> None:
    assert [loc.id for loc in chooser().rank(MUNICH)] == ["fra", "ams", "iad"]
    assert [loc.id for loc in chooser().rank(GeoPoint(40.7, -74.0))][:1] == ["iad"]


def test_ties_break_by_id() -> None:
    twin = EntryLocation("aaa", FRA.lat, FRA.lon, "http://aaa")
    assert [loc.id for loc in AnycastChooser([FRA, twin]).rank(PARIS)] == ["aaa", "fra"]


def test_one_failed_probe_is_tolerated_two_mark_down_one_ok_marks_up() -> None:
    c = chooser()
    assert c.handle(ProbeResult("fra", False, 10)) == []
    c.check_invariants()
    assert c.rank(MUNICH)[0].id == "fra"
    assert c.handle(ProbeResult("fra", False, 20)) == [
        HealthChanged("fra", False, "2 health probes failed")
    ]
    c.check_invariants()
    assert c.rank(MUNICH)[0].id == "ams"
    assert c.handle(ProbeResult("fra", True, 30)) == [HealthChanged("fra", True, "health probe ok")]
    stats = c.statistics()
    assert (stats.healthy, stats.marked_down_total, stats.marked_up_total) == (3, 1, 1)


def test_a_connect_failure_marks_down_at_once_and_exclude_skips() -> None:
    c = chooser()
    assert c.handle(ConnectFailed("fra", 5)) == [HealthChanged("fra", False, "connection failed")]
    assert [loc.id for loc in c.rank(MUNICH, exclude=["ams"])] == ["iad"]
    assert c.handle(ConnectFailed("nowhere", 6)) == []  # Removed while in flight: ignored.


def test_replacing_the_table_keeps_health_of_unchanged_locations() -> None:
    c = chooser()
    c.handle(ConnectFailed("fra", 1))
    c.handle(ConnectFailed("ams", 1))
    moved = EntryLocation("ams", AMS.lat, AMS.lon, "http://ams-new")
    c.handle(LocationsReplaced((FRA, moved)))
    c.check_invariants()
    assert not c.is_healthy("fra")  # Same location: keeps its state.
    assert c.is_healthy("ams")  # New URL: a new location, presumed healthy.
    assert not c.is_healthy("iad")  # Gone.
    assert [h.location.id for h in c.locations()] == ["ams", "fra"]


def test_client_point_parses_or_defaults_and_formats() -> None:
    default = GeoPoint(1.0, 2.0)
    assert client_point(None, default=default) == default
    assert client_point("  ", default=default) == default
    assert client_point("48.86, 2.35", default=default) == PARIS
    assert format_point(GeoPoint(48.86, -2.3)) == "48.8600,-2.3000"
    with pytest.raises(UsageError, match="unknown client location"):
        client_point("Atlantis", default=default)


def test_quiet_healthy_locations_are_probed_at_the_idle_interval() -> None:
    """Every location is due at once; then a quiet healthy one every 2 s, one that served a
    request (within 10 s), failed a probe or changed health every 250 ms."""
    c = AnycastChooser(
        [IAD, FRA, AMS], probe_interval_ms=250, idle_probe_interval_ms=2_000, busy_window_ms=10_000
    )
    t = 100_000
    assert [loc.id for loc in c.due(t)] == ["ams", "fra", "iad"]
    for loc in ("ams", "fra", "iad"):
        c.handle(ProbeResult(loc, True, t))
    assert c.due(t + 250) == []
    c.handle(Routed("fra", t + 100))  # fra serves traffic
    c.handle(ProbeResult("iad", False, t + 200))  # iad failed one probe (still healthy)
    assert [loc.id for loc in c.due(t + 250)] == ["fra"]
    assert [loc.id for loc in c.due(t + 450)] == ["fra", "iad"]
    assert [loc.id for loc in c.due(t + 2_000)] == ["ams", "fra", "iad"]
    # Traffic ages out of the window: fra is quiet again; iad recovers.
    c.handle(ProbeResult("fra", True, t + 10_200))
    c.handle(ProbeResult("iad", True, t + 10_200))
    c.handle(ProbeResult("ams", True, t + 10_200))
    assert c.due(t + 10_500) == []
    assert [loc.id for loc in c.due(t + 12_200)] == ["ams", "fra", "iad"]
    for loc in ("ams", "fra", "iad"):
        c.handle(ProbeResult(loc, True, t + 12_200))
    # A marked-down location is watched, and stays so for the window after it comes back.
    c.handle(ConnectFailed("ams", t + 12_300))
    c.handle(ProbeResult("ams", True, t + 12_300))
    assert [loc.id for loc in c.due(t + 12_550)] == ["ams"]
    # A replaced table forgets the removed location and probes a new one at once.
    c.handle(LocationsReplaced((FRA, IAD, EntryLocation("nrt", 35.7, 139.7, "http://n"))))
    assert "nrt" in [loc.id for loc in c.due(t + 12_560)]
    assert "ams" not in [loc.id for loc in c.due(t + 30_000)]
