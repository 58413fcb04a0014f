"""Fast failover: a location that refused a connection is avoided at once, not after phi rises.

:class:`HealthTable` needs several missed heartbeats (or two failed probes) before it accuses a
location, and every request routed there meanwhile would fail. A refused connection is proof
enough, so :class:`Suspicion` sits between the health table and the
:class:`~edgefn.routing.policy.RoutingPolicy` of one ingress and turns three kinds of event into
the ``HealthChanged`` updates the policy gets:

* :class:`ConnectRefused` (a forward could not connect to ``location``): the location becomes
  *suspect* from ``now_ms`` and unhealthy in the policy at once. A later refusal restarts the hold.
* :class:`TableVerdict` (the health table's ``MarkHealthy`` / ``MarkUnhealthy``): an unhealthy
  verdict always passes; a healthy one passes only if the location is not suspect, so the table
  cannot undo a suspicion it knows nothing about.
* :class:`HeardFrom` (a heartbeat arrived from ``location``, after the table took it):
  a heartbeat more than ``hold_ms`` after the suspicion began clears it, and if the table also
  holds the location healthy the policy hears it is healthy again. The hold keeps a heartbeat that
  was already on its way when the connection failed from clearing the suspicion at once.

At most ``max_locations`` locations are suspect at a time; a refusal beyond that still marks the
location unhealthy (so the request path avoids it) but is not held, and is counted in
``statistics().dropped``. The machine never reads a clock: time arrives in the events.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgefn.routing._errors import require_positive
from edgefn.routing.policy import HealthChanged

__all__ = [
    "ConnectRefused",
    "HeardFrom",
    "Suspicion",
    "SuspicionConfig",
    "SuspicionEvent",
    "SuspicionStatistics",
    "TableVerdict",
]


@dataclass(frozen=True, slots=True)
class SuspicionConfig:
    """Knobs of :class:`Suspicion`.

    ``hold_ms``: how long after a refused connection a heartbeat is needed to clear the suspicion
    (one first-heartbeat interval of the local planet, 250 ms; a heartbeat sent before the
    refusal arrives well within it). ``max_locations``: the most locations suspect at once.
    """

    hold_ms: int = 250
    max_locations: int = 4_096

    def __post_init__(self) -> None:
        require_positive("[suspicion] hold_ms", self.hold_ms, allow_zero=True)
        require_positive("[suspicion] max_locations", self.max_locations)


@dataclass(frozen=True, slots=True)
class ConnectRefused:
    location: str
    now_ms: int


@dataclass(frozen=True, slots=True)
class TableVerdict:
    """The health table marked ``location`` healthy or unhealthy."""

    location: str
    healthy: bool


@dataclass(frozen=True, slots=True)
class HeardFrom:
    """A heartbeat from ``location``; ``table_healthy``: the health table's view after it."""

    location: str
    now_ms: int
    table_healthy: bool


SuspicionEvent = ConnectRefused | TableVerdict | HeardFrom


@dataclass(frozen=True, slots=True)
class SuspicionStatistics:
    suspect: int
    refused: int
    cleared: int
    dropped: int


class Suspicion:
    """Which locations one ingress holds unhealthy because they refused a connection."""

    def __init__(self, config: SuspicionConfig | None = None) -> None:
        self.config = config or SuspicionConfig()
        self._since_ms: dict[str, int] = {}
        self._refused = 0
        self._cleared = 0
        self._dropped = 0

    def handle(self, event: SuspicionEvent) -> list[HealthChanged]:
        """Apply one event; returns the health updates for the routing policy."""
        if isinstance(event, ConnectRefused):
            return self._refused_by(event)
        if isinstance(event, TableVerdict):
            if event.healthy and event.location in self._since_ms:
                return []
            return [HealthChanged(event.location, event.healthy)]
        return self._heard(event)

    def _refused_by(self, event: ConnectRefused) -> list[HealthChanged]:
        self._refused += 1
        if event.location in self._since_ms or len(self._since_ms) < self.config.max_locations:
            self._since_ms[event.location] = event.now_ms
        else:
            self._dropped += 1
        return [HealthChanged(event.location, False)]

    def _heard(self, event: HeardFrom) -> list[HealthChanged]:
        since = self._since_ms.get(event.location)
        if since is None or event.now_ms - since <= self.config.hold_ms:
            return []
        del self._since_ms[event.location]
        self._cleared += 1
        return [HealthChanged(event.location, True)] if event.table_healthy else []

    def is_suspect(self, location: str) -> bool:
        return location in self._since_ms

    def check_invariants(self) -> None:
        assert len(self._since_ms) <= self.config.max_locations, len(self._since_ms)
        assert self._cleared + len(self._since_ms) <= self._refused, (self._cleared, self._refused)

    def statistics(self) -> SuspicionStatistics:
        return SuspicionStatistics(
            suspect=len(self._since_ms),
            refused=self._refused,
            cleared=self._cleared,
            dropped=self._dropped,
        )
