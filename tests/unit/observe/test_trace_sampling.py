"""The tail sampler's rules: errors and slow traces kept, others within the budget, more while a
function is anomalous, and every decision's probability what it says."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from edgefn.observe.trace_sampling import SamplingConfig, TailSampler, TraceEnded


def _tid(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def _ended(tid: str, *, status: int = 200, ms: float = 5.0, now_ms: int = 0,
           spans: int = 3, function: str = "fn") -> TraceEnded:  # fmt: skip
    return TraceEnded(tid, function, status, False, ms, spans, now_ms)


def test_errors_and_slow_traces_are_always_kept_with_probability_one() -> None:
    s = TailSampler(SamplingConfig(base_probability=0.0, slow_ms=100))
    rng = random.Random(1)
    for i in range(50):
        d = s.handle(_ended(_tid(rng), status=503, now_ms=i))
        assert (d.keep, d.probability, d.reason) == (True, 1.0, "error")
    d = s.handle(_ended(_tid(rng), ms=150, now_ms=60))
    assert (d.keep, d.probability, d.reason) == (True, 1.0, "slow")
    d = s.handle(_ended(_tid(rng), ms=5, now_ms=61, function="healthy"))
    assert (d.keep, d.reason) == (False, "not_sampled")
    s.check_invariants()


def test_a_failure_without_a_5xx_status_is_an_error() -> None:
    s = TailSampler(SamplingConfig(base_probability=0.0))
    d = s.handle(TraceEnded("ab" * 16, "fn", 0, True, 1.0, 2, 0))
    assert (d.keep, d.reason) == (True, "error")


def test_sampled_share_is_near_the_base_probability() -> None:
    s = TailSampler(SamplingConfig(base_probability=0.2, budget_spans_per_s=1e6))
    rng = random.Random(7)
    kept = sum(s.handle(_ended(_tid(rng), now_ms=i)).keep for i in range(5000))
    assert 850 <= kept <= 1150, kept
    s.check_invariants()


def test_the_budget_lowers_the_probability_and_bounds_the_spans_kept() -> None:
    """10,000 traces of 4 spans in 10 s (4,000 spans/s) against a budget of 100 spans/s: the
    probability recorded drops to about budget / arrival and the spans kept stay within the
    budget plus its burst."""
    cfg = SamplingConfig(base_probability=1.0, budget_spans_per_s=100, burst_s=2)
    s = TailSampler(cfg)
    rng = random.Random(3)
    kept_spans, probabilities = 0, []
    for i in range(10_000):
        d = s.handle(_ended(_tid(rng), now_ms=i, spans=4))
        if d.keep:
            kept_spans += 4
            probabilities.append(d.probability)
    assert kept_spans <= 100 * 10 + 200
    assert kept_spans >= 500  # the budget is used, not starved
    late = probabilities[len(probabilities) // 2 :]
    assert max(late) <= 0.05, max(late)  # ~100 / 4000 = 0.025 once the rate is known
    s.check_invariants()


def test_the_keep_rate_rises_while_a_function_is_anomalous_and_falls_after() -> None:
    cfg = SamplingConfig(base_probability=0.05, anomalous_probability=1.0,
                         budget_spans_per_s=1e6, anomaly_window_ms=10_000)  # fmt: skip
    s = TailSampler(cfg)
    rng = random.Random(5)
    # Healthy: few kept. Then 20% errors for 10 s: anomalous, successes kept too.
    healthy = sum(s.handle(_ended(_tid(rng), now_ms=i * 10)).keep for i in range(500))
    for i in range(500):
        s.handle(_ended(_tid(rng), status=500 if i % 5 == 0 else 200, now_ms=5000 + i * 10))
    assert s.anomalous("fn", 10_000)
    assert not s.anomalous("other", 10_000)
    ok = [s.handle(_ended(_tid(rng), now_ms=10_000 + i)) for i in range(100)]
    assert all(d.keep and d.reason == "anomalous" and d.probability == 1.0 for d in ok)
    assert healthy < 60
    # Two quiet windows later the errors have aged out.
    later = [s.handle(_ended(_tid(rng), now_ms=40_000 + i * 10)) for i in range(400)]
    assert not s.anomalous("fn", 44_000)
    assert sum(d.keep for d in later) < 60
    s.check_invariants()


def test_an_error_storm_is_bounded_by_the_ceiling() -> None:
    s = TailSampler(SamplingConfig(always_spans_per_s=100, burst_s=1))
    rng = random.Random(9)
    decisions = [s.handle(_ended(_tid(rng), status=500, now_ms=i // 10, spans=1)) for i in range(10_000)]  # fmt: skip
    kept = sum(d.keep for d in decisions)
    assert 100 <= kept <= 100 + 100 + 5  # burst + 1 s of refill
    assert s.statistics(1000).dropped["over_ceiling"] == 10_000 - kept


def test_locations_with_the_same_probability_agree_on_a_trace() -> None:
    """The decision is the trace id's hash: the forwarding and the serving location keep the
    same traces, and a lower probability keeps a subset of a higher one's."""
    rng = random.Random(11)
    ids = [_tid(rng) for _ in range(2000)]
    low = TailSampler(SamplingConfig(base_probability=0.1, budget_spans_per_s=1e6))
    high = TailSampler(SamplingConfig(base_probability=0.3, budget_spans_per_s=1e6))
    again = TailSampler(SamplingConfig(base_probability=0.1, budget_spans_per_s=1e6))
    kept_low = {t for i, t in enumerate(ids) if low.handle(_ended(t, now_ms=i)).keep}
    kept_high = {t for i, t in enumerate(ids) if high.handle(_ended(t, now_ms=i)).keep}
    kept_again = {t for i, t in enumerate(ids) if again.handle(_ended(t, now_ms=i)).keep}
    assert kept_low == kept_again
    assert kept_low < kept_high


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2000), st.sampled_from([200, 404, 500]),
                  st.floats(0, 3000), st.integers(1, 40), st.sampled_from("abc")),
        max_size=200,
    ),
    st.floats(0, 1),
)  # fmt: skip
def test_invariants_hold_and_failures_within_the_ceiling_are_kept(
    steps: list[tuple[int, int, float, int, str]], base: float
) -> None:
    s = TailSampler(SamplingConfig(base_probability=base, max_functions=2,
                                   always_spans_per_s=1e9))  # fmt: skip
    rng = random.Random(0)
    now = 0
    for gap, status, ms, spans, fn in steps:
        now += gap
        d = s.handle(_ended(_tid(rng), status=status, ms=ms, now_ms=now, spans=spans, function=fn))
        assert 0.0 <= d.probability <= 1.0
        if status >= 500 or ms >= s.config.slow_ms:
            assert (d.keep, d.probability) == (True, 1.0)
        elif d.keep:
            assert d.probability <= max(base, s.config.anomalous_probability)
        s.check_invariants()


def test_bad_config_is_refused_naming_the_field() -> None:
    import pytest

    with pytest.raises(ValueError, match="base_probability"):
        SamplingConfig(base_probability=1.5)
    with pytest.raises(ValueError, match="budget_spans_per_s"):
        SamplingConfig(budget_spans_per_s=0)


def _slow_share(s: TailSampler, rng: random.Random, function: str, draw, n: int) -> float:  # type: ignore[no-untyped-def]
    slow = 0
    for i in range(n):
        d = s.handle(_ended(_tid(rng), ms=draw(), now_ms=i, function=function))
        slow += d.reason == "slow"
    return slow / n


def test_slow_is_per_function_its_own_p99_not_one_second() -> None:
    """A 40 ms function's slowest ~1 % are kept as slow although none reaches slow_ms; a 600 ms
    function at the same location has its own, much higher threshold."""
    cfg = SamplingConfig(base_probability=0.0, budget_spans_per_s=1e6, always_spans_per_s=1e6)
    s = TailSampler(cfg)
    rng = random.Random(11)
    fast = _slow_share(s, rng, "fast", lambda: rng.lognormvariate(3.7, 0.4), 20_000)
    slow = _slow_share(s, rng, "report", lambda: rng.lognormvariate(6.4, 0.2), 20_000)
    assert 0.004 <= fast <= 0.025, fast
    assert 0.004 <= slow <= 0.025, slow
    # The estimates sit near each function's true p99 (exp(mu + 2.326 sigma)): 102 ms and 955 ms.
    assert 70 <= s.slow_threshold_ms("fast") <= 150, s.slow_threshold_ms("fast")
    assert 750 <= s.slow_threshold_ms("report") <= 1000, s.slow_threshold_ms("report")
    assert s.slow_threshold_ms("unknown") == cfg.slow_ms
    s.check_invariants()


def test_per_function_slow_needs_warm_up_and_a_floor_and_can_be_turned_off() -> None:
    rng = random.Random(12)
    cfg = SamplingConfig(base_probability=0.0, slow_min_requests=100)
    s = TailSampler(cfg)
    # Too few requests yet: only slow_ms counts.
    assert _slow_share(s, rng, "new", lambda: rng.expovariate(1 / 50), 99) == 0.0
    # Under the floor (20 ms) nothing is slow, however the latencies spread.
    assert _slow_share(s, rng, "tiny", lambda: rng.uniform(0.5, 15.0), 5_000) == 0.0
    off = TailSampler(SamplingConfig(base_probability=0.0, slow_quantile=0.0))
    assert _slow_share(off, rng, "fast", lambda: rng.lognormvariate(3.7, 0.4), 5_000) == 0.0
    assert off.slow_threshold_ms("fast") == 1000.0


def test_bad_slow_settings_are_refused() -> None:
    import pytest

    for bad in ({"slow_quantile": 1.0}, {"slow_quantile": -0.1}, {"slow_floor_ms": -1.0},
                {"slow_min_requests": 0}, {"slow_step": 0.0}):  # fmt: skip
        with pytest.raises(ValueError, match="slow"):
            SamplingConfig(**bad)  # type: ignore[arg-type]
