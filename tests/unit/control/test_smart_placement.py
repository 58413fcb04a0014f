"""Smart placement's choice (control/smart_placement.py): near the observed clients, within the
manifest's bounds, and stable under noise (the migration cost is its hysteresis)."""

from __future__ import annotations

import random

import pytest

from edgefn.control.smart_placement import SmartOptions, SmartSite, SmartSpec, choose
from edgefn.world import spread

SITES = tuple(SmartSite(loc.id, loc.region, loc.lat, loc.lon) for loc in spread(12))
# nrt as-east, mex na-east, ist eu-east, cai af, gru sa, syd oc, ccu as-south, hfe as-east,
# fih af, pit na-east, lux eu-west, amd as-south
SPEC = SmartSpec("f", min_replicas=1)


def test_the_function_goes_where_the_clients_are() -> None:
    c = choose(SPEC, SITES, {"eu-west": 1000})
    assert c.locations == ("lux",)
    assert c.observed
    assert c.demand == (("eu-west", 1.0),)
    assert "lux" in c.reason


def test_min_replicas_is_a_floor_and_more_replicas_must_pay_for_themselves() -> None:
    two = choose(SmartSpec("f", min_replicas=2), SITES, {"eu-west": 1000})
    assert len(two.locations) == 2
    assert "lux" in two.locations
    # Clients on three continents: one replica each saves far more than a replica costs.
    spread_out = choose(SPEC, SITES, {"eu-west": 300, "oc": 300, "sa": 300})
    assert {"lux", "syd", "gru"} <= set(spread_out.locations)


def test_regions_restrict_the_candidates() -> None:
    c = choose(SmartSpec("f", 1, regions=("na-east",)), SITES, {"eu-west": 1000})
    assert set(c.locations) <= {"mex", "pit"}
    with pytest.raises(ValueError, match="no location is in the placement's regions"):
        choose(SmartSpec("f", 1, regions=("me",)), SITES, {"eu-west": 1})


def test_max_latency_adds_replicas_for_far_clients() -> None:
    # 95% of the demand is in Europe; without a bound one replica there serves everyone best.
    demand = {"eu-west": 950, "oc": 50}
    assert choose(SPEC, SITES, demand, options=SmartOptions(replica_cost_ms=50)).locations == (
        "lux",
    )
    bounded = choose(SmartSpec("f", 1, max_latency_ms=80), SITES, demand, options=SmartOptions(50))
    assert "syd" in bounded.locations


def test_no_demand_yet_uses_the_planets_cities() -> None:
    c = choose(SPEC, SITES, {})
    assert not c.observed
    assert 1 <= len(c.locations) <= len(SITES)
    assert "no demand observed yet" in c.reason
    unknown = choose(SPEC, SITES, {"unknown": 50, "atlantis": 3})
    assert not unknown.observed


def test_noise_in_the_demand_does_not_move_it() -> None:
    """Fifty re-plans of noisy demand around one mix: the first placement stays."""
    rng = random.Random(7)
    current = choose(SPEC, SITES, {"eu-west": 600, "na-east": 400}).locations
    for _ in range(50):
        noisy = {"eu-west": 600 * rng.uniform(0.8, 1.2), "na-east": 400 * rng.uniform(0.8, 1.2)}
        c = choose(SPEC, SITES, noisy, current)
        assert c.locations == current, c.reason
        assert not c.changed


def test_a_shift_between_continents_moves_it_once() -> None:
    current = choose(SPEC, SITES, {"eu-west": 1000}).locations
    moves = []
    for hour in range(24):
        # Demand drifts from Europe to East Asia over a day, then stays there.
        share = min(1.0, hour / 12)
        c = choose(SPEC, SITES, {"eu-west": 1000 * (1 - share), "as-east": 1000 * share}, current)
        if c.changed:
            moves.append(c.locations)
            current = c.locations
    assert moves, "the placement never followed the clients"
    assert len(moves) == len(set(moves)), f"went back and forth: {moves}"
    assert set(current) & {"nrt", "hfe"}
    assert "lux" not in current


def test_the_migration_cost_is_what_holds_a_placement() -> None:
    current = ("lux",)
    demand = {"eu-west": 700, "eu-east": 300}
    free = choose(SPEC, SITES, demand, current, SmartOptions(migration_cost_ms=0.0))
    held = choose(SPEC, SITES, demand, current, SmartOptions(migration_cost_ms=1000.0))
    assert held.locations == current
    assert free.mean_rtt_ms <= held.mean_rtt_ms


def test_client_cells_place_the_replica_at_the_clients_not_the_regions_centre() -> None:
    """East Asia as a region is spread from Japan to Indonesia; the clients are in Tokyo."""
    tokyo = {"36,140": 500, "35,140": 300}
    c = choose(SPEC, SITES, tokyo, options=SmartOptions(replica_cost_ms=50))
    assert c.locations == ("nrt",)
    assert c.demand == (("as-east", 1.0),)
    # Cells win over regions; malformed keys are ignored, as an unknown region is.
    mixed = choose(
        SPEC, SITES, {**tokyo, "eu-west": 10_000, "99,0": 5, "x,y": 3}, options=SmartOptions(50)
    )
    assert mixed.locations == ("nrt",)


def test_the_demand_window_counts_cells_over_the_last_minutes() -> None:
    from edgefn.control.placement_driver import DemandWindow
    from edgefn.observe.rollup import Accumulator

    now = [1_000_000]
    window = DemandWindow(window_s=300, clock=lambda: now[0])
    acc = Accumulator(location="nrt", epoch="e", start_ms=0)
    for _ in range(3):
        acc.record("f", "v1", 200, "as-east", 1.0, demand_cell="36,140")
    acc.record("g", "v1", 200, "eu-west", 1.0, demand_cell="49,2")
    rollup = acc.cut(5_000)
    assert rollup is not None
    window.add(rollup)
    assert window.demand("f") == {"36,140": 3.0}
    now[0] += 120_000
    window.add(rollup)
    assert window.demand("f") == {"36,140": 6.0}
    now[0] += 250_000  # the first rollup is out of the window, the second is not
    assert window.demand("f") == {"36,140": 3.0}
    assert window.demand("g") == {"49,2": 1.0}
    now[0] += 600_000
    assert window.demand("f") == {}
