"""Hostile functions in real workers on a real node; every verdict is read from outside."""

from __future__ import annotations

import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.security.conftest import Sandboxed, assert_no_connection, wait_until

pytestmark = pytest.mark.integration


def _marker_paths(s: Sandboxed, name: str) -> list[Path]:
    return [
        Path("/tmp") / name,
        Path("/etc") / name,
        Path("/root") / name,
        s.code_dir("victim") / name,
        s.code_dir("hostile") / name,
        s.state_dir / name,
        s.state_dir / "versions" / name,
    ]


async def test_writes_outside_the_scratch_dir_never_reach_the_host(s: Sandboxed) -> None:
    for path in _marker_paths(s, f"edgefn-marker-{uuid.uuid4().hex}"):
        res = await s.call("hostile", "/write", arg=path)
        assert res.status_code == 200
        assert not path.exists(), f"{path} was written from inside the sandbox ({res.text})"
    await s.assert_still_serving()


async def test_host_files_are_not_visible(s: Sandboxed) -> None:
    repo = Path(__file__).resolve().parents[2]
    for path in (
        "/etc/passwd",
        "/etc/shadow",
        "/proc/1/environ",
        "/proc/sys/kernel/core_pattern",
        "/dev/kmsg",
        str(repo / "pyproject.toml"),
        str(repo / ".edgefn" / "signing-key.pem"),
        str(s.code_dir("victim") / "edgefn.toml"),
        "/function/../../" + str(s.code_dir("victim") / "edgefn.toml"),
    ):
        res = await s.call("hostile", "/read", arg=path)
        assert res.text.startswith("failed:"), f"{path}: {res.text[:200]}"
    res = await s.call("hostile", "/listdir", arg="/")
    assert "proc" not in res.text
    assert "home" not in res.text
    await s.assert_still_serving()


async def test_another_functions_secret_cannot_be_read(s: Sandboxed) -> None:
    await s.call("victim", "/")
    secret = "s3cr3t-victim-8d1f0c"
    pids = s.worker_pids("victim")
    assert pids
    for pid in pids:
        for path in ("/procmem", "/vmread"):
            res = await s.call("hostile", path, n=pid, arg="0x400000")
            assert secret not in res.text
            assert res.text.startswith("failed:") or res.status_code != 200
    # The victim bundle on disk: not reachable by path from inside.
    res = await s.call("hostile", "/read", arg=s.code_dir("victim") / "edgefn.toml")
    assert secret not in res.text
    await s.assert_still_serving()


async def test_no_network_tcp_io_uring_or_host_unix_socket(
    s: Sandboxed, listener: socket.socket, unix_listener: tuple[socket.socket, str]
) -> None:
    port = listener.getsockname()[1]
    res = await s.call("hostile", "/tcp", n=port)
    assert res.text.startswith("failed:")
    res = await s.call("hostile", "/uring", n=port)
    assert res.text.startswith("failed:")
    unix_sock, unix_path = unix_listener
    res = await s.call("hostile", "/unix", arg=unix_path)
    assert res.text.startswith("failed:")
    assert_no_connection(listener)
    assert_no_connection(unix_sock)
    await s.assert_still_serving()


@pytest.mark.parametrize("attack", ["/kill", "/pidfd", "/sigqueue", "/prlimit"])
async def test_signals_and_limits_cannot_reach_other_processes(
    s: Sandboxed, victim_process: subprocess.Popen[bytes], attack: str
) -> None:
    node_pid = __import__("os").getpid()
    zygote_pid = s.node.pool.statistics().zygote_pid
    for pid in (victim_process.pid, node_pid, zygote_pid, *s.worker_pids("victim")):
        await s.call("hostile", attack, n=pid)
    assert victim_process.poll() is None
    assert s.node.pool._zygote is not None
    assert s.node.pool._zygote.poll() is None
    limits = Path(f"/proc/{victim_process.pid}/limits").read_text()
    assert "Max open files            1 " not in limits
    await s.assert_still_serving()


async def test_int_0x80_is_killed_before_it_can_signal(
    s: Sandboxed, victim_process: subprocess.Popen[bytes]
) -> None:
    res = await s.call("hostile", "/int80", n=victim_process.pid)
    assert res.status_code == 503, res.text  # the worker was killed by the filter
    assert victim_process.poll() is None
    await s.assert_still_serving()


async def test_administrative_syscalls_are_denied(s: Sandboxed) -> None:
    res = await s.call("hostile", "/syscalls")
    for line in res.text.splitlines():
        assert "=-1 errno=1" in line, line  # EPERM
    await s.assert_still_serving()


async def test_runs_as_unprivileged_tenant_uid_in_own_pid_namespace(s: Sandboxed) -> None:
    res = await s.call("hostile", "/whoami")
    fields = dict(part.split("=", 1) for part in res.text.split())
    assert 200000 <= int(fields["uid"]) <= 265535
    assert fields["pid"] == "1"
    (pid,) = s.worker_pids("hostile")
    status = Path(f"/proc/{pid}/status").read_text()
    assert "CapEff:\t0000000000000000" in status
    assert "NoNewPrivs:\t1" in status
    assert f"Uid:\t{fields['uid']}" in status
    await s.call("victim", "/")
    (victim_pid,) = s.worker_pids("victim")
    victim_status = Path(f"/proc/{victim_pid}/status").read_text()
    assert f"Uid:\t{fields['uid']}" not in victim_status  # another tenant, another uid


async def test_thread_bomb_is_bounded(s: Sandboxed) -> None:
    res = await s.call("hostile", "/threads")
    assert res.status_code == 200
    assert int(res.text) < 64
    await s.assert_still_serving()


async def test_disk_fill_is_bounded_by_scratch_mb(s: Sandboxed) -> None:
    res = await s.call("hostile", "/fill")
    assert int(res.text) <= 4 * 2**20  # scratch_mb = 4 in the hostile manifest
    await s.assert_still_serving()


async def test_memfd_hog_is_killed_as_exceeded_memory(s: Sandboxed) -> None:
    res = await s.call("hostile", "/memfd")
    assert res.status_code == 503
    assert "exceeded_memory" in res.text
    await s.assert_still_serving()


async def test_tmp_hog_stays_within_scratch_and_there_is_no_shm(s: Sandboxed) -> None:
    res = await s.call("hostile", "/tmphog")
    assert 1 <= int(res.text) <= 4  # the scratch dir works, up to its size
    marker = f"edgefn-shm-{uuid.uuid4().hex}"
    res = await s.call("hostile", "/write", arg=f"/dev/shm/{marker}")
    assert res.text.startswith("failed:")
    assert not (Path("/dev/shm") / marker).exists()
    await s.assert_still_serving()


async def test_cpu_burnt_in_wait_until_is_charged(s: Sandboxed) -> None:
    res = await s.call("hostile", "/waituntil")
    assert res.status_code == 200
    (pid,) = s.worker_pids("hostile")
    await wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout_s=10)
    assert s.node.pool.statistics().killed.get("exceeded_cpu", 0) >= 1
    await s.assert_still_serving()


async def test_writes_to_fd_1_and_2_do_not_reach_the_node(
    s: Sandboxed, capfd: pytest.CaptureFixture[str]
) -> None:
    res = await s.call("hostile", "/log")
    assert res.status_code == 200
    await s.assert_still_serving()
    out, err = capfd.readouterr()
    assert "FORGED-LOG-LINE" not in out + err
    assert "FORGED-LOG-LINE" not in s.log.getvalue()


async def test_isolation_is_reported_in_health_and_statistics(s: Sandboxed) -> None:
    health = (await s.client.get(s.node.url + "/_edgefn/health")).json()
    layers = health["isolation"]
    assert layers.pop("mode") == "strict"
    assert set(layers) == {
        "identity", "filesystem", "landlock", "pid", "network", "ipc", "seccomp", "cgroup"
    }  # fmt: skip
    assert all(v.startswith("on") for v in layers.values()), layers
