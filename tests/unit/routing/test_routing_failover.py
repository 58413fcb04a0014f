"""Failover rules: which locations a failed forward tries, and when a retry is safe."""

from __future__ import annotations

import pytest

from edgefn.routing import (
    IDEMPOTENT_METHODS,
    RouteDecision,
    RouteReason,
    failover_targets,
    may_retry,
)


def test_targets_are_the_target_then_at_most_max_failovers_alternates() -> None:
    """The planet's one failover tries the best alternate only."""
    decision = RouteDecision("ams", RouteReason.FORWARD_BETTER, ("lhr", "iad"))
    assert failover_targets(decision, max_failovers=1) == ["ams", "lhr"]
    assert failover_targets(decision, max_failovers=0) == ["ams"]
    assert failover_targets(decision, max_failovers=5) == ["ams", "lhr", "iad"]
    alone = RouteDecision("ams", RouteReason.FORWARD_BETTER)
    assert failover_targets(alone, max_failovers=1) == ["ams"]


@pytest.mark.parametrize("method", sorted(IDEMPOTENT_METHODS))
def test_idempotent_methods_retry_while_the_body_replays(method: str) -> None:
    """An idempotent request may be sent again even if the target may have seen it."""
    assert may_retry(method, connect_failed=False, retry_safe=False, replayable=True)
    assert may_retry(method.lower(), connect_failed=False, retry_safe=False, replayable=True)
    assert not may_retry(method, connect_failed=False, retry_safe=False, replayable=False)


def test_post_retries_only_when_nothing_reached_the_target_or_the_manifest_allows() -> None:
    """POST is retried after a connect failure or with retry_safe, never otherwise."""
    assert not may_retry("POST", connect_failed=False, retry_safe=False, replayable=True)
    assert may_retry("POST", connect_failed=True, retry_safe=False, replayable=True)
    assert may_retry("POST", connect_failed=False, retry_safe=True, replayable=True)
    # A body that outgrew the replay limit cannot be sent twice, whatever the reason.
    assert not may_retry("POST", connect_failed=True, retry_safe=True, replayable=False)
