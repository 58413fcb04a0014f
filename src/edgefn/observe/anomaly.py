"""Anomaly detection on telemetry rollups: baselines per function × location (pure).

The core feeds every stored rollup into a :class:`Detector` (``observe(rollup, now_ms=...)``) and
calls ``tick(now_ms)`` now and then; both return :class:`Alert` changes. A node cuts one rollup
every 5 s, so a *sample* is one function's figures at one location over one rollup interval:
requests, 5xx, cold starts and the p99 latency of its merged sketch.

Rules:

* **Baselines.** Per (function, location) and signal (``5xx`` error rate, ``p99`` latency,
  ``cold`` start rate): an EWMA of the level and of the squared deviation (so a standard
  deviation), plus a daily seasonal term: per hour of day (UTC), an EWMA of how far that hour's
  samples sit from the level (additive Holt-Winters without trend). The expected value of a
  sample is level + its hour's offset (0 for an hour not seen yet). The error rate starts from a prior of 0 (an error is bad before any
  history); p99 and cold-start rate judge nothing until ``warmup`` samples were seen (a new
  version starts cold and its first p99 is noise).
* **Minimum volume.** A sample with fewer than ``min_requests`` requests neither breaches nor
  updates a baseline; an error-rate breach also needs ``min_errors`` 5xx, a cold-start breach
  ``min_cold`` cold starts, a p99 breach ``min_slow`` requests over the limit (under a few
  hundred requests a p99 is one request). Tiny counts never alert.
* **Breach.** error rate > expected + max(``error_margin``, k·σ); p99 > max(expected ·
  ``p99_factor``, expected + ``p99_margin_ms``) and > expected + k·σ; cold-start rate >
  expected + max(``cold_margin``, k·σ).
* **Consecutive.** An alert is raised after ``breach_intervals`` breaching samples in a row and
  cleared after ``clear_intervals`` healthy ones in a row, or when the key sent no sample for
  ``silence_clear_ms`` (its traffic went away: nothing left to judge). A breaching sample does
  not update the baseline; while alerting, the error-rate baseline stays frozen (a lasting
  failure never becomes normal) and the p99 and cold-start baselines learn at a tenth of the
  rate (a heavier version or a new daily peak becomes expected, and its alert ends).
* **Late samples.** A rollup that ended more than ``late_ms`` before the core got it (a
  backfill after a partition) updates nothing: it is old news, and the partition itself is a
  connectivity incident (:class:`ConnectivityTracker`).
* **Bounded.** At most ``max_keys`` (function, location) keys; beyond that the least recently
  seen key is forgotten (with its alerts cleared).

:class:`ConnectivityTracker` raises a ``connectivity`` alert for a location not heard from
(observed-state reports or rollups) for ``silence_ms``, once it had been heard at least once, and
clears it when the location reports again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from ddsketch.mapping import LogarithmicMapping

from edgefn.observe.rollup import RELATIVE_ACCURACY, Rollup, Sketch, merge_sketches, quantiles

__all__ = [
    "SIGNALS",
    "Alert",
    "ConnectivityTracker",
    "Detector",
    "DetectorOptions",
    "DetectorStatistics",
    "Sample",
    "samples_of",
]

Signal = Literal["5xx", "p99", "cold", "unreachable"]
SIGNALS: tuple[Signal, ...] = ("5xx", "p99", "cold")
_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS
_MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)


@dataclass(frozen=True, slots=True)
class DetectorOptions:
    """Thresholds and rates; the defaults suit 5 s rollups."""

    # The level moves slowly (~100 samples, 8 min of 5 s rollups); the hour-of-day offsets
    # faster (~20 samples), and are kept across days: tomorrow's 9:00 starts from today's.
    alpha: float = 0.01
    seasonal_alpha: float = 0.05
    k_sigma: float = 4.0
    min_requests: int = 10
    min_errors: int = 5
    min_cold: int = 5
    min_slow: int = 5
    error_margin: float = 0.05
    cold_margin: float = 0.2
    p99_factor: float = 2.0
    p99_margin_ms: float = 50.0
    warmup: int = 12
    breach_intervals: int = 2
    clear_intervals: int = 3
    silence_clear_ms: int = 60_000
    late_ms: int = 60_000
    max_keys: int = 10_000

    def __post_init__(self) -> None:
        assert 0 < self.alpha <= 1, self.alpha
        assert 0 < self.seasonal_alpha <= 1, self.seasonal_alpha
        assert self.breach_intervals >= 1, self.breach_intervals
        assert self.clear_intervals >= 1, self.clear_intervals
        assert self.max_keys >= 1, self.max_keys


@dataclass(frozen=True, slots=True)
class Sample:
    """One function's figures at one location over one rollup interval."""

    function: str
    location: str
    at_ms: int
    requests: int
    errors: int
    cold_starts: int
    p99_ms: float | None
    # The version with the most 5xx (else the most requests); the location's region.
    version: str
    region: str
    sketch: Sketch = field(default_factory=Sketch, repr=False)


@dataclass(frozen=True, slots=True)
class Alert:
    """A raised (``active``) or cleared alert of one signal of one key.

    ``affected`` is the requests this sample hurt (5xx; requests slower than the expected p99;
    cold starts above the expected rate); the incident book adds them up. A connectivity alert
    has ``function`` "" and ``signal`` ``unreachable``.
    """

    function: str
    location: str
    signal: Signal
    active: bool
    at_ms: int
    since_ms: int
    version: str = ""
    region: str = ""
    observed: float = 0.0
    expected: float = 0.0
    requests: int = 0
    affected: int = 0

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.function, self.location, self.signal)


def samples_of(rollup: Rollup, *, at_ms: int, region: str = "") -> list[Sample]:
    """The rollup's rows grouped by function (overflow rows name no function: skipped)."""
    by_fn: dict[str, list[int]] = {}
    sketches: dict[str, Sketch] = {}
    versions: dict[str, dict[str, tuple[int, int]]] = {}
    for row in rollup.rows:
        if row.function.startswith("~"):
            continue
        acc = by_fn.setdefault(row.function, [0, 0, 0])
        errors = row.requests if row.status == "5xx" else 0
        acc[0] += row.requests
        acc[1] += errors
        acc[2] += row.cold_starts
        sketches[row.function] = merge_sketches(sketches.get(row.function, Sketch()), row.latency)
        v = versions.setdefault(row.function, {})
        e, n = v.get(row.version, (0, 0))
        v[row.version] = (e + errors, n + row.requests)
    out = []
    for fn in sorted(by_fn):
        n, e, c = by_fn[fn]
        (p99,) = quantiles(sketches[fn], (0.99,))
        version = max(sorted(versions[fn]), key=lambda k: versions[fn][k])
        out.append(Sample(fn, rollup.location, at_ms, n, e, c, p99, version, region, sketches[fn]))
    return out


def count_above(sketch: Sketch, value_ms: float) -> int:
    """How many of the sketch's values fall in bins above ``value_ms``'s bin."""
    if value_ms <= 0:
        return sketch.count - sketch.zero
    key = _MAPPING.key(value_ms)
    return sum(c for i, c in enumerate(sketch.bins) if sketch.offset + i > key)


@dataclass(slots=True)
class _Baseline:
    """EWMA level and variance of one signal, plus per-hour-of-day offsets from the level."""

    level: float = 0.0
    var: float = 0.0
    seen: int = 0
    seasonal: dict[int, float] = field(default_factory=dict)

    def expected(self, hour: int) -> float:
        return self.level + self.seasonal.get(hour, 0.0)

    def sigma(self) -> float:
        return math.sqrt(max(self.var, 0.0))

    def update(self, x: float, hour: int, opts: DetectorOptions, *, slow: int = 1) -> None:
        """Additive Holt-Winters without trend: the level learns the deseasonalised sample,
        the hour's offset what is left. The offsets learn faster than the level, so an hour
        that is always higher ends up in its offset, not in the level."""
        if self.seen == 0:
            # The first healthy sample is the level (the error rate is judged against 0 before).
            self.level = x
        a, g = opts.alpha / slow, opts.seasonal_alpha / slow
        d = x - self.expected(hour)
        self.var = (1 - a) * (self.var + a * d * d)
        off = self.seasonal.get(hour, 0.0)
        self.level += a * ((x - off) - self.level)
        self.seasonal[hour] = off + g * ((x - self.level) - off)
        self.seen += 1


@dataclass(slots=True)
class _Track:
    """One signal of one key: its baseline and where it stands in the breach/clear rule."""

    baseline: _Baseline = field(default_factory=_Baseline)
    streak: int = 0  # consecutive breaching samples
    healthy: int = 0  # consecutive healthy samples while alerting
    alerting: bool = False
    since_ms: int = 0


@dataclass(slots=True)
class _Key:
    tracks: dict[Signal, _Track]
    last_ms: int
    version: str = ""
    region: str = ""
    rate: float = 0.0  # EWMA of requests per sample (connectivity impact estimates)


@dataclass(frozen=True, slots=True)
class DetectorStatistics:
    keys: int
    samples_total: int
    late_total: int
    alerting: int
    evicted_total: int


class Detector:
    """Baselines and alert state of every (function, location). Change it only by its methods."""

    def __init__(self, options: DetectorOptions | None = None) -> None:
        self.options = options or DetectorOptions()
        self._keys: dict[tuple[str, str], _Key] = {}
        self._samples = 0
        self._late = 0
        self._evicted = 0

    def observe(self, rollup: Rollup, *, now_ms: int, region: str = "") -> list[Alert]:
        """Judge a stored rollup that reached the core at ``now_ms`` (``region``: its location's)."""
        if now_ms - rollup.end_ms > self.options.late_ms:
            self._late += 1
            return []
        out: list[Alert] = []
        for sample in samples_of(rollup, at_ms=now_ms, region=region):
            out.extend(self.observe_sample(sample))
        return out

    def observe_sample(self, s: Sample) -> list[Alert]:
        self._samples += 1
        key = self._key(s)
        key.last_ms = max(key.last_ms, s.at_ms)
        key.version, key.region = s.version, s.region
        key.rate += self.options.alpha * (s.requests - key.rate)
        if s.requests < self.options.min_requests:
            return []
        hour = (s.at_ms % _DAY_MS) // _HOUR_MS
        out = []
        for signal in SIGNALS:
            alert = self._judge(key.tracks[signal], signal, s, hour)
            if alert is not None:
                out.append(alert)
        return out

    def _key(self, s: Sample) -> _Key:
        k = (s.function, s.location)
        key = self._keys.get(k)
        if key is None:
            if len(self._keys) >= self.options.max_keys:
                oldest = min(self._keys, key=lambda x: (self._keys[x].last_ms, x))
                del self._keys[oldest]
                self._evicted += 1
            key = self._keys[k] = _Key({sig: _Track() for sig in SIGNALS}, s.at_ms)
        return key

    def _judge(self, t: _Track, signal: Signal, s: Sample, hour: int) -> Alert | None:
        value = _value(signal, s)
        if value is None:
            return None
        expected = t.baseline.expected(hour)
        breach = self._breach(t, signal, s, value, expected)
        if breach:
            t.streak += 1
            t.healthy = 0
            if t.streak == 1:
                t.since_ms = s.at_ms
            if not t.alerting and t.streak < self.options.breach_intervals:
                return None
            t.alerting = True
            if signal != "5xx":
                # A latency or cold-start level can shift for good (a heavier version, a new
                # daily peak): while alerting it is learnt at a tenth of the rate, so the alert
                # ends once the new level is expected. Errors are never learnt as normal.
                t.baseline.update(value, hour, self.options, slow=10)
            return self._alert(signal, s, t, value, expected, active=True)
        t.streak = 0
        if t.alerting:
            t.healthy += 1
            if t.healthy >= self.options.clear_intervals:
                t.alerting = False
                t.healthy = 0
                return self._alert(signal, s, t, value, expected, active=False)
            return None
        t.baseline.update(value, hour, self.options)
        return None

    def _breach(self, t: _Track, signal: Signal, s: Sample, value: float, expected: float) -> bool:
        o = self.options
        b = t.baseline
        spread = o.k_sigma * b.sigma()
        if signal == "5xx":
            return s.errors >= o.min_errors and value > expected + max(o.error_margin, spread)
        if b.seen < o.warmup:
            return False
        if signal == "p99":
            limit = max(expected * o.p99_factor, expected + o.p99_margin_ms, expected + spread)
            # Under a few hundred requests the p99 is one request: a single slow one is no
            # anomaly, ``min_slow`` of them over the limit are.
            return value > limit and count_above(s.sketch, limit) >= o.min_slow
        return s.cold_starts >= o.min_cold and value > expected + max(o.cold_margin, spread)

    def _alert(
        self,
        signal: Signal,
        s: Sample,
        t: _Track,
        value: float,
        expected: float,
        *,
        active: bool,
    ) -> Alert:
        return Alert(
            function=s.function,
            location=s.location,
            signal=signal,
            active=active,
            at_ms=s.at_ms,
            since_ms=t.since_ms,
            version=s.version,
            region=s.region,
            observed=round(value, 6),
            expected=round(expected, 6),
            requests=s.requests,
            affected=_affected(signal, s, expected) if active else 0,
        )

    def tick(self, now_ms: int) -> list[Alert]:
        """Clear the alerts of keys that sent nothing for ``silence_clear_ms``."""
        out = []
        for (fn, loc), key in sorted(self._keys.items()):
            if now_ms - key.last_ms < self.options.silence_clear_ms:
                continue
            for signal, t in key.tracks.items():
                if t.alerting:
                    t.alerting, t.streak, t.healthy = False, 0, 0
                    out.append(
                        Alert(fn, loc, signal, False, now_ms, t.since_ms, key.version, key.region)
                    )
                t.streak = 0
        return out

    def location_rate(self, location: str) -> float:
        """Requests per rollup interval this location usually serves (all functions)."""
        return sum(k.rate for (_, loc), k in self._keys.items() if loc == location)

    def check_invariants(self) -> None:
        assert len(self._keys) <= self.options.max_keys, len(self._keys)
        for key in self._keys.values():
            for t in key.tracks.values():
                assert t.streak >= 0, t.streak
                assert t.alerting or t.healthy == 0, t
                assert t.baseline.var >= 0, t.baseline.var

    def statistics(self) -> DetectorStatistics:
        alerting = sum(t.alerting for k in self._keys.values() for t in k.tracks.values())
        return DetectorStatistics(
            len(self._keys), self._samples, self._late, alerting, self._evicted
        )


def _value(signal: Signal, s: Sample) -> float | None:
    if signal == "5xx":
        return s.errors / s.requests
    if signal == "cold":
        return s.cold_starts / s.requests
    return s.p99_ms


def _affected(signal: Signal, s: Sample, expected: float) -> int:
    if signal == "5xx":
        return s.errors
    if signal == "cold":
        return max(0, s.cold_starts - math.floor(expected * s.requests))
    return count_above(s.sketch, expected)


class ConnectivityTracker:
    """When each location was last heard from; alerts for those silent past ``silence_ms``."""

    def __init__(self, *, silence_ms: int = 15_000, max_locations: int = 10_000) -> None:
        assert silence_ms > 0, silence_ms
        self.silence_ms = silence_ms
        self.max_locations = max_locations
        self._last: dict[str, int] = {}
        self._region: dict[str, str] = {}
        self._down: dict[str, int] = {}  # location -> since_ms

    def heard(self, location: str, region: str, at_ms: int) -> list[Alert]:
        """``location`` reported at ``at_ms`` (the core's clock); clears its alert if any."""
        if location not in self._last and len(self._last) >= self.max_locations:
            return []
        self._last[location] = max(self._last.get(location, at_ms), at_ms)
        if region:
            self._region[location] = region
        since = self._down.get(location)
        # Only a report newer than the last one before the silence clears the alert.
        if since is not None and at_ms > since:
            del self._down[location]
            return [self._alert(location, active=False, at_ms=at_ms, since_ms=since)]
        return []

    def forget(self, location: str) -> list[Alert]:
        """A location removed from the planet: no longer tracked, its alert cleared."""
        self._last.pop(location, None)
        since = self._down.pop(location, None)
        if since is None:
            return []
        return [self._alert(location, active=False, at_ms=since, since_ms=since)]

    def tick(self, now_ms: int, *, impact: dict[str, float] | None = None) -> list[Alert]:
        """Raise alerts for locations silent past the limit; ``impact``: requests lost per
        location so far (estimated by the caller from its usual rate)."""
        out = []
        for location, last in sorted(self._last.items()):
            if location in self._down or now_ms - last < self.silence_ms:
                continue
            self._down[location] = last
            lost = round((impact or {}).get(location, 0.0))
            out.append(
                self._alert(location, active=True, at_ms=now_ms, since_ms=last, affected=lost)
            )
        return out

    def _alert(
        self, location: str, *, active: bool, at_ms: int, since_ms: int, affected: int = 0
    ) -> Alert:
        return Alert(
            function="",
            location=location,
            signal="unreachable",
            active=active,
            at_ms=at_ms,
            since_ms=since_ms,
            region=self._region.get(location, ""),
            affected=affected,
        )

    def down(self) -> dict[str, int]:
        return dict(self._down)

    def tracked(self) -> list[str]:
        return sorted(self._last)

    def check_invariants(self) -> None:
        assert set(self._down) <= set(self._last), (self._down, self._last)
        assert len(self._last) <= self.max_locations, len(self._last)
