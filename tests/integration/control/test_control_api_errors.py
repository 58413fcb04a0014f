"""Every error of the real control API (uvicorn on 127.0.0.1, real JetStream) is a JSON object with
``error``, ``message`` and ``hint``: unknown routes, wrong methods, malformed and oversized bodies,
missing, malformed and insufficient tokens."""

from __future__ import annotations

import httpx
import pytest
from _control_fixtures import Control, new_token

pytestmark = pytest.mark.integration


def _is_json_error(resp: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert resp.status_code == status, (resp.status_code, resp.text[:300])
    assert resp.headers["content-type"] == "application/json", resp.text[:300]
    body = resp.json()
    assert body["error"] == code, body
    assert body["message"], body
    assert "hint" in body, body
    return dict(body)


async def test_unknown_route_and_wrong_method(control: Control) -> None:
    _is_json_error(await control.http.get("/v2/nothing"), 404, "not_found")
    _is_json_error(await control.http.get("/v1/functions/f/nothing"), 404, "not_found")
    wrong = await control.http.delete("/v1/status")
    _is_json_error(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "GET, HEAD"


async def test_malformed_json_bodies(control: Control) -> None:
    for method, path in (
        ("POST", "/v1/functions/f/deployments"),
        ("POST", "/v1/functions/f/rollback"),
        ("POST", "/v1/tokens"),
        ("POST", "/v1/keys"),
        ("POST", "/v1/kv/ns/shares"),
        ("PUT", "/v1/functions/f/secrets/S"),
    ):
        for content in (b"{not json", b"\xff\xfe", b"[1, 2]"):
            resp = await control.http.request(method, path, content=content)
            _is_json_error(resp, 400, "bad_request")


async def test_too_large_bodies_are_413(control: Control) -> None:
    huge_json = b'{"name": "' + b"x" * 100_000 + b'"}'
    for method, path in (
        ("POST", "/v1/functions/f/deployments"),
        ("POST", "/v1/tokens"),
        ("PUT", "/v1/functions/f/secrets/S"),
    ):
        body = _is_json_error(
            await control.http.request(method, path, content=huge_json), 413, "too_large"
        )
        assert "bytes" in body["message"]
    upload = await control.http.post(
        "/v1/functions/f/versions",
        content=b"\0" * (11 * 1024 * 1024),
        headers={"x-edgefn-signature": "c2ln"},
    )
    _is_json_error(upload, 413, "too_large")


async def test_missing_malformed_and_insufficient_tokens(control: Control) -> None:
    async with httpx.AsyncClient(base_url=control.url, timeout=10) as anonymous:
        _is_json_error(await anonymous.get("/v1/status"), 401, "unauthorized")
        for auth in ("Bearer nope", "Basic dXNlcjpwYXNz", "Bearer edgefn_x_y", "Bearer"):
            resp = await anonymous.get("/v1/status", headers={"authorization": auth})
            _is_json_error(resp, 401, "unauthorized")
    reader = {"authorization": f"Bearer {await new_token(control, ['read'], name='reader')}"}
    async with httpx.AsyncClient(base_url=control.url, headers=reader, timeout=10) as c:
        assert (await c.get("/v1/status")).status_code == 200
        body = _is_json_error(await c.get("/v1/audit"), 403, "forbidden")
        assert body["scope"] == "admin"
        denied = await c.post("/v1/functions/f/deployments", json={"version": "v"})
        assert _is_json_error(denied, 403, "forbidden")["scope"] == "deploy:f"
