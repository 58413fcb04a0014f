"""GCRA, token bucket and the planet-wide share of a function's limit."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefn.routing import (
    DemandReport,
    Gcra,
    GlobalRateShare,
    LocationLeft,
    RateDecision,
    RoutingConfigError,
    SharesChanged,
    ShareTick,
    TokenBucket,
    retry_after_header,
)


def test_gcra_allows_a_burst_then_paces_at_the_rate() -> None:
    g = Gcra(rate_per_s=10.0, burst=3)
    assert [g.check("k", 0.0).allowed for _ in range(4)] == [True, True, True, False]
    denied = g.check("k", 0.0)
    assert denied == RateDecision(False, pytest.approx(0.1), 0)  # type: ignore[arg-type]
    assert not g.check("k", 0.099).allowed
    assert g.check("k", 0.1).allowed
    assert g.check("other", 0.1) == RateDecision(True, 0.0, 2)
    s = g.statistics()
    assert (s.allowed, s.denied, s.keys) == (5, 3, 2)
    g.check_invariants()


def test_gcra_cost_and_recovery() -> None:
    g = Gcra(rate_per_s=2.0, burst=4)
    assert g.check("k", 0.0, cost=4) == RateDecision(True, 0.0, 0)
    d = g.check("k", 0.0, cost=2)
    assert not d.allowed
    assert d.retry_after_s == pytest.approx(1.0)
    assert g.check("k", 1.0, cost=2).allowed


def test_gcra_evicts_least_recently_used_and_counts_limited_evictions() -> None:
    g = Gcra(rate_per_s=1.0, burst=1, max_keys=2)
    g.check("a", 0.0)
    g.check("b", 0.0)
    g.check("a", 0.5)  # denied, but refreshes a's recency
    g.check("c", 0.6)  # evicts b, still limited until t=1
    s = g.statistics()
    assert (s.keys, s.evicted, s.evicted_limited) == (2, 1, 1)
    assert g.check("b", 0.7).allowed  # b's debt was forgotten: the cost of bounded memory
    g.check_invariants()


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.5, 1_000.0),
    burst=st.integers(1, 20),
    gaps=st.lists(st.floats(0.0, 0.5), min_size=1, max_size=300),
    costs=st.lists(st.integers(1, 3), min_size=300, max_size=300),
)
def test_gcra_never_exceeds_rate_plus_burst(
    rate: float, burst: int, gaps: list[float], costs: list[int]
) -> None:
    """In every window [t_i, t_j] at most burst + rate * (t_j - t_i) units pass."""
    g = Gcra(rate_per_s=rate, burst=burst)
    now = 0.0
    passed: list[tuple[float, int]] = []
    for gap, cost in zip(gaps, costs, strict=False):
        now += gap
        if g.check("k", now, cost).allowed:
            passed.append((now, cost))
    for i in range(len(passed)):
        units = 0
        for j in range(i, len(passed)):
            units += passed[j][1]
            window = passed[j][0] - passed[i][0]
            assert units <= burst + rate * window + 1e-6, (i, j, units, window)


def test_retry_after_header_is_whole_seconds_at_least_one() -> None:
    assert retry_after_header(0.0) == "1"
    assert retry_after_header(0.2) == "1"
    assert retry_after_header(1.0) == "1"
    assert retry_after_header(1.01) == "2"


def test_token_bucket_take_refill_and_rate_change() -> None:
    b = TokenBucket(rate_per_s=2.0, capacity=2.0, now_s=0.0)
    assert b.take(0.0).allowed
    assert b.take(0.0).allowed
    d = b.take(0.0)
    assert not d.allowed
    assert d.retry_after_s == pytest.approx(0.5)
    assert b.take(0.5).allowed
    b.set_rate(0.0, 0.5)
    assert b.take(10.0).retry_after_s == math.inf
    b.set_rate(4.0, 10.0, capacity=1.0)
    assert b.take(10.25).allowed
    assert not b.take(10.25, n=2.0).allowed  # more than the capacity: never
    b.check_invariants()
    assert b.statistics().denied == 3


@pytest.mark.parametrize(
    ("factory", "key"),
    [
        (lambda: Gcra(rate_per_s=0.0, burst=1), "rate_per_s"),
        (lambda: Gcra(rate_per_s=1.0, burst=0), "burst"),
        (lambda: TokenBucket(rate_per_s=1.0, capacity=0.0, now_s=0.0), "capacity"),
        (lambda: GlobalRateShare(limit_per_s=-1.0), "requests_per_s"),
        (lambda: GlobalRateShare(limit_per_s=1.0, floor_fraction=2.0), "floor_fraction"),
        (
            lambda: GlobalRateShare(limit_per_s=1.0, locations=["a", "b"], max_locations=1),
            "max_locations",
        ),
    ],
)
def test_config_errors_name_the_setting(factory: object, key: str) -> None:
    with pytest.raises(RoutingConfigError, match=rf"\[limits\] {key}"):
        factory()  # type: ignore[operator]


def test_shares_follow_demand_with_a_floor() -> None:
    g = GlobalRateShare(limit_per_s=1_000.0, locations=["a", "b", "c", "d"], floor_fraction=0.04)
    [even] = g.handle(ShareTick(0.0))
    assert even.as_dict() == dict.fromkeys("abcd", 250.0)
    g.handle(DemandReport("a", 300.0, 1.0))
    g.handle(DemandReport("b", 100.0, 1.0))
    [changed] = g.handle(ShareTick(1.0))
    shares = changed.as_dict()
    # floor = 0.04 * 1000 / 4 = 10 each; the other 960 split 3:1 between a and b.
    assert shares == pytest.approx({"a": 730.0, "b": 250.0, "c": 10.0, "d": 10.0})
    assert g.handle(ShareTick(1.5)) == []  # nothing moved
    g.check_invariants()


def test_stale_demand_decays_and_leaving_rebalances() -> None:
    g = GlobalRateShare(limit_per_s=100.0, demand_ttl_s=5.0, ewma_alpha=0.5)
    g.handle(DemandReport("a", 80.0, 0.0))
    g.handle(DemandReport("b", 20.0, 0.0))
    g.handle(DemandReport("b", 60.0, 1.0))  # smoothed: 20 + 0.5 * 40 = 40
    [s] = g.handle(ShareTick(1.0))
    assert s.as_dict()["a"] == pytest.approx(2.5 + 95.0 * 80 / 120)
    [s] = g.handle(ShareTick(5.5))  # a's only report is older than 5 s: no demand
    assert s.as_dict() == pytest.approx({"a": 2.5, "b": 97.5})
    g.handle(LocationLeft("a"))
    [s] = g.handle(ShareTick(6.0))
    assert s == SharesChanged((("b", 100.0),))


def test_share_locations_are_bounded() -> None:
    g = GlobalRateShare(limit_per_s=10.0, max_locations=2)
    for loc in "abc":
        g.handle(DemandReport(loc, 1.0, 0.0))
    [s] = g.handle(ShareTick(0.0))
    assert set(s.as_dict()) == {"a", "b"}


@settings(max_examples=200, deadline=None)
@given(
    limit=st.floats(0.001, 1e7),
    floor=st.floats(0.0, 1.0),
    reports=st.lists(
        st.tuples(
            st.sampled_from("abcdefgh"),
            st.floats(allow_nan=True, allow_infinity=True),
            st.floats(0, 30),
        ),
        max_size=40,
    ),
)
def test_shares_always_sum_to_the_limit_and_respect_the_floor(
    limit: float, floor: float, reports: list[tuple[str, float, float]]
) -> None:
    g = GlobalRateShare(limit_per_s=limit, floor_fraction=floor, locations=["z"])
    for loc, demand, at in sorted(reports, key=lambda r: r[2]):
        g.handle(DemandReport(loc, demand, at))
    g.handle(ShareTick(30.0))
    shares = g.shares()
    assert math.fsum(shares.values()) == pytest.approx(limit, rel=1e-9)
    for share in shares.values():
        assert share >= floor * limit / len(shares) * (1 - 1e-9)
    g.check_invariants()
