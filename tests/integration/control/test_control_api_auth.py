"""Authentication, scopes, tenancy, deployer keys and audit on a real core (JetStream + HTTP).

The route table below is the contract: every route of the app must appear in it with the scope
it needs, so a route added later without a thought about its scope fails
``test_every_route_declares_a_scope``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from _control_fixtures import Control, bearer, bundle_dir, new_token, upload
from starlette.routing import Route

from edgefn.bundle import SigningKey
from edgefn.control.api import ScopedRoute, create_app
from edgefn.control.auth import ADMIN, PUBLIC, READ

pytestmark = pytest.mark.integration

FN = "hello"
WRONG = "edgefn_" + "a" * 12 + "_" + "b" * 64  # well formed, never issued

# (method, path, needed): "deploy" means deploy:<name of the path's function>.
ROUTES: list[tuple[str, str, str]] = [
    ("GET", "/openapi.json", PUBLIC),
    ("GET", "/v1/functions", READ),
    ("POST", "/v1/functions/{name}/versions", "deploy"),
    ("GET", "/v1/functions/{name}/versions", READ),
    ("POST", "/v1/functions/{name}/deployments", "deploy"),
    ("GET", "/v1/functions/{name}/deployments", READ),
    ("POST", "/v1/functions/{name}/rollback", "deploy"),
    ("POST", "/v1/functions/{name}/cache/purge", "deploy"),
    ("POST", "/v1/functions/{name}/placement", "deploy"),
    ("PUT", "/v1/functions/{name}/secrets/{secret}", "deploy"),
    ("GET", "/v1/functions/{name}/secrets", "deploy"),
    ("DELETE", "/v1/functions/{name}/secrets/{secret}", "deploy"),
    ("GET", "/v1/status", READ),
    ("GET", "/v1/bundles/{sha256}", READ),
    ("GET", "/v1/whoami", READ),
    ("POST", "/v1/tokens", ADMIN),
    ("GET", "/v1/tokens", ADMIN),
    ("DELETE", "/v1/tokens/{token_id}", ADMIN),
    ("POST", "/v1/keys", ADMIN),
    ("GET", "/v1/keys", READ),
    ("GET", "/v1/audit", ADMIN),
    ("GET", "/v1/kv", READ),
    ("POST", "/v1/kv/{namespace}/shares", "deploy:*"),
    ("GET", "/v1/stats/{name}", READ),
    # Prometheus's scrape (docs/design/0024): read; what it shows depends on the account.
    ("GET", "/v1/metrics", READ),
    ("GET", "/v1/traces", READ),
    ("GET", "/v1/traces/{trace_id}", READ),
    ("GET", "/v1/tail/{name}", READ),
    # The dashboard (docs/design/0022): the page and its assets are public, its data is not.
    ("GET", "/dashboard", PUBLIC),
    ("GET", "/dashboard/{asset}", PUBLIC),
    ("GET", "/v1/dashboard", READ),
    ("GET", "/v1/incidents", READ),
    ("POST", "/v1/incidents/{id}/ack", ADMIN),
    ("POST", "/v1/incidents/{id}/resolve", ADMIN),
    # Queues (docs/design/0028): reading needs read, sending and replaying deploy:*; every
    # route also checks the queue's owning account.
    ("GET", "/v1/queues", READ),
    ("GET", "/v1/queues/{queue}/messages", READ),
    ("POST", "/v1/queues/{queue}/messages", "deploy:*"),
    ("GET", "/v1/queues/{queue}/dlq", READ),
    ("POST", "/v1/queues/{queue}/dlq/replay", "deploy:*"),
]


def test_every_route_declares_a_scope(control: Control) -> None:
    """Iterate the app's routes: each one is a ScopedRoute listed in ROUTES with its scope."""
    app = create_app(control.service)
    declared = {}
    for route in app.routes:
        assert isinstance(route, ScopedRoute), f"{route!r} declares no scope"
        for method in route.methods or ():
            if method != "HEAD":
                declared[(method, route.path)] = route.needed({"name": FN})
    expected = {(m, p): (f"deploy:{FN}" if need == "deploy" else need) for m, p, need in ROUTES}
    assert declared == expected


async def test_a_route_added_without_a_scope_is_denied(control: Control) -> None:
    async def handler(_request: Any) -> Any:
        raise AssertionError("an undeclared route must never run")

    app = create_app(control.service)
    app.router.routes.append(Route("/v1/new", handler, methods=["GET"]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://c") as http:
        resp = await http.get("/v1/new", headers=bearer(control.token))
    assert (resp.status_code, resp.json()["error"]) == (403, "forbidden")


async def _request(
    http: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], ctx: dict[str, str]
) -> httpx.Response:
    url = path.format(name=FN, **ctx)
    bodies: dict[str, Any] = {
        "/v1/functions/{name}/deployments": {"version": ctx["version"]},
        "/v1/functions/{name}/rollback": {},
        "/v1/functions/{name}/cache/purge": {"tags": ["t"]},
        "/v1/functions/{name}/placement": {},
        "/v1/tokens": {"name": "x", "scopes": ["read"]},
        "/v1/keys": {"public_key": SigningKey.generate().public_key_pem()},
        "/v1/kv/{namespace}/shares": {"account": "acme"},
        "/v1/functions/{name}/secrets/{secret}": {"value": "s3cr3t-value"},
    }
    if path == "/v1/tail/{name}":  # streams until the client leaves: read its first line only
        async with http.stream(method, url, headers=headers) as resp:
            if resp.status_code != 200:
                await resp.aread()
                return resp
            async for line in resp.aiter_lines():
                return httpx.Response(200, content=line.encode())
            return httpx.Response(599)
    if path == "/v1/functions/{name}/versions" and method == "POST":
        return await http.post(url, content=ctx["bundle"].encode("latin-1"), headers=headers)
    body = bodies.get(path) if method in ("POST", "PUT") else None
    return await http.request(method, url, json=body, headers=headers)


async def test_every_route_by_token(
    control: Control, signing_key: SigningKey, tmp_path: Path
) -> None:
    """Every route × {no token, wrong token, insufficient scope, enough scope}."""
    extra = (
        '[[kv_namespaces]]\nbinding = "KV"\nnamespace = "ns1"\n'
        '[[queues.producers]]\nbinding = "Q"\nqueue = "q1"\n'
    )
    root = bundle_dir(tmp_path / "fn", FN, extra=extra)
    first = await upload(control, control.token, signing_key, root)
    assert first.status_code == 201, first.text
    version = first.json()
    victim = await control.http.post("/v1/tokens", json={"name": "victim", "scopes": ["read"]})
    ctx = {
        "version": version["version_id"],
        "sha256": version["sha256"],
        "token_id": victim.json()["id"],
        "namespace": "ns1",
        "secret": "API_KEY",
        "bundle": "",
        "asset": "dashboard.js",
        "id": "1",  # the fixture's open incident
        "trace_id": "ab" * 16,
        "queue": "q1",
    }
    tokens = {
        READ: await new_token(control, [READ]),
        "deploy-other": await new_token(control, ["deploy:other"]),
        "deploy-fn": await new_token(control, [f"deploy:{FN}"]),
        "deploy-all": await new_token(control, ["deploy:*"]),
        ADMIN: control.token,
    }
    weaker = {
        READ: None,
        "deploy": ["deploy-other", READ],
        "deploy:*": ["deploy-fn"],
        ADMIN: ["deploy-all"],
        PUBLIC: None,
    }
    enough = {
        READ: "deploy-other",
        "deploy": "deploy-fn",
        "deploy:*": "deploy-all",
        ADMIN: ADMIN,
        PUBLIC: READ,
    }
    async with httpx.AsyncClient(base_url=control.url, timeout=10) as http:
        for method, path, need in ROUTES:
            where = f"{method} {path}"
            if need != PUBLIC:
                for headers in ({}, bearer(WRONG), {"authorization": "Basic eDp5"}):
                    resp = await _request(http, method, path, headers, ctx)
                    assert resp.status_code == 401, (where, headers, resp.text)
                    assert resp.json()["error"] == "unauthorized", where
            for weak in weaker[need] or ():
                resp = await _request(http, method, path, bearer(tokens[weak]), ctx)
                assert resp.status_code == 403, (where, weak, resp.text)
                body = resp.json()
                assert body["error"] == "forbidden", where
                assert body["scope"] == (f"deploy:{FN}" if need == "deploy" else need)
            resp = await _request(http, method, path, bearer(tokens[enough[need]]), ctx)
            assert resp.status_code not in (401, 403), (where, resp.text)
            assert resp.status_code < 500, (where, resp.text)


async def test_revoked_token_stops_working_and_lists_never_show_secrets(
    control: Control,
) -> None:
    resp = await control.http.post(
        "/v1/tokens", json={"name": "ci", "scopes": ["deploy:hello"], "account": "acme"}
    )
    assert resp.status_code == 201, resp.text
    created = resp.json()
    token, token_id = created["token"], created["id"]
    assert token.startswith(f"edgefn_{token_id}_")
    secret = token.rsplit("_", 1)[1]
    async with httpx.AsyncClient(base_url=control.url) as http:
        who = await http.get("/v1/whoami", headers=bearer(token))
        assert who.json()["account"] == "acme"
        listed = await control.http.get("/v1/tokens")
        assert secret not in listed.text
        row = next(t for t in listed.json()["tokens"] if t["id"] == token_id)
        assert row["name"] == "ci"
        assert row["scopes"] == ["deploy:hello"]
        assert row["last_used_ms"] is not None
        assert "secret_sha256" not in row
        resp = await control.http.delete(f"/v1/tokens/{token_id}")
        assert resp.json()["revoked"] is True
        assert secret not in resp.text
        resp = await http.get("/v1/whoami", headers=bearer(token))
        assert (resp.status_code, resp.json()["error"]) == (401, "unauthorized")
        assert secret not in resp.text
    for bad in ([], ["root"], ["deploy:"], "read"):
        resp = await control.http.post("/v1/tokens", json={"name": "x", "scopes": bad})
        assert (resp.status_code, resp.json()["error"]) == (400, "bad_request"), bad


async def test_tenancy_functions_and_namespaces(
    control: Control, signing_key: SigningKey, tmp_path: Path
) -> None:
    kv = '[[kv_namespaces]]\nbinding = "CART"\nnamespace = "carts"\n'
    resp = await upload(
        control, control.token, signing_key, bundle_dir(tmp_path / "a", FN, extra=kv)
    )
    assert resp.status_code == 201, resp.text
    v1 = resp.json()["version_id"]
    acme_key = SigningKey.generate()
    resp = await control.http.post(
        "/v1/keys", json={"public_key": acme_key.public_key_pem(), "account": "acme"}
    )
    assert resp.status_code == 201, resp.text
    acme = await new_token(control, ["deploy:*"], account="acme")
    async with httpx.AsyncClient(base_url=control.url) as http:
        # Another account's function: upload, deploy and rollback are refused, naming the owner.
        resp = await upload(control, acme, acme_key, bundle_dir(tmp_path / "b", FN, "return 2"))
        assert (resp.status_code, resp.json()["error"]) == (403, "forbidden")
        assert resp.json()["owner"] == "default"
        assert "belongs to account 'default'" in resp.json()["message"]
        for path, body in (
            (f"/v1/functions/{FN}/deployments", {"version": v1}),
            (f"/v1/functions/{FN}/rollback", {}),
            (f"/v1/functions/{FN}/cache/purge", {"everything": True}),
            (f"/v1/functions/{FN}/placement", {}),
        ):
            resp = await http.post(path, json=body, headers=bearer(acme))
            assert (resp.status_code, resp.json()["owner"]) == (403, "default"), path
        # Another account's namespace: refused naming the binding and the owner...
        other = bundle_dir(tmp_path / "c", "shop", extra=kv)
        resp = await upload(control, acme, acme_key, other)
        assert (resp.status_code, resp.json()["error"]) == (403, "forbidden")
        assert "binding 'CART'" in resp.json()["message"]
        assert resp.json()["owner"] == "default"
        # ...until the owner shares it.
        resp = await http.post(
            "/v1/kv/carts/shares", json={"account": "default"}, headers=bearer(acme)
        )
        assert (resp.status_code, resp.json()["owner"]) == (403, "default")
        resp = await control.http.post("/v1/kv/carts/shares", json={"account": "acme"})
        assert resp.json()["shared_with"] == ["acme"], resp.text
        resp = await upload(control, acme, acme_key, other)
        assert resp.status_code == 201, resp.text
        resp = await http.post(
            "/v1/functions/shop/deployments",
            json={"version": resp.json()["version_id"]},
            headers=bearer(acme),
        )
        assert resp.status_code == 202, resp.text
    namespaces = (await control.http.get("/v1/kv")).json()["namespaces"]
    assert namespaces == [
        {
            "namespace": "carts",
            "owner": "default",
            "created_ms": namespaces[0]["created_ms"],
            "shared_with": ["acme"],
        }
    ]


async def test_signatures_must_come_from_registered_keys_of_the_account(
    control: Control, signing_key: SigningKey, tmp_path: Path
) -> None:
    root = bundle_dir(tmp_path / "a", FN)
    stranger = SigningKey.generate()
    resp = await upload(control, control.token, stranger, root)
    assert (resp.status_code, resp.json()["error"]) == (403, "untrusted_signature")
    assert resp.json()["key_id"] == stranger.key_id()
    assert f"unregistered key {stranger.key_id()}" in resp.json()["message"]
    resp = await upload(control, control.token, stranger, root, send_key_id=False)
    assert resp.status_code == 403
    assert "not signed by a registered key" in resp.json()["message"]
    # A key registered for account default does not sign for acme.
    acme = await new_token(control, ["deploy:*"], account="acme")
    resp = await upload(control, acme, signing_key, bundle_dir(tmp_path / "b", "acmefn"))
    assert (resp.status_code, resp.json()["owner"]) == (403, "default")
    assert f"key {signing_key.key_id()} belongs to account 'default'" in resp.json()["message"]
    resp = await control.http.post(
        "/v1/keys", json={"public_key": signing_key.public_key_pem(), "account": "acme"}
    )
    assert (resp.status_code, resp.json()["error"]) == (403, "forbidden")
    resp = await control.http.post("/v1/keys", json={"public_key": "not a key"})
    assert (resp.status_code, resp.json()["error"]) == (400, "bad_request")
    keys = (await control.http.get("/v1/keys")).json()["keys"]
    assert [(k["key_id"], k["account"]) for k in keys] == [(signing_key.key_id(), "default")]


async def test_audit_log_records_who_did_what(
    control: Control, signing_key: SigningKey, tmp_path: Path
) -> None:
    deployer = await new_token(control, [f"deploy:{FN}"], name="ci-bot")
    resp = await upload(control, deployer, signing_key, bundle_dir(tmp_path / "a", FN))
    assert resp.status_code == 201, resp.text
    version = resp.json()["version_id"]
    async with httpx.AsyncClient(base_url=control.url) as http:
        resp = await http.post(
            f"/v1/functions/{FN}/deployments",
            json={"version": version, "strategy": "immediate"},
            headers=bearer(deployer),
        )
        assert resp.status_code == 202, resp.text
        denied = await http.get("/v1/audit", headers=bearer(deployer))
        assert denied.status_code == 403
    records = (await control.http.get("/v1/audit")).json()["records"]
    actions = [(r["action"], r["target"], r["token_name"]) for r in records]
    assert ("upload", FN, "ci-bot") in actions
    assert ("deploy", FN, "ci-bot") in actions
    # At start the control plane itself registered the trusted key and the bootstrap token.
    assert [a for a, _t, by in actions if by == "control-plane"][:2] == ["key.add", "token.create"]
    upload_rec = next(r for r in records if r["action"] == "upload")
    assert upload_rec["detail"]["version"] == version
    assert upload_rec["detail"]["key_id"] == signing_key.key_id()
    assert upload_rec["account"] == "default"
    assert deployer.rsplit("_", 1)[1] not in str(records)


async def test_errors_are_json_everywhere(control: Control) -> None:
    for method, path in (("GET", "/nope"), ("PUT", "/v1/status"), ("GET", "/v1/audit?limit=x")):
        resp = await control.http.request(method, path)
        assert resp.headers["content-type"] == "application/json", (path, resp.text)
        assert resp.json()["error"], path


async def test_bootstrap_token_is_created_once(control: Control, tmp_path: Path) -> None:
    """A restarted control plane (tokens in JetStream) does not mint another admin token."""
    again = tmp_path / "again"
    assert not await control.service.access.bootstrap_admin(again)
    assert not again.exists()
    assert [t.name for t in control.service.access.tokens()] == ["bootstrap-admin"]
    assert (tmp_path / "admin-token").stat().st_mode & 0o777 == 0o600
