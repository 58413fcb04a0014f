"""``/v1/status`` and ``/v1/dashboard`` show a reader only its own account's functions: another
account's names, versions, rollouts, events and per-location figures stay hidden."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _control_fixtures import Control, bearer, bundle_dir, new_token, upload

from edgefn.bundle import SigningKey

pytestmark = pytest.mark.integration


async def test_another_account_sees_none_of_the_functions(
    control: Control, signing_key: SigningKey, tmp_path: Path
) -> None:
    resp = await upload(control, control.token, signing_key, bundle_dir(tmp_path, "secretive"))
    assert resp.status_code == 201, resp.text
    version = resp.json()["version_id"]
    resp = await control.http.post(
        "/v1/functions/secretive/deployments", json={"version": version, "strategy": "immediate"}
    )
    assert resp.status_code in (200, 201, 202), resp.text
    admin = (await control.http.get("/v1/status")).json()
    assert [f["function"] for f in admin["functions"]] == ["secretive"]
    assert any(e.get("function") == "secretive" for e in admin["recent_events"])

    other = await new_token(control, ["read"], account="other")
    status = await control.http.get("/v1/status", headers=bearer(other))
    assert status.status_code == 200, status.text
    assert status.json()["functions"] == []
    assert status.json()["recent_events"] == []
    dashboard = await control.http.get("/v1/dashboard", headers=bearer(other))
    assert dashboard.status_code == 200, dashboard.text
    assert "secretive" not in json.dumps(dashboard.json())
    assert "secretive" not in status.text

    # The owner's own read token still sees it.
    mine = await new_token(control, ["read"], account="default", name="mine")
    own = (await control.http.get("/v1/status", headers=bearer(mine))).json()
    assert [f["function"] for f in own["functions"]] == ["secretive"]


async def test_another_account_cannot_list_read_or_download_the_functions(
    control: Control, signing_key: SigningKey, tmp_path: Path
) -> None:
    """Versions carry the bundle's sha256, and a bundle is the function's code: a reader of
    another account gets neither, nor the function's name in a list."""
    kv = '[[kv_namespaces]]\nbinding = "KV"\nnamespace = "private-data"\n'
    resp = await upload(
        control, control.token, signing_key, bundle_dir(tmp_path, "private", extra=kv)
    )
    assert resp.status_code == 201, resp.text
    sha = resp.json()["sha256"]
    assert (await control.http.get(f"/v1/bundles/{sha}")).status_code == 200  # admin
    other = await new_token(control, ["read"], account="other")
    h = bearer(other)
    names = [
        f["name"] for f in (await control.http.get("/v1/functions", headers=h)).json()["functions"]
    ]
    assert "private" not in names
    for path in ("/v1/functions/private/versions", "/v1/functions/private/deployments"):
        resp = await control.http.get(path, headers=h)
        assert (resp.status_code, resp.json().get("owner")) == (403, "default"), resp.text
    resp = await control.http.get(f"/v1/bundles/{sha}", headers=h)
    assert resp.status_code == 404, resp.text
    keys = (await control.http.get("/v1/keys", headers=h)).json()["keys"]
    assert keys == []
    assert (await control.http.get("/v1/kv", headers=h)).json()["namespaces"] == []
    mine = await new_token(control, ["read"], account="default", name="mine")
    assert (await control.http.get(f"/v1/bundles/{sha}", headers=bearer(mine))).status_code == 200
    own = (await control.http.get("/v1/keys", headers=bearer(mine))).json()["keys"]
    assert [k["account"] for k in own] == ["default"]
    spaces = (await control.http.get("/v1/kv", headers=bearer(mine))).json()["namespaces"]
    assert [n["namespace"] for n in spaces] == ["private-data"]


async def test_a_functions_incidents_are_its_accounts(
    control: Control, signing_key: SigningKey, tmp_path: Path
) -> None:
    """The seeded incident is about ``hello``'s 5xx at fra: its account and admins see it."""
    resp = await upload(control, control.token, signing_key, bundle_dir(tmp_path, "hello"))
    assert resp.status_code == 201, resp.text

    async def ids(token: str) -> list[int]:
        resp = await control.http.get("/v1/incidents", headers=bearer(token))
        assert resp.status_code == 200, resp.text
        return [i["id"] for i in resp.json()["incidents"]]

    assert await ids(control.token) == [1]
    assert await ids(await new_token(control, ["read"], account="default", name="own")) == [1]
    assert await ids(await new_token(control, ["read"], account="other")) == []


async def test_each_account_sees_its_own_load_errors_at_a_shared_location(
    control: Control, signing_key: SigningKey, tmp_path: Path
) -> None:
    """Load errors are keyed by version id: the owner sees its version's, another account not."""
    from edgefn.bus.jetstream import ensure_kv, jetstream
    from edgefn.bus.subjects import OBSERVED_BUCKET
    from edgefn.control.model import ObservedState, VersionStats, encode_observed

    resp = await upload(control, control.token, signing_key, bundle_dir(tmp_path, "broken"))
    assert resp.status_code == 201, resp.text
    version = resp.json()["version_id"]
    kv = await ensure_kv(jetstream(control.service.nc), OBSERVED_BUCKET)
    state = ObservedState(
        "fra", 0, {"broken": {version: VersionStats(3, 3)}}, {version: "ImportError: boom"},
        0, "eu", "http://fra.test",
    )  # fmt: skip
    await kv.put("fra", encode_observed(state))

    async def seen(token: str) -> tuple[list[object], dict[str, object], dict[str, object]]:
        data = (await control.http.get("/v1/status", headers=bearer(token))).json()
        loc = next((x for x in data["locations"] if x["location"] == "fra"), None)
        if loc is None or loc["observed"] is None:
            return [], {}, {}
        return loc["load_errors"], loc["observed"]["errors"], loc["observed"]["functions"]

    async def reported() -> bool:
        return bool((await seen(control.token))[0])

    from _control_fixtures import eventually

    await eventually(reported)
    own = await seen(await new_token(control, ["read"], account="default", name="own"))
    assert own[0] == [[version, "ImportError: boom"]]
    assert own[1] == {version: "ImportError: boom"}
    assert list(own[2]) == ["broken"]
    assert await seen(await new_token(control, ["read"], account="other")) == ([], {}, {})
