"""The simulator against queueing theory, within its own 95% batch-means confidence interval.

M/M/c against Erlang C and M/G/1 (deterministic and hyperexponential SCV=4 service) against
Pollaczek–Khinchine, at utilisation 0.5, 0.8 and 0.95. Runs are long enough (hundreds of
thousands to millions of requests, cheap on the fast path) that the interval is tight: a
modelling error of a few percent would fall outside it.

Each 95% interval misses the truth one time in twenty by construction, and this file checks a
family of 18 intervals (9 models × mean wait and P(wait)), so with plain 95% intervals some seed
would miss about once per run. The check is therefore family-wise at 95% (Bonferroni): the
simulation's own 95% batch-means half-width, widened by t(1 - 0.05/36) / t(0.975) on its degrees
of freedom. The seed is fixed; no seed was searched for.
"""

from __future__ import annotations

import pytest
from simulator_helpers import queue_scenario

from edgefn.sim import (
    Distribution,
    erlang_c,
    mg1_pollaczek_khinchine,
    mmc_erlang_c,
    parse_scenario,
    simulate,
)

# Requests per run grow with the load: near saturation the waits are strongly correlated.
REQUESTS = {0.5: 400_000, 0.8: 1_000_000, 0.95: 3_000_000}


FAMILY = 18


def _within(ci: dict[str, float], theory: float) -> bool:
    from scipy.stats import t

    dof = int(ci["n"]) - 1
    widen = float(t.ppf(1.0 - 0.05 / (2 * FAMILY), dof) / t.ppf(0.975, dof))
    return abs(ci["mean"] - theory) <= ci["half_width"] * widen


@pytest.mark.parametrize("rho", [0.5, 0.8, 0.95])
def test_mmc_matches_erlang_c(rho: float) -> None:
    servers, mean_ms = 10, 1000.0
    rate = rho * servers / (mean_ms / 1000.0)
    doc = queue_scenario(
        rate_per_s=rate,
        servers=servers,
        mean_ms=mean_ms,
        duration_s=REQUESTS[rho] / rate,
        warmup_s=REQUESTS[rho] / rate / 50,
    )
    r = simulate(parse_scenario(doc), workers=1)
    theory = mmc_erlang_c(rate, mean_ms, servers)
    assert _within(r["ci95"]["wait_ms_mean"], theory.wait_ms_mean), (r["ci95"], theory)
    assert _within(r["ci95"]["p_wait"], theory.p_wait), (r["ci95"], theory)
    assert r["utilization"] == pytest.approx(rho, rel=0.02)


@pytest.mark.parametrize("rho", [0.5, 0.8, 0.95])
@pytest.mark.parametrize(("kind", "scv"), [("deterministic", 0.0), ("hyperexponential", 4.0)])
def test_mg1_matches_pollaczek_khinchine(rho: float, kind: str, scv: float) -> None:
    mean_ms = 100.0
    rate = rho / (mean_ms / 1000.0)
    doc = queue_scenario(
        rate_per_s=rate,
        servers=1,
        distribution=kind,
        mean_ms=mean_ms,
        scv=scv,
        duration_s=REQUESTS[rho] * (2 if scv > 1 else 1) / rate,
        warmup_s=REQUESTS[rho] / rate / 50,
    )
    r = simulate(parse_scenario(doc), workers=1)
    d = Distribution(kind, mean_ms, scv)
    theory = mg1_pollaczek_khinchine(rate, mean_ms, d.second_moment_ms2)
    assert _within(r["ci95"]["wait_ms_mean"], theory.wait_ms_mean), (r["ci95"], theory)
    assert _within(r["ci95"]["p_wait"], theory.p_wait), (r["ci95"], theory)


def test_erlang_c_known_value() -> None:
    """C(2, 1) = 1/3 (textbook value), and one server reduces to rho."""
    assert erlang_c(2, 1.0) == pytest.approx(1.0 / 3.0)
    assert erlang_c(1, 0.7) == pytest.approx(0.7)


@pytest.mark.parametrize(("servers", "load"), [(2, 2.0), (1, -0.1)])
def test_erlang_c_rejects_unstable_load(servers: int, load: float) -> None:
    with pytest.raises(ValueError, match="offered load"):
        erlang_c(servers, load)


def test_pk_rejects_unstable_load() -> None:
    with pytest.raises(ValueError, match="utilisation"):
        mg1_pollaczek_khinchine(20.0, 100.0, 2e4)
