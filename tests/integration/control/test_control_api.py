"""The control plane end to end: real nats-server, real HTTP, simulated nodes on the bus."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from _control_fixtures import Control, SimNode, eventually, start_control
from nats.aio.client import Client

from edgefn.bundle import SigningKey, build_bundle, extract_bundle
from edgefn.bus.jetstream import jetstream
from edgefn.bus.subjects import OBSERVED_BUCKET
from edgefn.control import VersionStats
from edgefn.control.api import SIGNATURE_HEADER, create_app
from edgefn.control.auth import Principal
from edgefn.control.errors import Untrusted
from edgefn.control.service import ControlService

pytestmark = pytest.mark.integration

FN = "hello"


def _bundle_dir(root: Path, body: str, extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "edgefn.toml").write_text(f'name = "{FN}"\n{extra}', encoding="utf-8")
    (root / "main.py").write_text(f"async def fetch(request, env, ctx):\n    {body}\n", "utf-8")
    return root


async def _upload(control: Control, key: SigningKey, root: Path, body: str) -> dict[str, Any]:
    bundle = build_bundle(_bundle_dir(root, body))
    resp = await control.http.post(
        f"/v1/functions/{FN}/versions",
        content=bundle.data,
        headers={SIGNATURE_HEADER: key.sign(bundle.sha256)},
    )
    assert resp.status_code == 201, resp.text
    info: dict[str, Any] = resp.json()
    assert info["sha256"] == bundle.sha256
    return info


async def _deploy(control: Control, version: str, strategy: str) -> dict[str, Any]:
    resp = await control.http.post(
        f"/v1/functions/{FN}/deployments", json={"version": version, "strategy": strategy}
    )
    assert resp.status_code == 202, resp.text
    out: dict[str, Any] = resp.json()
    return out


async def _function_status(control: Control) -> dict[str, Any]:
    status = (await control.http.get("/v1/status")).json()
    (fn,) = [f for f in status["functions"] if f["function"] == FN]
    result: dict[str, Any] = fn
    return result


def _deployment_is(control: Control, status: str) -> Any:
    async def check() -> bool:
        fn = await _function_status(control)
        return bool(fn["deployment"]["status"] == status and fn["converged"])

    return check


def _all_serve(nodes: list[SimNode], version_id: str) -> Any:
    async def check() -> bool:
        return all(n.weights(FN) == {version_id: 1.0} for n in nodes)

    return check


async def test_upload_deploy_immediate_converges(
    control: Control, nodes: list[SimNode], signing_key: SigningKey, tmp_path: Path
) -> None:
    v1 = await _upload(control, signing_key, tmp_path / "v1", "return 'one'")
    listed = (await control.http.get(f"/v1/functions/{FN}/versions")).json()
    assert [v["version_id"] for v in listed["versions"]] == [v1["version_id"]]
    started = await _deploy(control, v1["version_id"], "immediate")
    assert started["stages"] == 1
    await eventually(_deployment_is(control, "completed"))
    await eventually(_all_serve(nodes, v1["version_id"]))
    fn = await _function_status(control)
    assert fn["active"]["version_id"] == v1["version_id"]
    assert {loc for loc, _gen in fn["version_vector"]} == {"ams", "fra", "iad"}
    status = (await control.http.get("/v1/status")).json()
    assert all(loc["converged"] for loc in status["locations"])
    assert {loc["observed"]["url"] for loc in status["locations"]} == {
        "http://ams.test",
        "http://fra.test",
        "http://iad.test",
    }
    # Nodes can fetch the bundle by its content address and it verifies.
    got = await control.http.get(f"/v1/bundles/{v1['sha256']}")
    assert got.status_code == 200
    manifest = extract_bundle(got.content, tmp_path / "out", expected_sha256=v1["sha256"])
    assert manifest.name == FN
    listed_fns = (await control.http.get("/v1/functions")).json()["functions"]
    assert [(f["name"], f["versions"], f["converged"]) for f in listed_fns] == [(FN, 1, True)]
    doc = (await control.http.get("/openapi.json")).json()
    assert "/v1/functions/{name}/deployments" in doc["paths"]
    assert "VersionInfo" in doc["components"]["schemas"]


async def test_failing_canary_rolls_back_automatically(
    control: Control,
    nodes: list[SimNode],
    signing_key: SigningKey,
    stats_table: dict[str, VersionStats],
    tmp_path: Path,
) -> None:
    v1 = await _upload(control, signing_key, tmp_path / "v1", "return 'one'")
    v2 = await _upload(control, signing_key, tmp_path / "v2", "raise RuntimeError('bug')")
    stats_table[v1["version_id"]] = VersionStats(1000, 5, 3.0, 20.0)
    stats_table[v2["version_id"]] = VersionStats(100, 60, 3.0, 20.0)
    await _deploy(control, v1["version_id"], "immediate")
    await eventually(_deployment_is(control, "completed"))
    started = await _deploy(control, v2["version_id"], "canary")
    assert started["stages"] >= 2
    await eventually(_deployment_is(control, "rolled_back"))
    await eventually(_all_serve(nodes, v1["version_id"]))
    fn = await _function_status(control)
    assert fn["active"]["version_id"] == v1["version_id"]
    assert "health gate failed: error rate 60.00%" in fn["deployment"]["reason"]
    events = (await control.http.get("/v1/status")).json()["recent_events"]
    rolled = [e for e in events if e["type"] == "RolledBack"]
    assert rolled[-1]["automatic"] is True


async def test_canary_with_healthy_version_completes_in_stages(
    control: Control,
    nodes: list[SimNode],
    signing_key: SigningKey,
    stats_table: dict[str, VersionStats],
    tmp_path: Path,
) -> None:
    v1 = await _upload(control, signing_key, tmp_path / "v1", "return 'one'")
    v2 = await _upload(control, signing_key, tmp_path / "v2", "return 'two'")
    stats_table[v1["version_id"]] = VersionStats(1000, 5, 3.0, 20.0)
    stats_table[v2["version_id"]] = VersionStats(50, 0, 3.0, 21.0)
    await _deploy(control, v1["version_id"], "immediate")
    await eventually(_deployment_is(control, "completed"))
    await _deploy(control, v2["version_id"], "canary")
    await eventually(_deployment_is(control, "completed"))
    await eventually(_all_serve(nodes, v2["version_id"]))
    events = (await control.http.get("/v1/status")).json()["recent_events"]
    assert [e["stage"] for e in events if e["type"] == "StageAdvanced"] == [1, 2]


async def test_manual_rollback_and_restart_keeps_serving(
    control: Control, nodes: list[SimNode], signing_key: SigningKey, nc: Client, tmp_path: Path
) -> None:
    v1 = await _upload(control, signing_key, tmp_path / "v1", "return 'one'")
    v2 = await _upload(control, signing_key, tmp_path / "v2", "return 'two'")
    for v in (v1, v2):
        await _deploy(control, v["version_id"], "immediate")
        await eventually(_all_serve(nodes, v["version_id"]))
        # Nodes serving a version is not yet the control plane knowing it (flaky "no previous
        # version" when the rollback raced the completion): wait as `deploy --wait` does.
        await eventually(_deployment_is(control, "completed"))
    resp = await control.http.post(f"/v1/functions/{FN}/rollback", json={})
    assert resp.status_code == 200, resp.text
    assert resp.json()["to_version_id"] == v1["version_id"]
    await eventually(_all_serve(nodes, v1["version_id"]))
    resp = await control.http.post(f"/v1/functions/{FN}/rollback", json={"to": v2["sha256"][:16]})
    assert resp.json()["to_version_id"] == v2["version_id"]
    await eventually(_all_serve(nodes, v2["version_id"]))
    # A second control service over the same JetStream state restores v2 before hearing nodes,
    # so the nodes' re-registration does not make anything drop the function.
    await control.service.stop()
    service, _server = await start_control(nc, signing_key)
    try:
        status = service.function_status(FN)
        assert status is not None
        assert status.active is not None
        assert status.active.version_id == v2["version_id"]
        assert [v.version_id for v in service.registry().versions(FN)] == [
            v2["version_id"],
            v1["version_id"],
        ]
    finally:
        await service.stop()


async def test_tampered_and_bad_uploads_are_refused(
    control: Control, signing_key: SigningKey, tmp_path: Path
) -> None:
    bundle = build_bundle(_bundle_dir(tmp_path / "v1", "return 1"))
    sig = signing_key.sign(bundle.sha256)
    url = f"/v1/functions/{FN}/versions"
    # Changed code under the original signature: a valid bundle, but not the one signed.
    (tmp_path / "v1" / "main.py").write_text("async def fetch(r, e, c):\n    return 666\n")
    evil = build_bundle(tmp_path / "v1")
    resp = await control.http.post(url, content=evil.data, headers={SIGNATURE_HEADER: sig})
    assert (resp.status_code, resp.json()["error"]) == (403, "untrusted_signature")
    assert "signature mismatch" in resp.json()["message"]
    # Corrupted bytes in transit: the signature no longer covers them; refused before parsing.
    corrupt = bundle.data[:-10]
    resp = await control.http.post(url, content=corrupt, headers={SIGNATURE_HEADER: sig})
    assert (resp.status_code, resp.json()["error"]) == (403, "untrusted_signature")
    other = SigningKey.generate().sign(bundle.sha256)
    resp = await control.http.post(url, content=bundle.data, headers={SIGNATURE_HEADER: other})
    assert resp.status_code == 403
    assert "signature mismatch" in resp.json()["message"]
    resp = await control.http.post(url, content=bundle.data)
    assert (resp.status_code, resp.json()["error"]) == (400, "missing_signature")
    resp = await control.http.post(
        "/v1/functions/other/versions", content=bundle.data, headers={SIGNATURE_HEADER: sig}
    )
    assert resp.status_code == 400
    assert "uploaded as 'other'" in resp.json()["message"]
    junk_sig = signing_key.sign(hashlib.sha256(b"junk").hexdigest())
    resp = await control.http.post(url, content=b"junk", headers={SIGNATURE_HEADER: junk_sig})
    assert (resp.status_code, resp.json()["error"]) == (400, "bad_bundle")
    assert "not valid gzip" in resp.json()["message"]
    assert (await control.http.get("/v1/functions")).json() == {"functions": []}


async def test_api_error_paths(control: Control, signing_key: SigningKey, tmp_path: Path) -> None:
    http = control.http
    v1 = await _upload(control, signing_key, tmp_path / "v1", "return 1")
    deployments = f"/v1/functions/{FN}/deployments"
    cases = [
        (await http.get("/v1/functions/nope/versions"), 404, "not_found"),
        (await http.get("/v1/bundles/" + "0" * 64), 404, "not_found"),
        (await http.post(deployments, json={"version": "ffffffffffff"}), 404, "not_found"),
        (
            await http.post(deployments, json={"version": v1["version_id"], "strategy": "x"}),
            400,
            "bad_request",
        ),
        (await http.post(deployments, json={}), 400, "bad_request"),
        (await http.post(deployments, json={"version": 5}), 400, "bad_request"),
        (
            await http.post(
                deployments, json={"version": v1["version_id"], "allow_no_traffic": "yes"}
            ),
            400,
            "bad_request",
        ),
        (await http.post(deployments, json={"vers": "x"}), 400, "bad_request"),
        (await http.post(deployments, content=b"{not json"), 400, "bad_request"),
        (await http.post(f"/v1/functions/{FN}/rollback", json={}), 409, "conflict"),
        (await http.post("/v1/functions/nope/rollback", json={}), 404, "not_found"),
        (await http.post("/v1/functions/nope/placement", json={}), 404, "not_found"),
        (await http.post(f"/v1/functions/{FN}/placement", json={"x": 1}), 400, "bad_request"),
    ]
    for resp, status, code in cases:
        assert (resp.status_code, resp.json()["error"]) == (status, code), resp.text
        assert resp.json()["message"]
    await _deploy(control, v1["version_id"], "immediate")
    resp = await http.post(deployments, json={"version": v1["version_id"]})
    assert (resp.status_code, resp.json()["error"]) == (409, "conflict")
    assert "is active" in resp.json()["message"]
    # edgefn plan --apply on a function that smart placement does not place: what to do.
    resp = await http.post(f"/v1/functions/{FN}/placement", json={})
    assert (resp.status_code, resp.json()["error"]) == (409, "conflict"), resp.text
    assert "not placed by smart placement" in resp.json()["message"]
    assert 'mode = "smart"' in resp.json()["hint"]
    history = (await http.get(deployments)).json()["deployments"]
    assert [d["version_id"] for d in history] == [v1["version_id"]]


async def test_no_trusted_keys_and_oversize_upload(
    control: Control, nc: Client, signing_key: SigningKey, tmp_path: Path
) -> None:
    bundle = build_bundle(_bundle_dir(tmp_path / "v1", "return 1"))
    untrusting = ControlService(nc, trusted_keys=[])
    await untrusting.start()
    acme = Principal("000000000000", "t", "acme", ("deploy:*",))
    try:
        with pytest.raises(Untrusted, match="'acme' has no registered deployer keys") as info:
            await untrusting.upload(
                FN, bundle.data, signing_key.sign(bundle.sha256), principal=acme
            )
        assert "edgefn key add" in info.value.hint
    finally:
        await untrusting.stop()
    # The same app with a tiny upload cap answers 413 before reading the whole body.
    app = create_app(control.service, max_upload_bytes=100)
    transport = httpx.ASGITransport(app=app)
    auth = {"authorization": f"Bearer {control.token}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://control", headers=auth
    ) as http:
        resp = await http.post(
            f"/v1/functions/{FN}/versions",
            content=bundle.data,
            headers={SIGNATURE_HEADER: signing_key.sign(bundle.sha256)},
        )
    assert (resp.status_code, resp.json()["error"]) == (413, "too_large")


async def test_malformed_reports_are_counted_and_deleted_locations_forgotten(
    control: Control, nodes: list[SimNode], nc: Client
) -> None:
    observed = await jetstream(nc).key_value(OBSERVED_BUCKET)

    async def locations() -> list[str]:
        status = (await control.http.get("/v1/status")).json()
        return [loc["location"] for loc in status["locations"]]

    async def all_registered() -> bool:
        return await locations() == ["ams", "fra", "iad"]

    await eventually(all_registered)
    await observed.put("lhr", b"{not json")
    await observed.put("cdg", b'{"location": "ams", "generation": 0}')

    async def both_counted() -> bool:
        return control.service.statistics().malformed_observed_total == 2

    await eventually(both_counted)
    await observed.delete("iad")

    async def iad_forgotten() -> bool:
        return await locations() == ["ams", "fra"]

    await eventually(iad_forgotten)
