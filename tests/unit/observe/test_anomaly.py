"""The anomaly detector and the incident book together, in simulated time (pure, fast).

Rollups are made the way a node makes them (an ``Accumulator`` recording requests, cut every
5 s) and fed to the detector as the core would; its alerts go to the incident book.
"""

from __future__ import annotations

import dataclasses
import functools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefn.observe.anomaly import (
    Alert,
    ConnectivityTracker,
    Detector,
    DetectorOptions,
    Sample,
    count_above,
    samples_of,
)
from edgefn.observe.incident_routes import Routes
from edgefn.observe.incidents import IncidentBook, Notify
from edgefn.observe.rollup import Accumulator, Rollup, Sketch

FN = "checkout"
V = "a1b2c3d4e5f6"
PERIOD_MS = 5_000
T0 = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC
# 12 locations in 4 regions; the 5 that fail are all of eu-west and one more would be another
# region: here they are the whole of eu-west, so one route is called.
LOCATIONS = {
    "fra": "eu-west",
    "ams": "eu-west",
    "lhr": "eu-west",
    "cdg": "eu-west",
    "mad": "eu-west",
    "iad": "na-east",
    "ord": "na-east",
    "mex": "na-east",
    "nrt": "as-east",
    "sin": "as-east",
    "syd": "oc",
    "gru": "sa",
}
FAILING = ("ams", "cdg", "fra", "lhr", "mad")


class Planet:
    """12 simulated locations serving one function; ``step()`` is one 5 s rollup period."""

    def __init__(self, seed: int, *, detector: DetectorOptions | None = None) -> None:
        self.rng = random.Random(seed)
        self.now_ms = T0
        self.acc = {loc: Accumulator(location=loc, epoch="e1", start_ms=T0) for loc in LOCATIONS}
        # Each location its own usual load and latency.
        self.load = {loc: self.rng.randint(20, 150) for loc in LOCATIONS}
        self.median_ms = {loc: self.rng.uniform(2.0, 30.0) for loc in LOCATIONS}
        self.detector = Detector(detector)
        self.book = IncidentBook()
        self.notified: list[Notify] = []
        self.alerts: list[Alert] = []

    def serve(self, loc: str, *, error_rate: float = 0.003, slow: float = 1.0) -> None:
        rng = self.rng
        # Poisson-ish load that drifts ±50% between periods.
        n = max(0, round(rng.gauss(self.load[loc], self.load[loc] * 0.25)))
        for _ in range(n):
            status = 500 if rng.random() < error_rate else rng.choice((200, 200, 200, 304, 404))
            latency = rng.lognormvariate(0, 0.6) * self.median_ms[loc] * slow
            if rng.random() < 0.002:  # the odd very slow request (GC pause, cold cache)
                latency *= 20
            self.acc[loc].record(
                FN, V, status, "eu-west", latency, cold=rng.random() < 0.01, kv_ops=1
            )

    def step(self, failing: dict[str, float] | None = None) -> None:
        failing = failing or {}
        for loc in LOCATIONS:
            if loc in failing:
                self.serve(loc, error_rate=failing[loc])
            else:
                self.serve(loc)
        self.now_ms += PERIOD_MS
        for loc in LOCATIONS:
            rollup = self.acc[loc].cut(self.now_ms)
            if rollup is not None:
                self.feed(rollup, self.now_ms + self.rng.randint(5, 400))
        self.apply(self.detector.tick(self.now_ms))
        for ins in self.book.tick(self.now_ms):
            if isinstance(ins, Notify):
                self.notified.append(ins)
        self.detector.check_invariants()
        self.book.check_invariants()

    def feed(self, rollup: Rollup, at_ms: int) -> None:
        region = LOCATIONS[rollup.location]
        self.apply(self.detector.observe(rollup, now_ms=at_ms, region=region))

    def apply(self, alerts: list[Alert]) -> None:
        for a in alerts:
            self.alerts.append(a)
            self.notified += [i for i in self.book.alert(a) if isinstance(i, Notify)]

    def run(self, seconds: int, failing: dict[str, float] | None = None) -> None:
        for _ in range(seconds * 1000 // PERIOD_MS):
            self.step(failing)


@pytest.mark.parametrize("seed", [1, 2])
def test_a_healthy_planet_over_ten_minutes_of_noisy_traffic_opens_no_incident(seed: int) -> None:
    """12 locations, varied load and latency, 0.3% errors, 1% cold starts, rare slow requests:
    10 simulated minutes and not one alert."""
    p = Planet(seed)
    p.run(600)
    assert p.alerts == []
    assert p.book.unresolved() == []
    stats = p.detector.statistics()
    assert stats.keys == 12
    assert stats.samples_total == 12 * 120


def test_five_of_twelve_locations_failing_is_one_incident_naming_them() -> None:
    """After 2 healthy minutes, 5 locations of one region answer 5xx to most requests: exactly
    one incident, naming the function, the version and those 5 locations, notified once to
    that region's route; after the fault ends it resolves itself once quiet."""
    p = Planet(7)
    p.run(120)
    fault_ms = p.now_ms
    p.run(30, failing=dict.fromkeys(FAILING, 0.8))
    incidents = p.book.unresolved()
    assert len(incidents) == 1, incidents
    inc = incidents[0]
    assert (inc.function, inc.versions, inc.locations) == (FN, (V,), FAILING)
    assert inc.regions == ("eu-west",)
    assert inc.signals == ("5xx",)
    assert inc.title.startswith(f"version {V} of {FN}: 5xx at 5 locations since ")
    # Two 5 s periods of breach (plus delivery) after the fault: 10 s, well within 30 s; the
    # notification a group wait (7 s) later, naming all 5.
    assert fault_ms < inc.opened_ms <= fault_ms + 2 * PERIOD_MS + 500
    (told,) = p.notified
    assert (told.event, told.incident.locations) == ("opened", FAILING)
    assert inc.requests_affected > 0
    routes = Routes(default="http://127.0.0.1:1/any", regions={"eu-west": "http://127.0.0.1:1/eu"})
    assert routes.urls_for(inc.regions) == ["http://127.0.0.1:1/eu"]
    # The fault ends: the alerts clear after 3 healthy periods, the incident after 5 quiet min.
    p.run(20)
    assert p.book.unresolved()[0].active == ()
    p.run(300)
    assert p.book.unresolved() == []
    assert p.book.statistics().auto_resolved_total == 1


def test_severity_follows_the_requests_affected() -> None:
    p = Planet(3)
    p.run(60)
    p.run(10, failing={"fra": 1.0})
    small = p.book.unresolved()[0]
    p.run(120, failing=dict.fromkeys(LOCATIONS, 1.0))
    big = p.book.unresolved()[0]
    assert small.id == big.id  # the same function and version: one incident grows
    assert small.severity in ("minor", "major")
    assert big.severity == "critical"
    assert big.locations_total == 12


def _sample(
    *, at_ms: int, requests: int = 100, errors: int = 0, cold: int = 0, p99: float = 10.0
) -> Sample:
    """A sample whose sketch has 10% of its requests at ``p99`` and the rest at 1 ms."""
    return Sample(
        FN, "fra", at_ms, requests, errors, cold, p99, V, "eu-west", _sketch(requests, p99)
    )


@functools.lru_cache(maxsize=64)
def _sketch(requests: int, p99: float) -> Sketch:
    acc = Accumulator(location="fra", epoch="e", start_ms=0)
    slow = max(1, requests // 10) if requests else 0
    for i in range(requests):
        acc.record(FN, V, 200, "eu-west", p99 if i < slow else 1.0)
    rollup = acc.cut(1)
    return rollup.rows[0].latency if rollup else Sketch()


def test_an_alert_needs_consecutive_breaches_and_clears_after_healthy_periods() -> None:
    d = Detector(DetectorOptions(breach_intervals=2, clear_intervals=3))
    t = T0
    for _ in range(20):
        t += PERIOD_MS
        assert d.observe_sample(_sample(at_ms=t, errors=0)) == []
    # One bad period alone, then a healthy one: nothing.
    assert d.observe_sample(_sample(at_ms=t + 5_000, errors=50)) == []
    assert d.observe_sample(_sample(at_ms=t + 10_000, errors=0)) == []
    assert d.observe_sample(_sample(at_ms=t + 15_000, errors=50)) == []
    (raised,) = d.observe_sample(_sample(at_ms=t + 20_000, errors=60))
    assert (raised.active, raised.signal, raised.since_ms) == (True, "5xx", t + 15_000)
    assert raised.affected == 60
    assert d.observe_sample(_sample(at_ms=t + 25_000, errors=0)) == []
    assert d.observe_sample(_sample(at_ms=t + 30_000, errors=0)) == []
    (cleared,) = d.observe_sample(_sample(at_ms=t + 35_000, errors=0))
    assert not cleared.active
    d.check_invariants()


def test_tiny_counts_never_alert() -> None:
    """Every request failing, but 4 per period (under min_requests): no alert; 12 requests with
    3 errors (under min_errors): none either."""
    d = Detector()
    for i in range(50):
        assert d.observe_sample(_sample(at_ms=T0 + i * PERIOD_MS, requests=4, errors=4)) == []
    for i in range(50, 100):
        assert d.observe_sample(_sample(at_ms=T0 + i * PERIOD_MS, requests=12, errors=3)) == []


def test_a_new_function_failing_from_its_first_request_alerts() -> None:
    """The error rate is judged against 0 without history (p99 and cold starts need warm-up)."""
    d = Detector()
    assert d.observe_sample(_sample(at_ms=T0, errors=100, cold=100, p99=900.0)) == []
    alerts = d.observe_sample(_sample(at_ms=T0 + PERIOD_MS, errors=100, cold=100, p99=900.0))
    assert [a.signal for a in alerts] == ["5xx"]


def test_p99_and_cold_starts_alert_after_warmup() -> None:
    d = Detector()
    t = T0
    for _ in range(30):
        t += PERIOD_MS
        assert d.observe_sample(_sample(at_ms=t, p99=10.0, cold=1)) == []
    t += PERIOD_MS
    assert d.observe_sample(_sample(at_ms=t, p99=200.0, cold=40)) == []
    alerts = d.observe_sample(_sample(at_ms=t + PERIOD_MS, p99=200.0, cold=40))
    assert sorted(a.signal for a in alerts) == ["cold", "p99"]
    cold = next(a for a in alerts if a.signal == "cold")
    assert cold.affected == 39  # 40 cold starts where 1 was usual


def test_the_daily_seasonal_term_expects_the_hour_that_is_always_slower() -> None:
    """Every day 09:00-10:00 UTC the p99 is 10× the rest of the day. On the first day that hour
    alerts (nothing known about it); on the second it is expected, while the same jump at
    another hour still alerts."""
    d = Detector()
    day = 86_400_000
    start = T0 - T0 % day  # midnight
    raised_by_day: dict[int, set[int]] = {0: set(), 1: set()}
    for i in range(2 * day // PERIOD_MS):
        t = start + i * PERIOD_MS
        hour = (t % day) // 3_600_000
        p99 = 100.0 if hour == 9 else 10.0
        for a in d.observe_sample(_sample(at_ms=t, p99=p99)):
            if a.active:
                raised_by_day[(t - start) // day].add(hour)
    assert raised_by_day == {0: {9}, 1: set()}
    t = start + 2 * day + 15 * 3_600_000
    alerts = d.observe_sample(_sample(at_ms=t, p99=100.0))
    alerts += d.observe_sample(_sample(at_ms=t + PERIOD_MS, p99=100.0))
    assert [a.signal for a in alerts] == ["p99"]


def test_a_late_rollup_is_old_news() -> None:
    """A backfill after a partition (ended over a minute before it arrived) changes nothing."""
    acc = Accumulator(location="fra", epoch="e", start_ms=T0)
    for _ in range(50):
        acc.record(FN, V, 500, "eu-west", 5.0)
    rollup = acc.cut(T0 + PERIOD_MS)
    assert rollup is not None
    d = Detector()
    assert d.observe(rollup, now_ms=T0 + 10 * 60_000) == []
    assert d.observe(rollup, now_ms=T0 + 10 * 60_000 + 1) == []
    assert d.statistics().late_total == 2
    assert d.statistics().samples_total == 0


def test_silence_clears_an_alert_and_keys_are_bounded() -> None:
    d = Detector(DetectorOptions(max_keys=3, silence_clear_ms=60_000))
    d.observe_sample(_sample(at_ms=T0, errors=100))
    d.observe_sample(_sample(at_ms=T0 + PERIOD_MS, errors=100))
    assert d.tick(T0 + 30_000) == []
    (cleared,) = d.tick(T0 + 70_000)
    assert not cleared.active
    for i in range(5):
        d.observe_sample(dataclasses.replace(_sample(at_ms=T0 + i), location=f"l{i}"))
    assert d.statistics().keys == 3
    assert d.statistics().evicted_total == 3
    d.check_invariants()


def test_samples_of_a_rollup_group_rows_by_function() -> None:
    acc = Accumulator(location="fra", epoch="e", start_ms=T0)
    for i in range(30):
        acc.record(FN, "v1", 500 if i < 10 else 200, "eu-west", 1.0 + i, cold=i < 3)
        acc.record(FN, "v2", 200, "na-east", 2.0)
        acc.record("other", "v9", 200, "eu-west", 3.0)
    rollup = acc.cut(T0 + PERIOD_MS)
    assert rollup is not None
    a, b = samples_of(rollup, at_ms=T0, region="eu-west")
    assert (a.function, a.requests, a.errors, a.cold_starts, a.version) == (FN, 60, 10, 3, "v1")
    assert (b.function, b.requests, b.errors, b.version) == ("other", 30, 0, "v9")
    assert a.p99_ms is not None
    assert 28 < a.p99_ms < 31
    assert count_above(a.sketch, 20.0) == 10
    assert count_above(a.sketch, 0.0) == 60


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 300), st.integers(0, 300), st.integers(0, 60)),
        min_size=1,
        max_size=80,
    )
)
def test_any_stream_keeps_the_invariants_and_alerts_alternate(
    periods: list[tuple[int, int, int]],
) -> None:
    """Raise and clear alternate per (key, signal): never two raises in a row without a clear
    in between (updates repeat a raise while active, so count transitions only)."""
    d = Detector()
    active: dict[str, bool] = {}
    for i, (n, errors, slow) in enumerate(periods):
        s = _sample(at_ms=T0 + i * PERIOD_MS, requests=n, errors=min(n, errors), p99=5.0 + slow)
        for a in d.observe_sample(s):
            if not a.active:
                assert active.get(a.signal), a
            active[a.signal] = a.active
        d.check_invariants()


def test_connectivity_alerts_for_a_silent_location_and_clears_when_heard() -> None:
    c = ConnectivityTracker(silence_ms=15_000)
    assert c.tick(T0) == []  # never heard of: nothing to miss
    c.heard("fra", "eu-west", T0)
    c.heard("ams", "eu-west", T0)
    assert c.tick(T0 + 10_000) == []
    c.heard("ams", "eu-west", T0 + 12_000)
    (down,) = c.tick(T0 + 16_000, impact={"fra": 123.4})
    assert (down.location, down.signal, down.active, down.since_ms) == (
        "fra",
        "unreachable",
        True,
        T0,
    )
    assert (down.region, down.affected) == ("eu-west", 123)
    assert c.tick(T0 + 20_000) == []  # raised once
    assert c.heard("fra", "eu-west", T0) == []  # an old report is not a sign of life
    (up,) = c.heard("fra", "eu-west", T0 + 21_000)
    assert not up.active
    # A location removed from the planet while silent: its alert clears, it is not tracked.
    c.tick(T0 + 60_000)
    assert sorted(c.down()) == ["ams", "fra"]
    (gone,) = c.forget("ams")
    assert (gone.location, gone.active) == ("ams", False)
    assert c.tracked() == ["fra"]
    c.check_invariants()
