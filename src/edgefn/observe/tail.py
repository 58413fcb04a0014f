"""Live tail (``edgefn tail NAME``): sessions, filters and sampling to a budget. Pure: no I/O.

**Wire.** The core announces a tail session (:class:`TailAnnounce`: a random session id, the
function, the filters, the client's sample rate and a time to live) on one subject every node
listens to; only the core's ``control`` user may publish there (``edgefn.bus.permissions``). It
renews the announcement while its HTTP client is connected and sends ``ttl_ms = 0`` when the
client leaves, so a dead session stops the events within one ``ttl_ms`` even if that last
message is lost. Each node publishes the matching request events (:class:`TailEvent`) on its own
per-location, per-session subject, which only it may publish. Both structs carry bounds on every
field (msgspec ``Meta``), so a decoded message is already within size.

**Node side** (:class:`TailTap`, one per node). ``watching(function)`` is the request path's one
cheap check (a dict lookup). A request of a watched function is offered once it ended
(:meth:`TailTap.offer`): every live session whose filters it passes may queue one event.

- *Filters* (pushed down): the session's ``locations`` (a node not named never keeps the session),
  ``status_class`` (``5`` keeps only 5xx) and ``search`` (case-insensitive substring of the path,
  the request id or any of the request's log lines).
- *Errors* (status ≥ 500) are always kept, up to ``errors_per_s`` for the whole node.
- *Others* are first sampled at the client's ``sample`` rate, then at ``p``, chosen each window
  (``window_ms``) so the expected events of the window fit the session's share of the node's
  ``events_per_s`` (the budget split evenly between the node's live sessions):
  ``p = min(1, share / matched in the previous window)``; a hard cap of ``share`` events per window
  bounds a sudden burst the previous window did not predict.
- *Queue*: events wait in a bounded queue (``queue_max``) for the publisher; when it is full the
  event is dropped and counted.
- *Sampled fraction*: every event carries ``sample`` = events of its class (error or not) sent /
  matched for its session over the previous and the current window, counting every loss above
  (client rate, ``p``, caps, full queue). A reader multiplies counts by ``1 / sample``.

The function's console output reaches the node as log lines tagged with the request id before the
request ends (``EdgeNode._on_log``): for a watched function :meth:`TailTap.log` keeps up to
``logs_per_request`` lines of at most ``LOG_LINE_MAX`` characters per request, for at most
``pending_max`` requests (oldest dropped first), and the request's event carries them. Lines
written after the response (``ctx.wait_until``) are not in any event.
"""

from __future__ import annotations

import random
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Annotated, Final

import msgspec

from edgefn.errors import UsageError

__all__ = [
    "LOG_LINE_MAX",
    "MAX_TTL_MS",
    "SEARCH_MAX",
    "TailAnnounce",
    "TailBudget",
    "TailEvent",
    "TailLog",
    "TailRequest",
    "TailStatistics",
    "TailTap",
    "parse_sample",
    "parse_status_class",
]

# A session announcement lives at most this long without renewal, whatever it asks for.
MAX_TTL_MS: Final = 30_000
LOG_LINE_MAX: Final = 512
PATH_MAX: Final = 512
SEARCH_MAX: Final = 256
LOCATIONS_MAX: Final = 256
LOGS_MAX: Final = 16

_SessionId = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{16}$")]
_Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
_Token = Annotated[str, msgspec.Meta(max_length=64)]
_Short = Annotated[str, msgspec.Meta(max_length=128)]


class TailAnnounce(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A tail session, as the core announces it (JSON on the bus)."""

    session: _SessionId
    function: _Name
    ttl_ms: Annotated[int, msgspec.Meta(ge=0, le=MAX_TTL_MS)]
    status_class: Annotated[int, msgspec.Meta(ge=0, le=5)] = 0  # 0: any status
    locations: Annotated[tuple[_Token, ...], msgspec.Meta(max_length=LOCATIONS_MAX)] = ()
    search: Annotated[str, msgspec.Meta(max_length=SEARCH_MAX)] = ""
    sample: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 1.0


class TailLog(msgspec.Struct, frozen=True, array_like=True):
    """One console line of the function (``print`` or ``logging``)."""

    level: Annotated[str, msgspec.Meta(max_length=16)]
    message: Annotated[str, msgspec.Meta(max_length=LOG_LINE_MAX)]


class TailEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One request, as a node reports it to a tail session (JSON on the bus and to the CLI)."""

    session: _SessionId
    request_id: Annotated[str, msgspec.Meta(max_length=64)]
    ts_ms: int  # the node's wall clock when the request ended
    location: _Token
    function: _Name
    version: _Token
    method: Annotated[str, msgspec.Meta(max_length=16)]
    path: Annotated[str, msgspec.Meta(max_length=PATH_MAX)]
    status: Annotated[int, msgspec.Meta(ge=0, le=999)]
    duration_ms: Annotated[float, msgspec.Meta(ge=0.0)]
    cold: bool
    client: _Short  # the client's location as the entry normalised it; "" if unknown
    sample: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    logs: Annotated[tuple[TailLog, ...], msgspec.Meta(max_length=LOGS_MAX)] = ()


@dataclass(frozen=True, slots=True)
class TailRequest:
    """What the node saw of one finished request (the request path's input to the tap)."""

    request_id: str
    ts_ms: int
    function: str
    version: str
    method: str
    path: str
    status: int
    duration_ms: float
    cold: bool
    client: str = ""


@dataclass(frozen=True, slots=True)
class TailBudget:
    """A node's tail limits. ``events_per_s`` is shared by its live sessions."""

    events_per_s: float = 200.0
    errors_per_s: float = 1000.0
    window_ms: int = 1000
    queue_max: int = 1024
    sessions_max: int = 64
    logs_per_request: int = 8
    pending_max: int = 1024

    def __post_init__(self) -> None:
        assert self.events_per_s > 0
        assert self.errors_per_s > 0
        assert self.window_ms > 0
        assert self.queue_max > 0
        assert 0 < self.logs_per_request <= LOGS_MAX


@dataclass(frozen=True, slots=True)
class TailStatistics:
    sessions: int
    queued: int
    offered: int
    sent: int
    sampled_out: int
    capped: int
    dropped_queue_full: int
    refused_sessions: int


@dataclass(slots=True)
class _Counts:
    matched: int = 0
    sent: int = 0


@dataclass(slots=True)
class _Session:
    announce: TailAnnounce
    expires_ms: int
    search: str  # lower-cased
    p: float = 1.0
    since_ms: int = 0  # when the session opened here: earlier requests are not its to show
    cur: dict[bool, _Counts] = field(default_factory=lambda: {False: _Counts(), True: _Counts()})
    prev: dict[bool, _Counts] = field(default_factory=lambda: {False: _Counts(), True: _Counts()})

    def fraction(self, error: bool) -> float:
        matched = self.prev[error].matched + self.cur[error].matched
        sent = self.prev[error].sent + self.cur[error].sent
        return 1.0 if matched == 0 else min(1.0, sent / matched)


def parse_status_class(text: str) -> int:
    """``"5xx"`` -> 5 (``""`` -> 0: any status); a clear :class:`UsageError` otherwise."""
    t = text.strip().lower()
    if not t:
        return 0
    if len(t) == 3 and t.endswith("xx") and t[0] in "12345":
        return int(t[0])
    raise UsageError(
        f"status filter {text!r} is not a status class",
        hint="use 1xx, 2xx, 3xx, 4xx or 5xx (e.g. --status 5xx)",
    )


def parse_sample(text: str | float) -> float:
    """A sample rate in (0, 1]; a clear :class:`UsageError` otherwise."""
    try:
        rate = float(text)
    except ValueError:
        rate = float("nan")
    if not 0.0 < rate <= 1.0:
        raise UsageError(
            f"sample rate {text!r} is not in (0, 1]",
            hint="use a fraction of the requests to show, e.g. --sample 0.1 (1: every request)",
        )
    return rate


def _status_class(status: int) -> int:
    return status // 100 if 100 <= status <= 599 else 0


class TailTap:
    """A node's live tail sessions and their events. Change it only through its methods."""

    def __init__(self, location: str, *, budget: TailBudget, rng: random.Random) -> None:
        self.location = location
        self.budget = budget
        self._rng = rng
        self._sessions: dict[str, _Session] = {}
        # function -> session ids: the request path's one check is a lookup here.
        self._by_function: dict[str, set[str]] = {}
        self._logs: OrderedDict[str, list[TailLog]] = OrderedDict()
        self._queue: deque[TailEvent] = deque()
        self._window = -1
        self._errors_in_window = 0
        self._c = dict.fromkeys(
            ("offered", "sent", "sampled_out", "capped", "dropped", "refused"), 0
        )

    # -- sessions --------------------------------------------------------------------------
    def watching(self, function: str) -> bool:
        return function in self._by_function

    def announce(self, msg: TailAnnounce, now_ms: int) -> bool:
        """Open, renew or (``ttl_ms`` 0) close a session; False if it is not kept here."""
        if msg.ttl_ms == 0 or (msg.locations and self.location not in msg.locations):
            self._remove(msg.session)
            return False
        expires = now_ms + min(msg.ttl_ms, MAX_TTL_MS)
        old = self._sessions.get(msg.session)
        if old is not None and old.announce.function == msg.function:
            old.announce, old.expires_ms, old.search = msg, expires, msg.search.lower()
            return True
        self._remove(msg.session)
        if len(self._sessions) >= self.budget.sessions_max:
            self._c["refused"] += 1
            return False
        self._sessions[msg.session] = _Session(msg, expires, msg.search.lower(), since_ms=now_ms)
        self._by_function.setdefault(msg.function, set()).add(msg.session)
        return True

    def expire(self, now_ms: int) -> list[str]:
        """Drop the sessions whose announcement ran out; their ids."""
        gone = [sid for sid, s in self._sessions.items() if s.expires_ms <= now_ms]
        for sid in gone:
            self._remove(sid)
        return gone

    def _remove(self, session: str) -> None:
        s = self._sessions.pop(session, None)
        if s is None:
            return
        ids = self._by_function[s.announce.function]
        ids.discard(session)
        if not ids:
            del self._by_function[s.announce.function]
        if not self._sessions:
            self._logs.clear()  # nothing is watched: no request's lines are wanted

    # -- requests --------------------------------------------------------------------------
    def log(self, function: str, request_id: str, level: str, message: str) -> None:
        """Keep a console line of a request of a watched function (bounded)."""
        if function not in self._by_function or not request_id:
            return
        lines = self._logs.get(request_id)
        if lines is None:
            if len(self._logs) >= self.budget.pending_max:
                self._logs.popitem(last=False)
            lines = self._logs[request_id] = []
        if len(lines) < self.budget.logs_per_request:
            lines.append(TailLog(level[:16], message[:LOG_LINE_MAX]))

    def offer(self, req: TailRequest, now_ms: int) -> int:
        """A finished request: queue an event for every session that keeps it; how many."""
        logs = tuple(self._logs.pop(req.request_id, ()))
        ids = self._by_function.get(req.function)
        if not ids:
            return 0
        self._roll(now_ms)
        self._c["offered"] += 1
        queued = 0
        # A request that began before a session opened here may have printed before anything
        # kept its lines: that session does not get it (its events always carry their logs).
        started_ms = now_ms - req.duration_ms
        for sid in sorted(ids):  # sorted: the random draws do not depend on set order
            s = self._sessions[sid]
            if s.expires_ms > now_ms and started_ms >= s.since_ms and self._passes(s, req, logs):
                queued += self._sample(s, req, logs)
        return queued

    def _passes(self, s: _Session, req: TailRequest, logs: tuple[TailLog, ...]) -> bool:
        a = s.announce
        if a.status_class and _status_class(req.status) != a.status_class:
            return False
        if not s.search:
            return True
        return (
            s.search in req.path.lower()
            or s.search in req.request_id.lower()
            or any(s.search in line.message.lower() for line in logs)
        )

    def _sample(self, s: _Session, req: TailRequest, logs: tuple[TailLog, ...]) -> int:
        error = req.status >= 500
        counts = s.cur[error]
        counts.matched += 1
        if error:
            if self._errors_in_window >= self._window_share(self.budget.errors_per_s, 1):
                self._c["capped"] += 1
                return 0
        else:
            if self._rng.random() >= s.announce.sample * s.p:
                self._c["sampled_out"] += 1
                return 0
            if counts.sent >= self._window_share(self.budget.events_per_s, len(self._sessions)):
                self._c["capped"] += 1
                return 0
        if len(self._queue) >= self.budget.queue_max:
            self._c["dropped"] += 1
            return 0
        counts.sent += 1
        self._errors_in_window += error
        self._queue.append(self._event(s, req, logs, s.fraction(error)))
        self._c["sent"] += 1
        return 1

    def _event(
        self, s: _Session, req: TailRequest, logs: tuple[TailLog, ...], fraction: float
    ) -> TailEvent:
        return TailEvent(
            session=s.announce.session,
            request_id=req.request_id[:64],
            ts_ms=req.ts_ms,
            location=self.location,
            function=req.function,
            version=req.version[:64],
            method=req.method[:16],
            path=req.path[:PATH_MAX],
            status=req.status,
            duration_ms=max(0.0, round(req.duration_ms, 3)),
            cold=req.cold,
            client=req.client[:128],
            sample=round(fraction, 4),
            logs=logs,
        )

    def _window_share(self, per_s: float, sessions: int) -> float:
        return per_s * self.budget.window_ms / 1000 / max(1, sessions)

    def _roll(self, now_ms: int) -> None:
        window = now_ms // self.budget.window_ms
        if window == self._window:
            return
        gap = window - self._window
        self._window = window
        self._errors_in_window = 0
        share = self._window_share(self.budget.events_per_s, len(self._sessions))
        for s in self._sessions.values():
            # A window with no requests in between: the previous window is the empty one.
            s.prev = s.cur if gap == 1 else {False: _Counts(), True: _Counts()}
            s.cur = {False: _Counts(), True: _Counts()}
            expected = s.prev[False].matched * s.announce.sample
            s.p = 1.0 if expected <= share else share / expected

    # -- the publisher's side --------------------------------------------------------------
    def take(self, max_events: int) -> list[TailEvent]:
        """Up to ``max_events`` queued events, oldest first, removed from the queue."""
        n = min(max_events, len(self._queue))
        return [self._queue.popleft() for _ in range(n)]

    def sessions(self) -> list[TailAnnounce]:
        return [s.announce for s in self._sessions.values()]

    def statistics(self) -> TailStatistics:
        c = self._c
        return TailStatistics(
            sessions=len(self._sessions),
            queued=len(self._queue),
            offered=c["offered"],
            sent=c["sent"],
            sampled_out=c["sampled_out"],
            capped=c["capped"],
            dropped_queue_full=c["dropped"],
            refused_sessions=c["refused"],
        )

    def check_invariants(self) -> None:
        assert len(self._queue) <= self.budget.queue_max
        assert len(self._sessions) <= self.budget.sessions_max
        assert len(self._logs) <= self.budget.pending_max
        indexed = {sid for ids in self._by_function.values() for sid in ids}
        assert indexed == set(self._sessions), (indexed, set(self._sessions))
        for ids in self._by_function.values():
            assert ids, "an indexed function has a session"
        for s in self._sessions.values():
            assert 0.0 < s.p <= 1.0, s.p
            for error in (False, True):
                assert s.cur[error].sent <= s.cur[error].matched
