"""Fuzz the control API's JSON routes on a real ControlService over a real nats-server.

Random bodies and types to deploy, rollback and upload must get a 4xx JSON error body, never a
500. The app is built with whatever ``create_app`` needs on this branch: required keyword
parameters that look like tokens get a generated token, sent as a bearer token.
"""

from __future__ import annotations

import inspect
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefn.bundle import SigningKey
from edgefn.bus import CoreConfig, NatsServer, connect
from edgefn.control.api import create_app
from edgefn.control.service import ControlService

pytestmark = pytest.mark.integration

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = st.dictionaries(
    st.sampled_from(["version", "strategy", "to", "x"]),
    JSON | st.sampled_from(["canary", "immediate", "0123456789ab", "", "../x"]),
    max_size=3,
)
NAMES = st.sampled_from(["hello", "Bad Name", "x" * 100, "%2e%2e", "a-b", "-"]) | st.text(
    alphabet="abcxyz-_.~", min_size=1, max_size=10
)


def _app(service: ControlService) -> tuple[Any, dict[str, str]]:
    kwargs: dict[str, Any] = {}
    headers: dict[str, str] = {}
    for name, param in inspect.signature(create_app).parameters.items():
        required = param.default is inspect.Parameter.empty and name != "service"
        if required and "token" in name:
            token = secrets.token_hex(16)
            kwargs[name] = [token] if name.endswith("s") else token
            headers["authorization"] = f"Bearer {token}"
    return create_app(service, **kwargs), headers


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    server = NatsServer(CoreConfig(name="core", store_dir=tmp_path / "js"), work_dir=tmp_path)
    await server.start()
    nc = await connect(server.client_url, name="fuzz")
    service = ControlService(nc, trusted_keys=[SigningKey.generate().public_key_pem()], tick_ms=50)
    await service.start()
    app, headers = _app(service)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://control", headers=headers, timeout=10
        ) as client:
            yield client
    finally:
        await service.stop()
        await nc.close()
        await server.stop()


def _assert_client_error(resp: httpx.Response) -> None:
    assert resp.status_code < 500, (resp.status_code, resp.text)
    if resp.status_code >= 400:
        body = resp.json()
        assert isinstance(body, dict)
        assert body.get("error"), body
        assert body.get("message"), body


FUZZ = settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(NAMES, st.sampled_from(["deployments", "rollback"]), FIELDS | JSON)
async def test_json_routes_answer_4xx_json(
    api: httpx.AsyncClient, name: str, route: str, body: object
) -> None:
    resp = await api.post(f"/v1/functions/{name}/{route}", content=json.dumps(body))
    _assert_client_error(resp)


@FUZZ
@given(NAMES, st.binary(max_size=64), st.text(max_size=40))
async def test_raw_bodies_and_uploads_answer_4xx_json(
    api: httpx.AsyncClient, name: str, raw: bytes, signature: str
) -> None:
    for route in ("deployments", "rollback"):
        _assert_client_error(await api.post(f"/v1/functions/{name}/{route}", content=raw))
    sig = signature.encode("ascii", "ignore").decode().strip()
    headers = {"x-edgefn-signature": sig} if sig else {}
    upload = await api.post(f"/v1/functions/{name}/versions", content=raw, headers=headers)
    _assert_client_error(upload)


async def test_unknown_paths_and_methods_get_json_errors(api: httpx.AsyncClient) -> None:
    """Regression: the router's 404/405 were plain text, unlike every other error."""
    missing = await api.post("/v1/functions/./deployments", content=b"{}")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    wrong = await api.delete("/v1/status")
    assert wrong.status_code == 405
    assert wrong.json()["error"] == "method_not_allowed"
