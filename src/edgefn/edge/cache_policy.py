"""The edge cache: one bounded HTTP cache per location and per region hub, with RFC 9111 rules.

Which stored response may answer a request, when it must be revalidated, what may be stored and
how a 304 freshens it are hishel's sans-I/O state machine (``hishel.IdleClient`` and the states it
leads to, as a *shared* cache: ``s-maxage``, ``private`` and ``Authorization`` are honoured). This
module is the rest, and pure: the store (entries by function and URL, bounded by bytes with LRU
eviction, a tag index for purges), the statuses, and the one ``lookup`` / ``complete`` pair a
driver calls around its upstream fetch (:class:`edgefn.edge.origin_fetch.CachedFetch` is that
driver, used by the node, the region hub's tier and ``edgefn.testing`` alike).

Statuses, in ``x-edgefn-cache`` on the response a function receives:

- ``HIT``: a fresh stored response, no upstream request;
- ``REVALIDATED``: a stale one confirmed by a 304 from upstream, freshened and served;
- ``MISS``: fetched upstream and stored;
- ``STALE``: upstream failed (no answer at all) and a stored response, stale, was served (RFC 9111
  §4.2.4: a cache that is disconnected may serve stale);
- ``BYPASS``: not cacheable (a method other than GET/HEAD, ``no-store``, ``private``, an
  ``Authorization`` without ``public``, no freshness information, a body over the entry limit).

Entries are keyed by (function, URL): one function can never read or purge another's. Tags come
from the origin's ``Cache-Tag`` header (comma-separated, as Cloudflare's); the location tier strips
it from what the function sees. Ages come from the ``Date`` header; a response without one gets
the time it was received, so it does not stay fresh forever.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from typing import Literal, Protocol

import hishel

__all__ = [
    "CACHE_HEADER",
    "MAX_ENTRY_BYTES",
    "MAX_TAGS",
    "CacheStats",
    "CacheStatus",
    "CacheStore",
    "Forward",
    "Hit",
    "UpstreamResponse",
    "api_delete",
    "api_match",
    "api_put",
    "complete",
    "lookup",
    "parse_tags",
    "serve_stale",
    "without_tags",
]

CACHE_HEADER = "x-edgefn-cache"
TAG_HEADER = "cache-tag"
MAX_ENTRY_BYTES = 4 * 1024 * 1024
MAX_TAGS = 32  # per response; longer lists are cut (Cloudflare allows 1000 bytes of tags)
MAX_TAG_CHARS = 128
MAX_VARIANTS = 8  # stored responses per (function, URL), for Vary
CacheStatus = Literal["HIT", "REVALIDATED", "MISS", "STALE", "BYPASS"]
STATUSES: tuple[CacheStatus, ...] = ("HIT", "REVALIDATED", "MISS", "STALE", "BYPASS")
_OPTIONS = hishel.CacheOptions(shared=True, supported_methods=["GET", "HEAD"], allow_stale=False)
Headers = list[tuple[str, str]]


def _hheaders(headers: Iterable[tuple[str, str]]) -> hishel.Headers:
    grouped: dict[str, list[str]] = {}
    for k, v in headers:
        grouped.setdefault(k.lower(), []).append(v)
    return hishel.Headers(grouped)


def _pairs(headers: hishel.Headers) -> Headers:
    return [(k, v) for k in headers for v in headers.get_list(k) or []]


def parse_tags(headers: Iterable[tuple[str, str]]) -> frozenset[str]:
    """The purge tags of a response: its ``Cache-Tag`` values, comma-separated, bounded."""
    tags: list[str] = []
    for k, v in headers:
        if k.lower() == TAG_HEADER:
            tags.extend(t.strip() for t in v.split(","))
    return frozenset(
        [t for t in tags if t and len(t) <= MAX_TAG_CHARS and t.isprintable()][:MAX_TAGS]
    )


@dataclass(slots=True)
class _Stored:
    function: str
    entry: hishel.Entry
    body: bytes
    tags: frozenset[str]

    @property
    def size(self) -> int:
        headers = sum(len(k) + len(v) for k, v in _pairs(self.entry.response.headers))
        return len(self.body) + headers + len(self.entry.request.url) + 64


class PurgeLike(Protocol):
    """What a purge names (``edgefn.bus.cache_purge.Purge``, as the bus carries it)."""

    @property
    def function(self) -> str: ...
    @property
    def tags(self) -> tuple[str, ...]: ...
    @property
    def urls(self) -> tuple[str, ...]: ...
    @property
    def everything(self) -> bool: ...


@dataclass(slots=True)
class CacheStats:
    requests: dict[CacheStatus, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    entries: int = 0
    bytes: int = 0
    evictions: int = 0
    purged: int = 0

    @property
    def hit_ratio(self) -> float:
        served = sum(self.requests.values())
        cached = self.requests["HIT"] + self.requests["REVALIDATED"] + self.requests["STALE"]
        return cached / served if served else 0.0


class CacheStore:
    """Stored responses of every function at one tier, bounded by ``max_bytes`` (LRU)."""

    def __init__(self, *, max_bytes: int = 64 * 1024 * 1024) -> None:
        assert max_bytes > 0
        self.max_bytes = max_bytes
        self.max_entry_bytes = min(MAX_ENTRY_BYTES, max_bytes)
        self._entries: OrderedDict[uuid.UUID, _Stored] = OrderedDict()
        self._by_url: dict[tuple[str, str], list[uuid.UUID]] = {}
        self.stats = CacheStats()

    def entries(self, function: str, url: str) -> list[hishel.Entry]:
        ids = self._by_url.get((function, url), [])
        return [self._entries[i].entry for i in ids]

    def body(self, entry_id: uuid.UUID) -> bytes | None:
        stored = self._entries.get(entry_id)
        if stored is None:
            return None
        self._entries.move_to_end(entry_id)
        return stored.body

    def put(
        self,
        function: str,
        request: hishel.Request,
        response: hishel.Response,
        body: bytes,
        tags: frozenset[str],
    ) -> bool:
        """Store a response; replaces the variant the same request would select. False if it is
        too large to store."""
        entry = hishel.Entry(uuid.uuid4(), request, response)
        stored = _Stored(function, entry, body, tags)
        if stored.size > self.max_entry_bytes:
            return False
        key = (function, request.url)
        for old in list(self._by_url.get(key, [])):
            if hishel_vary_match(request, self._entries[old].entry):
                self._drop(old)
        ids = self._by_url.setdefault(key, [])
        if len(ids) >= MAX_VARIANTS:
            self._drop(ids[0])
            ids = self._by_url.setdefault(key, [])
        ids.append(entry.id)
        self._entries[entry.id] = stored
        self.stats.entries += 1
        self.stats.bytes += stored.size
        while self.stats.bytes > self.max_bytes and self._entries:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.stats.evictions += 1
        return True

    def replace(self, entry: hishel.Entry) -> None:
        """Freshen a stored entry's headers (after a 304); its body stays."""
        stored = self._entries.get(entry.id)
        if stored is None:
            return
        self.stats.bytes -= stored.size
        stored.entry = entry
        self.stats.bytes += stored.size
        self._entries.move_to_end(entry.id)

    def delete(self, ids: Iterable[uuid.UUID]) -> None:
        for i in ids:
            if i in self._entries:
                self._drop(i)

    def purge(self, purge: PurgeLike) -> int:
        """Drop what ``purge`` names; returns how many responses were dropped."""
        tags = set(purge.tags)
        urls = set(purge.urls)
        doomed = [
            i
            for i, s in self._entries.items()
            if s.function == purge.function
            and (purge.everything or s.entry.request.url in urls or not s.tags.isdisjoint(tags))
        ]
        self.delete(doomed)
        self.stats.purged += len(doomed)
        return len(doomed)

    def clear(self) -> int:
        """Drop everything (a tier that may have missed purges while cut off starts cold)."""
        n = len(self._entries)
        self.delete(list(self._entries))
        return n

    def _drop(self, entry_id: uuid.UUID) -> None:
        stored = self._entries.pop(entry_id)
        key = (stored.function, stored.entry.request.url)
        ids = self._by_url.get(key, [])
        if entry_id in ids:
            ids.remove(entry_id)
        if not ids:
            self._by_url.pop(key, None)
        self.stats.entries -= 1
        self.stats.bytes -= stored.size


def hishel_vary_match(request: hishel.Request, entry: hishel.Entry) -> bool:
    from hishel._core._spec import vary_headers_match  # lazy: private helper, one import site

    return bool(vary_headers_match(request, entry))


# --------------------------------------------------------------------------- lookup / complete
@dataclass(frozen=True, slots=True)
class Hit:
    """Answer from the store: no upstream request."""

    status: int
    headers: Headers
    body: bytes
    cache: CacheStatus


@dataclass(frozen=True, slots=True)
class Forward:
    """Send ``headers`` (the original ones, or a conditional request's) upstream, then call
    :func:`complete` with ``pending`` and what came back."""

    headers: Headers
    pending: hishel.State
    request: hishel.Request


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    status: int
    headers: Headers
    body: bytes


def lookup(
    store: CacheStore, function: str, method: str, url: str, headers: Headers
) -> Hit | Forward:
    request = hishel.Request(method.upper(), url, _hheaders(headers))
    state = hishel.IdleClient(options=_OPTIONS).next(request, store.entries(function, url))
    if isinstance(state, hishel.FromCache):
        body = store.body(state.entry.id)
        if body is not None:
            return _hit(state.entry, body, "HIT")
        state = hishel.CacheMiss(request=request, options=_OPTIONS)
    sent = state.request if isinstance(state, hishel.NeedRevalidation) else request
    return Forward(_pairs(sent.headers), state, request)


def _hit(entry: hishel.Entry, body: bytes, cache: CacheStatus) -> Hit:
    headers = [(k, v) for k, v in _pairs(entry.response.headers) if k != CACHE_HEADER]
    headers.append((CACHE_HEADER, cache))
    return Hit(entry.response.status_code, headers, body, cache)


def complete(
    store: CacheStore, function: str, forward: Forward, upstream: UpstreamResponse, now_ms: int
) -> Hit:
    """What to hand out once ``upstream`` answered ``forward`` (received at ``now_ms``, wall
    clock), storing or freshening entries."""
    headers = list(upstream.headers)
    if not any(k.lower() == "date" for k, _ in headers):
        headers.append(("date", formatdate(now_ms / 1000, usegmt=True)))
    response = hishel.Response(upstream.status, _hheaders(headers))
    state: hishel.State | None = forward.pending
    if isinstance(state, (hishel.NeedRevalidation, hishel.CacheMiss)):
        state = state.next(response)
    while isinstance(state, hishel.InvalidateEntries):
        store.delete(state.entry_ids)
        state = state.next()
    if isinstance(state, hishel.CacheMiss):  # revalidation found nothing to freshen
        state = state.next(response)
        while isinstance(state, hishel.InvalidateEntries):
            store.delete(state.entry_ids)
            state = state.next()
    if isinstance(state, hishel.NeedToBeUpdated):
        for entry in state.updating_entries:
            store.replace(entry)
        state = state.next()
    if isinstance(state, hishel.FromCache):
        body = store.body(state.entry.id)
        if body is not None:
            return _hit(state.entry, body, "REVALIDATED")
    if isinstance(state, hishel.StoreAndUse) and store.put(
        function, forward.request, state.response, upstream.body, parse_tags(headers)
    ):
        return _hit(
            hishel.Entry(uuid.uuid4(), forward.request, state.response), upstream.body, "MISS"
        )
    out = [(k, v) for k, v in upstream.headers if k.lower() != CACHE_HEADER]
    out.append((CACHE_HEADER, "BYPASS"))
    return Hit(upstream.status, out, upstream.body, "BYPASS")


def serve_stale(store: CacheStore, forward: Forward) -> Hit | None:
    """Upstream gave no answer: the most recent stored response being revalidated, if any."""
    state = forward.pending
    if not isinstance(state, hishel.NeedRevalidation) or not state.revalidating_entries:
        return None
    entry = state.revalidating_entries[0]
    body = store.body(entry.id)
    return None if body is None else _hit(entry, body, "STALE")


# --------------------------------------------------------------------------- the Cache API
def api_put(
    store: CacheStore,
    function: str,
    url: str,
    request_headers: Headers,
    upstream: UpstreamResponse,
    now_ms: int,
) -> str:
    """``caches.default.put``: store ``upstream`` for a GET of ``url`` if RFC 9111 lets a shared
    cache store it. Returns "" when stored, else why not (for the function's error)."""
    if upstream.status == 206:
        return "a 206 partial response cannot be stored"
    if any(k.lower() == "vary" and v.strip() == "*" for k, v in upstream.headers):
        return "a response with Vary: * cannot be stored"
    request = hishel.Request("GET", url, _hheaders(request_headers))
    forward = Forward(list(request_headers), hishel.CacheMiss(request=request, options=_OPTIONS),
                      request)  # fmt: skip
    hit = complete(store, function, forward, upstream, now_ms)
    if hit.cache != "BYPASS" and api_match(store, function, url, request_headers) is None:
        api_delete(store, function, url)  # stored, but never reusable without validation
        hit = replace(hit, cache="BYPASS")
    if hit.cache == "BYPASS":
        return (
            "the response is not storable and fresh for a shared cache (no-store, private, no "
            "freshness information, or too large): give it Cache-Control: public, max-age=N"
        )
    return ""


def api_match(store: CacheStore, function: str, url: str, request_headers: Headers) -> Hit | None:
    """``caches.default.match``: a fresh stored response for a GET of ``url``, or None."""
    got = lookup(store, function, "GET", url, request_headers)
    return got if isinstance(got, Hit) else None


def api_delete(store: CacheStore, function: str, url: str) -> bool:
    """``caches.default.delete``: drop every stored variant of ``url``; False if none was."""
    return store.purge(_UrlPurge(function, (url,))) > 0


@dataclass(frozen=True, slots=True)
class _UrlPurge:
    function: str
    urls: tuple[str, ...]
    tags: tuple[str, ...] = ()
    everything: bool = False


def without_tags(hit: Hit) -> Hit:
    """``hit`` as a function sees it: no ``Cache-Tag`` header."""
    return replace(hit, headers=[(k, v) for k, v in hit.headers if k.lower() != TAG_HEADER])
