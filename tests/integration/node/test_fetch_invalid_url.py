"""An invalid subrequest URL fails at once inside the function with a clear error (InvalidURLError,
naming the URL, what is wrong and the request id) instead of waiting for a timeout."""

from __future__ import annotations

import httpx
import pytest

from edgefn.edge import EdgeNode

pytestmark = pytest.mark.integration

BAD_URLS = {
    "not a url": "whitespace",
    "ftp://x": "only http:// and https://",
    "http://": "no host",
    "https://": "no host",
    "//example.com/x": "only http:// and https://",
    "http://exa mple.com/": "whitespace",
    "http://example.com/a b": "whitespace",
    "http://example.com:99999/": "out of range",
    "http://[::1/": "not a valid URL",
    "http://exa$mple.com/": "not a valid hostname",
    "": "only http:// and https://",
}


@pytest.mark.parametrize("url", list(BAD_URLS))
async def test_invalid_url_fails_at_once(node: EdgeNode, url: str) -> None:
    # The function's own timeout is far longer than the client's 5 s: an answer at all means the
    # call failed at once rather than waiting for something.
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as c:
        resp = await c.get("/", params={"url": url}, headers={"host": "fetcher.localhost"})
    assert resp.status_code == 502, resp.text
    body = resp.json()
    assert body["error"] == "InvalidURLError", body
    assert BAD_URLS[url] in body["message"], body
    assert repr(url) in body["message"]
    assert f"request {resp.headers['x-edgefn-request-id']}" in body["message"]
    assert "https://example.com/path" in body["message"]  # what to do


async def test_a_subrequest_body_over_the_limit_fails_at_once(node: EdgeNode) -> None:
    async with httpx.AsyncClient(base_url=node.url, timeout=5) as c:
        resp = await c.get(
            "/",
            params={"url": "https://example.com/upload", "body_mb": "9"},
            headers={"host": "fetcher.localhost"},
        )
    assert resp.status_code == 502, resp.text
    body = resp.json()
    assert body["error"] == "SubrequestLimitError", body
    assert "over the 8388608-byte limit" in body["message"]
    assert f"request {resp.headers['x-edgefn-request-id']}" in body["message"]
