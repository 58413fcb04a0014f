"""A real 6-location planet: nearest-location serving, deploys, rollback, canary auto-rollback,
partition during a deploy, and process failures — all through the CLI and HTTP."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.planet_helpers import (
    REPO,
    Planet,
    PlanetFactory,
    PlanetSpec,
    cli_env,
    credentials,
    edgefn,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# Small gates so a canary is judged after a few seconds of test traffic.
GATES = ("--gate-min-requests", "20", "--gate-soak-ms", "2000", "--gate-advance-requests", "40")


@pytest.fixture(scope="module")
def planet(planet_factory: PlanetFactory) -> Planet:
    return planet_factory("planet", PlanetSpec(locations=6, extra_args=GATES))


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


def test_status_shows_each_locations_resources(planet: tuple[dict[str, Any], Path]) -> None:
    """Every node reports its host's CPU, memory and disk, measured (not invented)."""
    info, state = planet

    def reported() -> list[dict[str, Any]]:
        locs = edgefn("status", "--json", state_dir=state)["locations"]
        # The second sample of a node has a CPU rate (the first has none).
        done = all((x["resources"] or {}).get("cpu_percent") is not None for x in locs)
        return locs if done else []

    locs = wait_for(reported, timeout_s=60, what="every location's resources with a CPU rate")
    assert {x["name"] for x in locs} == {loc["name"] for loc in info["locations"]}
    for x in locs:
        res = x["resources"]
        assert res["cpu_cores"] >= 1
        assert res["processes"] >= 2, res  # the node and its zygote, at least
        assert 10 < res["rss_mb"] < 4096, res
        assert 0 < res["disk_free_mb"] <= res["disk_mb"], res
        assert res["open_sockets"] >= 2, res  # its listeners
        # Empty fields are left out of the report; what is missing says why.
        missing = res.get("unavailable", [])
        assert res.get("thermal_c") or any(u.startswith("thermal:") for u in missing)
        assert res.get("power_w") or any(u.startswith("power:") for u in missing)
    table = edgefn("status", state_dir=state, check=False)
    assert table.returncode == 0
    assert "disk" in table.stdout


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
        # Traffic to every location so the canary's gate sees errors: stage 0 gives the new
        # version a small share at one location, and its gate judges after 20 of its requests.
        with httpx.Client(timeout=10) as c:
            for _ in range(40):
                for loc in info["locations"]:
                    c.get(f"{loc['url']}/", headers={"host": "hello.localhost"})
        st = edgefn("status", "hello", "--json", state_dir=state)
        dep = st["functions"][0]["deployment"] or {}
        return dep.get("status") == "rolled_back" and dep.get("version_id") == out["version"]

    wait_for(traffic_and_status, timeout_s=90, what="automatic rollback of the failing canary")
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
    assert _get_direct(loc["url"]) == 200  # hello is deployed there (earlier tests)
    os.kill(int(loc["pid"]), signal.SIGKILL)  # a crash, not `net kill`: the supervisor restarts it
    # From the crash until it serves again the node is down (no answer) or not ready (503): a
    # deployed function never gets 404 while the restarted node restores it from disk.
    seen: list[int] = []

    def served_again() -> bool:
        seen.append(_get_direct(loc["url"]))
        return seen[-1] == 200 and 0 in seen

    wait_for(served_again, timeout_s=60, what="node restarted and serving hello")
    assert 404 not in seen, seen
    res = edgefn("net", "partition", "nowhere", state_dir=state, check=False)
    assert res.returncode == 2
    assert "unknown location" in res.stderr
    down = edgefn("status", state_dir=tmp_path / "no-planet", check=False)
    assert down.returncode == 2
    assert "edgefn up" in down.stderr


def _get_direct(url: str) -> int:
    """hello's status straight from one node (0: nothing answered)."""
    try:
        return httpx.get(f"{url}/", headers={"host": "hello.localhost"}, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def test_tokens_accounts_and_keys_through_the_cli(
    planet: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    """An operator gives account acme a token and a key; acme deploys its own function (nodes
    learn the new key from the core) but not the default account's."""
    import stat

    from edgefn.bundle import load_or_create_signing_key

    info, state = planet
    assert stat.S_IMODE((state / "credentials.json").stat().st_mode) == 0o600
    assert credentials(state)["api_url"] == info["api_url"]
    assert not any(state.rglob("*deployer-key.pem")), "no private key in the state dir"
    edgefn("deploy", str(REPO / "examples/hello"), "--json", state_dir=state)  # hello: default
    made = edgefn(
        "token",
        "create",
        "--name",
        "acme-ci",
        "--scope",
        "deploy:*",
        "--account",
        "acme",
        "--json",
        state_dir=state,
    )
    key = load_or_create_signing_key(tmp_path / "acme.pem")
    (tmp_path / "acme.pub").write_text(key.public_key_pem())
    edgefn("key", "add", str(tmp_path / "acme.pub"), "--account", "acme", "--json", state_dir=state)
    acme = cli_env(
        state, EDGEFN_TOKEN=made["token"], EDGEFN_DEPLOYER_KEY=str(tmp_path / "acme.pem")
    )
    res = edgefn("deploy", str(REPO / "examples/hello"), state_dir=state, env=acme, check=False)
    assert res.returncode != 0
    assert "belongs to account 'default'" in res.stderr
    mine = _copy_fn(tmp_path, "Acme")
    toml = (mine / "edgefn.toml").read_text().replace('name = "hello"', 'name = "acmefn"')
    (mine / "edgefn.toml").write_text(toml)
    out = edgefn("deploy", str(mine), "--wait", "--json", state_dir=state, env=acme)
    assert set(out["convergence_s"]) == {loc["name"] for loc in info["locations"]}
    audit = edgefn("audit", "--json", state_dir=state)["records"]
    assert ("upload", "acmefn", "acme-ci", "acme") in [
        (r["action"], r["target"], r["token_name"], r["account"]) for r in audit
    ]
    listed = edgefn("token", "list", "--json", state_dir=state)
    assert made["token"].split("_")[2] not in str(listed)
    edgefn("token", "revoke", made["id"], "--json", state_dir=state)
    res = edgefn("status", state_dir=state, env=acme, check=False)
    assert res.returncode != 0
    assert "invalid or revoked API token" in res.stderr
