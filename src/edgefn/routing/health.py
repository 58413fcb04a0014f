"""Which locations are healthy, from heartbeats, active probes and real request outcomes.

:class:`HealthTable` is the pure machine one location runs about all the others. Three independent
detectors feed it; a location is unhealthy while at least one of them accuses it:

* **phi accrual** over the heartbeats every node publishes on the bus (:mod:`._phi`): suspected
  once ``phi > phi_threshold``; cleared by the next heartbeat;
* **active probes**: the table emits :class:`SendProbe` for a location without a probe in flight
  (at most ``max_probes_per_tick`` per tick) every ``probe_interval_ms`` while the location needs
  watching — it is unhealthy, a probe to it failed, its phi is past half the threshold, this
  location sent it requests in the last ``busy_window_ms``, or heartbeats are not used — and every
  ``idle_probe_interval_ms`` (or ``probe_interval_ms`` if longer) otherwise: a quiet peer that heartbeats on time is not probed every
  second by every other location (that was N(N-1) requests a second, half an idle node's CPU;
  docs/design/0018). The driver answers with :class:`ProbeResult`. A probe unanswered after
  ``probe_timeout_ms`` counts as failed. ``probe_failures_unhealthy`` failures in a row accuse
  the location; one success clears it;
* **passive outlier detection** over :class:`RequestOutcome` events (:mod:`._outlier`): consecutive
  errors and latency outliers eject a location for an exponentially growing time.

The table emits :class:`MarkUnhealthy` / :class:`MarkHealthy` only on transitions. The driver
applies them to its own :class:`~edgefn.routing.policy.RoutingPolicy` and publishes them so every
location learns within one bus round trip. Locations join the table on :class:`Track` or on their
first event (up to ``max_locations``; events for more are dropped and counted) and leave on
:class:`Forget`. New locations start healthy; a location that never heartbeats becomes suspect
after about ``first_heartbeat_interval_ms`` plus the threshold's margin.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgefn.routing._errors import RoutingConfigError, require_positive
from edgefn.routing._outlier import OutlierConfig, OutlierDetector
from edgefn.routing._phi import PhiAccrualDetector

__all__ = [
    "Forget",
    "HealthConfig",
    "HealthEvent",
    "HealthInstruction",
    "HealthStatistics",
    "HealthTable",
    "HealthTick",
    "Heartbeat",
    "MarkHealthy",
    "MarkUnhealthy",
    "OutlierConfig",
    "ProbeResult",
    "RequestOutcome",
    "SendProbe",
    "Track",
]


@dataclass(frozen=True, slots=True)
class HealthConfig:
    phi_threshold: float = 8.0
    use_heartbeats: bool = True
    heartbeat_window: int = 100
    min_std_ms: float = 200.0
    acceptable_pause_ms: float = 0.0
    first_heartbeat_interval_ms: int = 1_000
    probe_interval_ms: int = 1_000
    idle_probe_interval_ms: int = 15_000
    busy_window_ms: int = 10_000
    probe_timeout_ms: int = 2_000
    probe_failures_unhealthy: int = 2
    max_probes_per_tick: int = 64
    max_locations: int = 4_096
    outlier: OutlierConfig = field(default_factory=OutlierConfig)

    def __post_init__(self) -> None:
        for key in (
            "phi_threshold",
            "min_std_ms",
            "first_heartbeat_interval_ms",
            "probe_interval_ms",
            "idle_probe_interval_ms",
            "busy_window_ms",
            "probe_timeout_ms",
            "probe_failures_unhealthy",
            "max_probes_per_tick",
            "max_locations",
        ):
            require_positive(f"[health] {key}", getattr(self, key))
        require_positive("[health] acceptable_pause_ms", self.acceptable_pause_ms, allow_zero=True)
        if self.heartbeat_window < 2:
            raise RoutingConfigError(
                f"must be at least 2, got {self.heartbeat_window}",
                key="[health] heartbeat_window",
                hint="use 100 (about two minutes of one-second heartbeats)",
            )
        o = self.outlier
        for key in (
            "consecutive_errors",
            "interval_ms",
            "min_requests",
            "latency_factor",
            "base_ejection_ms",
            "max_ejection_ms",
            "max_ejection_percent",
        ):
            require_positive(f"[health.outlier] {key}", getattr(o, key))


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Track:
    location: str
    now_ms: int


@dataclass(frozen=True, slots=True)
class Forget:
    location: str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    location: str
    now_ms: int


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Answer to :class:`SendProbe`; ``probe_id`` None accepts it whatever probe is in flight."""

    location: str
    ok: bool
    latency_ms: float
    now_ms: int
    probe_id: int | None = None


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    """A real request served by ``location``: ok False for 5xx, connection errors and timeouts."""

    location: str
    ok: bool
    latency_ms: float
    now_ms: int


@dataclass(frozen=True, slots=True)
class HealthTick:
    now_ms: int


HealthEvent = Track | Forget | Heartbeat | ProbeResult | RequestOutcome | HealthTick

# -- instructions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MarkUnhealthy:
    location: str
    reason: str


@dataclass(frozen=True, slots=True)
class MarkHealthy:
    location: str


@dataclass(frozen=True, slots=True)
class SendProbe:
    location: str
    probe_id: int


HealthInstruction = MarkUnhealthy | MarkHealthy | SendProbe


@dataclass(frozen=True, slots=True)
class HealthStatistics:
    tracked: int
    unhealthy: int
    ejected: int
    probes_in_flight: int
    probes_sent: int
    probes_failed: int
    ejections_total: int
    dropped_events: int


@dataclass(slots=True)
class _Location:
    phi: PhiAccrualDetector
    last_probe_ms: int | None = None
    last_request_ms: int | None = None
    probe_id: int | None = None
    probe_sent_ms: int = 0
    probe_failures: int = 0
    unhealthy_reason: str = ""


class HealthTable:
    """Health of every other location as seen from one location. Change it only through handle()."""

    def __init__(self, *, config: HealthConfig | None = None, self_location: str = "") -> None:
        self.config = config or HealthConfig()
        self.self_location = self_location
        self._locs: dict[str, _Location] = {}
        self._outliers = OutlierDetector(self.config.outlier)
        self._next_probe_id = 1
        self._probes_sent = 0
        self._probes_failed = 0
        self._dropped = 0

    def handle(self, event: HealthEvent) -> list[HealthInstruction]:
        if isinstance(event, HealthTick):
            return self._tick(event.now_ms)
        if isinstance(event, Forget):
            self._locs.pop(event.location, None)
            self._outliers.forget(event.location)
            return []
        loc = self._ensure(event.location, event.now_ms)
        if loc is None:
            return []
        if isinstance(event, Heartbeat):
            loc.phi.heartbeat(event.now_ms)
        elif isinstance(event, ProbeResult):
            self._probe_result(loc, event)
        elif isinstance(event, RequestOutcome):
            loc.last_request_ms = event.now_ms
            self._outliers.outcome(event.location, event.ok, event.latency_ms, event.now_ms)
        return self._reassess(event.location, loc, event.now_ms)

    def _ensure(self, location: str, now_ms: int) -> _Location | None:
        loc = self._locs.get(location)
        if loc is not None:
            return loc
        if len(self._locs) >= self.config.max_locations:
            self._dropped += 1
            return None
        cfg = self.config
        phi = PhiAccrualDetector(
            now_ms=now_ms,
            window=cfg.heartbeat_window,
            min_std_ms=cfg.min_std_ms,
            acceptable_pause_ms=cfg.acceptable_pause_ms,
            first_interval_ms=cfg.first_heartbeat_interval_ms,
        )
        loc = _Location(phi=phi)
        self._locs[location] = loc
        self._outliers.track(location)
        return loc

    def _probe_result(self, loc: _Location, event: ProbeResult) -> None:
        if event.probe_id is not None and event.probe_id != loc.probe_id:
            return  # An answer to a probe that already timed out: it was counted then.
        loc.probe_id = None
        loc.probe_failures = 0 if event.ok else loc.probe_failures + 1
        if not event.ok:
            self._probes_failed += 1

    def _accusation(self, location: str, loc: _Location, now_ms: int) -> str:
        """Why the location is unhealthy now, or '' if nobody accuses it."""
        cfg = self.config
        if cfg.use_heartbeats:
            phi = loc.phi.phi(now_ms)
            if phi > cfg.phi_threshold:
                silent_ms = now_ms - loc.phi.last_ms
                return f"no heartbeat for {silent_ms} ms (phi {phi:.1f} > {cfg.phi_threshold:g})"
        if loc.probe_failures >= cfg.probe_failures_unhealthy:
            return f"{loc.probe_failures} probes failed in a row"
        return self._outliers.ejected(location)

    def _reassess(self, location: str, loc: _Location, now_ms: int) -> list[HealthInstruction]:
        reason = self._accusation(location, loc, now_ms)
        if reason and not loc.unhealthy_reason:
            loc.unhealthy_reason = reason
            return [MarkUnhealthy(location, reason)]
        if not reason and loc.unhealthy_reason:
            loc.unhealthy_reason = ""
            return [MarkHealthy(location)]
        if reason:
            loc.unhealthy_reason = reason
        return []

    def _tick(self, now_ms: int) -> list[HealthInstruction]:
        self._outliers.tick(now_ms)
        out: list[HealthInstruction] = []
        probes = 0
        for name in sorted(self._locs):
            loc = self._locs[name]
            if name == self.self_location:
                continue
            timeout_ms = self.config.probe_timeout_ms
            if loc.probe_id is not None and now_ms - loc.probe_sent_ms >= timeout_ms:
                loc.probe_id = None
                loc.probe_failures += 1
                self._probes_failed += 1
            due = loc.probe_id is None and (
                loc.last_probe_ms is None
                or now_ms - loc.last_probe_ms >= self._probe_interval(loc, now_ms)
            )
            if due and probes < self.config.max_probes_per_tick:
                probes += 1
                out.append(self._send_probe(name, loc, now_ms))
            out.extend(self._reassess(name, loc, now_ms))
        return out

    def _send_probe(self, name: str, loc: _Location, now_ms: int) -> SendProbe:
        probe_id = self._next_probe_id
        self._next_probe_id += 1
        loc.probe_id = probe_id
        loc.probe_sent_ms = now_ms
        loc.last_probe_ms = now_ms
        self._probes_sent += 1
        return SendProbe(name, probe_id)

    def _probe_interval(self, loc: _Location, now_ms: int) -> int:
        """``probe_interval_ms`` while the location needs watching, else the idle interval."""
        cfg = self.config
        busy = loc.last_request_ms is not None and now_ms - loc.last_request_ms < cfg.busy_window_ms
        watched = (
            busy
            or not cfg.use_heartbeats
            or bool(loc.unhealthy_reason)
            or loc.probe_failures > 0
            or loc.phi.phi(now_ms) > cfg.phi_threshold / 2
        )
        return (
            cfg.probe_interval_ms
            if watched
            else max(cfg.idle_probe_interval_ms, cfg.probe_interval_ms)
        )

    # -- introspection -------------------------------------------------------------------------

    def is_healthy(self, location: str) -> bool:
        loc = self._locs.get(location)
        return loc is None or not loc.unhealthy_reason

    def unhealthy(self) -> dict[str, str]:
        """Unhealthy locations and why, as of the last event."""
        return {
            name: loc.unhealthy_reason for name, loc in self._locs.items() if loc.unhealthy_reason
        }

    def phi(self, location: str, now_ms: int) -> float:
        loc = self._locs.get(location)
        return 0.0 if loc is None else loc.phi.phi(now_ms)

    def check_invariants(self) -> None:
        assert len(self._locs) <= self.config.max_locations, len(self._locs)
        in_flight = 0
        for name, loc in self._locs.items():
            assert loc.probe_failures >= 0, name
            if loc.probe_id is not None:
                in_flight += 1
                assert loc.probe_id < self._next_probe_id, name
        assert in_flight <= len(self._locs)
        self._outliers.check_invariants()

    def statistics(self) -> HealthStatistics:
        return HealthStatistics(
            tracked=len(self._locs),
            unhealthy=sum(1 for loc in self._locs.values() if loc.unhealthy_reason),
            ejected=self._outliers.ejected_count(),
            probes_in_flight=sum(1 for loc in self._locs.values() if loc.probe_id is not None),
            probes_sent=self._probes_sent,
            probes_failed=self._probes_failed,
            ejections_total=self._outliers.ejections_total,
            dropped_events=self._dropped,
        )
