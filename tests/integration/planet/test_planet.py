"""A real 6-location planet: nearest-location serving, deploys, rollback, canary auto-rollback,
partition during a deploy, and process failures — all through the CLI and HTTP."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.planet_helpers import REPO, edgefn, running_planet, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def planet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], Path]]:
    state = tmp_path_factory.mktemp("planet")
    # Small gates so a canary is judged after a few seconds of test traffic.
    gates = ("--gate-min-requests", "20", "--gate-soak-ms", "2000", "--gate-advance-requests", "40")
    with running_planet(state, locations=6, extra=gates) as info:
        yield info, state


def _get(entry: str, client_location: str, host: str = "hello.localhost") -> httpx.Response:
    return httpx.get(
        f"{entry}/", headers={"host": host, "x-edgefn-client-location": client_location}, timeout=10
    )


def _copy_fn(tmp_path: Path, greeting: str, *, fail: bool = False) -> Path:
    d = tmp_path / f"hello-{greeting}"
    shutil.copytree(REPO / "examples" / "hello", d)
    text = (d / "edgefn.toml").read_text().replace('GREETING = "Hello"', f'GREETING = "{greeting}"')
    (d / "edgefn.toml").write_text(text)
    if fail:
        main = d / "main.py"
        main.write_text(
            main.read_text().replace("    name = ", "    raise RuntimeError('bad')\n    name = ", 1)
        )
    return d


def test_nearest_locations_serve_the_same_version(planet: tuple[dict[str, Any], Path]) -> None:
    info, state = planet
    out = edgefn("deploy", str(REPO / "examples/hello"), "--wait", "--json", state_dir=state)
    assert set(out["convergence_s"]) == {loc["name"] for loc in info["locations"]}
    served = {}
    for client in ("NRT", "FRA", "GRU", "SYD", "LAX", "JNB"):
        r = _get(info["entry_url"], client)
        assert r.status_code == 200, r.text
        assert r.headers["x-edgefn-version"] == out["version"]
        served[client] = r.headers["x-edgefn-location"]
    assert len(set(served.values())) >= 4, served


def test_deploy_v2_then_rollback(planet: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    info, state = planet
    v1 = edgefn("deploy", str(REPO / "examples/hello"), "--wait", "--json", state_dir=state)
    v2 = edgefn("deploy", str(_copy_fn(tmp_path, "Hola")), "--wait", "--json", state_dir=state)
    assert _get(info["entry_url"], "FRA").json()["message"].startswith("Hola")
    edgefn("rollback", "hello", "--json", state_dir=state)

    def back_on_v1() -> bool:
        return all(
            _get(info["entry_url"], c).headers.get("x-edgefn-version") == v1["version"]
            for c in ("FRA", "NRT", "GRU")
        )

    wait_for(back_on_v1, timeout_s=30, what="rollback to v1")
    versions = edgefn("versions", "hello", "--json", state_dir=state)
    ids = {v["version_id"] for v in versions["versions"]}
    assert {v1["version"], v2["version"]} <= ids


def test_failing_canary_rolls_back_by_itself(
    planet: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    info, state = planet
    good = edgefn("deploy", str(REPO / "examples/hello"), "--wait", "--json", state_dir=state)
    bad = _copy_fn(tmp_path, "Broken", fail=True)
    out = edgefn("deploy", str(bad), "--strategy", "canary", "--json", state_dir=state)

    def traffic_and_status() -> bool:
        with httpx.Client(timeout=10) as c:
            for _ in range(10):  # traffic to every location so the canary's gate sees errors
                for loc in info["locations"]:
                    c.get(f"{loc['url']}/", headers={"host": "hello.localhost"})
        st = edgefn("status", "hello", "--json", state_dir=state)
        dep = st["functions"][0]["deployment"] or {}
        return dep.get("status") == "rolled_back" and dep.get("version_id") == out["version"]

    wait_for(traffic_and_status, timeout_s=60, what="automatic rollback of the failing canary")
    wait_for(
        lambda: all(
            _get(info["entry_url"], c).headers.get("x-edgefn-version") == good["version"]
            for c in ("FRA", "NRT", "GRU", "SYD")
        ),
        timeout_s=30,
        what="old version everywhere",
    )


def test_partitioned_location_keeps_serving_and_converges_after_heal(
    planet: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    info, state = planet
    v1 = edgefn("deploy", str(REPO / "examples/hello"), "--wait", "--json", state_dir=state)
    cut = info["locations"][1]
    edgefn("net", "partition", cut["name"], "--json", state_dir=state)
    try:
        v2 = edgefn("deploy", str(_copy_fn(tmp_path, "Ciao")), "--json", state_dir=state)
        others = [loc for loc in info["locations"] if loc["name"] != cut["name"]]

        def others_on_v2() -> bool:
            return all(
                httpx.get(
                    f"{o['url']}/", headers={"host": "hello.localhost"}, timeout=10
                ).headers.get("x-edgefn-version")
                == v2["version"]
                for o in others
            )

        wait_for(others_on_v2, timeout_s=60, what="v2 on the connected locations")
        r = httpx.get(f"{cut['url']}/", headers={"host": "hello.localhost"}, timeout=10)
        assert r.status_code == 200
        assert r.headers["x-edgefn-version"] == v1["version"]  # cut off: still the old version
    finally:
        edgefn("net", "heal", "--json", state_dir=state)
    wait_for(
        lambda: (
            httpx.get(
                f"{cut['url']}/", headers={"host": "hello.localhost"}, timeout=10
            ).headers.get("x-edgefn-version")
            == v2["version"]
        ),
        timeout_s=60,
        what="convergence after heal",
    )


def test_killed_node_is_restarted_and_bad_commands_say_what_to_do(
    planet: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    import os
    import signal

    info, state = planet
    loc = info["locations"][2]
    os.kill(int(loc["pid"]), signal.SIGKILL)  # a crash, not `net kill`: the supervisor restarts it
    wait_for(
        lambda: (
            httpx.get(f"{loc['url']}/_edgefn/health", timeout=2).status_code == 200
            if _up(loc["url"])
            else False
        ),
        timeout_s=60,
        what="node restarted",
    )
    res = edgefn("net", "partition", "nowhere", state_dir=state, check=False)
    assert res.returncode == 2
    assert "unknown location" in res.stderr
    down = edgefn("status", state_dir=tmp_path / "no-planet", check=False)
    assert down.returncode == 2
    assert "edgefn up" in down.stderr


def _up(url: str) -> bool:
    try:
        httpx.get(f"{url}/_edgefn/health", timeout=1)
        return True
    except httpx.HTTPError:
        return False
