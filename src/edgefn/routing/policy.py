"""Where to run a request: serve it at the ingress location or forward it to a better one.

:class:`RoutingPolicy` is a pure machine. Its state is what an ingress location knows about the
others: the latest :class:`LoadReport` from each, the set of locations the health machinery marked
unhealthy, and the planner's routing weights. Those change through :meth:`RoutingPolicy.handle`
(``LoadReported``, ``HealthChanged``, ``WeightsChanged``); a ``RouteRequest`` event (or the faster
:meth:`RoutingPolicy.decide`) returns one :class:`RouteDecision`. Time arrives as ``now_ms`` and
the only randomness (weighted choice) comes from the ``random.Random`` given at construction.

How a request is routed, in order:

1. **Loop safety.** ``hop >= max_hops``: serve here if the function runs here, else reject. Never
   forward. Locations in ``forwarded_from`` are never targets, so a request never revisits a
   forwarder.
2. **Eligibility.** Candidates are the locations running the function, minus unhealthy ones and
   ``forwarded_from`` (the ingress itself is always eligible when the function runs there: it knows
   it is alive, and serving here is what ends a loop).
3. **Score** (lower is better, in ms of user latency): ``RTT(ingress -> candidate)`` (0 for the
   ingress) ``+ forward_cost_ms`` for a remote candidate ``+`` the predicted queueing delay ``+``
   penalties for overloaded / draining / thermally throttled (``hot``, :mod:`.thermal`) / no fresh
   report. The queueing delay is the M/M/c wait of a
   request that finds ``concurrency + queue_len`` ahead of it on ``limit`` servers whose mean
   service time is ``service_ms_ewma``: ``max(0, queue_len + concurrency + pending - limit + 1) *
   service_ms / limit``. ``pending`` counts requests this ingress forwarded there since the last
   report, decayed with the service time (Little's law), so one stale report does not send every
   request to the same target until the next one arrives (herding).
4. **Choice.** With planner weights for ``(client_region, function)``: weighted choice among the
   eligible, non-overloaded, non-draining weighted locations (rendezvous hashing on the affinity
   key if there is one, else the seeded RNG). Else with an affinity key: rendezvous hashing over
   the eligible candidates scoring within ``affinity_slack_ms`` of the best. Else the best score;
   ties go to the ingress, then to the smallest location id.
5. **Alternates** are the next best by score, for one failover retry.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from edgefn.routing._errors import RoutingConfigError, require_positive
from edgefn.routing.hashing import rendezvous_choose

__all__ = [
    "HealthChanged",
    "LoadReport",
    "LoadReported",
    "RouteDecision",
    "RouteReason",
    "RouteRequest",
    "RoutingConfig",
    "RoutingEvent",
    "RoutingPolicy",
    "RoutingStatistics",
    "RoutingWeights",
    "WeightsChanged",
]

RoutingWeights = Mapping[tuple[str, str], Sequence[tuple[str, float]]]
"""Planner output: (client_region, function) -> [(location_id, weight), ...]."""


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What a location advertises about its load (published every second or so)."""

    location: str
    concurrency: int
    queue_len: int
    limit: int
    service_ms_ewma: float
    overloaded: bool
    draining: bool
    at_ms: int
    # Thermally throttled (edgefn.routing.thermal): peers prefer cooler neighbours.
    hot: bool = False


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """Knobs of :class:`RoutingPolicy`; the defaults suit the local planet and the simulator."""

    max_hops: int = 2
    forward_cost_ms: float = 1.0
    overloaded_penalty_ms: float = 1_000.0
    draining_penalty_ms: float = 10_000.0
    hot_penalty_ms: float = 400.0
    unknown_load_penalty_ms: float = 5.0
    max_queue_delay_ms: float = 5_000.0
    report_ttl_ms: int = 10_000
    affinity_slack_ms: float = 20.0
    max_alternates: int = 2
    max_locations: int = 4_096
    rtt_cache_size: int = 65_536

    def __post_init__(self) -> None:
        if not 1 <= self.max_hops <= 8:
            raise RoutingConfigError(
                f"must be between 1 and 8, got {self.max_hops}",
                key="[routing] max_hops",
                hint="2 lets an ingress forward once and the target serve; use 1 to never forward",
            )
        for key in (
            "forward_cost_ms",
            "overloaded_penalty_ms",
            "draining_penalty_ms",
            "hot_penalty_ms",
            "unknown_load_penalty_ms",
            "affinity_slack_ms",
        ):
            require_positive(f"[routing] {key}", getattr(self, key), allow_zero=True)
        for key in ("max_queue_delay_ms", "report_ttl_ms", "max_locations", "rtt_cache_size"):
            require_positive(f"[routing] {key}", getattr(self, key))
        require_positive("[routing] max_alternates", self.max_alternates, allow_zero=True)


@dataclass(frozen=True, slots=True)
class LoadReported:
    report: LoadReport


@dataclass(frozen=True, slots=True)
class HealthChanged:
    location: str
    healthy: bool


@dataclass(frozen=True, slots=True)
class WeightsChanged:
    """New planner weights; an empty mapping switches weighted routing off."""

    weights: RoutingWeights


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """One request at ``ingress`` for ``function``; ``candidates`` are the locations running it."""

    ingress: str
    function: str
    candidates: Collection[str]
    now_ms: int
    hop: int = 0
    forwarded_from: Collection[str] = ()
    client_region: str | None = None
    affinity_key: str | None = None


RoutingEvent = LoadReported | HealthChanged | WeightsChanged | RouteRequest


class RouteReason(StrEnum):
    LOCAL_BEST = "local-best"
    FORWARD_BETTER = "forward-better"
    WEIGHTS = "weights"
    AFFINITY = "affinity"
    HOP_LIMIT = "hop-limit"
    NO_CANDIDATE = "no-candidate"


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """``target`` None means reject (503). ``alternates`` are for one failover retry, best first."""

    target: str | None
    reason: RouteReason
    alternates: tuple[str, ...] = ()
    score_ms: float = math.inf
    serve_here: bool = False


@dataclass(frozen=True, slots=True)
class RoutingStatistics:
    decisions: int
    served_here: int
    forwarded: int
    rejected: int
    reports_known: int
    unhealthy: int
    weighted_keys: int
    dropped_updates: int


class RoutingPolicy:
    """The routing decision machine of one ingress location (or of the simulator's router)."""

    def __init__(
        self,
        rtt_ms: Callable[[str, str], float],
        *,
        config: RoutingConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or RoutingConfig()
        self._rtt = rtt_ms
        self._rng = rng or random.Random(0)
        self._rtt_cache: dict[tuple[str, str], float] = {}
        self._reports: dict[str, LoadReport] = {}
        self._unhealthy: set[str] = set()
        self._weights: dict[tuple[str, str], tuple[tuple[str, float], ...]] = {}
        # Requests forwarded to a location since its last report: (decayed count, at_ms).
        self._pending: dict[str, tuple[float, int]] = {}
        self._decisions = 0
        self._served_here = 0
        self._forwarded = 0
        self._rejected = 0
        self._dropped_updates = 0

    # -- state updates -------------------------------------------------------------------------

    def handle(self, event: RoutingEvent) -> list[RouteDecision]:
        """Apply an update (returns []) or decide a request (returns [decision])."""
        if isinstance(event, RouteRequest):
            return [self.decide(event)]
        if isinstance(event, LoadReported):
            self._on_report(event.report)
        elif isinstance(event, HealthChanged):
            self._on_health(event.location, event.healthy)
        else:
            self._on_weights(event.weights)
        return []

    def _known(self, location: str) -> bool:
        """True if there is room to remember ``location`` (bounded memory)."""
        if location in self._reports or len(self._reports) < self.config.max_locations:
            return True
        self._dropped_updates += 1
        return False

    def _on_report(self, report: LoadReport) -> None:
        old = self._reports.get(report.location)
        if old is not None and old.at_ms > report.at_ms:
            return  # Reports can arrive out of order over the bus; keep the newest.
        if self._known(report.location):
            self._reports[report.location] = report
            self._pending.pop(report.location, None)

    def _on_health(self, location: str, healthy: bool) -> None:
        if healthy:
            self._unhealthy.discard(location)
        elif location in self._unhealthy or len(self._unhealthy) < self.config.max_locations:
            self._unhealthy.add(location)
        else:
            self._dropped_updates += 1

    def _on_weights(self, weights: RoutingWeights) -> None:
        table: dict[tuple[str, str], tuple[tuple[str, float], ...]] = {}
        for (region, function), entries in weights.items():
            for location, weight in entries:
                if not (math.isfinite(weight) and weight >= 0):
                    raise RoutingConfigError(
                        f"weight of location {location!r} is {weight!r}",
                        key=f"routing weights[{region!r}, {function!r}]",
                        hint="planner weights must be finite and >= 0; re-run `edgefn plan`",
                    )
            table[(region, function)] = tuple((loc, w) for loc, w in entries if w > 0)
        self._weights = table

    # -- scoring -------------------------------------------------------------------------------

    def rtt_ms(self, a: str, b: str) -> float:
        """Cached RTT between two locations (0 from a location to itself)."""
        if a == b:
            return 0.0
        key = (a, b)
        value = self._rtt_cache.get(key)
        if value is None:
            value = float(self._rtt(a, b))
            assert math.isfinite(value), (a, b, value)
            assert value >= 0, (a, b, value)
            if len(self._rtt_cache) >= self.config.rtt_cache_size:
                self._rtt_cache.clear()
            self._rtt_cache[key] = value
        return value

    def queue_delay_ms(self, location: str, now_ms: int) -> float | None:
        """Predicted wait before service at ``location``; None without a fresh report."""
        report = self._reports.get(location)
        if report is None or now_ms - report.at_ms > self.config.report_ttl_ms:
            return None
        servers = max(1, report.limit)
        backlog = report.queue_len + report.concurrency - servers + 1
        backlog_f = backlog + self._pending_now(location, report, now_ms)
        if backlog_f <= 0:
            return 0.0
        return min(backlog_f * report.service_ms_ewma / servers, self.config.max_queue_delay_ms)

    def _pending_now(self, location: str, report: LoadReport, now_ms: int) -> float:
        pending = self._pending.get(location)
        if pending is None:
            return 0.0
        tau = max(report.service_ms_ewma, 1.0)
        return pending[0] * math.exp(-max(0, now_ms - pending[1]) / tau)

    def score_ms(self, ingress: str, location: str, now_ms: int) -> float:
        """Predicted extra latency of serving at ``location`` for a request at ``ingress``."""
        # This is the per-request hot path of the simulator: it inlines queue_delay_ms().
        cfg = self.config
        if location == ingress:
            score = 0.0
        else:
            rtt = self._rtt_cache.get((ingress, location))
            score = (self.rtt_ms(ingress, location) if rtt is None else rtt) + cfg.forward_cost_ms
        report = self._reports.get(location)
        if report is None or now_ms - report.at_ms > cfg.report_ttl_ms:
            return score + cfg.unknown_load_penalty_ms
        servers = report.limit if report.limit > 0 else 1
        backlog: float = report.queue_len + report.concurrency - servers + 1
        if self._pending and location in self._pending:
            backlog += self._pending_now(location, report, now_ms)
        if backlog > 0:
            score += min(backlog * report.service_ms_ewma / servers, cfg.max_queue_delay_ms)
        if report.overloaded:
            score += cfg.overloaded_penalty_ms
        if report.draining:
            score += cfg.draining_penalty_ms
        if report.hot:
            score += cfg.hot_penalty_ms
        return score

    # -- decisions -----------------------------------------------------------------------------

    def decide(self, request: RouteRequest) -> RouteDecision:
        """Route one request. Never forwards when ``hop >= max_hops``."""
        self._decisions += 1
        ingress = request.ingress
        if request.hop >= self.config.max_hops:
            if ingress in request.candidates:
                return self._finish(RouteDecision(ingress, RouteReason.HOP_LIMIT, serve_here=True))
            return self._finish(RouteDecision(None, RouteReason.HOP_LIMIT))
        scored = self._scored(request)
        if not scored:
            return self._finish(RouteDecision(None, RouteReason.NO_CANDIDATE))
        best_score, _, best = scored[0]
        reason = RouteReason.LOCAL_BEST if best == ingress else RouteReason.FORWARD_BETTER
        target: str | None = None
        if request.client_region is not None and self._weights:
            target = self._weighted(request, scored)
            reason = RouteReason.WEIGHTS
        if target is None and request.affinity_key is not None:
            slack = best_score + self.config.affinity_slack_ms
            pool = [loc for score, _, loc in scored if score <= slack]
            target = rendezvous_choose(request.affinity_key, pool)
            reason = RouteReason.AFFINITY
        if target is None:
            target = best
            reason = RouteReason.LOCAL_BEST if best == ingress else RouteReason.FORWARD_BETTER
        score = next(score for score, _, loc in scored if loc == target)
        alternates = tuple(
            loc for _, _, loc in scored[: self.config.max_alternates + 1] if loc != target
        )[: self.config.max_alternates]
        decision = RouteDecision(target, reason, alternates, score, serve_here=target == ingress)
        return self._finish(decision, now_ms=request.now_ms)

    def _scored(self, request: RouteRequest) -> list[tuple[float, int, str]]:
        """Eligible candidates as (score, 0 for the ingress else 1, location), best first: ties go
        to the ingress, then to the smallest name."""
        ingress = request.ingress
        excluded = request.forwarded_from
        unhealthy = self._unhealthy
        now_ms = request.now_ms
        score = self.score_ms
        scored = [
            (score(ingress, loc, now_ms), 0 if loc == ingress else 1, loc)
            for loc in request.candidates
            if loc == ingress or not (loc in unhealthy or loc in excluded)
        ]
        scored.sort()
        return scored

    def _weighted(self, request: RouteRequest, scored: list[tuple[float, int, str]]) -> str | None:
        assert request.client_region is not None
        entries = self._weights.get((request.client_region, request.function))
        if not entries:
            return None
        eligible = {loc for _, _, loc in scored}
        choices: dict[str, float] = {}
        for loc, weight in entries:
            report = self._reports.get(loc)
            fresh = (
                report is not None and request.now_ms - report.at_ms <= self.config.report_ttl_ms
            )
            if loc in eligible and not (
                fresh and report is not None and (report.overloaded or report.draining)
            ):
                choices[loc] = weight
        if not choices:
            return None
        if request.affinity_key is not None:
            return rendezvous_choose(request.affinity_key, choices)
        total = math.fsum(choices.values())
        point = self._rng.random() * total
        for loc in sorted(choices):
            point -= choices[loc]
            if point < 0:
                return loc
        return max(sorted(choices), key=lambda loc: choices[loc])

    def _finish(self, decision: RouteDecision, *, now_ms: int = 0) -> RouteDecision:
        if decision.target is None:
            self._rejected += 1
        elif decision.serve_here:
            self._served_here += 1
        else:
            self._forwarded += 1
            self._add_pending(decision.target, now_ms)
        return decision

    def _add_pending(self, location: str, now_ms: int) -> None:
        report = self._reports.get(location)
        if report is None:
            return
        value = self._pending_now(location, report, now_ms) + 1.0
        self._pending[location] = (value, now_ms)

    # -- introspection -------------------------------------------------------------------------

    @property
    def unhealthy(self) -> frozenset[str]:
        return frozenset(self._unhealthy)

    def report(self, location: str) -> LoadReport | None:
        return self._reports.get(location)

    def check_invariants(self) -> None:
        cfg = self.config
        assert len(self._reports) <= cfg.max_locations, len(self._reports)
        assert len(self._unhealthy) <= cfg.max_locations, len(self._unhealthy)
        assert len(self._rtt_cache) <= cfg.rtt_cache_size, len(self._rtt_cache)
        assert set(self._pending) <= set(self._reports), "pending without a report"
        assert all(value >= 0 for value, _ in self._pending.values())
        total = self._served_here + self._forwarded + self._rejected
        assert total == self._decisions, (total, self._decisions)

    def statistics(self) -> RoutingStatistics:
        return RoutingStatistics(
            decisions=self._decisions,
            served_here=self._served_here,
            forwarded=self._forwarded,
            rejected=self._rejected,
            reports_known=len(self._reports),
            unhealthy=len(self._unhealthy),
            weighted_keys=len(self._weights),
            dropped_updates=self._dropped_updates,
        )
