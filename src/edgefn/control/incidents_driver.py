"""The core's incident driver: rollups into the detector, incidents into SQLite, webhooks out.

* :meth:`IncidentsDriver.on_rollup` is called by the telemetry ingest
  (:class:`~edgefn.control.telemetry_ingest.TelemetryIngest`, ``on_stored``) for every rollup
  it stored; the :class:`~edgefn.observe.anomaly.Detector` judges it and its alerts go to the
  :class:`~edgefn.observe.incidents.IncidentBook`.
* Every ``tick_s`` the driver reads when each location last reported its observed state (the
  control service's ``location_status``) into the
  :class:`~edgefn.observe.anomaly.ConnectivityTracker`, and ticks detector, tracker and book
  (silences, auto-resolve, escalation).
* The book's ``Save`` instructions go to :class:`IncidentStore` (``incidents.sqlite`` next to
  ``telemetry.sqlite``: one row per incident, its JSON); ``Notify`` to :class:`Webhooks`.
* :class:`Webhooks` POSTs ``{"event", "incident"}`` JSON to the routes of the incident's
  regions (:class:`~edgefn.observe.incident_routes.Routes`), one delivery per URL, from a
  bounded queue (``queue_max``; when full the oldest waiting delivery is dropped and counted),
  each tried at most ``attempts`` times with exponential backoff (``backoff_s`` doubling up to
  ``backoff_max_s``); a 2xx answer is delivered, a 4xx other than 408/429 is given up at once.

Baselines live in memory: a restarted core relearns them (the error-rate rule needs none). The
incidents themselves survive a restart (the book is restored from the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec

from edgefn.control.events import LocationStatus
from edgefn.observe import JsonLog
from edgefn.observe.anomaly import Alert, ConnectivityTracker, Detector, DetectorOptions
from edgefn.observe.incident_routes import Routes
from edgefn.observe.incidents import (
    STATES,
    BookOptions,
    Incident,
    IncidentBook,
    Instruction,
    Notify,
    Save,
)
from edgefn.observe.rollup import Rollup

__all__ = [
    "IncidentStore",
    "IncidentsDriver",
    "IncidentsStatistics",
    "WebhookStatistics",
    "Webhooks",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY, state TEXT NOT NULL, opened_ms INTEGER NOT NULL, body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_by_state ON incidents (state, id);
"""
_ENC = msgspec.json.Encoder()
_DEC = msgspec.json.Decoder(Incident)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class IncidentStore:
    """Incidents in SQLite at ``path`` (``:memory:`` for tests)."""

    def __init__(self, path: Path) -> None:
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if str(path) != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def save(self, inc: Incident) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO incidents VALUES (?, ?, ?, ?)",
            (inc.id, inc.state, inc.opened_ms, _ENC.encode(inc)),
        )

    def get(self, incident_id: int) -> Incident | None:
        row = self._db.execute("SELECT body FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        return None if row is None else _DEC.decode(row[0])

    def unresolved(self) -> list[Incident]:
        rows = self._db.execute(
            "SELECT body FROM incidents WHERE state != 'resolved' ORDER BY id"
        ).fetchall()
        return [_DEC.decode(r[0]) for r in rows]

    def last_id(self) -> int:
        return int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM incidents").fetchone()[0])

    def recent(self, *, state: str | None = None, limit: int = 100) -> list[Incident]:
        """Newest first; ``state`` one of open, acknowledged, resolved (None: all)."""
        assert state is None or state in STATES, state
        where, args = ("WHERE state = ?", (state,)) if state else ("", ())
        rows = self._db.execute(
            f"SELECT body FROM incidents {where} ORDER BY id DESC LIMIT ?", (*args, limit)
        ).fetchall()
        return [_DEC.decode(r[0]) for r in rows]


@dataclass(frozen=True, slots=True)
class WebhookStatistics:
    delivered_total: int
    failed_total: int
    retries_total: int
    dropped_total: int
    queued: int


class Webhooks:
    """Bounded, retried webhook deliveries. ``start()``, ``send(url, body)``, ``stop()``."""

    def __init__(
        self,
        *,
        attempts: int = 5,
        backoff_s: float = 0.5,
        backoff_max_s: float = 8.0,
        timeout_s: float = 5.0,
        queue_max: int = 256,
        log: JsonLog | None = None,
    ) -> None:
        assert attempts >= 1, attempts
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self._timeout_s = timeout_s
        self._queue: deque[tuple[str, bytes]] = deque()
        self._queue_max = queue_max
        self._wake = asyncio.Event()
        self._log = log or JsonLog(location="core")
        self._task: asyncio.Task[None] | None = None
        self._delivered = self._failed = self._retries = self._dropped = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="incident-webhooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def send(self, url: str, body: bytes) -> None:
        if len(self._queue) >= self._queue_max:
            self._queue.popleft()
            self._dropped += 1
        self._queue.append((url, body))
        self._wake.set()

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=self._timeout_s, trust_env=False) as http:
            while True:
                if not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                url, body = self._queue.popleft()
                await self._deliver(http, url, body)

    async def _deliver(self, http: httpx.AsyncClient, url: str, body: bytes) -> None:
        delay = self.backoff_s
        error = ""
        for attempt in range(self.attempts):
            if attempt:
                self._retries += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max_s)
            try:
                resp = await http.post(
                    url, content=body, headers={"content-type": "application/json"}
                )
            except httpx.HTTPError as err:
                error = repr(err)
                continue
            if resp.is_success:
                self._delivered += 1
                return
            error = f"HTTP {resp.status_code}"
            if resp.status_code < 500 and resp.status_code not in (408, 429):
                break  # the receiver refused it: another try would be refused too
        self._failed += 1
        self._log.emit("warn", event="incident_webhook_failed", url=url, error=error)

    def statistics(self) -> WebhookStatistics:
        return WebhookStatistics(
            self._delivered, self._failed, self._retries, self._dropped, len(self._queue)
        )


@dataclass(frozen=True, slots=True)
class IncidentsStatistics:
    rollups_total: int
    alerts_total: int
    notifications_total: int
    unresolved: int


class IncidentsDriver:
    """Detector, connectivity tracker and incident book at the core, over ``store``.

    ``locations()`` gives each location's status (its last observed-state report, core clock);
    ``now_ms`` is the clock (tests pass their own).
    """

    def __init__(
        self,
        store: IncidentStore,
        *,
        routes: Routes | None,
        locations: Callable[[], Iterable[LocationStatus]],
        detector: DetectorOptions | None = None,
        book: BookOptions | None = None,
        silence_ms: int = 15_000,
        tick_s: float = 1.0,
        webhooks: Webhooks | None = None,
        now_ms: Callable[[], int] = _wall_ms,
        log: JsonLog | None = None,
    ) -> None:
        self.store = store
        self.routes = routes or Routes()
        self._locations = locations
        self.detector = Detector(detector)
        self.connectivity = ConnectivityTracker(silence_ms=silence_ms)
        self.book = IncidentBook.restore(store.unresolved(), book)
        self.book.next_id = max(self.book.next_id, store.last_id() + 1)
        self.webhooks = webhooks or Webhooks(log=log)
        self._tick_s = tick_s
        self._now_ms = now_ms
        self._log = log or JsonLog(location="core")
        self._regions: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._rollups = self._alerts = self._notified = 0

    async def start(self) -> None:
        self.webhooks.start()
        self._task = asyncio.create_task(self._tick_loop(), name="incidents-tick")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.webhooks.stop()

    # -- events in ------------------------------------------------------------------------
    def on_rollup(self, rollup: Rollup) -> None:
        """A rollup the telemetry store just stored (called by the ingest)."""
        self._rollups += 1
        now = self._now_ms()
        region = self._regions.get(rollup.location, "")
        alerts = self.detector.observe(rollup, now_ms=now, region=region)
        alerts += self.connectivity.heard(rollup.location, region, now)
        self._on_alerts(alerts)

    def tick(self) -> None:
        now = self._now_ms()
        alerts: list[Alert] = []
        known = set()
        for loc in self._locations():
            known.add(loc.location)
            self._regions[loc.location] = loc.region
            if loc.last_seen_ms:
                alerts += self.connectivity.heard(loc.location, loc.region, loc.last_seen_ms)
        for gone in sorted(set(self.connectivity.tracked()) - known):  # removed from the planet
            alerts += self.connectivity.forget(gone)
        impact = {
            loc: self.detector.location_rate(loc) * (now - since) / 5000
            for loc, since in self.connectivity.down().items()
        }
        alerts += self.connectivity.tick(now, impact=impact)
        alerts += self.detector.tick(now)
        self._on_alerts(alerts)
        self._carry_out(self.book.tick(now))

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            try:
                self.tick()
            except Exception as err:  # keep judging: one bad tick must not end detection
                self._log.emit("error", event="incidents_tick_failed", error=repr(err))

    def _on_alerts(self, alerts: list[Alert]) -> None:
        for a in alerts:
            self._alerts += 1
            self._carry_out(self.book.alert(a))

    # -- the operator ---------------------------------------------------------------------
    def acknowledge(self, incident_id: int, *, by: str) -> Incident:
        return self._operator(self.book.acknowledge(incident_id, by=by, now_ms=self._now_ms()))

    def resolve(self, incident_id: int, *, by: str) -> Incident:
        return self._operator(self.book.resolve(incident_id, by=by, now_ms=self._now_ms()))

    def _operator(self, out: list[Instruction]) -> Incident:
        self._carry_out(out)
        saved = [i.incident for i in out if isinstance(i, Save)]
        assert saved, out
        return saved[-1]

    # -- instructions out -----------------------------------------------------------------
    def _carry_out(self, instructions: list[Instruction]) -> None:
        for ins in instructions:
            if isinstance(ins, Save):
                self.store.save(ins.incident)
            elif isinstance(ins, Notify):
                self._notify(ins)

    def _notify(self, ins: Notify) -> None:
        inc = ins.incident
        self._log.emit("warn", event=f"incident_{ins.event}", id=inc.id, title=inc.title)
        body = _ENC.encode({"event": ins.event, "title": inc.title, "incident": inc.as_json()})
        for url in self.routes.urls_for(inc.regions):
            self._notified += 1
            self.webhooks.send(url, body)

    def statistics(self) -> IncidentsStatistics:
        return IncidentsStatistics(
            self._rollups, self._alerts, self._notified, len(self.book.unresolved())
        )
