"""The three roles as separate processes, wired by URL as on several machines (no supervisor)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.planet_helpers import REPO, Role, running_roles, wait_for

from edgefn.bundle import build_bundle, load_or_create_signing_key

pytestmark = pytest.mark.integration


@pytest.fixture
def roles(tmp_path: Path) -> Iterator[tuple[Role, Role, Role, Path]]:
    with running_roles(tmp_path) as r:
        yield r.core, r.region, r.node, r.tmp


def _auth(tmp: Path) -> dict[str, str]:
    """The bootstrap admin token the core wrote on first start (mode 0600)."""
    path = tmp / "admin-token"
    assert path.stat().st_mode & 0o777 == 0o600
    return {"authorization": f"Bearer {path.read_text().strip()}"}


def test_deploy_through_separate_role_processes(roles: tuple[Role, Role, Role, Path]) -> None:
    core, _region, node, tmp = roles
    api, url = core.info["api_url"], node.info["url"]
    auth = _auth(tmp)
    assert "edgefn_" not in (tmp / "core.log").read_text()  # the token is never logged
    fn = tmp / "hello"
    shutil.copytree(REPO / "examples" / "hello", fn)
    bundle = build_bundle(fn)
    key = load_or_create_signing_key(tmp / "key.pem")
    up = httpx.post(
        f"{api}/v1/functions/hello/versions",
        content=bundle.data,
        headers={"x-edgefn-signature": key.sign(bundle.sha256), **auth},
        timeout=10,
    )
    assert up.status_code == 201, up.text
    version = up.json()["version_id"]
    dep = httpx.post(
        f"{api}/v1/functions/hello/deployments",
        json={"version": version, "strategy": "immediate"},
        headers=auth,
        timeout=10,
    )
    assert dep.status_code == 202, dep.text

    def served() -> bool:
        r = httpx.get(f"{url}/", headers={"host": "hello.localhost"}, timeout=5)
        return r.status_code == 200 and r.headers.get("x-edgefn-version") == version

    wait_for(served, timeout_s=30, what="the node serving the deployed version")
    status = httpx.get(f"{api}/v1/status", headers=auth, timeout=10).json()
    loc = next(x for x in status["locations"] if x["location"] == "fra")
    assert loc["region"] == "eu-west"
    wait_for(
        lambda: httpx.get(f"{api}/v1/status", headers=auth, timeout=10).json()["functions"][0][
            "converged"
        ],
        timeout_s=20,
        what="convergence reported by the control plane",
    )

    # The core goes away: the node keeps serving what it has (edge autonomy).
    core.stop()
    time.sleep(0.5)
    assert served()


def test_untrusted_bundle_is_refused(roles: tuple[Role, Role, Role, Path]) -> None:
    core, _region, _node, tmp = roles
    fn = tmp / "hello"
    shutil.copytree(REPO / "examples" / "hello", fn)
    bundle = build_bundle(fn)
    other = load_or_create_signing_key(tmp / "other.pem")
    r = httpx.post(
        f"{core.info['api_url']}/v1/functions/hello/versions",
        content=bundle.data,
        headers={"x-edgefn-signature": other.sign(bundle.sha256), **_auth(tmp)},
        timeout=10,
    )
    assert r.status_code == 403
    assert "not signed by a registered key" in r.text
