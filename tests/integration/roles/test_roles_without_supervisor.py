"""The three roles as separate processes, wired by URL as on several machines (no supervisor)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.bus_creds import bus_files
from tests.planet_helpers import REPO, wait_for

from edgefn.bundle import build_bundle, load_or_create_signing_key

pytestmark = pytest.mark.integration


class _Role:
    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgefn.cli.main", *args],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise AssertionError(f"role {args[0]} failed to start: {log.read_text()[-2000:]}")
        self.info: dict[str, Any] = json.loads(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()


@pytest.fixture
def roles(tmp_path: Path) -> Iterator[tuple[_Role, _Role, _Role, Path]]:
    key = load_or_create_signing_key(tmp_path / "key.pem")
    pub = tmp_path / "key.pub"
    pub.write_text(key.public_key_pem())
    bus = bus_files(tmp_path, regions=["eu-west"], locations=[("fra", "eu-west")])
    started: list[_Role] = []
    try:
        core = _Role(
            [
                "core",
                "--state-dir",
                str(tmp_path / "core"),
                "--trusted-key",
                str(pub),
                "--admin-token-file",
                str(tmp_path / "admin-token"),
                "--creds",
                str(bus["control"]),
                "--users",
                str(bus["core.users"]),
                "--core-signing-key",
                str(bus.core_key),
                *bus.tls_args("core"),
            ],
            tmp_path / "core.log",
        )
        started.append(core)
        region = _Role(
            [
                "region",
                "--name",
                "eu-west",
                "--core-leaf",
                core.info["leafnode_url"],
                "--state-dir",
                str(tmp_path / "region"),
                "--creds",
                str(bus["cache-eu-west"]),
                "--leaf-creds",
                str(bus["leaf-eu-west"]),
                "--users",
                str(bus["hub-eu-west.users"]),
                *bus.tls_args("hub-eu-west"),
            ],
            tmp_path / "region.log",
        )
        started.append(region)
        node = _Role(
            [
                "node",
                "--location",
                "fra",
                "--region",
                "eu-west",
                "--nats",
                region.info["client_url"],
                "--trusted-key",
                str(pub),
                "--state-dir",
                str(tmp_path / "node"),
                "--creds",
                str(bus["node-fra"]),
                "--core-key",
                str(bus.core_pub),
            ],
            tmp_path / "node.log",
        )
        started.append(node)
        yield core, region, node, tmp_path
    finally:
        for role in reversed(started):
            role.stop()


def _auth(tmp: Path) -> dict[str, str]:
    """The bootstrap admin token the core wrote on first start (mode 0600)."""
    path = tmp / "admin-token"
    assert path.stat().st_mode & 0o777 == 0o600
    return {"authorization": f"Bearer {path.read_text().strip()}"}


def test_deploy_through_separate_role_processes(roles: tuple[_Role, _Role, _Role, Path]) -> None:
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


def test_untrusted_bundle_is_refused(roles: tuple[_Role, _Role, _Role, Path]) -> None:
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
