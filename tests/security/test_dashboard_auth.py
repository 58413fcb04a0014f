"""The dashboard from an attacker's seat: the page is public, the planet's data is not.

Checked from outside, against a real core: without a valid token no data route answers anything
but 401, the public page and assets carry none of the planet's data (function names, version
ids, tokens) and the headers that keep a browser from loading anything from elsewhere, and no
path trick reaches a data route through the public ones.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from _control_fixtures import Control, bearer, bundle_dir, new_token, upload

from edgefn.bundle import SigningKey

pytestmark = pytest.mark.integration

FN = "zz-private-fn"
PUBLIC = (
    "/dashboard",
    "/dashboard/dashboard.js",
    "/dashboard/dashboard.css",
    "/dashboard/world.svg",
)
DATA = ("/v1/dashboard", f"/v1/stats/{FN}", "/v1/status", "/v1/whoami", "/v1/functions")
FORGED = (
    {},
    {"authorization": "Bearer"},
    {"authorization": "Bearer edgefn_" + "0" * 12 + "_" + "0" * 64},
    {"authorization": "Basic eDp5"},
)


async def _deployed(control: Control, key: SigningKey, tmp_path: Path) -> str:
    resp = await upload(control, control.token, key, bundle_dir(tmp_path / "fn", FN))
    assert resp.status_code == 201, resp.text
    version = str(resp.json()["version_id"])
    out = await control.http.post(
        f"/v1/functions/{FN}/deployments",
        json={"version": version, "strategy": "immediate"},
    )
    assert out.status_code == 202, out.text
    return version


async def test_no_dashboard_data_without_a_token(
    control: Control, signing_key: SigningKey, tmp_path: Path
) -> None:
    version = await _deployed(control, signing_key, tmp_path)
    secret = control.token.split("_")[2]
    async with httpx.AsyncClient(base_url=control.url, timeout=10) as http:
        for path in DATA:
            for headers in FORGED:
                resp = await http.get(path, headers=headers)
                assert (resp.status_code, resp.json()["error"]) == (401, "unauthorized"), path
                assert FN not in resp.text
        for path in PUBLIC:
            resp = await http.get(path)
            assert resp.status_code == 200, path
            for needle in (FN, version, secret):
                assert needle not in resp.text, (path, needle)
            csp = resp.headers["content-security-policy"]
            assert "default-src 'none'" in csp
            assert "connect-src 'self'" in csp
            assert "frame-ancestors 'none'" in csp
            assert resp.headers["referrer-policy"] == "no-referrer"
            assert resp.headers["x-content-type-options"] == "nosniff"
        # The public route serves its fixed list only: no file, no traversal, no data behind it.
        for trick in (
            "/dashboard/index.html",
            "/dashboard/..%2Fv1%2Fstatus",
            "/dashboard/%2e%2e%2fv1%2fdashboard",
            "/dashboard/dashboard.js%00.json",
            "/dashboard/__init__.py",
            "/dashboard/dashboard.js/x",
        ):
            resp = await http.get(trick)
            assert resp.status_code == 404, (trick, resp.status_code)
            assert FN not in resp.text


async def test_a_read_token_sees_the_dashboard_and_cannot_do_more(
    control: Control, signing_key: SigningKey, tmp_path: Path
) -> None:
    await _deployed(control, signing_key, tmp_path)
    reader = await new_token(control, ["read"])
    async with httpx.AsyncClient(base_url=control.url, timeout=10) as http:
        resp = await http.get("/v1/dashboard", headers=bearer(reader))
        assert resp.status_code == 200, resp.text
        view = resp.json()
        assert [f["function"] for f in view["functions"]] == [FN]
        assert resp.headers["cache-control"] == "no-store"
        # What the page may do with that token stops at reading.
        resp = await http.post(f"/v1/functions/{FN}/rollback", json={}, headers=bearer(reader))
        assert (resp.status_code, resp.json()["error"]) == (403, "forbidden")
