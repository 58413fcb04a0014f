"""Health gates: is the new version at least as healthy as the one it replaces?

``aggregate`` folds the per-location stats of one version into one sample: requests and errors
are summed; p50 and p99 are request-weighted means of the locations' percentiles (an
approximation: percentiles do not add, but it keeps one slow, busy location from being hidden by
many idle ones and is what we can compute from reports without histograms).

``evaluate_gate`` compares the new version's sample to the previous version's:

- fewer than ``min_requests`` requests for the new version: ``undecided`` (no evidence yet);
- error rate ``e_new > max(error_ratio * e_prev, e_prev + error_slack)``: ``failed``;
- if the previous version has at least ``min_requests`` requests and a p99:
  ``p99_new > latency_ratio * p99_prev + latency_slack_ms``: ``failed``;
- otherwise ``passed``.

The reconciler passes the previous version's counts since the rollout began (``since_mark``),
so both versions are judged over the same time: a fault while the canary is young (a core
server's leader dying) shows in both rates, not only in the young one's.

Requests the replicated store failed (503 ``consistency_unavailable`` / ``outcome_unknown``,
``runtime/sandbox.STORE_FAULT_KINDS``, when the node saw the store fail one of the request's KV
calls) are not in either sample: they are the same for every
version at a location, and an immediate deploy has no side-by-side baseline to cancel them out.

With no previous version (first deploy) the baseline error rate is 0, so the new version fails
only above ``error_slack`` (1% by default), and latency is not judged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from edgefn.control.model import VersionStats

__all__ = [
    "GateOutcome",
    "GateResult",
    "GateThresholds",
    "aggregate",
    "evaluate_gate",
    "since_mark",
]


@dataclass(frozen=True, slots=True)
class GateThresholds:
    """Gate parameters; see the module docstring for how each is used."""

    min_requests: int = 100
    error_ratio: float = 2.0
    error_slack: float = 0.01
    latency_ratio: float = 1.5
    latency_slack_ms: float = 20.0
    min_soak_ms: int = 60_000
    advance_requests: int = 1000

    def __post_init__(self) -> None:
        assert self.min_requests >= 1
        assert self.error_ratio >= 1.0
        assert self.error_slack >= 0.0
        assert self.latency_ratio >= 1.0
        assert self.latency_slack_ms >= 0.0
        assert self.min_soak_ms >= 0
        assert self.advance_requests >= self.min_requests


class GateOutcome(Enum):
    UNDECIDED = "undecided"
    PASSED = "passed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class GateResult:
    outcome: GateOutcome
    reason: str
    new: VersionStats
    previous: VersionStats


def aggregate(samples: Iterable[VersionStats]) -> VersionStats:
    """Sum requests and errors; request-weighted mean of the percentiles."""
    requests = errors = 0
    p50 = p99 = 0.0
    for sample in samples:
        requests += sample.requests
        errors += sample.errors
        p50 += sample.latency_ms_p50 * sample.requests
        p99 += sample.latency_ms_p99 * sample.requests
    if requests == 0:
        return VersionStats()
    return VersionStats(requests, errors, p50 / requests, p99 / requests)


def since_mark(now: VersionStats, mark: VersionStats | None) -> VersionStats:
    """The requests and errors counted after ``mark`` (an earlier report of the same counters),
    with ``now``'s percentiles (they already cover a recent window). Counters that went back
    (the node restarted and counts from zero again) count from zero."""
    if mark is None or now.requests < mark.requests or now.errors < mark.errors:
        return now
    return VersionStats(
        now.requests - mark.requests,
        now.errors - mark.errors,
        now.latency_ms_p50,
        now.latency_ms_p99,
    )


def _rate(stats: VersionStats) -> float:
    return stats.errors / stats.requests if stats.requests else 0.0


def evaluate_gate(
    new: VersionStats, previous: VersionStats, thresholds: GateThresholds
) -> GateResult:
    """Judge ``new`` against ``previous``; see the module docstring for the rules."""
    if new.requests < thresholds.min_requests:
        reason = f"{new.requests} of {thresholds.min_requests} requests needed to judge"
        return GateResult(GateOutcome.UNDECIDED, reason, new, previous)
    prev_ok = previous.requests >= thresholds.min_requests
    e_new, e_prev = _rate(new), _rate(previous) if prev_ok else 0.0
    e_limit = max(thresholds.error_ratio * e_prev, e_prev + thresholds.error_slack)
    if e_new > e_limit:
        reason = f"error rate {e_new:.2%} > limit {e_limit:.2%} (previous {e_prev:.2%})"
        return GateResult(GateOutcome.FAILED, reason, new, previous)
    if prev_ok and previous.latency_ms_p99 > 0:
        p99_limit = thresholds.latency_ratio * previous.latency_ms_p99 + thresholds.latency_slack_ms
        if new.latency_ms_p99 > p99_limit:
            reason = (
                f"p99 {new.latency_ms_p99:.1f} ms > limit {p99_limit:.1f} ms "
                f"(previous {previous.latency_ms_p99:.1f} ms)"
            )
            return GateResult(GateOutcome.FAILED, reason, new, previous)
    reason = f"error rate {e_new:.2%}, p99 {new.latency_ms_p99:.1f} ms within limits"
    return GateResult(GateOutcome.PASSED, reason, new, previous)
