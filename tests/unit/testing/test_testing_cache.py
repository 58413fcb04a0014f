"""``[[origins]]`` and the edge cache in-process through ``edgefn.testing`` (examples/cdn).

The TestClient is one location: the node's own ``OriginFetch`` and cache store, with the origin a
real HTTP server on 127.0.0.1 (or a ``fetch=`` fake); there is no region tier in-process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.http_origin import CountingOrigin, example_for

from edgefn import Response
from edgefn.errors import EgressDeniedError, InvalidURLError, ManifestError
from edgefn.sdk import Subrequest
from edgefn.testing import TestClient

REPO = Path(__file__).resolve().parents[3]


def _headers(path: str) -> list[tuple[str, str]]:
    """/tagged/* is cacheable for 60 s with Cache-Tag, /static/* has no caching information (the
    cdn-hooks example's origin_response adds it), anything else is private."""
    if path.startswith("/static/"):
        return []
    if path.startswith("/tagged/"):
        return [
            ("cache-control", "public, max-age=60"),
            ("cache-tag", "site, " + path.rsplit("/", 1)[1]),
        ]
    return [("cache-control", "private, max-age=60")]


Origin = CountingOrigin


@pytest.fixture
def origin() -> Iterator[Origin]:
    o = Origin(_headers)
    yield o
    o.close()


def _example(tmp_path: Path, origin: Origin, name: str) -> Path:
    return example_for(tmp_path, origin, name)


@pytest.fixture
def cdn(tmp_path: Path, origin: Origin) -> Path:
    return _example(tmp_path, origin, "cdn")


@pytest.fixture
def hooks(tmp_path: Path, origin: Origin) -> Path:
    return _example(tmp_path, origin, "cdn-hooks")


def test_second_request_is_a_hit_and_a_tag_purge_makes_it_miss(cdn: Path, origin: Origin) -> None:
    client = TestClient(cdn, location="here")
    first = client.request("/tagged/a")
    assert first.status == 200, first.text_body
    assert (first.headers["x-edgefn-cache"], first.text_body) == ("MISS", "/tagged/a #1")
    assert "cache-tag" not in first.headers  # tags are the platform's, not the function's
    assert first.headers["x-served-by"] == "here"
    second = client.request("/tagged/a")
    assert (second.headers["x-edgefn-cache"], second.text_body) == ("HIT", "/tagged/a #1")
    assert origin.hits["/tagged/a"] == 1
    client.request("/tagged/b")
    assert client.purge_cache(tags=("a",)) == 1
    assert client.request("/tagged/a").headers["x-edgefn-cache"] == "MISS"
    assert client.request("/tagged/b").headers["x-edgefn-cache"] == "HIT"
    assert client.purge_cache(tags=("site",)) == 2
    assert origin.hits == {"/tagged/a": 2, "/tagged/b": 1}


def test_private_responses_bypass_the_cache(cdn: Path, origin: Origin) -> None:
    client = TestClient(cdn)
    for _ in range(2):
        assert client.request("/private").headers["x-edgefn-cache"] == "BYPASS"
    assert origin.hits["/private"] == 2


def test_a_fake_origin_is_cached_with_the_same_rules(cdn: Path) -> None:
    seen: list[str] = []

    async def fake(sub: Subrequest) -> Response:
        seen.append(sub.url)
        return Response("faked", headers={"cache-control": "max-age=30"})

    client = TestClient(cdn, fetch=fake)
    assert client.request("/x?y=1").headers["x-edgefn-cache"] == "MISS"
    assert client.request("/x?y=1").headers["x-edgefn-cache"] == "HIT"
    assert client.request("/x?y=2").headers["x-edgefn-cache"] == "MISS"
    assert len(seen) == 2
    assert seen[0].endswith("/x?y=1")


def test_origin_paths_must_stay_below_the_origin(tmp_path: Path, origin: Origin) -> None:
    (tmp_path / "edgefn.toml").write_text(
        f'name = "o"\n[[origins]]\nbinding = "ORIGIN"\nurl = "http://127.0.0.1:{origin.port}"\n'
    )
    (tmp_path / "main.py").write_text(
        "async def fetch(request, env, ctx):\n"
        "    return await env.ORIGIN.fetch(request.query['p'])\n"
    )
    client = TestClient(tmp_path)
    with pytest.raises(InvalidURLError, match="give a path starting with one '/'"):
        client.request("/?p=//evil.example/")
    with pytest.raises(InvalidURLError):
        client.request("/?p=http://evil.example/")
    # Without [egress] allow_private the loopback origin is refused, like any subrequest.
    with pytest.raises(EgressDeniedError):
        client.request("/?p=/tagged/a")
    assert origin.hits == {}


@pytest.mark.parametrize(
    ("origins", "message"),
    [
        ('binding = "O"\nurl = "ftp://x"', "invalid origin url"),
        ('binding = "O"\nurl = "http://x/?q=1"', "no query"),
        ('binding = "O"', "missing required key"),
        ('binding = "O"\nurl = "http://x"\ncache = "yes"', "expected true or false"),
        ('binding = "KV"\nurl = "http://x"', r"already a \[vars\] name or a KV binding"),
    ],
)
def test_bad_origins_are_refused_naming_the_key(tmp_path: Path, origins: str, message: str) -> None:
    (tmp_path / "edgefn.toml").write_text(
        f'name = "o"\n[[kv_namespaces]]\nbinding = "KV"\nnamespace = "kv"\n[[origins]]\n{origins}\n'
    )
    (tmp_path / "main.py").write_text("async def fetch(request, env, ctx):\n    pass\n")
    with pytest.raises(ManifestError, match=message) as err:
        TestClient(tmp_path)
    assert "origins[0]" in str(err.value)


def test_the_cache_api_keeps_what_it_is_given_until_purged(cdn: Path) -> None:
    client = TestClient(cdn)
    first = client.request("/report?n=4")
    assert first.json() == {"n": 4, "sum_of_squares": 14, "at": "test"}
    assert "x-edgefn-cache" not in first.headers  # computed, not from the cache
    assert client.request("/report?n=4").headers["x-edgefn-cache"] == "HIT"
    assert client.purge_cache(tags=("reports",)) == 1
    assert "x-edgefn-cache" not in client.request("/report?n=4").headers


def test_the_cache_api_refuses_what_a_shared_cache_may_not_keep(tmp_path: Path) -> None:
    (tmp_path / "edgefn.toml").write_text('name = "api"\n')
    (tmp_path / "main.py").write_text(
        "from edgefn import Response, caches\n"
        "async def fetch(request, env, ctx):\n"
        "    url = 'https://example.com/k'\n"
        "    cc = request.query.get('cc', '')\n"
        "    resp = Response('v', headers={'cache-control': cc} if cc else {})\n"
        "    stored = await caches.default.put(url, resp)\n"
        "    got = await caches.default.match(url)\n"
        "    deleted = await caches.default.delete(url)\n"
        "    again = await caches.default.match(url)\n"
        "    return Response.json([stored, got is not None and await got.text(), deleted,\n"
        "                          again is None])\n"
    )
    client = TestClient(tmp_path)
    assert client.request("/?cc=public,max-age=60").json() == [True, "v", True, True]
    for cc in ("no-store", "private,max-age=60", ""):
        assert client.request(f"/?cc={cc}").json() == [False, False, False, True], cc


def test_the_four_hooks_run_where_cloudfront_runs_them(hooks: Path, origin: Origin) -> None:
    client = TestClient(hooks, location="here")
    # viewer_request answers directly: neither the cache nor the origin is asked.
    assert client.request("/healthz").json() == {"ok": True, "location": "here"}
    assert client.request("/admin/users").status == 403
    assert origin.hits == {}
    # A miss: origin_request adds the key, origin_response the freshness, viewer_response the
    # location; what origin_response made is what the location stores.
    first = client.request("/static/app.js?v=1")
    assert (first.status, first.text_body) == (200, "/static/app.js #1")
    assert first.headers["x-edgefn-cache"] == "MISS"
    assert first.headers["cache-control"] == "public, max-age=3600"
    assert first.headers["x-served-by"] == "here"
    assert origin.keys == ["shared-with-the-origin"]
    # viewer_request dropped the query, so another variant is the same entry: a HIT, and the
    # origin hooks did not run again (viewer_response did).
    second = client.request("/static/app.js?v=2")
    assert (second.headers["x-edgefn-cache"], second.text_body) == ("HIT", "/static/app.js #1")
    assert second.headers["x-served-by"] == "here"
    assert origin.hits == {"/static/app.js": 1}
    # The origin's own no-caching answer stays uncached (private).
    assert client.request("/private").headers["x-edgefn-cache"] == "BYPASS"
    assert client.request("/private").headers["x-edgefn-cache"] == "BYPASS"
    assert origin.hits["/private"] == 2


def test_a_cdn_function_with_a_fetch_or_a_missing_hook_is_refused(hooks: Path) -> None:
    main = hooks / "main.py"
    code = main.read_text()
    main.write_text(code + "\nasync def fetch(request, env, ctx):\n    pass\n")
    with pytest.raises(ManifestError, match="a \\[cdn\\] function defines no `fetch`"):
        TestClient(hooks)
    main.write_text(code.replace("async def origin_response", "def origin_response"))
    with pytest.raises(ManifestError, match="origin_response: `origin_response` must be declared"):
        TestClient(hooks)
    main.write_text(code.replace("async def viewer_response", "async def renamed"))
    with pytest.raises(ManifestError, match="defines no `viewer_response`"):
        TestClient(hooks)
