"""A planet across "hosts": a 3-server core, two hubs and two nodes, each in its own netns.

Nine network namespaces on one bridge (``netns.Network``, subnet 10.77.0.0/24, nothing on the
machine's own interfaces): ``core0..2``, ``hub-<region>`` for two regions, one node per region,
and ``client`` for the test's HTTP clients and CLI. The roles are started from the same command
lines ``edgefn up`` builds (``edgefn.planet.commands``), bound to their namespace's address,
with their own NATS credentials, and TLS on every bus connection (node→hub, hub→core leafnodes,
core routes, the control service→core), certificates issued by the planet CA for those addresses.

Scenario, with strong increments, strong puts and gets (for the linearizability check) from the
client at both nodes all along:

1. deploy ``examples/counter``;
2. SIGKILL the nats-server leading the strong-KV home stream (its core process restarts it);
3. partition one region by link-down of its hub's bridge port: eventual writes at both nodes,
   strong writes on the cut side are refused (``consistency_unavailable``); heal;
4. deploy a new version and SIGKILL the JetStream meta leader while it rolls out.

Checks: the deploys complete; the count holds every acknowledged increment (acked <= final <=
acked + unknown); the strong history is linearizable (``edgefn.state.lincheck``); eventual
writes converge (equal ``/_edgefn/kvstate`` digests, every write present).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefn.planet.commands import (
    CoreServer,
    PlanetFiles,
    core_argv,
    hub_sites,
    node_argv,
    region_argv,
    write_planet_files,
)
from edgefn.planet.credentials import ADMIN_TOKEN_FILE, write_credentials
from edgefn.planet.supervisor import Child, start_child, stop_child
from edgefn.state.lincheck import check_linearizable
from edgefn.world import Location, spread
from tests.ha_helpers import HOME_STREAM, HOST, StrongLoad, check_counter, jetstream_leaders
from tests.integration.multihost.netns import (
    Network,
    enter_netns,
    sweep_stale,
    unavailable_reason,
)
from tests.planet_helpers import REPO, cli_env, internal_client, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLUSTER_PORT, CLIENT_PORT, LEAF_PORT, API_PORT = 6222, 4222, 7422, 8080
START_TIMEOUT_S = 90.0


@dataclass
class Hosts:
    """The running multi-host planet."""

    net: Network
    files: PlanetFiles
    locations: list[Location]
    cores: list[Child] = field(default_factory=list)
    hubs: dict[str, Child] = field(default_factory=dict)
    nodes: dict[str, Child] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.files.state_dir

    def children(self) -> list[Child]:
        return [*self.nodes.values(), *self.hubs.values(), *self.cores]

    def node_urls(self) -> list[str]:
        return [c.info["url"] for c in self.nodes.values()]

    def monitors(self) -> dict[str, str]:
        return {c.info["server_name"]: c.info["monitor_url"] for c in self.cores}


@pytest.fixture
def hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hosts]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"multi-host test needs network namespaces: {reason}")
    monkeypatch.setenv("EDGEFN_DEPLOYER_KEY", str(tmp_path / "deployer-key.pem"))
    sweep_stale()
    net = Network(f"efn{os.getpid()}")
    planet: Hosts | None = None
    try:
        planet = _build(net, tmp_path / "state")
        yield planet
    finally:
        if planet is not None:
            for child in planet.children():
                stop_child(child, timeout_s=10)
        net.close()
        assert not net.pids(net.switch), "a process survived the test"


def _build(net: Network, state: Path) -> Hosts:
    locations = spread(2)
    regions = list(hub_sites(locations))
    assert len(regions) == 2, regions
    core_ips = [net.add_host(f"core{i}", 10 + i) for i in range(3)]
    hub_ips = {r: net.add_host(f"hub{j}", 20 + j) for j, r in enumerate(regions)}
    node_ips = {loc.id: net.add_host(f"node{k}", 30 + k) for k, loc in enumerate(locations)}
    net.add_host("client", 100)
    hosts_of = {"core": core_ips, **{f"hub-{r}": [ip] for r, ip in hub_ips.items()}}
    files = write_planet_files(state, locations, tls=True, emulate_rtt=False, server_hosts=hosts_of)
    (state / "logs").mkdir()
    planet = Hosts(net, files, locations)
    for i, ip in enumerate(core_ips):
        others = [j for j in range(3) if j != i]
        server = CoreServer(
            index=i,
            cluster_port=CLUSTER_PORT,
            cluster_peers=tuple(f"{core_ips[j]}:{CLUSTER_PORT}" for j in others),
            peer_urls=tuple(f"nats://{core_ips[j]}:{CLIENT_PORT}" for j in others)
            if i == 0
            else (),
            client_port=CLIENT_PORT,
            leafnode_port=LEAF_PORT,
        )
        extra = ["--api-port", str(API_PORT), "--start-timeout", str(START_TIMEOUT_S)]
        args = core_argv(files, server=server, host=ip, extra=extra)
        planet.cores.append(_child(net, f"core{i}", args, state))
    _start(planet.cores)
    leaf_urls = [f"nats-leaf://{ip}:{LEAF_PORT}" for ip in core_ips]
    for j, (region, ip) in enumerate(hub_ips.items()):
        args = region_argv(files, region, core_leaf_urls=leaf_urls, host=ip)
        planet.hubs[region] = _child(net, f"hub{j}", args, state)
    _start(list(planet.hubs.values()))
    for k, loc in enumerate(locations):
        hub_url = planet.hubs[loc.region].info["client_url"]
        args = node_argv(files, loc, nats_url=hub_url, host=node_ips[loc.id])
        planet.nodes[loc.id] = _child(net, f"node{k}", args, state)
    _start(list(planet.nodes.values()))
    api_url = planet.cores[0].info["api_url"]
    token = (state / ADMIN_TOKEN_FILE).read_text().strip()
    write_credentials(state, api_url=api_url, token=token)
    # What the CLI reads to find a planet; this test process stands in for its supervisor.
    described = {
        "supervisor_pid": os.getpid(),
        "state_dir": str(state),
        "api_url": api_url,
        "locations": [{"name": n, "url": c.info["url"]} for n, c in planet.nodes.items()],
    }
    (state / "planet.json").write_text(json.dumps(described))
    return planet


def _child(net: Network, host: str, args: list[str], state: Path) -> Child:
    return Child(host, args, state / f"logs/{host}.log", prefix=net.prefix(host))


def _start(children: list[Child]) -> None:
    async def all_of() -> None:
        await asyncio.gather(*(start_child(c, START_TIMEOUT_S) for c in children))

    asyncio.run(all_of())


# --------------------------------------------------------------------------- client-side helpers


def _get_json(planet: Hosts, url: str) -> dict[str, Any] | None:
    def get() -> dict[str, Any] | None:
        try:
            r = httpx.get(url, timeout=3, trust_env=False)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None

    return planet.net.run_in("client", get)


def _leaders(planet: Hosts) -> tuple[str, str]:
    def both() -> tuple[str, str] | None:
        meta, streams = jetstream_leaders(lambda u: _get_json(planet, u), planet.monitors())
        home = streams.get(HOME_STREAM)
        return (meta, home) if meta and home else None

    found: tuple[str, str] = wait_for(both, timeout_s=30, what="JetStream leaders")
    return found


def _kill_nats(planet: Hosts, server_name: str) -> None:
    """SIGKILL the nats-server child of that core process (found by pid through /proc)."""
    core = next(c for c in planet.cores if c.info["server_name"] == server_name)
    assert core.pid is not None
    children = Path(f"/proc/{core.pid}/task/{core.pid}/children").read_text().split()
    pids = [
        int(p) for p in children if Path(f"/proc/{p}/comm").read_text().strip() == "nats-server"
    ]
    assert pids, f"{server_name} runs no nats-server"
    os.kill(pids[0], signal.SIGKILL)


def _cores_healthy(planet: Hosts) -> bool:
    return all(_get_json(planet, f"{u}/healthz") is not None for u in planet.monitors().values())


def _deploy(planet: Hosts, path: Path) -> subprocess.Popen[str]:
    """``edgefn deploy --wait`` from the client host (the control API is on core0's address)."""
    return subprocess.Popen(
        [
            *planet.net.prefix("client"),
            sys.executable,
            "-m",
            "edgefn.cli.main",
            "deploy",
            str(path),
            "--wait",
            "--json",
            "--state-dir",
            str(planet.state_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=cli_env(planet.state_dir, EDGEFN_DEPLOYER_KEY=os.environ["EDGEFN_DEPLOYER_KEY"]),
    )


def _finish(planet: Hosts, deploy: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        out, err = deploy.communicate(timeout=180)
    finally:
        if deploy.poll() is None:
            deploy.kill()
            deploy.wait()
    if deploy.returncode != 0:
        log = planet.cores[0].log_path.read_text(errors="replace")[-3000:]
        errors = [
            f"{loc}: {line}"
            for loc, node in planet.nodes.items()
            for line in node.log_path.read_text(errors="replace").splitlines()
            if '"error"' in line
        ][-20:]
        raise AssertionError(
            f"the deploy failed:\n{out}\n{err}\ncore0's log:\n{log}\nnode errors:\n"
            + "\n".join(errors)
        )
    result: dict[str, Any] = json.loads(out)
    return result


def _kv_state(planet: Hosts, loc: str) -> dict[str, Any]:
    """The node's replica of namespace ``counts`` from its internal listener (in its netns)."""
    url = planet.nodes[loc].info["internal_url"]
    host = planet.nodes[loc].name

    def get() -> dict[str, Any]:
        with internal_client(planet.state_dir, timeout=10) as c:
            r = c.get(f"{url}/_edgefn/kvstate/counts")
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    return planet.net.run_in(host, get)


def _eventual_put(planet: Hosts, url: str, key: str, value: str) -> None:
    def put() -> int:
        r = httpx.put(
            f"{url}/put",
            params={"key": key, "consistency": "eventual"},
            content=value,
            headers=HOST,
            timeout=10,
            trust_env=False,
        )
        return r.status_code

    assert planet.net.run_in("client", put) == 200


def _final_count(planet: Hosts, url: str, key: str) -> int:
    def read() -> tuple[int] | None:
        try:
            r = httpx.get(
                f"{url}/get",
                params={"key": key, "consistency": "strong"},
                headers=HOST,
                timeout=10,
                trust_env=False,
            )
        except httpx.HTTPError:
            return None
        return (int(r.json()["value"] or 0),) if r.status_code == 200 else None

    (count,) = wait_for(
        lambda: planet.net.run_in("client", read), timeout_s=60, what="the final count"
    )
    return int(count)


# --------------------------------------------------------------------------- the test


@pytest.mark.timeout(420)
def test_multihost_planet_survives_leader_kills_and_a_partition(
    hosts: Hosts, tmp_path: Path
) -> None:
    planet, t0 = hosts, time.monotonic()
    figures: dict[str, Any] = {}
    _finish(planet, _deploy(planet, REPO / "examples/counter"))
    wait_for(
        lambda: all(_kv_state(planet, loc)["driver"]["connected"] for loc in planet.nodes),
        timeout_s=60,
        what="KV replicas connected",
    )
    urls = planet.node_urls()
    load = StrongLoad(
        urls,
        key="mh-count",
        lin_key="mh-reg",
        thread_init=lambda: enter_netns(planet.net.ns("client")),
    )
    load.start()
    try:
        wait_for(lambda: load.acked() >= 10, timeout_s=60, what="first acknowledged increments")
        # 2. The strong-KV home's leader dies in the middle of the writes.
        _, home = _leaders(planet)
        before, t_kill = load.acked(), time.monotonic()
        _kill_nats(planet, home)
        wait_for(lambda: load.acked() >= before + 10, timeout_s=90, what="acks after the kill")
        figures["s_to_10_acks_after_home_kill"] = round(time.monotonic() - t_kill, 1)
        wait_for(lambda: _cores_healthy(planet), timeout_s=60, what="the killed server back")

        # 3. Partition the second region (its hub's link down); write eventually on both sides.
        cut_region = planet.locations[1].region
        cut_hub = planet.hubs[cut_region].name
        planet.net.cut(cut_hub)
        eventual = {}
        for i in range(5):
            for loc, url in zip(planet.nodes, urls, strict=True):
                key, value = f"ev-{loc}-{i}", f"{loc}:{i}"
                _eventual_put(planet, url, key, value)
                eventual[key] = value
        _eventual_put(planet, urls[0], "ev-shared", "first")
        _eventual_put(planet, urls[1], "ev-shared", "second")
        unavailable = load.outcomes["unavailable"]
        wait_for(
            lambda: load.outcomes["unavailable"] > unavailable,
            timeout_s=60,
            what="strong writes refused on the cut side",
        )
        planet.net.heal(cut_hub)

        # 4. A deploy while the meta leader dies.
        new = tmp_path / "counter-v2"
        shutil.copytree(REPO / "examples/counter", new)
        (new / "main.py").write_text((new / "main.py").read_text() + "\n# v2\n")
        meta, _ = _leaders(planet)
        deploy = _deploy(planet, new)
        _kill_nats(planet, meta)
        version = _finish(planet, deploy)["version"]
        figures["killed"] = [home, meta]
        before = load.acked()
        wait_for(lambda: load.acked() >= before + 10, timeout_s=90, what="acks after 2nd kill")
        wait_for(lambda: _cores_healthy(planet), timeout_s=60, what="the killed server back")
    finally:
        load.stop()

    def served_version(url: str) -> str | None:
        r = httpx.get(f"{url}/get", params={"key": "x"}, headers=HOST, timeout=10, trust_env=False)
        return r.headers.get("x-edgefn-version")

    for url in urls:
        assert planet.net.run_in("client", lambda u=url: served_version(u)) == version
    final = _final_count(planet, urls[0], "mh-count")
    figures.update(load.outcomes, final=final, lin_ops=len(load.lin_ops))
    check_counter(load, final)
    result = check_linearizable(load.lin_ops)
    assert result.ok, f"strong history not linearizable: {result}"

    def converged() -> list[dict[str, Any]] | None:
        states = [_kv_state(planet, loc) for loc in planet.nodes]
        return states if len({s["digest"] for s in states}) == 1 else None

    states = wait_for(converged, timeout_s=60, what="eventual replicas converged")
    items = states[0]["items"]
    missing = [k for k in eventual if k not in items]
    assert not missing, f"eventual writes lost: {missing}"
    assert "ev-shared" in items
    figures["wall_s"] = round(time.monotonic() - t0, 1)
    print(f"multi-host figures: {figures}")
