"""LocalRateLimits: a location's share of a planet-wide limit, demand, and per-client GCRA."""

from __future__ import annotations

import pytest

from edgefn.routing import LocalRateLimits


def test_share_starts_even_across_the_locations_running_the_function() -> None:
    """Three locations run f with 30/s: this one's bucket holds a burst of 10 at first."""
    limits = LocalRateLimits("fra")
    members = lambda: ["fra", "ams", "lhr"]  # noqa: E731
    allowed = sum(limits.check("f", 30, "c", 0.0, members=members) is None for _ in range(20))
    assert allowed == 10
    denied = limits.check("f", 30, "c", 0.0, members=members)
    assert denied is not None
    assert denied.retry_after_s == pytest.approx(0.1)
    limits.check_invariants()


def test_no_limit_passes_and_never_asks_for_members() -> None:
    """limit 0 (no [limits] requests_per_s) is not tracked at all."""

    def members() -> list[str]:
        raise AssertionError("members asked for a function without a limit")

    limits = LocalRateLimits("fra")
    assert all(limits.check("f", 0, "c", 0.0, members=members) is None for _ in range(100))
    assert limits.statistics().functions_limited == 0


def test_rebalance_moves_the_share_to_where_the_demand_is() -> None:
    """All demand here, none elsewhere: after a rebalance this location gets most of the limit."""
    limits = LocalRateLimits("fra")
    members = lambda: ["fra", "ams"]  # noqa: E731
    for _ in range(100):
        limits.arrived("f")
        limits.check("f", 20, "c", 0.0, members=members)
    limits.rebalance(1.0, 1.0, [("ams", frozenset({"f"}), {"f": 0.0})])
    assert limits.demand_per_s() == {"f": 100.0}
    # 5 % floor of an even split each, the rest by demand: 0.5 + 19 = 19.5/s here.
    allowed = sum(limits.check("f", 20, "c", 2.0, members=members) is None for _ in range(40))
    assert allowed == 19
    limits.check_invariants()


def test_a_peer_not_running_the_function_does_not_count() -> None:
    """Demand a peer reports for a function it does not run is ignored."""
    limits = LocalRateLimits("fra")
    members = lambda: ["fra", "ams"]  # noqa: E731
    limits.check("f", 20, "c", 0.0, members=members)
    limits.rebalance(1.0, 1.0, [("ams", frozenset(), {"f": 1e6})])
    limits.rebalance(1.0, 2.0, [("ams", frozenset(), {"f": 1e6})])
    allowed = sum(limits.check("f", 20, "c", 3.0, members=members) is None for _ in range(40))
    assert allowed == 10


def test_per_client_limit_keys_by_function_and_client() -> None:
    """One client over its rate is denied; another client, or another function, is not."""
    limits = LocalRateLimits("fra", client_rate_per_s=1.0, client_burst=2, client_key_max_chars=4)
    members = lambda: ["fra"]  # noqa: E731
    results = [limits.check("f", 0, "10.0.0.1", 0.0, members=members) for _ in range(3)]
    assert [r is None for r in results] == [True, True, False]
    # The key is cut to 4 characters: "10.0.0.2" is the same client as "10.0.0.1" here.
    assert limits.check("f", 0, "10.0.0.2", 0.0, members=members) is not None
    assert limits.check("f", 0, "192.168.0.1", 0.0, members=members) is None
    assert limits.check("g", 0, "10.0.0.1", 0.0, members=members) is None
    assert limits.statistics().client_keys == 3


def test_at_most_max_functions_are_tracked() -> None:
    limits = LocalRateLimits("fra", max_functions=2)
    for name in ("a", "b", "c"):
        limits.check(name, 10, "k", 0.0, members=lambda: ["fra"])
    assert limits.statistics().functions_limited == 2
    limits.check_invariants()
