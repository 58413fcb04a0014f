"""A planet with a 3-server core loses its JetStream leaders during strong writes and a deploy.

One planet (``edgefn up --core-servers 3``, 3 locations, ``examples/counter``). Every location
runs strong CAS increments on one key from a client thread while the test SIGKILLs the
nats-server that leads the strong-KV home stream, then, during a deploy of a new version, the
server that leads the JetStream meta group. Each core process restarts its killed server, which
rejoins its peers. Checks: every planet-state bucket has three replicas; increments go on being
acknowledged after each kill; the deploy completes everywhere; and the final count holds every
acknowledged increment and at most the unknown ones besides (acked <= final <= acked + unknown).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ha_helpers import HOME_STREAM, HOST, StrongLoad, check_counter, jetstream_leaders
from tests.planet_helpers import (
    EDGEFN,
    REPO,
    Planet,
    PlanetFactory,
    PlanetSpec,
    cli_env,
    wait_for,
    wait_kv_connected,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PLANET_BUCKETS = {
    "KV_edgefn-kvhome",
    "KV_edgefn-kv-members",
    "KV_edgefn-desired",
    "KV_edgefn-observed",
    "KV_edgefn-registry",
    "KV_edgefn-deployer-keys",
    "KV_edgefn-tokens",
    "KV_edgefn-audit",
    "KV_edgefn-secrets",
    "OBJ_edgefn-bundles",
}


@pytest.fixture(scope="module")
def planet(planet_factory: PlanetFactory) -> Planet:
    p = planet_factory("haplanet", PlanetSpec(locations=3, core_servers=3))
    p.deploy(REPO / "examples/counter")
    wait_kv_connected(p, "counts")
    return p


def _get_json(url: str) -> dict[str, Any] | None:
    try:
        r = httpx.get(url, timeout=3)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


def _monitors(info: dict[str, Any]) -> dict[str, str]:
    return {s["server_name"]: s["monitor_url"] for s in info["core_servers"]}


def nats_pid(role_pid: int) -> int:
    """The nats-server child of a core role process (its keeper may have restarted it)."""
    children = Path(f"/proc/{role_pid}/task/{role_pid}/children").read_text().split()
    for pid in children:
        if Path(f"/proc/{pid}/comm").read_text().strip() == "nats-server":
            return int(pid)
    raise AssertionError(f"core process {role_pid} runs no nats-server")


def _kill_server(info: dict[str, Any], name: str) -> int:
    role = next(s for s in info["core_servers"] if s["server_name"] == name)
    pid = nats_pid(int(role["pid"]))
    os.kill(pid, signal.SIGKILL)
    return pid


def _leaders(info: dict[str, Any]) -> tuple[str, str]:
    def both() -> tuple[str, str] | None:
        meta, streams = jetstream_leaders(_get_json, _monitors(info))
        home = streams.get(HOME_STREAM)
        return (meta, home) if meta and home else None

    found: tuple[str, str] = wait_for(both, timeout_s=30, what="JetStream leaders")
    return found


def _all_healthy(info: dict[str, Any]) -> bool:
    return all(_get_json(f"{u}/healthz") is not None for u in _monitors(info).values())


def _final_count(url: str, key: str) -> int:
    def read() -> tuple[int] | None:
        try:
            r = httpx.get(
                f"{url}/get", params={"key": key, "consistency": "strong"}, headers=HOST, timeout=10
            )
        except httpx.HTTPError:
            return None
        return (int(r.json()["value"] or 0),) if r.status_code == 200 else None

    (count,) = wait_for(read, timeout_s=60, what="a strong read of the final count")
    return int(count)


def test_every_planet_bucket_has_three_replicas(planet: tuple[dict[str, Any], Path]) -> None:
    info, _ = planet
    url = next(iter(_monitors(info).values()))
    data = _get_json(f"{url}/jsz?accounts=true&streams=true&config=true")
    assert data is not None
    replicas = {
        s["name"]: s["config"]["num_replicas"]
        for a in data["account_details"]
        for s in a["stream_detail"]
    }
    assert {name: replicas.get(name) for name in PLANET_BUCKETS} == dict.fromkeys(PLANET_BUCKETS, 3)


def test_leader_kills_during_strong_writes_and_a_deploy_lose_no_acknowledged_write(
    planet: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    info, state = planet
    urls = [loc["url"] for loc in info["locations"]]
    load = StrongLoad(urls, key="ha-count")
    load.start()
    figures: dict[str, Any] = {}
    try:
        wait_for(lambda: load.acked() >= 10, timeout_s=60, what="first acknowledged increments")
        # 1. Kill the server leading the strong-KV home stream in the middle of the writes.
        _, home_leader = _leaders(info)
        before = load.acked()
        t_kill = time.monotonic()
        _kill_server(info, home_leader)
        wait_for(lambda: load.acked() >= before + 20, timeout_s=90, what="acks after the kill")
        figures["home_leader_killed"] = home_leader
        figures["s_to_20_acks_after_home_kill"] = round(time.monotonic() - t_kill, 1)
        wait_for(lambda: _all_healthy(info), timeout_s=60, what="the killed server back")

        # 2. Deploy a new version and kill the meta leader while it rolls out.
        new = tmp_path / "counter-v2"
        shutil.copytree(REPO / "examples/counter", new)
        (new / "main.py").write_text((new / "main.py").read_text() + "\n# v2\n")
        meta_leader, _ = _leaders(info)
        deploy = subprocess.Popen(
            [*EDGEFN, "deploy", str(new), "--wait", "--json", "--state-dir", str(state)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=cli_env(state),
        )
        try:
            before = load.acked()
            _kill_server(info, meta_leader)
            out, err = deploy.communicate(timeout=180)
        finally:
            if deploy.poll() is None:
                deploy.kill()
                deploy.wait()
        if deploy.returncode != 0:
            log = (state / "logs/core-0.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"the deploy failed:\n{out}\n{err}\ncore-0's log:\n{log}")
        figures["meta_leader_killed"] = meta_leader
        version = json.loads(out)["version"]
        for url in urls:
            r = httpx.post(f"{url}/incr", params={"key": "probe"}, headers=HOST, timeout=20)
            assert r.headers.get("x-edgefn-version") == version, (url, r.status_code, r.text)
        wait_for(lambda: load.acked() >= before + 20, timeout_s=90, what="acks after 2nd kill")
        wait_for(lambda: _all_healthy(info), timeout_s=60, what="the killed server back")
    finally:
        load.stop()
    final = _final_count(urls[0], "ha-count")
    figures.update(load.outcomes, final=final)
    print(f"HA core figures: {figures}")
    check_counter(load, final)
