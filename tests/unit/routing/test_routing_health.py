"""HealthTable: phi accrual, probes, outlier ejection; transitions only, bounded state."""

from __future__ import annotations

import pytest

from edgefn.routing import (
    Forget,
    HealthConfig,
    HealthInstruction,
    HealthTable,
    HealthTick,
    Heartbeat,
    MarkHealthy,
    MarkUnhealthy,
    OutlierConfig,
    PhiAccrualDetector,
    ProbeResult,
    RequestOutcome,
    RoutingConfigError,
    SendProbe,
    Track,
)


def marks(out: list[HealthInstruction]) -> list[HealthInstruction]:
    return [i for i in out if not isinstance(i, SendProbe)]


def test_phi_grows_with_silence_and_resets_on_heartbeat() -> None:
    d = PhiAccrualDetector(now_ms=0, window=10, min_std_ms=50)
    for t in range(1_000, 11_000, 1_000):
        d.heartbeat(t)
    assert d.phi(10_000) == pytest.approx(0.0, abs=1e-3)
    assert d.phi(11_000) < 1.0
    assert 1.0 < d.phi(11_100) < d.phi(11_200) < d.phi(13_000)
    assert d.phi(60_000) > 100  # clamped, finite
    d.heartbeat(60_000)
    assert d.phi(60_000) < 1.0


def test_phi_window_is_bounded_and_old_heartbeats_ignored() -> None:
    d = PhiAccrualDetector(now_ms=0, window=5)
    for t in range(100, 10_000, 100):
        d.heartbeat(t)
    d.heartbeat(50)
    assert d.samples == 5
    assert d.mean_ms() == pytest.approx(100.0)
    assert d.last_ms == 9_900


def test_missed_heartbeats_mark_unhealthy_once_then_heartbeat_marks_healthy() -> None:
    """One-second heartbeats, default threshold: suspected about 2 s after the last one."""
    t = HealthTable(config=HealthConfig(probe_interval_ms=10**9))
    for ms in range(0, 10_001, 1_000):
        assert t.handle(Heartbeat("fra", ms)) == []
    assert t.handle(HealthTick(10_000)) == [SendProbe("fra", 1)]
    assert t.handle(HealthTick(11_500)) == []
    [mark] = t.handle(HealthTick(12_500))
    assert isinstance(mark, MarkUnhealthy)
    assert mark.location == "fra"
    assert "no heartbeat for 2500 ms" in mark.reason
    assert not t.is_healthy("fra")
    assert t.unhealthy() == {"fra": mark.reason}
    assert t.handle(HealthTick(12_600)) == []  # transitions only
    assert t.handle(Heartbeat("fra", 12_700)) == [MarkHealthy("fra")]
    t.check_invariants()


def test_never_heard_location_becomes_suspect() -> None:
    t = HealthTable(config=HealthConfig(probe_interval_ms=100_000))
    assert t.handle(Track("nrt", 0)) == []
    t.handle(HealthTick(1))
    out = t.handle(HealthTick(5_000))
    assert any(isinstance(i, MarkUnhealthy) and i.location == "nrt" for i in out)


def test_failed_and_timed_out_probes_mark_unhealthy_and_success_recovers() -> None:
    cfg = HealthConfig(use_heartbeats=False, probe_interval_ms=1_000, probe_timeout_ms=500)
    t = HealthTable(config=cfg, self_location="fra")
    t.handle(Track("fra", 0))
    assert t.handle(Track("lhr", 0)) == []
    assert t.handle(HealthTick(0)) == [SendProbe("lhr", 1)]
    assert t.handle(ProbeResult("lhr", False, 0.0, 100, probe_id=1)) == []
    assert t.handle(HealthTick(1_000)) == [SendProbe("lhr", 2)]
    # No answer: the probe times out at the next tick and counts as the second failure.
    out = t.handle(HealthTick(1_600))
    assert out == [MarkUnhealthy("lhr", "2 probes failed in a row")]
    assert t.statistics().probes_failed == 2
    # A late answer to the timed-out probe is ignored.
    assert t.handle(ProbeResult("lhr", True, 1.0, 1_700, probe_id=2)) == []
    assert t.handle(HealthTick(2_000)) == [SendProbe("lhr", 3)]
    assert t.handle(ProbeResult("lhr", True, 1.0, 2_010, probe_id=3)) == [MarkHealthy("lhr")]
    t.check_invariants()


def _probed(t: HealthTable, now_ms: int) -> list[str]:
    return [i.location for i in t.handle(HealthTick(now_ms)) if isinstance(i, SendProbe)]


def _answer(t: HealthTable, location: str, now_ms: int, *, ok: bool = True) -> None:
    t.handle(ProbeResult(location, ok, 1.0, now_ms))


def test_a_quiet_peer_that_heartbeats_is_probed_at_the_idle_interval() -> None:
    """Busy (requests sent to it in the last 10 s) or suspect peers every second; quiet ones every
    15 s: a planet of N idle locations no longer sends N(N-1) probes a second."""
    t = HealthTable(config=HealthConfig(), self_location="fra")
    sent: dict[str, list[int]] = {"ams": [], "lhr": []}
    for ms in range(0, 40_001, 500):
        for peer in sent:
            if ms % 1_000 == 0:
                t.handle(Heartbeat(peer, ms))
        if ms <= 20_000:
            t.handle(RequestOutcome("lhr", True, 5.0, ms))  # fra forwards to lhr until 20 s
        for peer in _probed(t, ms):
            sent[peer].append(ms)
            _answer(t, peer, ms + 10)
    assert sent["ams"] == [0, 15_000, 30_000]
    # lhr: every second while requests flow and 10 s after the last (20 s); then idle (next at 44 s).
    assert sent["lhr"] == list(range(0, 30_000, 1_000))
    t.check_invariants()


def test_a_failed_probe_or_rising_phi_brings_a_quiet_peer_back_to_fast_probes() -> None:
    t = HealthTable(config=HealthConfig(), self_location="fra")
    for ms in range(0, 10_001, 1_000):
        t.handle(Heartbeat("ams", ms))
    assert _probed(t, 10_000) == ["ams"]
    _answer(t, "ams", 10_010, ok=False)
    t.handle(Heartbeat("ams", 11_000))
    assert _probed(t, 11_000) == ["ams"]  # one failure: watched
    _answer(t, "ams", 11_010)
    t.handle(Heartbeat("ams", 12_000))
    assert _probed(t, 12_000) == []  # recovered: idle again
    # Heartbeats stop: past half the phi threshold (4 at 13.75 s) the peer is probed at once,
    # not 15 s after its last probe.
    probed = [ms for ms in range(12_250, 15_001, 250) if _probed(t, ms)]
    assert probed == [13_750]
    t.check_invariants()


def test_probes_per_tick_are_bounded() -> None:
    cfg = HealthConfig(use_heartbeats=False, max_probes_per_tick=3)
    t = HealthTable(config=cfg)
    for i in range(10):
        t.handle(Track(f"l{i}", 0))
    assert len(t.handle(HealthTick(0))) == 3
    assert len(t.handle(HealthTick(1))) == 3
    assert t.statistics().probes_in_flight == 6


def test_consecutive_errors_eject_with_exponential_backoff() -> None:
    outlier = OutlierConfig(
        consecutive_errors=3, base_ejection_ms=1_000, max_ejection_ms=3_000, interval_ms=100_000
    )
    t = HealthTable(
        config=HealthConfig(use_heartbeats=False, probe_interval_ms=10**9, outlier=outlier)
    )
    for loc in ("a", "b", "c"):
        t.handle(Track(loc, 0))
    t.handle(RequestOutcome("a", False, 1.0, 10))
    t.handle(RequestOutcome("a", True, 1.0, 11))  # a success resets the count
    t.handle(RequestOutcome("a", False, 1.0, 12))
    t.handle(RequestOutcome("a", False, 1.0, 13))
    [mark] = t.handle(RequestOutcome("a", False, 1.0, 14))
    assert mark == MarkUnhealthy("a", "3 consecutive failed requests; ejected for 1 s")
    assert marks(t.handle(HealthTick(1_013))) == []
    assert marks(t.handle(HealthTick(1_014))) == [MarkHealthy("a")]
    for ms in (1_020, 1_021, 1_022):
        out = t.handle(RequestOutcome("a", False, 1.0, ms))
    assert out == [MarkUnhealthy("a", "3 consecutive failed requests; ejected for 2 s")]
    assert marks(t.handle(HealthTick(3_021))) == []
    assert marks(t.handle(HealthTick(3_022))) == [MarkHealthy("a")]
    assert t.statistics().ejections_total == 2


def test_max_ejection_percent_keeps_locations_in_service() -> None:
    outlier = OutlierConfig(consecutive_errors=1, max_ejection_percent=50.0)
    t = HealthTable(config=HealthConfig(use_heartbeats=False, outlier=outlier))
    locs = ["a", "b", "c", "d"]
    for loc in locs:
        t.handle(Track(loc, 0))
    marks = [t.handle(RequestOutcome(loc, False, 1.0, 5)) for loc in locs]
    assert [len(m) for m in marks] == [1, 1, 0, 0]
    assert t.statistics().ejected == 2


def test_latency_outlier_is_ejected() -> None:
    outlier = OutlierConfig(
        interval_ms=1_000, min_requests=5, latency_factor=3.0, latency_min_gap_ms=50.0
    )
    t = HealthTable(
        config=HealthConfig(use_heartbeats=False, probe_interval_ms=10**9, outlier=outlier)
    )
    t.handle(HealthTick(0))
    for i in range(10):
        for loc, ms in (("a", 20.0), ("b", 25.0), ("c", 22.0), ("slow", 400.0)):
            t.handle(RequestOutcome(loc, True, ms, 10 + i))
    out = marks(t.handle(HealthTick(1_000)))
    assert len(out) == 1
    assert isinstance(out[0], MarkUnhealthy)
    assert out[0].location == "slow"
    assert "latency outlier: 400 ms vs median 22 ms" in out[0].reason


def test_latency_needs_enough_peers_and_samples() -> None:
    outlier = OutlierConfig(interval_ms=1_000, min_requests=5)
    t = HealthTable(
        config=HealthConfig(use_heartbeats=False, probe_interval_ms=10**9, outlier=outlier)
    )
    t.handle(HealthTick(0))
    for i in range(10):
        t.handle(RequestOutcome("a", True, 20.0, i))
        t.handle(RequestOutcome("slow", True, 900.0, i))
    for i in range(3):
        t.handle(RequestOutcome("b", True, 20.0, i))
    assert marks(t.handle(HealthTick(1_000))) == []


def test_bounded_locations_and_forget() -> None:
    t = HealthTable(config=HealthConfig(max_locations=2))
    for loc in ("a", "b", "c"):
        t.handle(Heartbeat(loc, 0))
    assert t.statistics().tracked == 2
    assert t.statistics().dropped_events == 1
    assert t.is_healthy("c")  # unknown locations are not accused
    t.handle(Forget("a"))
    t.handle(Heartbeat("c", 1))
    assert t.statistics().tracked == 2
    assert t.phi("zzz", 5) == 0.0
    t.check_invariants()


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"phi_threshold": 0.0}, r"\[health\] phi_threshold"),
        ({"heartbeat_window": 1}, r"\[health\] heartbeat_window"),
        ({"probe_timeout_ms": -5}, r"\[health\] probe_timeout_ms"),
        (
            {"outlier": OutlierConfig(consecutive_errors=0)},
            r"\[health.outlier\] consecutive_errors",
        ),
    ],
)
def test_config_errors_name_the_setting(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(RoutingConfigError, match=key):
        HealthConfig(**kwargs)  # type: ignore[arg-type]
