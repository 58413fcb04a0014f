"""A clustered core: route auth and TLS, exposure checks, CLI and planet errors, retried writes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from nats.errors import NoRespondersError
from tests.waiting import until
from typer.testing import CliRunner

from edgefn.bus import BusError, ClusterConfig, CoreConfig, render_config
from edgefn.bus.credentials import ROUTE_USER, load_credentials, write_planet_credentials
from edgefn.bus.errors import NatsServerStartError
from edgefn.bus.nats_config import TlsFiles, check_exposure
from edgefn.cli.main import app
from edgefn.control import service as service_module
from edgefn.control.errors import StateUnavailable
from edgefn.errors import PlanetError
from edgefn.planet import roles
from edgefn.planet.commands import CoreServer, core_argv, write_planet_files
from edgefn.planet.supervisor import Planet
from edgefn.world import spread

runner = CliRunner()
PASSWORD = "p" * 32


def _core(tmp_path: Path, *, host: str = "127.0.0.1", password: str = PASSWORD) -> CoreConfig:
    tls = TlsFiles(tmp_path / "c.pem", tmp_path / "c.key", tmp_path / "ca.pem")
    cluster = ClusterConfig(
        name="edgefn-core",
        port=6222,
        routes=("10.77.0.2:6222", "10.77.0.3:6222"),
        user=ROUTE_USER if password else "",
        password=password,
    )
    return CoreConfig(
        name="core-0",
        store_dir=tmp_path,
        host=host,
        client_port=4222,
        monitor_port=8222,
        leafnode_port=7422,
        cluster=cluster,
        tls=tls,
    )


def test_cluster_routes_authenticate_and_verify_tls_both_ways(tmp_path: Path) -> None:
    """Routes carry the route user, the listener demands it, and TLS verifies the peer."""
    out = render_config(_core(tmp_path))["cluster"]
    assert out["routes"] == [
        f"nats-route://route:{PASSWORD}@10.77.0.2:6222",
        f"nats-route://route:{PASSWORD}@10.77.0.3:6222",
    ]
    assert out["authorization"] == {"user": "route", "password": PASSWORD, "timeout": 2}
    assert out["tls"]["verify"] is True
    assert out["tls"]["ca_file"] == str(tmp_path / "ca.pem")


def test_a_clustered_core_off_loopback_needs_route_credentials(tmp_path: Path) -> None:
    config = _core(tmp_path, host="10.77.0.1", password="")
    config = CoreConfig(**{**_fields(config), "users": ()})
    with pytest.raises(BusError, match="without users and route credentials") as info:
        check_exposure(config)
    assert "--route-creds" in info.value.hint


def _fields(config: CoreConfig) -> dict[str, object]:
    return {name: getattr(config, name) for name in CoreConfig.__dataclass_fields__}


def test_route_credentials_are_written_once_and_kept(tmp_path: Path) -> None:
    first = write_planet_credentials(tmp_path, regions=["eu"], locations=[("fra", "eu")])
    again = write_planet_credentials(tmp_path, regions=["eu"], locations=[("fra", "eu")])
    route = load_credentials(first["route"])
    assert route.user == ROUTE_USER
    assert len(route.password) >= 32
    assert load_credentials(again["route"]) == route
    assert first["route"].stat().st_mode & 0o777 == 0o600


def test_core_argv_of_a_cluster_names_peers_and_only_server_0_runs_control(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEFN_DEPLOYER_KEY", str(tmp_path / "deployer.pem"))
    files = write_planet_files(tmp_path / "s", spread(2), tls=True, emulate_rtt=False)
    peers = ("127.0.0.1:2", "127.0.0.1:3")
    first = core_argv(files, server=CoreServer(0, 1, peers, ("nats://127.0.0.1:9",)))
    other = core_argv(files, server=CoreServer(2, 3, peers))
    assert "--no-control" not in first
    assert "--no-control" in other
    assert first[first.index("--state-dir") + 1] == str(tmp_path / "s/core")
    assert other[other.index("--state-dir") + 1] == str(tmp_path / "s/core-2")
    assert [first[i + 1] for i, a in enumerate(first) if a == "--cluster-peer"] == list(peers)
    assert first[first.index("--peer-url") + 1] == "nats://127.0.0.1:9"
    assert "--tls-cert" in first


# --------------------------------------------------------------------------- CLI errors


def _route_file(tmp_path: Path) -> Path:
    path = tmp_path / "route.json"
    path.write_text(json.dumps({"user": ROUTE_USER, "password": PASSWORD}))
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cluster-peer", "a:1"], "1 --cluster-peer given"),
        (["--cluster-peer", "a:1", "--cluster-peer", "b:2"], "--cluster-port 0 is not a port"),
        (
            ["--cluster-port", "6222", "--cluster-peer", "a:1", "--cluster-peer", "b"],
            "'b' is not host:port",
        ),
        (
            ["--cluster-port", "6222", "--cluster-peer", "a:1", "--cluster-peer", "b:70000"],
            "'b:70000' is not host:port",
        ),
        (["--no-control"], "need a clustered core"),
        (["--peer-url", "nats://a:1"], "need a clustered core"),
    ],
)
def test_core_refuses_bad_cluster_options(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["core", *args])
    assert result.exit_code != 0
    assert message in result.output


def test_core_refuses_a_cluster_without_route_credentials() -> None:
    args = ["--cluster-port", "6222", "--cluster-peer", "a:1", "--cluster-peer", "b:2"]
    result = runner.invoke(app, ["core", *args])
    assert result.exit_code != 0
    assert "--route-creds is required" in result.output


def test_core_refuses_a_non_positive_start_timeout(tmp_path: Path) -> None:
    args = ["--cluster-port", "6222", "--cluster-peer", "a:1", "--cluster-peer", "b:2"]
    args += ["--route-creds", str(_route_file(tmp_path)), "--start-timeout", "0"]
    result = runner.invoke(app, ["core", *args])
    assert result.exit_code != 0
    assert "--start-timeout 0.0 must be positive" in result.output


@pytest.mark.parametrize("servers", ["0", "2", "4"])
def test_up_refuses_an_unsupported_core_size(servers: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["up", "--core-servers", servers, "--state-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert f"--core-servers {servers} is not supported" in result.output


def test_planet_refuses_an_unsupported_core_size(tmp_path: Path) -> None:
    with pytest.raises(PlanetError, match="a core of 2 servers is not supported"):
        Planet(spread(1), state_dir=tmp_path, core_servers=2)


# --------------------------------------------------------------------------- keeping the server


class _FlakyServer:
    """A NatsServer stand-in: it has exited, and its first restart fails."""

    name = "core-1"

    def __init__(self) -> None:
        self.starts = 0
        self.up = False

    def running(self) -> bool:
        return self.up

    async def start(self) -> None:
        self.starts += 1
        if self.starts == 1:
            raise NatsServerStartError("port busy", log_tail="", hint="")
        self.up = True


async def test_a_core_restarts_its_server_after_a_failed_restart() -> None:
    """The keeper retries after a failed restart (backing off) until the server runs again."""
    server = _FlakyServer()
    keeper = asyncio.create_task(roles._keep_server_running(server, poll_s=0.01))  # type: ignore[arg-type]
    try:
        await until(
            lambda: server.up,
            timeout_s=10,
            what="the keeper to restart the server",
            interval_s=0.01,
        )
    finally:
        keeper.cancel()
    assert server.starts == 2


# --------------------------------------------------------------------------- control writes


async def test_control_writes_retry_transient_bus_failures_then_give_up_with_503() -> None:
    """A write that got no answer is retried; past its budget it is a 503 StateUnavailable."""
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise NoRespondersError
        return "stored"

    assert await service_module._retrying("storing x", flaky, budget_s=10) == "stored"
    assert len(calls) == 3

    async def dead() -> None:
        raise NoRespondersError

    with pytest.raises(StateUnavailable, match="storing y got no answer") as info:
        await service_module._retrying("storing y", dead, budget_s=0.3)
    assert info.value.status == 503
    assert "retry the request" in info.value.hint
