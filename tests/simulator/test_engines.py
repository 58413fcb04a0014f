"""The fast path against the exact event path, and the kernel's ordering rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgefn.runtime.keepalive import FixedKeepAlive, HybridHistogramPolicy, KeepAlivePolicy
from edgefn.sim import Kernel, RequestArrays, lindley_start_ms, run_exact, run_fast

NAMES = tuple(f"f{i}" for i in range(20))


def _requests(seed: int, n: int = 5000, mean_iat_ms: float = 100.0) -> RequestArrays:
    rng = np.random.default_rng(seed)
    return RequestArrays(
        np.cumsum(rng.exponential(mean_iat_ms, n)),
        (rng.zipf(1.6, n) % len(NAMES)).astype(np.int64),
        rng.exponential(200.0, n),
        rng.lognormal(5.0, 0.5, n),
    )


POLICIES = {
    "no-cold": lambda: None,
    "fixed": lambda: FixedKeepAlive(keep_alive_ms=3000),
    "hybrid": lambda: HybridHistogramPolicy(bin_ms=500, range_ms=30_000, min_samples=3),
}


@pytest.mark.parametrize("servers", [1, 3])
@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_fast_equals_exact_on_identical_inputs(servers: int, policy: str) -> None:
    """Same request arrays in, same start times and cold flags out (invariants checked each step)."""
    req = _requests(seed=servers)
    exact = run_exact(
        req, servers=servers, keep_alive=POLICIES[policy](), function_names=NAMES, check_every=1
    )
    fast = run_fast(req, servers=servers, keep_alive=POLICIES[policy](), function_names=NAMES)
    assert np.allclose(exact.start_ms, fast.start_ms, rtol=1e-12, atol=1e-6)
    assert np.array_equal(exact.cold, fast.cold)
    if policy != "no-cold":
        assert 0 < int(fast.cold.sum()) < len(req)


def test_fast_and_exact_agree_statistically_on_independent_seeds() -> None:
    """Mean waits of independent runs of each engine agree within their joint 95% interval."""
    waits: dict[str, list[float]] = {"exact": [], "fast": []}
    for seed in range(10):
        for engine, offset in (("exact", 0), ("fast", 1000)):
            req = _requests(seed + offset, n=4000, mean_iat_ms=80.0)
            run = run_exact if engine == "exact" else run_fast
            out = run(
                req, servers=3, keep_alive=FixedKeepAlive(keep_alive_ms=2000), function_names=NAMES
            )
            waits[engine].append(float(out.wait_ms(req).mean()))
    a, b = np.array(waits["exact"]), np.array(waits["fast"])
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    assert abs(a.mean() - b.mean()) <= 2.1 * se
    assert a.mean() > 0.0


def test_lindley_matches_a_hand_computed_queue() -> None:
    arrivals = np.array([0.0, 1.0, 2.0, 10.0])
    service = np.array([3.0, 3.0, 1.0, 1.0])
    assert lindley_start_ms(arrivals, service).tolist() == [0.0, 3.0, 6.0, 10.0]


def test_fast_path_refuses_a_memory_budget() -> None:
    with pytest.raises(ValueError, match="exact path"):
        run_fast(
            _requests(1, n=10),
            servers=1,
            keep_alive=None,
            function_names=NAMES,
            memory_budget_mb=256.0,
        )


def test_exact_memory_budget_evicts_idle_instances() -> None:
    """With room for one instance, alternating functions are all cold; without a budget, not."""
    n = 40
    req = RequestArrays(
        np.arange(n) * 1000.0,
        (np.arange(n) % 2).astype(np.int64),
        np.full(n, 10.0),
        np.full(n, 100.0),
    )
    names = ("a", "b")
    policy: KeepAlivePolicy = FixedKeepAlive(keep_alive_ms=60_000)
    tight = run_exact(
        req,
        servers=1,
        keep_alive=policy,
        function_names=names,
        memory_mb=[128.0, 128.0],
        memory_budget_mb=128.0,
        check_every=1,
    )
    assert tight.cold.all()
    assert tight.evictions == n - 1
    loose = run_exact(
        req,
        servers=1,
        keep_alive=FixedKeepAlive(keep_alive_ms=60_000),
        function_names=names,
        memory_mb=[128.0, 128.0],
    )
    assert int(loose.cold.sum()) == 2


def test_kernel_breaks_ties_in_scheduling_order() -> None:
    k: Kernel[str] = Kernel()
    for name in ("b", "a", "c"):
        k.schedule(5.0, name)
    k.schedule(1.0, "first")
    order = []
    while (item := k.pop()) is not None:
        order.append(item[1])
        k.check_invariants()
    assert order == ["first", "b", "a", "c"]
    assert k.statistics().processed == 4


def test_kernel_is_bounded_and_refuses_the_past() -> None:
    k: Kernel[int] = Kernel(max_pending=2)
    k.schedule(1.0, 1)
    k.schedule(2.0, 2)
    with pytest.raises(OverflowError, match="pending"):
        k.schedule(3.0, 3)
    k.pop()
    with pytest.raises(AssertionError):
        k.schedule(0.5, 4)
