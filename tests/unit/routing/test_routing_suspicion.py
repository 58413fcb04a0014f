"""Suspicion: a refused connection makes a location unhealthy at once, until a later heartbeat."""

from __future__ import annotations

import pytest

from edgefn.routing import (
    ConnectRefused,
    HealthChanged,
    HeardFrom,
    RoutingConfigError,
    Suspicion,
    SuspicionConfig,
    TableVerdict,
)


def test_refusal_marks_unhealthy_and_the_table_cannot_undo_it() -> None:
    """While suspect, the health table's MarkHealthy does not reach the policy; MarkUnhealthy does."""
    s = Suspicion()
    assert s.handle(ConnectRefused("ams", 1_000)) == [HealthChanged("ams", False)]
    assert s.is_suspect("ams")
    assert s.handle(TableVerdict("ams", True)) == []
    assert s.handle(TableVerdict("ams", False)) == [HealthChanged("ams", False)]
    assert s.handle(TableVerdict("lhr", True)) == [HealthChanged("lhr", True)]
    s.check_invariants()


def test_only_a_heartbeat_after_the_hold_clears_it() -> None:
    """A heartbeat within hold_ms (already on its way) keeps the suspicion; a later one clears it."""
    s = Suspicion(SuspicionConfig(hold_ms=250))
    s.handle(ConnectRefused("ams", 1_000))
    assert s.handle(HeardFrom("ams", 1_250, table_healthy=True)) == []
    assert s.is_suspect("ams")
    assert s.handle(HeardFrom("ams", 1_251, table_healthy=True)) == [HealthChanged("ams", True)]
    assert not s.is_suspect("ams")
    assert s.handle(HeardFrom("ams", 2_000, table_healthy=True)) == []
    assert s.statistics().cleared == 1
    s.check_invariants()


def test_cleared_while_the_table_accuses_stays_unhealthy() -> None:
    """Clearing the suspicion does not declare healthy a location the table still accuses."""
    s = Suspicion()
    s.handle(ConnectRefused("ams", 0))
    assert s.handle(HeardFrom("ams", 1_000, table_healthy=False)) == []
    assert not s.is_suspect("ams")
    assert s.handle(TableVerdict("ams", True)) == [HealthChanged("ams", True)]


def test_a_new_refusal_restarts_the_hold() -> None:
    """The hold counts from the latest refusal."""
    s = Suspicion(SuspicionConfig(hold_ms=100))
    s.handle(ConnectRefused("ams", 0))
    s.handle(ConnectRefused("ams", 90))
    assert s.handle(HeardFrom("ams", 150, table_healthy=True)) == []
    assert s.handle(HeardFrom("ams", 191, table_healthy=True)) == [HealthChanged("ams", True)]
    s.check_invariants()


def test_bounded_refusals_beyond_the_bound_still_mark_unhealthy() -> None:
    """Past max_locations a refusal is not held (counted as dropped) but still avoids the target."""
    s = Suspicion(SuspicionConfig(max_locations=1))
    s.handle(ConnectRefused("ams", 0))
    assert s.handle(ConnectRefused("lhr", 0)) == [HealthChanged("lhr", False)]
    assert not s.is_suspect("lhr")
    assert s.statistics().dropped == 1
    assert s.statistics().suspect == 1
    s.check_invariants()


def test_config_is_validated() -> None:
    with pytest.raises(RoutingConfigError, match="hold_ms"):
        SuspicionConfig(hold_ms=-1)
    with pytest.raises(RoutingConfigError, match="max_locations"):
        SuspicionConfig(max_locations=0)
