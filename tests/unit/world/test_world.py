"""World model: datasets, regions, spread, latency fit, client parsing."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from edgefn.errors import UsageError
from edgefn.world import (
    CONTINENT_REGIONS,
    CONTINENTS,
    LOCAL_RTT_MS,
    REGIONS,
    GeoPoint,
    LatencyModel,
    cities,
    get_location,
    haversine_km,
    nearest,
    parse_client_location,
    pops,
    region_of,
    rtt_ms,
    spread,
)
from edgefn.world.fit import error_report, fit_constants, load_pairs

DATA = Path(__file__).parents[2] / "data" / "latency"


def test_pops_are_real_sorted_and_complete() -> None:
    locs = pops()
    assert 300 <= len(locs) <= 340
    ids = [loc.id for loc in locs]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    fra = get_location("FRA")
    assert fra.city == "Frankfurt"
    assert fra.region == "eu-west"
    assert fra.continent == "EU"
    assert fra.point == GeoPoint(fra.lat, fra.lon)
    assert {loc.continent for loc in locs} == set(CONTINENTS)
    assert all(loc.cost_per_hour > 0 and loc.carbon_g_per_kwh > 0 for loc in locs)


def test_carbon_differs_by_country() -> None:
    assert get_location("arn").carbon_g_per_kwh < get_location("waw").carbon_g_per_kwh


def test_get_location_unknown_suggests_close_matches() -> None:
    with pytest.raises(UsageError, match="unknown location 'frx'") as info:
        get_location("frx")
    assert "fra" in info.value.hint


def test_cities_cover_the_world() -> None:
    cs = cities()
    assert len(cs) >= 200
    assert cs[0].name == "Tokyo"
    assert all(a.population >= b.population for a, b in itertools.pairwise(cs))
    assert {c.continent for c in cs} == set(CONTINENTS)
    assert {c.region for c in cs} == set(REGIONS)
    lagos = next(c for c in cs if c.name == "Lagos")
    assert lagos.region == "af"
    assert lagos.utc_offset_h == 1


@pytest.mark.parametrize(
    ("lat", "lon", "region"),
    [
        (40.71, -74.01, "na-east"),
        (37.77, -122.42, "na-west"),
        (-23.55, -46.63, "sa"),
        (51.51, -0.13, "eu-west"),
        (36.72, -4.42, "eu-west"),  # Malaga, north of Gibraltar
        (35.77, -5.80, "af"),  # Tangier, south of it
        (52.23, 21.01, "eu-east"),
        (41.01, 28.98, "eu-east"),
        (30.04, 31.24, "af"),
        (21.49, 39.19, "me"),
        (25.20, 55.27, "me"),
        (28.61, 77.21, "as-south"),
        (35.68, 139.69, "as-east"),
        (-33.87, 151.21, "oc"),
        (21.31, -157.86, "na-west"),
    ],
)
def test_region_of(lat: float, lon: float, region: str) -> None:
    assert region_of(lat, lon) == region


def test_region_hierarchy_is_consistent() -> None:
    for continent, regions in CONTINENT_REGIONS.items():
        assert regions
        assert all(REGIONS[r][1] == continent for r in regions)
    assert sum(len(r) for r in CONTINENT_REGIONS.values()) == len(REGIONS)


def test_spread_covers_continents_then_spreads() -> None:
    six = spread(6)
    assert len({loc.continent for loc in six}) == 6
    assert spread(10)[:6] == six
    assert spread(10) == spread(10)
    everything = spread(len(pops()))
    assert sorted(loc.id for loc in everything) == [loc.id for loc in pops()]
    # Where people are: the first PoP is the one nearest the largest metro area, and adding PoPs
    # never increases the population-weighted distance to the nearest PoP.
    biggest = max(cities(), key=lambda c: c.population)
    assert spread(1)[0] == min(pops(), key=lambda p: (haversine_km(p, biggest), p.id))

    def weighted(n: int) -> float:
        chosen = spread(n)
        return sum(c.population * min(haversine_km(p, c) for p in chosen) for c in cities())

    costs = [weighted(n) for n in (6, 8, 12, 20)]
    assert costs == sorted(costs, reverse=True)
    assert costs[-1] < 0.5 * costs[0]


@pytest.mark.parametrize("n", [0, -1, 10_000])
def test_spread_rejects_bad_counts(n: int) -> None:
    with pytest.raises(UsageError, match="cannot spread"):
        spread(n)


def test_haversine_known_distance() -> None:
    # London - New York is about 5,570 km.
    d = haversine_km(GeoPoint(51.5074, -0.1278), GeoPoint(40.7128, -74.0060))
    assert 5540 < d < 5600
    assert haversine_km(GeoPoint(1.0, 2.0), GeoPoint(1.0, 2.0)) == 0.0


def test_rtt_model_shape() -> None:
    fra, ams, nrt = get_location("fra"), get_location("ams"), get_location("nrt")
    assert rtt_ms(fra, fra) == LOCAL_RTT_MS
    assert 0.5 <= LOCAL_RTT_MS <= 2.0
    assert rtt_ms(fra, ams) == rtt_ms(ams, fra)
    assert 3.0 < rtt_ms(fra, ams) < 20.0
    assert 120.0 < rtt_ms(fra, nrt) < 300.0
    # Never faster than light in fibre (200 km/ms one way).
    assert rtt_ms(fra, nrt) > 2 * haversine_km(fra, nrt) / 200.0


def test_rtt_model_error_on_measured_sample() -> None:
    """The shipped constants stay within the error measured on the full data set (0002)."""
    pairs = load_pairs(str(DATA / "servers.csv"), str(DATA / "pings.csv"))
    assert len(pairs) == 200
    report = error_report(pairs)
    assert report.median_abs_pct < 25.0
    assert report.p90_abs_pct < 70.0
    # Refitting on the sample lands near the shipped constants.
    c1, c2 = fit_constants(pairs)
    assert 0.012 < c1 < 0.02
    assert 0.0 < c2 < 0.5
    assert error_report(pairs, c1, c2).median_abs_pct < 25.0


def test_latency_model_prefers_measured_matrix() -> None:
    fra, ams, nrt = get_location("fra"), get_location("ams"), get_location("nrt")
    model = LatencyModel({("FRA", "ams"): 3.5})
    assert len(model) == 1
    assert model.rtt_ms(fra, ams) == 3.5
    assert model.rtt_ms(ams, fra) == 3.5
    assert model.rtt_ms(fra, nrt) == rtt_ms(fra, nrt)
    assert model.rtt_ms(GeoPoint(50.0, 8.6), ams) == rtt_ms(GeoPoint(50.0, 8.6), ams)


def test_latency_model_rejects_bad_entry() -> None:
    with pytest.raises(ValueError, match="not a finite RTT"):
        LatencyModel({("fra", "ams"): float("nan")})


def test_nearest() -> None:
    candidates = [get_location(i) for i in ("fra", "nrt", "gru")]
    assert nearest(parse_client_location("Tokyo"), candidates).id == "nrt"
    assert nearest(GeoPoint(-20.0, -45.0), candidates).id == "gru"
    # A measured matrix can make a farther location the nearest.
    model = LatencyModel({("fra", "fra"): 500.0, ("fra", "nrt"): 1.0})
    assert nearest(get_location("fra"), candidates, model=model).id == "nrt"
    with pytest.raises(ValueError, match="at least one"):
        nearest(GeoPoint(0.0, 0.0), [])


def test_parse_client_location_forms() -> None:
    assert parse_client_location("NRT") == get_location("nrt").point
    assert parse_client_location("sao paulo") == GeoPoint(-23.55, -46.63)
    assert parse_client_location(" 48.1, 11.6 ") == GeoPoint(48.1, 11.6)


@pytest.mark.parametrize(
    ("text", "match"),
    [("Atlantis", "unknown client location 'Atlantis'"), ("91,0", "latitude must be")],
)
def test_parse_client_location_errors(text: str, match: str) -> None:
    with pytest.raises(UsageError, match=match) as info:
        parse_client_location(text)
    assert "lat,lon" in info.value.hint
