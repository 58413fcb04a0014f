"""Closed-form queueing results the simulator is validated against.

* M/M/c (Erlang C): with offered load ``a = λ/μ`` and ``ρ = a/c < 1``, the probability of waiting is
  ``C(c, a) = (a^c / c!) / ((1 - ρ) Σ_{k<c} a^k/k! + a^c/c!)`` and the mean wait is
  ``W_q = C(c, a) / (cμ - λ)``. The sum is computed with the Erlang B recursion
  ``B_k = a B_{k-1} / (k + a B_{k-1})``, stable for large ``c``.
* M/G/1 (Pollaczek–Khinchine): ``W_q = λ E[S²] / (2 (1 - ρ))`` and ``P(wait) = ρ``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["QueueTheory", "erlang_c", "mg1_pollaczek_khinchine", "mmc_erlang_c"]


@dataclass(frozen=True, slots=True)
class QueueTheory:
    """Analytical mean wait (ms), probability of waiting and utilisation."""

    wait_ms_mean: float
    p_wait: float
    utilization: float


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability an arrival waits in M/M/c with offered load ``a = λ/μ`` (needs a < c)."""
    if not 0.0 <= offered_load < servers:
        raise ValueError(f"need 0 <= offered load < servers, got {offered_load} and {servers}")
    b = 1.0
    for k in range(1, servers + 1):
        b = offered_load * b / (k + offered_load * b)
    rho = offered_load / servers
    return b / (1.0 - rho + rho * b)


def mmc_erlang_c(rate_per_s: float, mean_service_ms: float, servers: int) -> QueueTheory:
    """M/M/c mean wait and probability of waiting."""
    lam = rate_per_s / 1000.0
    mu = 1.0 / mean_service_ms
    a = lam / mu
    c = erlang_c(servers, a)
    return QueueTheory(wait_ms_mean=c / (servers * mu - lam), p_wait=c, utilization=a / servers)


def mg1_pollaczek_khinchine(
    rate_per_s: float, mean_service_ms: float, second_moment_ms2: float
) -> QueueTheory:
    """M/G/1 mean wait from the service time's first two moments."""
    lam = rate_per_s / 1000.0
    rho = lam * mean_service_ms
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"need utilisation < 1, got {rho}")
    return QueueTheory(
        wait_ms_mean=lam * second_moment_ms2 / (2.0 * (1.0 - rho)), p_wait=rho, utilization=rho
    )
