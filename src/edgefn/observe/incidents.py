"""Incidents: related alerts correlated into one, with severity, lifecycle and escalation (pure).

An :class:`IncidentBook` takes :class:`~edgefn.observe.anomaly.Alert` changes (``alert``), the
operator's ``acknowledge`` and ``resolve``, and the clock (``tick``); each returns instructions:
:class:`Save` (write this incident) and :class:`Notify` (tell its routes: ``opened`` or
``escalated``). The driver carries them out (control/incidents_driver.py).

Rules:

* **Correlation.** A function alert joins the open (or acknowledged) incident of the same
  function when it shares a version or a region with it, or comes within ``window_ms`` of the
  incident's last activity; otherwise it opens a new one. Connectivity alerts (``unreachable``)
  join the open connectivity incident within the window. So "v7 of checkout fails at 5
  locations" is one incident however many locations and signals (5xx, p99, cold starts) fire.
* **Notification.** An incident is notified (``Notify opened``) ``group_wait_ms`` after it
  opened, by ``tick``, so alerts of the same cause arriving in the same rollup period are in it.
* **Severity** comes from user impact: the requests the incident's alerts counted as affected,
  ``minor`` < ``major_requests`` <= ``major`` < ``critical_requests`` <= ``critical``. It only
  rises while the incident is open.
* **Lifecycle.** ``open`` → ``acknowledged`` → ``resolved``, or ``open`` → ``resolved``.
  An incident none of whose alerts is active any more for ``quiet_ms`` resolves itself
  (``resolved_by`` = ``auto``). A resolved incident never reopens: a new alert opens a new one.
  Acknowledging a resolved incident, or resolving it again, is refused with
  :class:`~edgefn.errors.IncidentError` (``not_found`` for an unknown id).
* **Escalation.** An incident still ``open`` (not acknowledged) ``escalate_after_ms`` after it
  was notified, or after its last escalation, escalates one level (at most ``max_escalations``) and
  is notified again.
* **Bounded.** At most ``max_open`` unresolved incidents: an alert that would open one more is
  counted and dropped (the open ones already say the planet is in trouble). An incident lists
  at most ``max_locations`` locations (the count keeps going). Resolved incidents are the
  driver's store's to keep or prune.

Incident ids are integers, one more than the largest the book was given at start.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

from edgefn.errors import IncidentError
from edgefn.observe.anomaly import Alert

__all__ = [
    "SEVERITIES",
    "STATES",
    "BookOptions",
    "BookStatistics",
    "Incident",
    "IncidentBook",
    "Notify",
    "Save",
]

State = Literal["open", "acknowledged", "resolved"]
Severity = Literal["minor", "major", "critical"]
STATES: tuple[State, ...] = ("open", "acknowledged", "resolved")
SEVERITIES: tuple[Severity, ...] = ("minor", "major", "critical")
_SIGNAL_WORDS = {"5xx": "5xx", "p99": "slow p99", "cold": "cold starts", "unreachable": ""}


@dataclass(frozen=True, slots=True)
class BookOptions:
    # An opened incident is notified this long after it opened, with every alert that joined
    # meanwhile (Alertmanager's group_wait): a bit over one 5 s rollup period, so the other
    # locations failing in the same period are named in the first notification.
    group_wait_ms: int = 7_000
    window_ms: int = 5 * 60_000
    quiet_ms: int = 5 * 60_000
    escalate_after_ms: int = 15 * 60_000
    max_escalations: int = 3
    major_requests: int = 100
    critical_requests: int = 1000
    max_open: int = 1000
    max_locations: int = 500


@dataclass(frozen=True, slots=True)
class Incident:
    """One incident as stored and served (``as_json``)."""

    id: int
    kind: Literal["function", "connectivity"]
    function: str
    state: State
    severity: Severity
    opened_ms: int
    since_ms: int
    last_active_ms: int
    versions: tuple[str, ...] = ()
    locations: tuple[str, ...] = ()
    active: tuple[str, ...] = ()  # "location/signal" alerts active now
    regions: tuple[str, ...] = ()
    signals: tuple[str, ...] = ()
    requests_affected: int = 0
    locations_total: int = 0
    notified: bool = False
    escalations: int = 0
    escalated_ms: int = 0
    acknowledged_ms: int | None = None
    acknowledged_by: str = ""
    resolved_ms: int | None = None
    resolved_by: str = ""

    @property
    def title(self) -> str:
        since = datetime.fromtimestamp(self.since_ms / 1000, UTC).strftime("%H:%M")
        n = self.locations_total
        where = f"{n} location{'s' if n != 1 else ''}"
        if self.kind == "connectivity":
            return f"{where} unreachable since {since} UTC: {', '.join(self.locations)}"
        words = ", ".join(w for s in self.signals if (w := _SIGNAL_WORDS.get(s, s)))
        versions = "/".join(self.versions) or "?"
        return f"version {versions} of {self.function}: {words} at {where} since {since} UTC"

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "title": self.title,
            "kind": self.kind,
            "function": self.function,
            "state": self.state,
            "severity": self.severity,
            "opened_ms": self.opened_ms,
            "since_ms": self.since_ms,
            "last_active_ms": self.last_active_ms,
            "versions": list(self.versions),
            "locations": list(self.locations),
            "locations_total": self.locations_total,
            "active": list(self.active),
            "regions": list(self.regions),
            "signals": list(self.signals),
            "requests_affected": self.requests_affected,
            "notified": self.notified,
            "escalations": self.escalations,
            "acknowledged_ms": self.acknowledged_ms,
            "acknowledged_by": self.acknowledged_by,
            "resolved_ms": self.resolved_ms,
            "resolved_by": self.resolved_by,
        }


@dataclass(frozen=True, slots=True)
class Save:
    incident: Incident


@dataclass(frozen=True, slots=True)
class Notify:
    incident: Incident
    event: Literal["opened", "escalated"]


Instruction = Save | Notify


@dataclass(frozen=True, slots=True)
class BookStatistics:
    unresolved: int
    opened_total: int
    auto_resolved_total: int
    escalations_total: int
    dropped_alerts_total: int


def _add(items: tuple[str, ...], item: str) -> tuple[str, ...]:
    return items if not item or item in items else (*sorted({*items, item}),)


@dataclass(slots=True)
class IncidentBook:
    """The unresolved incidents and the rules that change them."""

    options: BookOptions = field(default_factory=BookOptions)
    next_id: int = 1
    _open: dict[int, Incident] = field(default_factory=dict)
    _opened: int = 0
    _auto: int = 0
    _escalations: int = 0
    _dropped: int = 0

    @classmethod
    def restore(cls, incidents: list[Incident], options: BookOptions | None = None) -> IncidentBook:
        """A book over stored incidents (the unresolved ones stay live); ids continue after them."""
        book = cls(options or BookOptions())
        book.next_id = max((i.id for i in incidents), default=0) + 1
        book._open = {i.id: i for i in incidents if i.state != "resolved"}
        return book

    def unresolved(self) -> list[Incident]:
        return [self._open[k] for k in sorted(self._open)]

    # -- alerts -----------------------------------------------------------------------------
    def alert(self, a: Alert) -> list[Instruction]:
        found = self._related(a)
        if found is None:
            if not a.active:
                return []  # the clear of an alert whose incident is gone
            if len(self._open) >= self.options.max_open:
                self._dropped += 1
                return []
            inc = self._new(a)
            self._open[inc.id] = inc
            self._opened += 1
            return [Save(inc)]
        updated = self._apply(found, a)
        self._open[updated.id] = updated
        return [Save(updated)] if updated != found else []

    def _related(self, a: Alert) -> Incident | None:
        kind = "connectivity" if a.signal == "unreachable" else "function"
        tag = f"{a.location}/{a.signal}"
        best = None
        for inc in self.unresolved():
            if inc.kind != kind or inc.function != a.function:
                continue
            if tag in inc.active:
                return inc  # the incident this very alert belongs to
            near = a.at_ms - inc.last_active_ms <= self.options.window_ms
            shared = a.version in inc.versions or (a.region != "" and a.region in inc.regions)
            if a.active and (near or shared) and best is None:
                best = inc
        return best

    def _new(self, a: Alert) -> Incident:
        inc = Incident(
            id=self.next_id,
            kind="connectivity" if a.signal == "unreachable" else "function",
            function=a.function,
            state="open",
            severity="minor",
            opened_ms=a.at_ms,
            since_ms=a.since_ms,
            last_active_ms=a.at_ms,
            escalated_ms=a.at_ms,
        )
        self.next_id += 1
        return self._apply(inc, a)

    def _apply(self, inc: Incident, a: Alert) -> Incident:
        tag = f"{a.location}/{a.signal}"
        if not a.active:
            return replace(inc, active=tuple(t for t in inc.active if t != tag))
        locations = inc.locations
        total = inc.locations_total
        if a.location not in locations:
            total += 1
            if len(locations) < self.options.max_locations:
                locations = _add(locations, a.location)
        affected = inc.requests_affected + a.affected
        return replace(
            inc,
            since_ms=min(inc.since_ms, a.since_ms),
            last_active_ms=max(inc.last_active_ms, a.at_ms),
            versions=_add(inc.versions, a.version),
            locations=locations,
            locations_total=total,
            active=_add(inc.active, tag),
            regions=_add(inc.regions, a.region),
            signals=_add(inc.signals, a.signal),
            requests_affected=affected,
            severity=max(inc.severity, self._severity(affected), key=SEVERITIES.index),
        )

    def _severity(self, affected: int) -> Severity:
        if affected >= self.options.critical_requests:
            return "critical"
        return "major" if affected >= self.options.major_requests else "minor"

    # -- the operator -----------------------------------------------------------------------
    def acknowledge(self, incident_id: int, *, by: str, now_ms: int) -> list[Instruction]:
        inc = self._get(incident_id)
        if inc.state != "open":
            raise IncidentError(
                f"incident {incident_id} is {inc.state}, not open",
                hint="only an open incident can be acknowledged",
            )
        inc = replace(inc, state="acknowledged", acknowledged_ms=now_ms, acknowledged_by=by)
        self._open[incident_id] = inc
        return [Save(inc)]

    def resolve(self, incident_id: int, *, by: str, now_ms: int) -> list[Instruction]:
        inc = self._get(incident_id)
        done = replace(inc, state="resolved", resolved_ms=now_ms, resolved_by=by, active=())
        del self._open[incident_id]
        return [Save(done)]

    def _get(self, incident_id: int) -> Incident:
        inc = self._open.get(incident_id)
        if inc is not None:
            return inc
        if 0 < incident_id < self.next_id:
            raise IncidentError(
                f"incident {incident_id} is resolved already",
                hint="`edgefn incidents` lists the open ones",
            )
        raise IncidentError(
            f"no incident {incident_id}",
            hint="`edgefn incidents` lists the incidents and their ids",
            not_found=True,
        )

    # -- the clock --------------------------------------------------------------------------
    def tick(self, now_ms: int) -> list[Instruction]:
        out: list[Instruction] = []
        o = self.options
        for inc in self.unresolved():
            if not inc.active and now_ms - inc.last_active_ms >= o.quiet_ms:
                done = replace(inc, state="resolved", resolved_ms=now_ms, resolved_by="auto")
                del self._open[inc.id]
                self._auto += 1
                out.append(Save(done))
            elif not inc.notified and now_ms - inc.opened_ms >= o.group_wait_ms:
                told = replace(inc, notified=True, escalated_ms=now_ms)
                self._open[inc.id] = told
                out.append(Save(told))
                if inc.state == "open":  # acknowledged within the wait: someone is on it
                    out.append(Notify(told, "opened"))
            elif (
                inc.notified
                and inc.state == "open"
                and inc.escalations < o.max_escalations
                and now_ms - inc.escalated_ms >= o.escalate_after_ms
            ):
                up = replace(inc, escalations=inc.escalations + 1, escalated_ms=now_ms)
                self._open[inc.id] = up
                self._escalations += 1
                out += [Save(up), Notify(up, "escalated")]
        return out

    def check_invariants(self) -> None:
        assert len(self._open) <= self.options.max_open, len(self._open)
        for k, inc in self._open.items():
            assert k == inc.id < self.next_id, (k, inc.id, self.next_id)
            assert inc.state != "resolved", inc
            assert inc.locations_total >= len(inc.locations), inc
            assert inc.escalations <= self.options.max_escalations, inc
            assert inc.since_ms <= inc.last_active_ms, inc

    def statistics(self) -> BookStatistics:
        return BookStatistics(
            len(self._open), self._opened, self._auto, self._escalations, self._dropped
        )
