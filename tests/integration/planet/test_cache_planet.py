"""The edge cache on a real 12-location planet (#14): examples/cdn in front of a counting origin.

A response the origin lets a shared cache keep is a MISS at a location's first request and a HIT
at its second; every location of a region is served by one origin fetch (the region hub's tier);
and a purge by tag, published once through the control API, makes every location MISS within a
second. The origin is a real HTTP server on 127.0.0.1 in the test process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.http_origin import CountingOrigin, example_for
from tests.planet_helpers import Planet, PlanetFactory, PlanetSpec, credentials
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOST = {"host": "cdn.localhost"}


def _headers(path: str) -> list[tuple[str, str]]:
    return [("cache-control", "public, max-age=300"),
            ("cache-tag", "site, " + path.strip("/").replace("/", "-"))]  # fmt: skip


@pytest.fixture(scope="module")
def origin() -> Iterator[CountingOrigin]:
    o = CountingOrigin(_headers)
    yield o
    o.close()


@pytest.fixture(scope="module")
def planet(
    planet_factory: PlanetFactory, origin: CountingOrigin, tmp_path_factory: pytest.TempPathFactory
) -> Planet:
    p = planet_factory("cache", PlanetSpec(locations=12))
    for name in ("cdn", "cdn-hooks"):
        p.deploy(example_for(tmp_path_factory.mktemp(name), origin, name))
    return p


def _get(c: httpx.Client, url: str, path: str) -> httpx.Response:
    got = c.get(url + path, headers=HOST)
    assert got.status_code == 200, f"{url}{path}: {got.status_code} {got.text[:300]}"
    return got


def test_second_request_hits_and_one_origin_fetch_serves_a_region(
    planet: Planet, origin: CountingOrigin
) -> None:
    regions = {loc["region"] for loc in planet.locations.values()}
    assert len(regions) >= 2, regions
    with httpx.Client(timeout=30, trust_env=False) as c:
        for name, url in planet.public_urls.items():
            first = _get(c, url, "/tagged/one")
            assert first.headers["x-edgefn-cache"] == "MISS", (name, dict(first.headers))
            assert first.headers["x-served-by"] == name
            assert "cache-tag" not in first.headers
            second = _get(c, url, "/tagged/one")
            assert second.headers["x-edgefn-cache"] == "HIT", (name, dict(second.headers))
            assert second.text == first.text
    # Each region's tier fetched once, whatever its number of locations.
    assert origin.hits["/tagged/one"] == len(regions), (origin.hits, regions)


def test_a_tag_purge_makes_every_location_miss_within_a_second(
    planet: Planet, origin: CountingOrigin
) -> None:
    urls = planet.public_urls
    with httpx.Client(timeout=30, trust_env=False) as c:
        for url in urls.values():
            _get(c, url, "/tagged/two")
        assert all(
            _get(c, u, "/tagged/two").headers["x-edgefn-cache"] == "HIT" for u in urls.values()
        )
        before = origin.hits["/tagged/two"]
        token = credentials(planet.state)["token"]
        t0 = time.monotonic()
        got = c.post(
            f"{planet.info['api_url']}/v1/functions/cdn/cache/purge",
            json={"tags": ["tagged-two"]},
            headers={"authorization": f"Bearer {token}"},
        )
        assert got.status_code == 202, got.text
        missed: set[str] = set()

        def every_location_missed() -> bool:
            for name, url in urls.items():
                if (
                    name not in missed
                    and _get(c, url, "/tagged/two").headers["x-edgefn-cache"] == "MISS"
                ):
                    missed.add(name)
            return len(missed) == len(urls)

        wait_for(every_location_missed, timeout_s=5, what="every location to MISS", interval_s=0.02)
        elapsed = time.monotonic() - t0
        print(f"purge by tag -> every one of {len(urls)} locations MISS in {elapsed:.3f} s")
        assert elapsed < 1.0, elapsed
        assert origin.hits["/tagged/two"] > before
        # Another tag's responses were kept.
        assert _get(c, urls[planet.names[0]], "/tagged/one").headers["x-edgefn-cache"] == "HIT"


def test_a_location_cut_off_during_a_purge_serves_no_purged_response_after_heal(
    planet: Planet,
) -> None:
    """The purge cannot reach a cut-off location; once the link is back its node has either
    heard it or, having reconnected, emptied its cache: either way the response is a MISS."""
    name = planet.names[2]
    url = planet.public_urls[name]
    token = credentials(planet.state)["token"]
    with httpx.Client(timeout=30, trust_env=False) as c:
        _get(c, url, "/tagged/three")
        assert _get(c, url, "/tagged/three").headers["x-edgefn-cache"] == "HIT"
        planet.edgefn("net", "partition", name, "--json")
        try:
            got = c.post(
                f"{planet.info['api_url']}/v1/functions/cdn/cache/purge",
                json={"tags": ["tagged-three"]},
                headers={"authorization": f"Bearer {token}"},
            )
            assert got.status_code == 202, got.text
        finally:
            planet.edgefn("net", "heal", "--json")
        wait_for(
            lambda: _get(c, url, "/tagged/three").headers["x-edgefn-cache"] == "MISS",
            timeout_s=60,
            what=f"{name} to miss the purged response after heal",
            interval_s=0.5,
        )


def test_the_cache_api_keeps_a_computed_response_at_its_location(planet: Planet) -> None:
    url = planet.public_urls[planet.names[-1]]
    with httpx.Client(timeout=30, trust_env=False) as c:
        first = _get(c, url, "/report?n=5")
        assert "x-edgefn-cache" not in first.headers  # computed by the function
        second = _get(c, url, "/report?n=5")
        assert second.headers["x-edgefn-cache"] == "HIT"
        assert second.json() == first.json() == {
            "n": 5, "sum_of_squares": 30, "at": planet.names[-1]
        }  # fmt: skip


def test_cdn_hooks_run_in_real_workers(planet: Planet, origin: CountingOrigin) -> None:
    hooks = {"host": "cdn-hooks.localhost"}
    names = planet.names[:3]
    with httpx.Client(timeout=30, trust_env=False) as c:
        for name in names:
            url = planet.public_urls[name]
            health = c.get(f"{url}/healthz", headers=hooks)
            assert health.json() == {"ok": True, "location": name}
            assert c.get(f"{url}/admin/x", headers=hooks).status_code == 403
            first = c.get(f"{url}/static/app.js?v=1", headers=hooks)
            assert first.status_code == 200, first.text
            assert first.headers["x-edgefn-cache"] == "MISS"
            assert first.headers["x-served-by"] == name
            second = c.get(f"{url}/static/app.js?v=2", headers=hooks)
            assert (second.headers["x-edgefn-cache"], second.text) == ("HIT", first.text)
    assert origin.hits["/healthz"] == 0
    assert origin.hits["/admin/x"] == 0
    fetched = origin.hits["/static/app.js"]
    assert 1 <= fetched <= len({planet.locations[n]["region"] for n in names})
    assert origin.keys.count("shared-with-the-origin") == fetched


def test_purges_need_the_functions_deploy_scope(planet: Planet) -> None:
    with httpx.Client(timeout=30, trust_env=False) as c:
        api = planet.info["api_url"]
        anonymous = c.post(f"{api}/v1/functions/cdn/cache/purge", json={"everything": True})
        assert anonymous.status_code == 401
        token = credentials(planet.state)["token"]
        auth = {"authorization": f"Bearer {token}"}
        bad = c.post(f"{api}/v1/functions/cdn/cache/purge", json={"tags": [1]}, headers=auth)
        assert bad.status_code == 400, bad.text
        assert "purge.tags" in bad.text
        empty = c.post(f"{api}/v1/functions/cdn/cache/purge", json={}, headers=auth)
        assert empty.status_code == 400, empty.text
        unknown = c.post(
            f"{api}/v1/functions/nope/cache/purge", json={"everything": True}, headers=auth
        )
        assert unknown.status_code == 404, unknown.text
    out = planet.edgefn("cache", "purge", "cdn", "--everything", "--json")
    assert out["everything"] is True
