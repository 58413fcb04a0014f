"""Secrets through the control API: stored encrypted, sealed per node, never echoed, rolled out.

Real nats-server and HTTP; the simulated nodes report an X25519 public key and open what is
sealed for them, so these tests check the wire format a real node receives.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from _control_fixtures import Control, SimNode, eventually, start_control
from nats.aio.client import Client
from test_control_api import FN, _deploy, _deployment_is, _function_status, _upload

from edgefn.bundle import SigningKey, build_bundle
from edgefn.bus.jetstream import jetstream
from edgefn.bus.subjects import DESIRED_BUCKET, SECRETS_BUCKET
from edgefn.control.api import SIGNATURE_HEADER
from edgefn.secrets.crypto import KEY_BYTES, MasterKey, SecretsError
from edgefn.secrets.names import MAX_VALUE_BYTES

pytestmark = pytest.mark.integration

VALUE = "sk_live_9f8e7d6c5b4a"


async def _put(control: Control, name: str, value: Any, fn: str = FN) -> Any:
    return await control.http.put(f"/v1/functions/{fn}/secrets/{name}", json={"value": value})


async def _bucket_bytes(nc: Client, bucket: str) -> bytes:
    kv = await jetstream(nc).key_value(bucket)
    out = b""
    for key in await kv.keys():
        entry = await kv.get(key)
        out += entry.value or b""
    return out


def _converged_with(nodes: list[SimNode], generation: int) -> Any:
    async def check() -> bool:
        return all(
            n.applied is not None
            and FN in n.applied.functions
            and n.applied.functions[FN].secrets_generation == generation
            for n in nodes
        )

    return check


async def _deployed(control: Control, signing_key: SigningKey, tmp_path: Path) -> dict[str, Any]:
    v1 = await _upload(control, signing_key, tmp_path / "v1", "return 'one'")
    await _deploy(control, v1["version_id"], "immediate")
    return v1


async def test_put_seals_per_node_and_never_echoes(
    control: Control, nodes: list[SimNode], signing_key: SigningKey, nc: Client, tmp_path: Path
) -> None:
    v1 = await _deployed(control, signing_key, tmp_path)
    resp = await _put(control, "API_KEY", VALUE)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert VALUE not in resp.text
    assert body["generation"] == 1
    assert body["deployment"]["strategy"] == "immediate"
    assert body["deployment"]["version_id"] == v1["version_id"]
    await eventually(_converged_with(nodes, 1))
    for node in nodes:
        assert node.secrets(FN) == {"API_KEY": VALUE}
    # Another node's private key does not open fra's copy.
    with pytest.raises(SecretsError):
        nodes[1].secrets(FN, key=nodes[0].node_key)
    listed = (await control.http.get(f"/v1/functions/{FN}/secrets")).json()
    assert [s["name"] for s in listed["secrets"]] == ["API_KEY"]
    assert set(listed["secrets"][0]) == {"name", "updated_ms"}
    for path in ("/v1/status", "/v1/functions", f"/v1/functions/{FN}/deployments"):
        assert VALUE not in (await control.http.get(path)).text
    assert VALUE.encode() not in await _bucket_bytes(nc, SECRETS_BUCKET)
    assert VALUE.encode() not in await _bucket_bytes(nc, DESIRED_BUCKET)
    status = await _function_status(control)
    assert status["active"]["version_id"] == v1["version_id"]
    assert status["converged"]


async def test_update_and_delete_roll_out_and_keep_previous_code(
    control: Control, nodes: list[SimNode], signing_key: SigningKey, tmp_path: Path
) -> None:
    v1 = await _deployed(control, signing_key, tmp_path)
    v2 = await _upload(control, signing_key, tmp_path / "v2", "return 'two'")
    await _deploy(control, v2["version_id"], "immediate")
    # v2's rollout must be over before the secrets change: a secret rollout supersedes a rollout
    # in progress (ControlService._roll_out_secrets). Generation 0 alone held already for v1.
    await eventually(_deployment_is(control, "completed"))
    await eventually(_converged_with(nodes, 0))
    assert (await _put(control, "A_KEY", "first-value")).status_code == 200
    assert (await _put(control, "B_KEY", "other-value")).status_code == 200
    assert (await _put(control, "A_KEY", "second-value")).json()["generation"] == 3
    await eventually(_converged_with(nodes, 3))
    assert nodes[2].secrets(FN) == {"A_KEY": "second-value", "B_KEY": "other-value"}
    resp = await control.http.delete(f"/v1/functions/{FN}/secrets/A_KEY")
    assert resp.status_code == 200, resp.text
    assert resp.json()["generation"] == 4
    await eventually(_converged_with(nodes, 4))
    assert nodes[0].secrets(FN) == {"B_KEY": "other-value"}
    # Secret rollouts redeploy the same code: a rollback still goes to the older code.
    status = await _function_status(control)
    assert status["active"]["version_id"] == v2["version_id"]
    assert status["previous"]["version_id"] == v1["version_id"]
    resp = await control.http.delete(f"/v1/functions/{FN}/secrets/A_KEY")
    assert resp.status_code == 404


async def test_secrets_before_first_deploy_and_restart(
    control: Control, nodes: list[SimNode], signing_key: SigningKey, nc: Client, tmp_path: Path
) -> None:
    # A name nobody uploaded has no owner, so no one may plant secrets for it.
    early = await _put(control, "TOKEN", VALUE)
    assert early.status_code == 404, early.text
    assert "deploy it first" in early.json()["hint"]
    # Uploaded but not yet deployed: the secret waits for the first deploy.
    v1 = await _upload(control, signing_key, tmp_path / "v1", "return 'one'")
    put = await _put(control, "TOKEN", VALUE)
    assert put.status_code == 200, put.text
    assert put.json()["deployment"] is None
    await _deploy(control, v1["version_id"], "immediate")
    await eventually(_converged_with(nodes, 1))
    assert nodes[0].secrets(FN) == {"TOKEN": VALUE}
    # A restarted control plane with the same master key reads them and counts on; with
    # another key the names are listed but no value decrypts.
    same_key = control.service._secrets_key
    await control.service.stop()
    for key in (same_key, MasterKey(os.urandom(KEY_BYTES))):
        service, _ = await start_control(nc, signing_key, key)
        try:
            assert [s.name for s in service.list_secrets(FN)] == ["TOKEN"]
            store = service._secret_store()
            assert store.generation(FN) == 1
            if key is same_key:
                assert store.values(FN) == {"TOKEN": VALUE}
            else:
                with pytest.raises(SecretsError, match="does not decrypt"):
                    store.values(FN)
        finally:
            await service.stop()
    assert v1["version_id"]


async def test_errors_are_clear_and_never_contain_the_value(
    control: Control, signing_key: SigningKey, tmp_path: Path
) -> None:
    cases = [
        (await _put(control, "bad-name", VALUE), 400, "invalid secret name"),
        (await _put(control, "OK", 42), 400, "must be a string"),
        (await _put(control, "OK", ""), 400, "empty"),
        (await _put(control, "OK", "x" * (MAX_VALUE_BYTES + 1)), 400, "5120-byte limit"),
        (await _put(control, "OK", VALUE, fn="Bad_Fn"), 400, "invalid function name"),
        (
            await control.http.put(f"/v1/functions/{FN}/secrets/OK", content=b"{" + VALUE.encode()),
            400,
            "not JSON",
        ),
        (
            await control.http.put(
                f"/v1/functions/{FN}/secrets/OK", json={"value": VALUE, "extra": VALUE}
            ),
            400,
            "exactly one",
        ),
        (
            await control.http.put(f"/v1/functions/{FN}/secrets/OK", content=b"x" * 40_000),
            413,
            "over",
        ),
    ]
    for resp, status, words in cases:
        assert resp.status_code == status, resp.text
        assert words in resp.json()["message"], resp.text
        assert VALUE not in resp.text
        assert "x" * 100 not in resp.text


async def test_vars_and_bindings_may_not_collide_with_secrets(
    control: Control, signing_key: SigningKey, tmp_path: Path
) -> None:
    root = tmp_path / "vars"
    root.mkdir()
    (root / "edgefn.toml").write_text(f'name = "{FN}"\n[vars]\nAPI_KEY = "public"\n', "utf-8")
    (root / "main.py").write_text("async def fetch(request, env, ctx):\n    return 1\n", "utf-8")
    bundle = build_bundle(root)
    resp = await control.http.post(
        f"/v1/functions/{FN}/versions",
        content=bundle.data,
        headers={SIGNATURE_HEADER: signing_key.sign(bundle.sha256)},
    )
    version = resp.json()["version_id"]
    await _deploy(control, version, "immediate")
    resp = await _put(control, "API_KEY", VALUE)
    assert resp.status_code == 409
    assert "[vars]" in resp.json()["message"]
    # And the other way round: a version whose [vars] reuse a secret's name does not deploy.
    assert (await _put(control, "OTHER", VALUE)).status_code == 200
    (root / "edgefn.toml").write_text(f'name = "{FN}"\n[vars]\nOTHER = "x"\n', "utf-8")
    bundle = build_bundle(root)
    resp = await control.http.post(
        f"/v1/functions/{FN}/versions",
        content=bundle.data,
        headers={SIGNATURE_HEADER: signing_key.sign(bundle.sha256)},
    )
    resp = await control.http.post(
        f"/v1/functions/{FN}/deployments", json={"version": resp.json()["version_id"]}
    )
    assert resp.status_code == 409
    assert "OTHER" in resp.json()["message"]
