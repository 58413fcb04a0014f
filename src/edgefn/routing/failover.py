"""Failover of a forwarded request: which locations to try, and when a retry is safe.

A forward that failed *before the target answered* (no response headers reached the client) may
be tried again at the next alternate of the :class:`~edgefn.routing.policy.RouteDecision`. These
pure rules decide it; the edge driver (``edge/traffic_failover.py``) only carries them out:

* **Targets.** The decision's target, then at most ``max_failovers`` of its alternates, best
  first (:func:`failover_targets`). The planet runs with one failover: a second one would double
  the worst-case latency of a request whose target died for a small gain, since the alternates are
  chosen from the same, possibly stale, reports.
* **Safety** (:func:`may_retry`). A retry is safe when nothing reached the target (connect
  failure), when the method is idempotent (RFC 9110 §9.2.2: :data:`IDEMPOTENT_METHODS`), or when
  the function's manifest says ``[placement] retry_safe``; and only while the request body can
  still be replayed (it stayed under the replay limit).
"""

from __future__ import annotations

from edgefn.routing.policy import RouteDecision

__all__ = ["IDEMPOTENT_METHODS", "failover_targets", "may_retry"]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
"""Methods a client may expect to be repeated (RFC 9110 §9.2.2; TRACE is never forwarded)."""


def failover_targets(decision: RouteDecision, *, max_failovers: int) -> list[str]:
    """The locations to try in order: the target, then up to ``max_failovers`` alternates."""
    assert decision.target is not None, decision
    assert max_failovers >= 0, max_failovers
    return [decision.target, *decision.alternates[:max_failovers]]


def may_retry(method: str, *, connect_failed: bool, retry_safe: bool, replayable: bool) -> bool:
    """Whether a forward that got no response may be sent again to the next location."""
    if not replayable:
        return False
    return connect_failed or method.upper() in IDEMPOTENT_METHODS or retry_safe
