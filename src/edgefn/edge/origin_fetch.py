"""``env.<ORIGIN>.fetch``: a function's requests to its ``[[origins]]``, through the cache tiers.

The node runs the location tier (a :class:`CachedFetch` (the RFC 9111 rules are
:mod:`edgefn.edge.cache_policy`) shared by every
function on the node, keyed by function). Its upstream is the region hub's tier when the planet has
one (``region``: the bus client of :mod:`edgefn.planet.cache_tier`), so one origin fetch serves
every location of a region; without a region tier, or when it does not answer, the node fetches
the origin itself through :class:`~edgefn.edge.outbound.Outbound` (the same SSRF policy and DNS
pinning as ``edgefn.fetch``). The rules:

- the URL must be the origin's ``url`` or below it (the SDK builds it; a hostile worker could send
  anything, so the node checks again);
- the origin's host is the only host allowed (redirects elsewhere are refused), a private address
  still needs ``[egress] allow_private``, and the planet's own addresses are always refused;
- it counts against ``[limits] subrequests`` once (redirects followed by the region tier are the
  tier's), every redirect hop when the node fetches itself;
- ``cache = false`` on the origin skips both tiers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import msgspec

from edgefn.bundle.manifest import Origin
from edgefn.bus.cache_purge import Purge
from edgefn.edge._clock import wall_ms
from edgefn.edge.cache_policy import (
    CACHE_HEADER,
    CacheStore,
    Forward,
    Headers,
    Hit,
    UpstreamResponse,
    api_delete,
    api_match,
    api_put,
    complete,
    lookup,
    serve_stale,
    without_tags,
)
from edgefn.edge.outbound import Outbound, SubrequestRules
from edgefn.runtime import protocol as p
from edgefn.sdk._caches import API_HEADER
from edgefn.sdk._fetch import url_problem
from edgefn.sdk._origin import TICKET_HEADER

__all__ = [
    "REGION_HEADER",
    "CachedFetch",
    "OriginFetch",
    "OriginRequest",
    "RegionTier",
    "origin_rules",
]

# What the region tier did, on a response the location tier had to ask it for.
REGION_HEADER = "x-edgefn-cache-region"
MAX_TICKETS = 4096


Upstream = Callable[[Headers], Awaitable[UpstreamResponse | None]]


@dataclass(slots=True)
class CachedFetch:
    """One tier's cache around an upstream: ``await fetch(function, method, url, headers,
    upstream)``. ``upstream(headers)`` returns the response, or None when it got no answer (then
    a stale entry may be served; otherwise the caller reports its own error). Concurrent misses
    for the same (function, URL) share one upstream request (a region tier serves many
    locations)."""

    store: CacheStore = field(default_factory=CacheStore)
    _inflight: dict[tuple[str, str, str], asyncio.Event] = field(default_factory=dict)

    async def fetch(
        self, function: str, method: str, url: str, headers: Headers, upstream: Upstream
    ) -> Hit | None:
        key = (function, method.upper(), url)
        while (waiting := self._inflight.get(key)) is not None:
            await waiting.wait()
        first = lookup(self.store, function, method, url, headers)
        if isinstance(first, Hit):
            self.store.stats.requests[first.cache] += 1
            return first
        cacheable = method.upper() in ("GET", "HEAD")
        done = asyncio.Event()
        if cacheable:
            self._inflight[key] = done
        try:
            got = await upstream(first.headers)
        finally:
            if cacheable:
                del self._inflight[key]
            done.set()
        if got is None:
            out = serve_stale(self.store, first)
        else:
            out = complete(self.store, function, first, got, wall_ms())
        if out is not None:
            self.store.stats.requests[out.cache] += 1
        return out


@dataclass(frozen=True, slots=True)
class OriginRequest:
    """What the region tier is asked: one request of ``function`` to its origin."""

    function: str
    url: str
    method: str
    headers: Headers
    timeout_ms: int
    allow_private: tuple[str, ...]


# The origin itself, as Outbound.fetch (request id, call, rules); edgefn.testing's fakes replace it.
DirectFetch = Callable[[str, p.FetchCall, SubrequestRules], Awaitable[p.FetchResult]]
# The region tier's client: the answer (status, headers with x-edgefn-cache and Cache-Tag, body),
# a FetchResult with an error kind, or None when no region tier answered.
RegionTier = Callable[[OriginRequest], Awaitable[p.FetchResult | None]]


def record_cache_headers(response_headers: list[tuple[str, str]], got: Headers) -> None:
    """Put an origin fetch's ``x-edgefn-cache`` (and region) status on the request's response,
    replacing an earlier origin fetch's."""
    names = (CACHE_HEADER, REGION_HEADER)
    response_headers[:] = [h for h in response_headers if h[0] not in names]
    response_headers.extend((k, v) for k, v in got if k in names)


def origin_of(rules: SubrequestRules, binding: str) -> Origin | None:
    return next((o for o in rules.origins if o.binding == binding), None)


def origin_rules(origin: Origin, rules: SubrequestRules) -> SubrequestRules:
    """``rules`` narrowed to the origin: its host (and port) only."""
    hostport = origin.url.partition("://")[2].partition("/")[0]
    return replace(rules, allow=(hostport,))


def _below(origin: Origin, url: str) -> bool:
    return url == origin.url or url.startswith(origin.url + "/") or url.startswith(origin.url + "?")


class OriginFetch:
    """The location tier of a node (or of ``edgefn.testing``'s in-process node)."""

    def __init__(
        self,
        outbound: Outbound,
        *,
        store: CacheStore | None = None,
        region: RegionTier | None = None,
        direct: DirectFetch | None = None,
    ) -> None:
        self.outbound = outbound
        self.cache = CachedFetch(store or CacheStore())
        self.region = region
        self.direct = direct or outbound.fetch
        # [cdn] origin hooks: open location-tier misses by (request id, ticket), bounded.
        self._tickets: dict[tuple[str, str], Forward] = {}
        self._ticket_no = 0

    @property
    def store(self) -> CacheStore:
        return self.cache.store

    def purge(self, purge: Purge) -> int:
        return self.store.purge(purge)

    async def fetch(
        self, function: str, request_id: str, call: p.FetchCall, rules: SubrequestRules
    ) -> p.FetchResult:
        origin = origin_of(rules, call.origin)
        if origin is None:
            return p.FetchResult(
                call.id, call.fetch_id, 0, [], b"", "error",
                f"no [[origins]] binding {call.origin!r} in edgefn.toml (request {request_id})",
            )  # fmt: skip
        if not _below(origin, call.url):
            return p.FetchResult(
                call.id, call.fetch_id, 0, [], b"", "egress_denied",
                f"{call.url[:200]} is not below origin {call.origin} = {origin.url} "
                f"(request {request_id})",
            )  # fmt: skip
        narrowed = origin_rules(origin, rules)
        if call.cache_op:
            return await self._hooked(origin, function, request_id, call, narrowed)
        if not origin.cache:
            return await self.direct(request_id, call, narrowed)
        failure: list[p.FetchResult] = []
        region: list[str] = []

        async def upstream(headers: Headers) -> UpstreamResponse | None:
            sent = msgspec.structs.replace(call, headers=headers)
            res = await self._upstream(function, request_id, sent, narrowed)
            if res.error_kind:
                failure.append(res)
                return None
            kept = [(k, v) for k, v in res.headers if k != REGION_HEADER]
            region.extend(v for k, v in res.headers if k == REGION_HEADER)
            return UpstreamResponse(res.status, kept, res.body)

        hit = await self.cache.fetch(function, call.method, call.url, call.headers, upstream)
        if hit is None:
            return failure[0] if failure else p.FetchResult(
                call.id, call.fetch_id, 0, [], b"", "error", f"{call.url}: no answer"
            )  # fmt: skip
        shown = without_tags(hit)
        headers = [*shown.headers, (REGION_HEADER, region[0])] if region else shown.headers
        return p.FetchResult(call.id, call.fetch_id, shown.status, headers, shown.body)

    def forget(self, request_id: str) -> None:
        """The request is over: drop its open tickets ([cdn] origin hooks)."""
        for key in [k for k in self._tickets if k[0] == request_id]:
            del self._tickets[key]

    async def _hooked(
        self,
        origin: Origin,
        function: str,
        request_id: str,
        call: p.FetchCall,
        rules: SubrequestRules,
    ) -> p.FetchResult:
        """The three steps of a request whose origin hooks run in the worker, between this
        location's cache and the upstream: ``lookup`` (a hit, or a miss with a ticket and the
        headers to send upstream), ``origin`` (the upstream's answer, not stored), ``complete``
        (store what the hooks made of it; ``put_status`` 0: the upstream gave no answer)."""

        def answer(what: str, status: int, headers: Headers, body: bytes = b"") -> p.FetchResult:
            return p.FetchResult(
                call.id, call.fetch_id, status, [*headers, (API_HEADER, what)], body
            )

        if call.cache_op == "lookup":
            refusal = self.outbound.count(request_id, call, rules)
            if refusal is not None:
                return refusal
            if not origin.cache:
                return answer("miss", 204, list(call.headers))
            got = lookup(self.store, function, call.method, call.url, call.headers)
            if isinstance(got, Hit):
                self.store.stats.requests[got.cache] += 1
                shown = without_tags(got)
                return answer("hit", shown.status, shown.headers, shown.body)
            self._ticket_no += 1
            ticket = str(self._ticket_no)
            self._tickets[(request_id, ticket)] = got
            while len(self._tickets) > MAX_TICKETS:
                del self._tickets[next(iter(self._tickets))]
            return answer("miss", 204, [*got.headers, (TICKET_HEADER, ticket)])
        if call.cache_op == "origin":
            res = await self._upstream(function, request_id, call, rules)
            kept = [(k, v) for k, v in res.headers if k != REGION_HEADER]
            return msgspec.structs.replace(res, headers=kept)
        if call.cache_op == "complete":
            forward = self._tickets.pop((request_id, call.ticket), None)
            if call.put_status == 0:
                stale = serve_stale(self.store, forward) if forward is not None else None
                if stale is None:
                    return answer("none", 204, [])
                self.store.stats.requests["STALE"] += 1
                shown = without_tags(stale)
                return answer("hit", shown.status, shown.headers, shown.body)
            if not 200 <= call.put_status <= 599 or len(call.put_headers) > 200:
                return p.FetchResult(call.id, call.fetch_id, 0, [], b"", "error",
                                     f"origin_response gave a bad response (request {request_id})")  # fmt: skip
            upstream = UpstreamResponse(call.put_status, list(call.put_headers), call.body)
            if forward is None:  # cache = false, or a ticket this request never opened
                out = [(k, v) for k, v in upstream.headers if k != CACHE_HEADER]
                self.store.stats.requests["BYPASS"] += 1
                return answer(
                    "done", upstream.status, [*out, (CACHE_HEADER, "BYPASS")], upstream.body
                )
            hit = complete(self.store, function, forward, upstream, wall_ms())
            self.store.stats.requests[hit.cache] += 1
            shown = without_tags(hit)
            return answer("done", shown.status, shown.headers, shown.body)
        return p.FetchResult(call.id, call.fetch_id, 0, [], b"", "error",
                             f"unknown origin operation {call.cache_op[:40]!r}")  # fmt: skip

    def cache_api(
        self, function: str, request_id: str, call: p.FetchCall, rules: SubrequestRules
    ) -> p.FetchResult:
        """``caches.default.match|put|delete`` on this location's store (nothing is fetched)."""

        def answer(
            what: str, status: int = 204, headers: Headers | None = None, body: bytes = b""
        ) -> p.FetchResult:
            shown = [*(headers or []), (API_HEADER, what)]
            return p.FetchResult(call.id, call.fetch_id, status, shown, body)

        refusal = self.outbound.count(request_id, call, rules)
        if refusal is not None:
            return refusal
        if url_problem(call.url) is not None or len(call.put_headers) > 100:
            return p.FetchResult(call.id, call.fetch_id, 0, [], b"", "error",
                                 f"caches.default: bad request for {call.url[:200]!r}")  # fmt: skip
        if call.cache_op == "match":
            hit = api_match(self.store, function, call.url, call.headers)
            if hit is None:
                return answer("none")
            shown = without_tags(hit)
            return answer("hit", shown.status, shown.headers, shown.body)
        if call.cache_op == "put":
            if not 200 <= call.put_status <= 599:
                return answer("not_stored", body=b"bad status")
            upstream = UpstreamResponse(call.put_status, list(call.put_headers), call.body)
            why = api_put(self.store, function, call.url, call.headers, upstream, wall_ms())
            return answer("not_stored", body=why.encode()) if why else answer("stored")
        if call.cache_op == "delete":
            deleted = api_delete(self.store, function, call.url)
            return answer("deleted" if deleted else "none")
        return p.FetchResult(call.id, call.fetch_id, 0, [], b"", "error",
                             f"caches.default: unknown operation {call.cache_op[:40]!r}")  # fmt: skip

    async def _upstream(
        self, function: str, request_id: str, call: p.FetchCall, rules: SubrequestRules
    ) -> p.FetchResult:
        if self.region is not None and call.method in ("GET", "HEAD"):
            refusal = self.outbound.precheck(request_id, call, rules)
            if refusal is not None:
                return refusal
            request = OriginRequest(
                function, call.url, call.method, list(call.headers), call.timeout_ms,
                rules.allow_private,
            )  # fmt: skip
            got = await self.region(request)
            if got is not None:
                return msgspec.structs.replace(got, id=call.id, fetch_id=call.fetch_id)
            # No region tier answered: fetch the origin from here (counted once more).
        return await self.direct(request_id, call, rules)
