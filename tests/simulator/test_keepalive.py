"""Unit tests of the keep-alive policies (fixed TTL and the hybrid histogram policy)."""

from __future__ import annotations

import pytest

from edgefn.runtime.keepalive import (
    FixedKeepAlive,
    HybridHistogramPolicy,
    KeepAliveDecision,
    is_warm,
)

MIN = 60_000


def _invoke_with_idle(policy: HybridHistogramPolicy, fn: str, idles_ms: list[int]) -> int:
    """Run invocations of ``fn`` separated by the given idle times; return the clock."""
    now = 0
    policy.on_invocation_start(fn, now)
    policy.on_invocation_end(fn, now + 100)
    now += 100
    for idle in idles_ms:
        now += idle
        policy.on_invocation_start(fn, now)
        policy.on_invocation_end(fn, now + 100)
        now += 100
        policy.check_invariants()
    return now


def test_is_warm_without_prewarm_is_a_ttl() -> None:
    d = KeepAliveDecision(prewarm_after_ms=0, keep_alive_ms=1000)
    assert is_warm(d, 0)
    assert is_warm(d, 1000)
    assert not is_warm(d, 1001)


def test_is_warm_with_prewarm_is_a_window() -> None:
    d = KeepAliveDecision(prewarm_after_ms=500, keep_alive_ms=1000)
    assert not is_warm(d, 100)
    assert is_warm(d, 500)
    assert is_warm(d, 1500)
    assert not is_warm(d, 1501)


def test_fixed_policy_always_returns_its_ttl() -> None:
    p = FixedKeepAlive(keep_alive_ms=1234)
    p.on_invocation_start("f", 0)
    p.on_invocation_end("f", 10)
    assert p.decision("f", 10) == KeepAliveDecision(0, 1234)
    assert p.statistics().decisions_fallback == 1
    p.check_invariants()


def test_fixed_policy_rejects_negative_ttl() -> None:
    with pytest.raises(ValueError, match="keep_alive_ms"):
        FixedKeepAlive(keep_alive_ms=-1)


def test_decision_rejects_negative_windows() -> None:
    with pytest.raises(AssertionError):
        KeepAliveDecision(prewarm_after_ms=-1, keep_alive_ms=0)


def test_hybrid_falls_back_to_range_ttl_without_history() -> None:
    p = HybridHistogramPolicy()
    assert p.decision("new", 0) == KeepAliveDecision(0, 4 * 3_600_000)
    assert p.statistics().decisions_fallback == 1


def test_hybrid_learns_a_periodic_function() -> None:
    """A function idle ~30 min every time is pre-warmed just before minute 30 and kept past it."""
    p = HybridHistogramPolicy()
    _invoke_with_idle(p, "cron", [30 * MIN + 5_000] * 50)
    d = p.decision("cron", 0)
    assert 25 * MIN <= d.prewarm_after_ms <= 30 * MIN
    assert is_warm(d, 30 * MIN + 5_000)
    assert not is_warm(d, 5 * MIN)
    # The window is far shorter than the fixed fallback: that is where the memory saving comes from.
    assert d.keep_alive_ms < 15 * MIN
    assert p.statistics().decisions_histogram == 1


def test_hybrid_short_idles_keep_loaded_right_away() -> None:
    p = HybridHistogramPolicy()
    _invoke_with_idle(p, "busy", [10_000] * 30)
    d = p.decision("busy", 0)
    assert d.prewarm_after_ms == 0
    assert MIN <= d.keep_alive_ms <= 2 * MIN


def test_hybrid_flat_histogram_is_not_representative() -> None:
    """Idle times spread evenly over the range give a low CV: use the fixed fallback."""
    p = HybridHistogramPolicy(fallback_keep_alive_ms=20 * MIN)
    _invoke_with_idle(p, "spread", [i * MIN + 1 for i in range(240)])
    assert p.decision("spread", 0) == KeepAliveDecision(0, 20 * MIN)


def test_hybrid_out_of_bounds_idles_use_the_forecast() -> None:
    p = HybridHistogramPolicy()
    _invoke_with_idle(p, "daily", [6 * 3_600_000] * 20)
    d = p.decision("daily", 0)
    assert d.prewarm_after_ms == int(6 * 3_600_000 * 0.9)
    assert is_warm(d, 6 * 3_600_000)
    assert p.statistics().decisions_forecast == 1


def test_hybrid_overlapping_invocations_count_one_idle_period() -> None:
    """Starts while another invocation is in flight are not idle periods."""
    p = HybridHistogramPolicy(min_samples=1, cv_threshold=0.0)
    p.on_invocation_start("f", 0)
    p.on_invocation_start("f", 10)
    p.on_invocation_end("f", 50)
    p.on_invocation_start("f", 55)  # the second invocation is still running
    p.on_invocation_end("f", 60)
    p.on_invocation_end("f", 70)
    p.on_invocation_start("f", 70 + 2 * MIN)  # the only idle period: 2 min
    p.check_invariants()
    d = p.decision("f", 0)
    assert d.prewarm_after_ms == int(2 * MIN * 0.9)
    assert is_warm(d, 2 * MIN)


def test_hybrid_memory_is_bounded() -> None:
    p = HybridHistogramPolicy(max_functions=3)
    for i in range(10):
        p.on_invocation_start(f"f{i}", i)
    stats = p.statistics()
    assert stats.functions_tracked == 3
    assert stats.functions_forgotten == 7
    p.check_invariants()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bin_ms": 0}, "bin_ms"),
        ({"range_ms": 10, "bin_ms": 100}, "bin_ms"),
        ({"head_percentile": 99.0, "tail_percentile": 5.0}, "head"),
        ({"margin": 1.5}, "margin"),
        ({"max_functions": 0}, "max_functions"),
    ],
)
def test_hybrid_rejects_bad_arguments(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HybridHistogramPolicy(**kwargs)  # type: ignore[arg-type]
