"""The edge cache's store and statuses around hishel's RFC 9111 rules (pure; no network)."""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate

from edgefn.bus.cache_purge import Purge
from edgefn.edge.cache_policy import (
    CACHE_HEADER,
    CacheStore,
    Forward,
    Hit,
    UpstreamResponse,
    complete,
    lookup,
    parse_tags,
    without_tags,
)
from edgefn.edge.origin_fetch import CachedFetch

URL = "http://origin.example/a"


def _date(ago_s: float = 0) -> str:
    return formatdate(time.time() - ago_s, usegmt=True)


def _resp(*headers: tuple[str, str], status: int = 200, body: bytes = b"hello") -> UpstreamResponse:
    return UpstreamResponse(status, [("date", _date()), *headers], body)


def _through(
    store: CacheStore, upstream: UpstreamResponse, *, fn: str = "f", method: str = "GET",
    url: str = URL, headers: list[tuple[str, str]] | None = None,
) -> Hit:  # fmt: skip
    first = lookup(store, fn, method, url, headers or [])
    if isinstance(first, Hit):
        return first
    return complete(store, fn, first, upstream, int(time.time() * 1000))


def _header(hit: Hit, name: str) -> str | None:
    return next((v for k, v in hit.headers if k == name), None)


def test_a_fresh_response_is_a_miss_then_a_hit_with_the_same_body() -> None:
    store = CacheStore()
    first = _through(store, _resp(("cache-control", "max-age=60")))
    assert (first.cache, _header(first, CACHE_HEADER)) == ("MISS", "MISS")
    second = _through(store, _resp(status=500, body=b"never asked"))
    assert (second.cache, second.status, second.body) == ("HIT", 200, b"hello")
    assert _header(second, CACHE_HEADER) == "HIT"
    assert _header(second, "age") is not None


def test_uncacheable_responses_and_methods_bypass() -> None:
    store = CacheStore()
    for headers in [("cache-control", "no-store"), ("cache-control", "private, max-age=60")]:
        assert _through(store, _resp(headers)).cache == "BYPASS"
        assert _through(store, _resp(headers)).cache == "BYPASS"
    # No freshness information and no validator: never reused without asking upstream.
    for _ in range(2):
        assert _through(store, _resp(), url=URL + "/plain").cache in ("MISS", "BYPASS")
    # Authorization: a shared cache stores only what the origin marks public.
    auth = [("authorization", "Bearer x")]
    got = _through(store, _resp(("cache-control", "max-age=60")), url=URL + "/me", headers=auth)
    assert got.cache == "BYPASS"
    assert _through(store, _resp(("cache-control", "max-age=60")), method="POST").cache == "BYPASS"


def test_a_successful_post_invalidates_the_url() -> None:
    store = CacheStore()
    _through(store, _resp(("cache-control", "max-age=60")))
    assert _through(store, _resp()).cache == "HIT"
    assert _through(store, _resp(status=201), method="POST").cache == "BYPASS"
    assert _through(store, _resp(("cache-control", "max-age=60"))).cache == "MISS"


def test_vary_keeps_one_variant_per_header_value() -> None:
    store = CacheStore()
    r = _resp(("cache-control", "max-age=60"), ("vary", "accept-language"))
    en, de = [("accept-language", "en")], [("accept-language", "de")]
    assert _through(store, r, headers=en).cache == "MISS"
    assert _through(store, r, headers=de).cache == "MISS"
    assert _through(store, r, headers=en).cache == "HIT"
    assert _through(store, r, headers=de).cache == "HIT"


def test_a_stale_response_is_revalidated_with_its_etag_and_freshened_by_a_304() -> None:
    store = CacheStore()
    stale = UpstreamResponse(200, [("date", _date(100)), ("cache-control", "max-age=10"),
                                   ("etag", '"v1"')], b"v1 body")  # fmt: skip
    assert _through(store, stale).cache == "MISS"
    again = lookup(store, "f", "GET", URL, [])
    assert isinstance(again, Forward)
    assert ("if-none-match", '"v1"') in again.headers
    not_modified = UpstreamResponse(304, [("date", _date()), ("cache-control", "max-age=60"),
                                          ("etag", '"v1"')], b"")  # fmt: skip
    got = complete(store, "f", again, not_modified, int(time.time() * 1000))
    assert (got.cache, got.status, got.body) == ("REVALIDATED", 200, b"v1 body")
    assert _through(store, _resp(status=500)).cache == "HIT"


def test_a_stale_entry_is_served_when_upstream_gives_no_answer() -> None:
    async def main() -> None:
        cache = CachedFetch()

        async def stale(_h: list[tuple[str, str]]) -> UpstreamResponse:
            return UpstreamResponse(200, [("date", _date(100)), ("cache-control", "max-age=10"),
                                          ("etag", '"v1"')], b"old")  # fmt: skip

        async def down(_h: list[tuple[str, str]]) -> None:
            return None

        first = await cache.fetch("f", "GET", URL, [], stale)
        assert first is not None
        assert first.cache == "MISS"
        got = await cache.fetch("f", "GET", URL, [], down)
        assert got is not None
        assert (got.cache, got.body) == ("STALE", b"old")
        # Nothing stored for another URL: the caller reports its own error.
        assert await cache.fetch("f", "GET", URL + "/x", [], down) is None
        assert cache.store.stats.requests["STALE"] == 1

    asyncio.run(main())


def test_a_function_never_reads_another_functions_entries() -> None:
    store = CacheStore()
    _through(store, _resp(("cache-control", "public, max-age=60")), fn="victim")
    assert isinstance(lookup(store, "victim", "GET", URL, []), Hit)
    assert isinstance(lookup(store, "attacker", "GET", URL, []), Forward)
    assert store.entries("attacker", URL) == []


def test_purges_by_tag_url_and_everything_touch_only_their_function() -> None:
    store = CacheStore()
    tagged = _resp(("cache-control", "max-age=60"), ("cache-tag", "product-1, all"))
    for fn in ("f", "g"):
        for path in ("/a", "/b"):
            _through(store, tagged, fn=fn, url=URL + path)
    assert store.purge(Purge("f", tags=("product-1",))) == 2
    assert _through(store, tagged, fn="f", url=URL + "/a").cache == "MISS"
    assert _through(store, tagged, fn="g", url=URL + "/a").cache == "HIT"
    assert store.purge(Purge("g", urls=(URL + "/b",))) == 1
    assert store.purge(Purge("g", everything=True)) == 1
    assert store.purge(Purge("nobody", everything=True)) == 0
    assert _through(store, tagged, fn="f", url=URL + "/b").cache == "MISS"


def test_tags_are_parsed_bounded_and_hidden_from_the_function() -> None:
    assert parse_tags([("Cache-Tag", "a, b,,c"), ("cache-tag", "d")]) == {"a", "b", "c", "d"}
    assert len(parse_tags([("cache-tag", ",".join(str(i) for i in range(100)))])) == 32
    hit = _through(CacheStore(), _resp(("cache-control", "max-age=60"), ("cache-tag", "a")))
    assert _header(without_tags(hit), "cache-tag") is None


def test_the_store_is_bounded_by_bytes_and_evicts_the_least_recently_used() -> None:
    store = CacheStore(max_bytes=10_000)
    big = _resp(("cache-control", "max-age=60"), body=b"x" * 3000)
    for i in range(10):
        _through(store, big, url=f"{URL}/{i}")
        _through(store, big, url=f"{URL}/0")  # keep /0 recently used
    assert store.stats.bytes <= 10_000
    assert store.stats.evictions >= 7
    assert _through(store, big, url=f"{URL}/0").cache == "HIT"
    assert _through(store, big, url=f"{URL}/1").cache == "MISS"
    # An entry larger than the store is served but not stored.
    assert _through(store, _resp(("cache-control", "max-age=60"), body=b"y" * 20_000),
                    url=URL + "/huge").cache == "BYPASS"  # fmt: skip


def test_concurrent_misses_share_one_upstream_request() -> None:
    async def main() -> None:
        cache = CachedFetch()
        calls = 0

        async def upstream(_h: list[tuple[str, str]]) -> UpstreamResponse:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.05)
            return _resp(("cache-control", "max-age=60"))

        got = await asyncio.gather(*(cache.fetch("f", "GET", URL, [], upstream) for _ in range(8)))
        assert calls == 1
        assert sorted(g.cache for g in got if g is not None) == ["HIT"] * 7 + ["MISS"]

    asyncio.run(main())
