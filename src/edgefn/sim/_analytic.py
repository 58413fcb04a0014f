"""Closed-form queueing results the simulator is validated against.

* M/M/c (Erlang C): with offered load ``a = λ/μ`` and ``ρ = a/c < 1``, the probability of waiting is
  ``C(c, a) = (a^c / c!) / ((1 - ρ) Σ_{k<c} a^k/k! + a^c/c!)`` and the mean wait is
  ``W_q = C(c, a) / (cμ - λ)``. The sum is computed with the Erlang B recursion
  ``B_k = a B_{k-1} / (k + a B_{k-1})``, stable for large ``c``.
* M/G/1 (Pollaczek–Khinchine): ``W_q = λ E[S²] / (2 (1 - ρ))`` and ``P(wait) = ρ``.
* Erlang B (M/G/c/c loss, insensitive to the service distribution):
  ``B_k = a B_{k-1} / (k + a B_{k-1})``, ``B_0 = 1``.
* One pooled instance with a fixed keep-alive (``max_instances = 1``, ``instance_concurrency =
  1``, Poisson arrivals at rate λ, service S, cold start C, keep-alive T): arrivals while the
  instance is busy are lost, and after each departure the next arrival comes Exp(λ) later
  (memorylessness), so it is cold exactly when that idle gap exceeds T. A renewal cycle is one
  idle gap I ~ Exp(λ) plus one busy period B, with ``p = e^{-λT}``, ``E[B] = E[S] + p E[C]``;
  by renewal-reward and PASTA (Wolff 1982): cold fraction of served requests ``p``, rejection
  probability ``λE[B] / (1 + λE[B])`` (= fraction of time busy), mean idle instances
  ``E[min(I, T)] / (1/λ + E[B])`` with ``E[min(I, T)] = (1 - p)/λ``, and mean lifetime (cold
  start to expiry) ``E[C] + E[S] + (1-p)/p · (E[I | I < T] + E[S]) + T``, the number of warm
  reuses being geometric with mean ``(1-p)/p``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "PoolTheory",
    "QueueTheory",
    "erlang_b",
    "erlang_c",
    "mg1_pollaczek_khinchine",
    "mmc_erlang_c",
    "single_instance_pool",
]


@dataclass(frozen=True, slots=True)
class QueueTheory:
    """Analytical mean wait (ms), probability of waiting and utilisation."""

    wait_ms_mean: float
    p_wait: float
    utilization: float


@dataclass(frozen=True, slots=True)
class PoolTheory:
    """Analytical figures of an instance pool (times in seconds)."""

    cold_fraction_served: float
    rejection_probability: float
    instances_mean: float
    idle_mean: float
    busy_mean: float
    lifetime_s_mean: float
    response_s_mean: float


def erlang_b(servers: int, offered_load: float) -> float:
    """Loss probability of M/G/c/c with offered load ``a = λ E[S]``."""
    if servers < 0 or offered_load < 0.0:
        raise ValueError(f"need servers >= 0 and load >= 0, got {servers} and {offered_load}")
    b = 1.0
    for k in range(1, servers + 1):
        b = offered_load * b / (k + offered_load * b)
    return b


def single_instance_pool(
    rate_per_s: float, service_s_mean: float, cold_s_mean: float, keep_alive_s: float
) -> PoolTheory:
    """One instance (``max_instances = 1``, concurrency 1) with a fixed keep-alive; see above."""
    if rate_per_s <= 0.0 or keep_alive_s <= 0.0:
        raise ValueError("need a positive rate and keep-alive")
    lam, t = rate_per_s, keep_alive_s
    p = math.exp(-lam * t)
    busy = service_s_mean + p * cold_s_mean
    cycle = 1.0 / lam + busy
    idle = (1.0 - p) / lam
    idle_given_reuse = 1.0 / lam - t * p / (1.0 - p)
    lifetime = cold_s_mean + service_s_mean + (1.0 - p) / p * (idle_given_reuse + service_s_mean)
    return PoolTheory(
        cold_fraction_served=p,
        rejection_probability=busy / cycle,
        instances_mean=(busy + idle) / cycle,
        idle_mean=idle / cycle,
        busy_mean=busy / cycle,
        lifetime_s_mean=lifetime + t,
        response_s_mean=busy,
    )


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
