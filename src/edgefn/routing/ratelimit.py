"""Rate limits: GCRA per client key, a token bucket, and the planet-wide split of a limit.

**GCRA** (the generic cell rate algorithm, ATM Forum TM 4.0; the "virtual scheduling" form) keeps
one number per key, the theoretical arrival time ``tat``. With emission interval ``T = 1 / rate`` a
request of cost ``n`` at time ``t`` is allowed iff ``max(tat, t) + n*T - t <= burst*T``, and then
``tat = max(tat, t) + n*T``. Denied requests leave ``tat`` alone. Consequence: over any interval of
length ``D`` at most ``burst + rate*D`` requests pass, and a denied client is told exactly when the
next one would (``retry_after_s``, sent as ``Retry-After``). The limiter tracks at most
``max_keys`` keys and evicts the least recently used; evicting a key that is still limited (``tat``
in the future) forgets its debt, which ``statistics().evicted_limited`` counts so an operator can
raise the bound.

**TokenBucket** is the single-bucket equivalent whose rate can change at run time; a location uses
one per function, refilled at the rate :class:`GlobalRateShare` assigns it.

**GlobalRateShare** splits a function's planet-wide ``requests_per_s`` into per-location shares.
Every location keeps a floor of ``floor_fraction`` of an even split (so new demand somewhere is
served at once, before the next rebalance); the rest is divided in proportion to each location's
smoothed demand, so when the planet is over its limit every location denies the same fraction of
its requests. With no demand anywhere the split is even. Shares always sum to the limit (the
floating-point residue goes to the largest share). Demand reports update an EWMA; a location silent
for ``demand_ttl_s`` counts as zero demand. Shares are recomputed on :class:`ShareTick` and emitted
as one :class:`SharesChanged` when the membership changed or a share moved by more than
``change_fraction`` of the even split.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from edgefn.routing._errors import RoutingConfigError, require_finite, require_positive

__all__ = [
    "DemandReport",
    "Gcra",
    "GlobalRateShare",
    "LocationLeft",
    "RateDecision",
    "RateLimiterStatistics",
    "ShareEvent",
    "ShareTick",
    "SharesChanged",
    "TokenBucket",
    "retry_after_header",
]

# Float slack when comparing times, far below any meaningful request spacing.
_EPS_S = 1e-9
_MAX_DEMAND_PER_S = 1e12


@dataclass(frozen=True, slots=True)
class RateDecision:
    """``retry_after_s`` is 0 when allowed; ``remaining`` is how many more would pass right now."""

    allowed: bool
    retry_after_s: float
    remaining: int


def retry_after_header(retry_after_s: float) -> str:
    """The ``Retry-After`` header value: whole seconds, at least 1 (RFC 9110 §10.2.3)."""
    return str(max(1, math.ceil(retry_after_s - _EPS_S)))


@dataclass(frozen=True, slots=True)
class RateLimiterStatistics:
    keys: int
    allowed: int
    denied: int
    evicted: int
    evicted_limited: int


class Gcra:
    """GCRA limiter over many keys (client ids, IPs) sharing one rate and burst."""

    def __init__(self, *, rate_per_s: float, burst: int, max_keys: int = 100_000) -> None:
        require_positive("[limits] rate_per_s", rate_per_s)
        require_positive("[limits] burst", burst)
        require_positive("[limits] max_keys", max_keys)
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self._interval_s = 1.0 / rate_per_s
        self._tat: OrderedDict[str, float] = OrderedDict()
        self._allowed = 0
        self._denied = 0
        self._evicted = 0
        self._evicted_limited = 0
        self._last_now_s = -math.inf

    def check(self, key: str, now_s: float, cost: int = 1) -> RateDecision:
        """Allow or deny one request of ``cost`` units for ``key`` at ``now_s``."""
        assert cost >= 1, cost
        self._last_now_s = max(self._last_now_s, now_s)
        interval = self._interval_s
        tat = self._tat.get(key, now_s)
        start = max(tat, now_s)
        new_tat = start + cost * interval
        allow_until = now_s + self.burst * interval
        if new_tat > allow_until + _EPS_S:
            self._denied += 1
            if key in self._tat:
                self._tat.move_to_end(key)
            return RateDecision(False, new_tat - allow_until, 0)
        self._allowed += 1
        self._tat[key] = new_tat
        self._tat.move_to_end(key)
        if len(self._tat) > self.max_keys:
            self._evict(now_s)
        remaining = int((allow_until - new_tat) / interval + _EPS_S)
        return RateDecision(True, 0.0, max(0, remaining))

    def _evict(self, now_s: float) -> None:
        _, tat = self._tat.popitem(last=False)
        self._evicted += 1
        if tat > now_s:
            self._evicted_limited += 1

    def check_invariants(self) -> None:
        assert len(self._tat) <= self.max_keys, len(self._tat)
        horizon = self._last_now_s + self.burst * self._interval_s + _EPS_S
        assert all(tat <= horizon for tat in self._tat.values()), "tat beyond burst horizon"

    def statistics(self) -> RateLimiterStatistics:
        return RateLimiterStatistics(
            keys=len(self._tat),
            allowed=self._allowed,
            denied=self._denied,
            evicted=self._evicted,
            evicted_limited=self._evicted_limited,
        )


class TokenBucket:
    """One bucket of ``capacity`` tokens refilled at ``rate_per_s``; the rate can change."""

    def __init__(self, *, rate_per_s: float, capacity: float, now_s: float) -> None:
        require_positive("[limits] rate_per_s", rate_per_s, allow_zero=True)
        require_positive("[limits] capacity", capacity)
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self._tokens = capacity
        self._at_s = now_s
        self._allowed = 0
        self._denied = 0

    def _refill(self, now_s: float) -> None:
        if now_s > self._at_s:
            self._tokens = min(self.capacity, self._tokens + (now_s - self._at_s) * self.rate_per_s)
            self._at_s = now_s

    def take(self, now_s: float, n: float = 1.0) -> RateDecision:
        """Take ``n`` tokens if there are enough, else say when there will be."""
        assert n > 0, n
        self._refill(now_s)
        if self._tokens + _EPS_S >= n:
            self._tokens = max(0.0, self._tokens - n)
            self._allowed += 1
            return RateDecision(True, 0.0, int(self._tokens + _EPS_S))
        self._denied += 1
        if self.rate_per_s == 0 or n > self.capacity:
            return RateDecision(False, math.inf, 0)
        return RateDecision(False, (n - self._tokens) / self.rate_per_s, 0)

    def set_rate(self, rate_per_s: float, now_s: float, *, capacity: float | None = None) -> None:
        """Change the refill rate (and capacity) from ``now_s`` on; tokens so far are kept."""
        require_positive("[limits] rate_per_s", rate_per_s, allow_zero=True)
        self._refill(now_s)
        self.rate_per_s = rate_per_s
        if capacity is not None:
            require_positive("[limits] capacity", capacity)
            self.capacity = capacity
            self._tokens = min(self._tokens, capacity)

    @property
    def tokens(self) -> float:
        return self._tokens

    def check_invariants(self) -> None:
        assert 0.0 <= self._tokens <= self.capacity, (self._tokens, self.capacity)

    def statistics(self) -> RateLimiterStatistics:
        return RateLimiterStatistics(
            keys=1, allowed=self._allowed, denied=self._denied, evicted=0, evicted_limited=0
        )


# -- planet-wide shares ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DemandReport:
    """Requests per second that arrived at ``location`` for the function (allowed or not)."""

    location: str
    demand_per_s: float
    now_s: float


@dataclass(frozen=True, slots=True)
class LocationLeft:
    location: str


@dataclass(frozen=True, slots=True)
class ShareTick:
    now_s: float


ShareEvent = DemandReport | LocationLeft | ShareTick


@dataclass(frozen=True, slots=True)
class SharesChanged:
    """Every location's share in requests per second, sorted by location; sums to the limit."""

    shares: tuple[tuple[str, float], ...]

    def as_dict(self) -> dict[str, float]:
        return dict(self.shares)


@dataclass(slots=True)
class _Demand:
    ewma_per_s: float
    at_s: float


class GlobalRateShare:
    """Split one function's planet-wide limit among locations, following demand."""

    def __init__(
        self,
        *,
        limit_per_s: float,
        locations: Iterable[str] = (),
        floor_fraction: float = 0.05,
        ewma_alpha: float = 0.5,
        demand_ttl_s: float = 10.0,
        change_fraction: float = 0.02,
        max_locations: int = 4_096,
    ) -> None:
        require_positive("[limits] requests_per_s", limit_per_s)
        require_finite("[limits] floor_fraction", floor_fraction, low=0.0, high=1.0)
        require_finite("[limits] ewma_alpha", ewma_alpha, low=1e-6, high=1.0)
        require_positive("[limits] demand_ttl_s", demand_ttl_s)
        require_finite("[limits] change_fraction", change_fraction, low=0.0, high=1.0)
        self.limit_per_s = limit_per_s
        self.floor_fraction = floor_fraction
        self.ewma_alpha = ewma_alpha
        self.demand_ttl_s = demand_ttl_s
        self.change_fraction = change_fraction
        self.max_locations = max_locations
        self._demand: dict[str, _Demand] = {}
        self._shares: dict[str, float] = {}
        self._dropped = 0
        self._membership_changed = False
        initial = tuple(dict.fromkeys(locations))
        if len(initial) > max_locations:
            raise RoutingConfigError(
                f"{len(initial)} locations, more than max_locations={max_locations}",
                key="[limits] max_locations",
                hint="raise max_locations",
            )
        for location in initial:
            self._join(location, 0.0, -math.inf)

    def _join(self, location: str, demand: float, now_s: float) -> bool:
        if location in self._demand:
            return True
        if len(self._demand) >= self.max_locations:
            self._dropped += 1
            return False
        self._demand[location] = _Demand(demand, now_s)
        self._membership_changed = True
        return True

    def handle(self, event: ShareEvent) -> list[SharesChanged]:
        if isinstance(event, DemandReport):
            self._report(event)
            return []
        if isinstance(event, LocationLeft):
            if self._demand.pop(event.location, None) is not None:
                self._membership_changed = True
            return []
        return self._rebalance(event.now_s)

    def _report(self, event: DemandReport) -> None:
        # Bad numbers from a report must not poison the split: NaN counts as no demand, and
        # demand is capped far above any real rate so that sums cannot overflow.
        demand = event.demand_per_s if not math.isnan(event.demand_per_s) else 0.0
        demand = min(max(0.0, demand), _MAX_DEMAND_PER_S)
        entry = self._demand.get(event.location)
        if entry is None:
            self._join(event.location, demand, event.now_s)
            return
        if entry.at_s == -math.inf or event.now_s - entry.at_s > self.demand_ttl_s:
            entry.ewma_per_s = demand  # No recent history to smooth against.
        else:
            entry.ewma_per_s += self.ewma_alpha * (demand - entry.ewma_per_s)
        entry.at_s = max(entry.at_s, event.now_s)

    def compute_shares(self, now_s: float) -> dict[str, float]:
        """The shares the current demand implies (does not change state)."""
        n = len(self._demand)
        if n == 0:
            return {}
        limit = self.limit_per_s
        demand = {
            loc: (d.ewma_per_s if now_s - d.at_s <= self.demand_ttl_s else 0.0)
            for loc, d in self._demand.items()
        }
        total = math.fsum(demand.values())
        if total <= 0.0:
            shares = dict.fromkeys(self._demand, limit / n)
        else:
            floor = self.floor_fraction * limit / n
            spread = limit - floor * n
            shares = {loc: floor + spread * (d / total) for loc, d in demand.items()}
        largest = max(sorted(shares), key=lambda loc: shares[loc])
        shares[largest] += limit - math.fsum(shares.values())
        return shares

    def _rebalance(self, now_s: float) -> list[SharesChanged]:
        shares = self.compute_shares(now_s)
        even = self.limit_per_s / max(1, len(shares))
        moved = any(
            abs(share - self._shares.get(loc, 0.0)) > self.change_fraction * even
            for loc, share in shares.items()
        )
        if not (moved or self._membership_changed):
            return []
        self._membership_changed = False
        self._shares = shares
        return [SharesChanged(tuple(sorted(shares.items())))]

    def shares(self) -> dict[str, float]:
        """The shares last emitted."""
        return dict(self._shares)

    def check_invariants(self) -> None:
        assert len(self._demand) <= self.max_locations, len(self._demand)
        assert all(d.ewma_per_s >= 0 for d in self._demand.values())
        if self._shares:
            assert math.isclose(math.fsum(self._shares.values()), self.limit_per_s, rel_tol=1e-9)
            assert all(share >= 0 for share in self._shares.values())
