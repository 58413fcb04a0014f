"""Which location an anycast entry sends a request to (pure; no I/O, time arrives as data).

The entry knows a table of locations (id, position, URL). For each request it ranks the *healthy*
locations by modelled RTT from the client's position, nearest first, ties broken by id so that the
choice is reproducible, and sends the request to the first; if connecting to it fails, it retries
once on the second. That is what BGP anycast approximates in production: the nearest reachable PoP.

Health, per location, is driven by events:

- ``ProbeResult(ok=True)`` marks the location healthy at once;
- ``probe_failures_to_mark_down`` consecutive ``ProbeResult(ok=False)`` mark it unhealthy (one
  slow probe on a busy machine should not empty a location);
- ``ConnectFailed`` (passive: the proxy could not connect) marks it unhealthy at once.

Which locations to probe (:meth:`AnycastChooser.due`): one that needs watching is probed every
``probe_interval_ms``, the rest every ``idle_probe_interval_ms``. It needs watching while it is
unhealthy or has a failed probe outstanding, its health changed or it was sent a request
(``Routed``) within the last ``busy_window_ms``: traffic keeps the fast probes, an idle planet
costs one probe per location every 2 s instead of 4 a second (docs/design/0018-idle-cost.md).
A location no probe has reached yet is due at once.

A location is presumed healthy when it is first seen, so requests flow before the first probe
round completes; the first failed connection corrects that. ``LocationsReplaced`` swaps the table
at run time and keeps the health of locations whose id and URL did not change. ``handle`` returns
``HealthChanged`` instructions, which the driver logs and counts.

:func:`client_point` turns the ``x-edgefn-client-location`` header into a position, with
:func:`edgefn.world.parse_client_location` (IATA code, city or ``lat,lon``); :func:`format_point`
is the normalized ``lat,lon`` form the entry forwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edgefn.world import GeoPoint, LatencyModel, parse_client_location

__all__ = [
    "AnycastChooser",
    "AnycastChooserStatistics",
    "ConnectFailed",
    "EntryLocation",
    "HealthChanged",
    "LocationHealth",
    "LocationsReplaced",
    "ProbeResult",
    "client_point",
    "format_point",
]

MAX_LOCATIONS = 10_000


@dataclass(frozen=True, slots=True)
class EntryLocation:
    """A location the entry can send requests to: ``url`` is its node's base URL."""

    id: str
    lat: float
    lon: float
    url: str


@dataclass(frozen=True, slots=True)
class ProbeResult:
    location_id: str
    ok: bool
    now_ms: int


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    location_id: str
    now_ms: int


@dataclass(frozen=True, slots=True)
class LocationsReplaced:
    locations: tuple[EntryLocation, ...]


@dataclass(frozen=True, slots=True)
class Routed:
    """A request was sent to the location (its probes stay fast while it serves traffic)."""

    location_id: str
    now_ms: int


Event = ProbeResult | ConnectFailed | LocationsReplaced | Routed


@dataclass(frozen=True, slots=True)
class HealthChanged:
    location_id: str
    healthy: bool
    reason: str


@dataclass(frozen=True, slots=True)
class LocationHealth:
    location: EntryLocation
    healthy: bool
    consecutive_probe_failures: int
    changed_at_ms: int


@dataclass(frozen=True, slots=True)
class AnycastChooserStatistics:
    locations: int
    healthy: int
    marked_down_total: int
    marked_up_total: int


def client_point(header: str | None, *, default: GeoPoint) -> GeoPoint:
    """The client's position from the header (absent or blank: ``default``).

    Raises :class:`edgefn.errors.UsageError` for a value that is not an IATA code, a known city
    or a valid ``lat,lon``.
    """
    if header is None or not header.strip():
        return default
    return parse_client_location(header.strip())


def format_point(point: GeoPoint) -> str:
    """The normalized ``lat,lon`` header value (4 decimals: about 10 m)."""
    return f"{point.lat:.4f},{point.lon:.4f}"


class AnycastChooser:
    """Ranks healthy locations for a client position. Change it only through :meth:`handle`."""

    def __init__(
        self,
        locations: Sequence[EntryLocation],
        *,
        model: LatencyModel | None = None,
        probe_failures_to_mark_down: int = 2,
        probe_interval_ms: int = 250,
        idle_probe_interval_ms: int = 2_000,
        busy_window_ms: int = 10_000,
    ) -> None:
        assert probe_failures_to_mark_down >= 1
        assert 0 < probe_interval_ms <= idle_probe_interval_ms, (
            probe_interval_ms,
            idle_probe_interval_ms,
        )
        self._model = model if model is not None else LatencyModel()
        self._threshold = probe_failures_to_mark_down
        self._fast_ms = probe_interval_ms
        self._idle_ms = idle_probe_interval_ms
        self._busy_ms = busy_window_ms
        self._probed_ms: dict[str, int] = {}  # when its last probe result came
        self._routed_ms: dict[str, int] = {}  # when a request was last sent to it
        self._health: dict[str, LocationHealth] = {}
        self._marked_down_total = 0
        self._marked_up_total = 0
        self._replace(tuple(locations))

    # -- queries ---------------------------------------------------------------------------------

    def rank(self, point: GeoPoint, *, exclude: Iterable[str] = ()) -> list[EntryLocation]:
        """Healthy locations, nearest first (ties by id), without those in ``exclude``."""
        skip = set(exclude)
        candidates = [
            h.location for h in self._health.values() if h.healthy and h.location.id not in skip
        ]
        return sorted(candidates, key=lambda loc: (self.rtt_ms(point, loc), loc.id))

    def rtt_ms(self, point: GeoPoint, location: EntryLocation) -> float:
        return self._model.rtt_ms(point, GeoPoint(location.lat, location.lon))

    def locations(self) -> list[LocationHealth]:
        return [self._health[k] for k in sorted(self._health)]

    def due(self, now_ms: int) -> list[EntryLocation]:
        """The locations to probe now (see the module docstring), by id."""
        out = []
        for key in sorted(self._health):
            health = self._health[key]
            probed = self._probed_ms.get(key)
            if probed is None:
                out.append(health.location)
                continue
            watching = (
                not health.healthy
                or health.consecutive_probe_failures > 0
                or now_ms - health.changed_at_ms <= self._busy_ms
                or now_ms - self._routed_ms.get(key, -self._busy_ms - 1) <= self._busy_ms
            )
            if now_ms - probed >= (self._fast_ms if watching else self._idle_ms):
                out.append(health.location)
        return out

    def is_healthy(self, location_id: str) -> bool:
        health = self._health.get(location_id)
        return health is not None and health.healthy

    def statistics(self) -> AnycastChooserStatistics:
        return AnycastChooserStatistics(
            locations=len(self._health),
            healthy=sum(1 for h in self._health.values() if h.healthy),
            marked_down_total=self._marked_down_total,
            marked_up_total=self._marked_up_total,
        )

    def check_invariants(self) -> None:
        assert len(self._health) <= MAX_LOCATIONS
        for key, health in self._health.items():
            assert key == health.location.id
            assert health.consecutive_probe_failures >= 0
            if health.consecutive_probe_failures >= self._threshold:
                assert not health.healthy, f"{key} failed {self._threshold} probes yet is healthy"

    # -- the machine -----------------------------------------------------------------------------

    def handle(self, event: Event) -> list[HealthChanged]:
        if isinstance(event, LocationsReplaced):
            self._replace(event.locations)
            return []
        health = self._health.get(event.location_id)
        if health is None:
            return []  # A probe or request that started before the table changed.
        if isinstance(event, Routed):
            self._routed_ms[event.location_id] = event.now_ms
            return []
        if isinstance(event, ConnectFailed):
            return self._set(
                health,
                healthy=False,
                failures=health.consecutive_probe_failures,
                now_ms=event.now_ms,
                reason="connection failed",
            )
        self._probed_ms[event.location_id] = event.now_ms
        if event.ok:
            return self._set(
                health, healthy=True, failures=0, now_ms=event.now_ms, reason="health probe ok"
            )
        failures = health.consecutive_probe_failures + 1
        down = failures >= self._threshold
        return self._set(
            health,
            healthy=health.healthy and not down,
            failures=failures,
            now_ms=event.now_ms,
            reason=f"{failures} health probes failed",
        )

    def _set(
        self, health: LocationHealth, *, healthy: bool, failures: int, now_ms: int, reason: str
    ) -> list[HealthChanged]:
        changed = healthy != health.healthy
        self._health[health.location.id] = LocationHealth(
            location=health.location,
            healthy=healthy,
            consecutive_probe_failures=failures,
            changed_at_ms=now_ms if changed else health.changed_at_ms,
        )
        if not changed:
            return []
        if healthy:
            self._marked_up_total += 1
        else:
            self._marked_down_total += 1
        return [HealthChanged(health.location.id, healthy, reason)]

    def _replace(self, locations: tuple[EntryLocation, ...]) -> None:
        assert len(locations) <= MAX_LOCATIONS, "too many locations"
        ids = [loc.id for loc in locations]
        assert len(set(ids)) == len(ids), f"duplicate location ids in {ids}"
        old = self._health
        self._health = {}
        for table in (self._probed_ms, self._routed_ms):
            for key in [k for k in table if k not in ids]:
                del table[key]
        for loc in locations:
            kept = old.get(loc.id)
            if kept is not None and kept.location == loc:
                self._health[loc.id] = kept
            else:
                self._health[loc.id] = LocationHealth(loc, True, 0, 0)
