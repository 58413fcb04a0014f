"""An attacker who can reach the control API but holds no valid token, or a forged one.

Each test checks the effect from outside: after the attack, the registry holds no new version,
no deployment started, no token exists that the attacker made, and no response carried a secret.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from _control_fixtures import Control, bearer, bundle_dir, new_token, upload

from edgefn.bundle import SigningKey, build_bundle
from edgefn.control.api import KEY_ID_HEADER, SIGNATURE_HEADER
from edgefn.control.auth import format_token, hash_secret

pytestmark = pytest.mark.integration

FN = "hello"


def _forgeries(control: Control) -> list[dict[str, str]]:
    real_id = control.token.split("_")[1]
    real_secret = control.token.split("_")[2]
    flipped = real_secret[:-1] + ("0" if real_secret[-1] != "0" else "1")
    return [
        {},
        {"authorization": ""},
        {"authorization": "Bearer"},
        {"authorization": "Bearer null"},
        {"authorization": f"Basic {control.token}"},
        bearer(format_token(real_id, flipped)),  # right id, one hex digit off
        bearer(format_token(real_id, hash_secret(real_id, real_secret))),  # the stored hash
        bearer(format_token("0" * 12, "0" * 64)),
        bearer(control.token + "x"),
        bearer(control.token.upper()),
        {"authorization": f"Bearer {control.token}\x00"},
    ]


async def test_unauthenticated_and_forged_requests_change_nothing(
    control: Control, signing_key: SigningKey, tmp_path: Path
) -> None:
    first = await upload(control, control.token, signing_key, bundle_dir(tmp_path / "v1", FN))
    assert first.status_code == 201
    v1 = first.json()
    bundle = build_bundle(bundle_dir(tmp_path / "evil", FN, "return 'pwned'"))
    evil_headers = {
        SIGNATURE_HEADER: signing_key.sign(bundle.sha256),
        KEY_ID_HEADER: signing_key.key_id(),
    }
    attacks = [
        ("POST", f"/v1/functions/{FN}/versions", {"content": bundle.data}),
        ("POST", f"/v1/functions/{FN}/deployments", {"json": {"version": v1["version_id"]}}),
        ("POST", f"/v1/functions/{FN}/rollback", {"json": {}}),
        ("GET", f"/v1/bundles/{v1['sha256']}", {}),
        ("POST", "/v1/tokens", {"json": {"name": "mine", "scopes": ["admin"]}}),
        ("GET", "/v1/tokens", {}),
        ("POST", "/v1/keys", {"json": {"public_key": SigningKey.generate().public_key_pem()}}),
        ("GET", "/v1/audit", {}),
        ("GET", "/v1/status", {}),
        ("GET", f"/v1/tail/{FN}", {}),  # live request data and console lines
        ("GET", "/v1/incidents", {}),
        ("POST", "/v1/incidents/1/ack", {}),
        ("POST", "/v1/incidents/1/resolve", {}),
    ]
    async with httpx.AsyncClient(base_url=control.url, timeout=10) as http:
        for headers in _forgeries(control):
            for method, path, kw in attacks:
                try:
                    resp = await http.request(
                        method, path, headers={**evil_headers, **headers}, **kw
                    )
                except httpx.LocalProtocolError:
                    continue  # the client refuses to send the header at all: nothing reached us
                assert resp.status_code == 401, (method, path, headers, resp.text)
                assert resp.json()["error"] == "unauthorized"
                assert control.token.split("_")[2] not in resp.text
                assert b"pwned" not in resp.content
    # Nothing changed: one version, no deployment, only the bootstrap token, one key.
    assert [v.version_id for v in control.service.registry().versions(FN)] == [v1["version_id"]]
    assert control.service.deployments(FN) == ()
    assert [t.name for t in control.service.access.tokens()] == ["bootstrap-admin"]
    assert len(control.service.access.keys()) == 1
    assert control.incidents.store.get(1).state == "open"  # type: ignore[union-attr]


async def test_low_privilege_tokens_cannot_escalate(
    control: Control, signing_key: SigningKey, tmp_path: Path
) -> None:
    reader = await new_token(control, ["read"])
    deployer = await new_token(control, ["deploy:other"], account="acme")
    async with httpx.AsyncClient(base_url=control.url, timeout=10) as http:
        for token in (reader, deployer):
            for method, path, body in (
                ("POST", "/v1/tokens", {"name": "x", "scopes": ["admin"]}),
                ("POST", "/v1/keys", {"public_key": SigningKey.generate().public_key_pem()}),
                ("GET", "/v1/audit", None),
                ("GET", "/v1/tokens", None),
                ("POST", f"/v1/functions/{FN}/rollback", {}),
                ("POST", "/v1/incidents/1/ack", None),
                ("POST", "/v1/incidents/1/resolve", None),
            ):
                resp = await http.request(method, path, json=body, headers=bearer(token))
                assert (resp.status_code, resp.json()["error"]) == (403, "forbidden"), path
                assert resp.json()["scope"]
        # A leaked deployer token with a bundle signed by the planet's (other-account) key.
        resp = await upload(control, deployer, signing_key, bundle_dir(tmp_path / "o", "other"))
        assert resp.status_code == 403, resp.text
        assert signing_key.key_id() in resp.json()["message"]
    assert control.service.registry().get_function("other") is None
    assert len(control.service.access.tokens()) == 3
    incident = control.incidents.store.get(1)
    assert incident is not None
    assert (incident.state, incident.acknowledged_by, incident.resolved_by) == ("open", "", "")


async def test_token_secrets_never_appear_in_responses_or_the_audit_log(control: Control) -> None:
    resp = await control.http.post("/v1/tokens", json={"name": "n", "scopes": ["read"]})
    token = resp.json()["token"]
    secret = token.split("_")[2]
    digest = hashlib.sha256(secret.encode()).hexdigest()
    stored = next(t for t in control.service.access.tokens() if t.name == "n").secret_sha256
    for path in ("/v1/tokens", "/v1/audit", "/v1/status", "/v1/whoami", "/openapi.json"):
        text = (await control.http.get(path)).text
        for needle in (secret, digest, stored, control.token.split("_")[2]):
            assert needle not in text, path


async def test_another_accounts_read_token_cannot_tail_or_read_stats_of_a_function(
    control: Control, signing_key: SigningKey, tmp_path: Path
) -> None:
    """Tail events (request paths, console lines) and stats are the function's users' data: a
    read token of another account gets 403 naming the owner; the owner's account reads them."""
    first = await upload(control, control.token, signing_key, bundle_dir(tmp_path / "v1", FN))
    assert first.status_code == 201
    stranger = await new_token(control, ["read"], account="acme")
    owner = await new_token(control, ["read"], account="default", name="owner")
    for path in (f"/v1/tail/{FN}", f"/v1/stats/{FN}"):
        resp = await control.http.get(path, headers=bearer(stranger))
        assert (resp.status_code, resp.json()["error"]) == (403, "forbidden"), (path, resp.text)
        assert "default" in resp.json()["message"]
    resp = await control.http.get(f"/v1/stats/{FN}", headers=bearer(owner))
    assert resp.status_code == 200, resp.text
    assert resp.json()["function"] == FN
