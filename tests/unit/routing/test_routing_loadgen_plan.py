"""Load generator plan and summary: population-weighted open-loop schedule, per-region stats."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass

import pytest

from edgefn.errors import UsageError
from edgefn.routing import (
    LoadResult,
    LoadSummary,
    PlannedRequest,
    percentile,
    plan_arrivals,
    select_clients,
)


@dataclass(frozen=True)
class FakeCity:
    name: str
    population: int
    region: str


CITIES = [FakeCity("Big", 3_000, "eu"), FakeCity("Small", 1_000, "us"), FakeCity("Empty", 0, "af")]


def test_poisson_schedule_rate_weights_and_order() -> None:
    plan = plan_arrivals(rps=200.0, duration_s=20.0, rng=random.Random(5), clients=CITIES)
    assert 3_700 < len(plan) < 4_300  # 4000 expected, sd 63
    times = [r.send_at_s for r in plan]
    assert times == sorted(times)
    assert times[0] >= 0.0
    assert times[-1] < 20.0
    cities = Counter(r.client_city for r in plan)
    assert set(cities) == {"Big", "Small"}  # a city without population sends nothing
    assert 0.72 < cities["Big"] / len(plan) < 0.78
    assert all(r.region == ("eu" if r.client_city == "Big" else "us") for r in plan)


def test_same_seed_same_schedule_and_uniform_spacing() -> None:
    a = plan_arrivals(rps=10.0, duration_s=2.0, rng=random.Random(1), clients=CITIES)
    b = plan_arrivals(rps=10.0, duration_s=2.0, rng=random.Random(1), clients=CITIES)
    assert a == b
    u = plan_arrivals(
        rps=4.0, duration_s=1.0, rng=random.Random(1), clients=CITIES, process="uniform"
    )
    assert [r.send_at_s for r in u] == [0.0, 0.25, 0.5, 0.75]
    assert isinstance(u[0], PlannedRequest)


def test_world_cities_are_the_default() -> None:
    plan = plan_arrivals(rps=50.0, duration_s=2.0, rng=random.Random(2))
    assert plan
    regions = {r.region for r in plan}
    assert regions <= {
        "af",
        "as-east",
        "as-south",
        "eu-east",
        "eu-west",
        "me",
        "na-east",
        "na-west",
        "oc",
        "sa",
    }


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rps": 0.0}, "--rps"),
        ({"rps": math.nan}, "--rps"),
        ({"duration_s": -1.0}, "--duration"),
        ({"rps": 1e6, "duration_s": 10.0}, "more than the"),
        ({"process": "bursty"}, "arrival process"),
        ({"clients": [FakeCity("Empty", 0, "af")]}, "population"),
    ],
)
def test_bad_arguments_are_usage_errors(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {
        "rps": 10.0,
        "duration_s": 1.0,
        "rng": random.Random(0),
        "clients": CITIES,
    }
    args.update(kwargs)
    with pytest.raises(UsageError, match=match) as err:
        plan_arrivals(**args)  # type: ignore[arg-type]
    assert err.value.hint


def test_select_clients() -> None:
    assert select_clients("world", CITIES) == CITIES
    assert select_clients(" small , BIG,small", CITIES) == [CITIES[1], CITIES[0]]
    with pytest.raises(UsageError, match="unknown city 'Smal'") as err:
        select_clients("Smal", CITIES)
    assert "did you mean Small" in err.value.hint
    tokyo = select_clients("tokyo")
    assert [c.name for c in tokyo] == ["Tokyo"]


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_summary_per_region_status_and_served_by() -> None:
    s = LoadSummary()
    for i in range(100):
        s.add(LoadResult("eu", "Big", 200, float(i + 1), served_by="fra"))
    s.add(LoadResult("us", "Small", 503, 5.0, served_by="iad"))
    s.add(LoadResult("us", "Small", 0, math.inf))
    s.add(LoadResult("us", "Small", 200, 30.0, served_by="fra"))
    out = s.to_json()
    assert out["requests"] == 103
    assert out["status"] == {"0": 1, "200": 101, "503": 1}
    assert out["served_by"] == {"fra": 101, "iad": 1}
    eu = out["regions"]["eu"]
    assert (eu["requests"], eu["failed"], eu["p50_ms"], eu["p99_ms"]) == (100, 0, 50.0, 99.0)
    assert eu["mean_ms"] == pytest.approx(50.5)
    us = out["regions"]["us"]
    assert (us["requests"], us["failed"], us["p50_ms"]) == (3, 2, 5.0)
    assert us["failed_fraction"] == pytest.approx(2 / 3)
    assert out["overall"]["failed"] == 2
    assert out["truncated"] is False


def test_summary_bounds_its_samples() -> None:
    s = LoadSummary(max_samples=2)
    for latency in (1.0, 2.0, 3.0):
        s.add(LoadResult("eu", "Big", 200, latency))
    out = s.to_json()
    assert out["requests"] == 3
    assert out["overall"]["p99_ms"] == 2.0
    assert out["truncated"] is True
