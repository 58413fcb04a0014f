"""One location's rate limits: its share of each function's planet-wide limit, and per client.

:class:`LocalRateLimits` is what a node asks before it admits a request it serves itself
(``[limits] requests_per_s`` and the planet's per-client rate). It composes the machines of
:mod:`edgefn.routing.ratelimit` and keeps the arithmetic that joins them, so the edge driver only
passes in time and what it heard from the other locations:

* **Per function.** A function with ``requests_per_s`` gets a :class:`GlobalRateShare` over the
  locations that run it (those known when its first request arrives) and a :class:`TokenBucket`
  refilled at *this* location's share, starting from an even split. At most ``max_functions``
  functions are tracked; past that the oldest is forgotten (and restarts from an even split). A
  changed limit starts the function afresh.
* **Demand.** :meth:`LocalRateLimits.arrived` counts every request that reaches the check
  (allowed or not). :meth:`LocalRateLimits.rebalance`, called every report interval, turns the
  counts into requests per second (what the location's beacon publishes), feeds them and the other
  locations' published demand to each share, and moves the bucket to the new share. A bucket's
  capacity is one second of its rate, at least one request.
* **Per client.** With ``client_rate_per_s > 0`` one :class:`Gcra` keyed by function and client
  (the client key cut to ``client_key_max_chars``) limits every client at every function.

:meth:`LocalRateLimits.check` returns the first denial (function share first) or None. Time
arrives as ``now_s`` (a monotonic clock); nothing here reads one.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from edgefn.routing._errors import require_positive
from edgefn.routing.ratelimit import (
    DemandReport,
    Gcra,
    GlobalRateShare,
    RateDecision,
    SharesChanged,
    ShareTick,
    TokenBucket,
)

__all__ = ["LocalRateLimits", "LocalRateStatistics", "PeerDemand"]

# A rebalance right after the previous one must not divide by (almost) zero.
_MIN_ELAPSED_S = 1e-3

PeerDemand = tuple[str, Collection[str], Mapping[str, float]]
"""What another fresh location published: (location, functions it runs, demand per second)."""


@dataclass(frozen=True, slots=True)
class LocalRateStatistics:
    functions_limited: int
    client_keys: int


class LocalRateLimits:
    """Per-function shares of planet-wide limits and per-client GCRA for one location."""

    def __init__(
        self,
        location: str,
        *,
        client_rate_per_s: float = 0.0,
        client_burst: int = 20,
        max_functions: int = 1_024,
        client_key_max_chars: int = 128,
    ) -> None:
        require_positive("[traffic] max_functions", max_functions)
        require_positive("[traffic] client_key_max_chars", client_key_max_chars)
        self.location = location
        self.max_functions = max_functions
        self.client_key_max_chars = client_key_max_chars
        self._shares: dict[str, tuple[float, GlobalRateShare, TokenBucket]] = {}
        self._clients = (
            Gcra(rate_per_s=client_rate_per_s, burst=client_burst)
            if client_rate_per_s > 0
            else None
        )
        self._arrivals: dict[str, int] = {}
        self._demand_per_s: dict[str, float] = {}

    def arrived(self, function: str) -> None:
        """Count one request for ``function`` towards this location's demand."""
        self._arrivals[function] = self._arrivals.get(function, 0) + 1

    def check(
        self,
        function: str,
        limit_per_s: float,
        client_key: str,
        now_s: float,
        *,
        members: Callable[[], list[str]],
    ) -> RateDecision | None:
        """The denial for one request, or None if it may pass. ``limit_per_s`` 0: no limit.

        ``members`` lists the locations running ``function`` (this one first); it is called only
        when the function's share is (re)created.
        """
        if limit_per_s:
            decision = self._bucket(function, float(limit_per_s), now_s, members).take(now_s)
            if not decision.allowed:
                return decision
        if self._clients is not None:
            key = f"{function}|{client_key[: self.client_key_max_chars]}"
            decision = self._clients.check(key, now_s)
            if not decision.allowed:
                return decision
        return None

    def _bucket(
        self, function: str, limit: float, now_s: float, members: Callable[[], list[str]]
    ) -> TokenBucket:
        entry = self._shares.get(function)
        if entry is None or entry[0] != limit:
            if len(self._shares) >= self.max_functions:
                self._shares.pop(next(iter(self._shares)))
            locations = members()
            share = GlobalRateShare(limit_per_s=limit, locations=locations)
            initial = limit / max(1, len(locations))
            bucket = TokenBucket(rate_per_s=initial, capacity=max(1.0, initial), now_s=now_s)
            for change in share.handle(ShareTick(now_s)):
                self._set_share(bucket, change, now_s)
            entry = self._shares[function] = (limit, share, bucket)
        return entry[2]

    def rebalance(self, elapsed_s: float, now_s: float, peers: Iterable[PeerDemand]) -> None:
        """Close a report interval of ``elapsed_s``: demand per second, then new shares."""
        self._demand_per_s = {
            name: n / max(elapsed_s, _MIN_ELAPSED_S) for name, n in sorted(self._arrivals.items())
        }
        self._arrivals = {}
        heard = list(peers)
        for name, (_, share, bucket) in self._shares.items():
            share.handle(DemandReport(self.location, self._demand_per_s.get(name, 0.0), now_s))
            for location, functions, demand in heard:
                if name in functions:
                    share.handle(DemandReport(location, demand.get(name, 0.0), now_s))
            for change in share.handle(ShareTick(now_s)):
                self._set_share(bucket, change, now_s)

    def _set_share(self, bucket: TokenBucket, change: SharesChanged, now_s: float) -> None:
        rate = change.as_dict().get(self.location, 0.0)
        bucket.set_rate(rate, now_s, capacity=max(1.0, rate))

    def demand_per_s(self) -> dict[str, float]:
        """Requests per second per function over the last closed interval (for the beacon)."""
        return dict(self._demand_per_s)

    def check_invariants(self) -> None:
        assert len(self._shares) <= self.max_functions, len(self._shares)

    def statistics(self) -> LocalRateStatistics:
        keys = self._clients.statistics().keys if self._clients is not None else 0
        return LocalRateStatistics(functions_limited=len(self._shares), client_keys=keys)
