"""Planet start-up failure is a clear error: a role that does not report ready in time is named,
the command exits non-zero without a traceback, and nothing is left running."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.planet_helpers import EDGEFN, REPO, free_port, planet_processes, wait_for

pytestmark = [pytest.mark.integration]


@pytest.mark.parametrize("detach", [True, False])
def test_a_role_too_slow_to_start_is_a_clear_error(tmp_path: Path, detach: bool) -> None:
    state = tmp_path / "planet"
    args = [*EDGEFN, "up", "--locations", "2", "--no-emulate-rtt", "--state-dir", str(state)]
    args += ["--entry-port", str(free_port()), "--start-timeout", "0.05"]
    args += ["--detach"] if detach else []
    res = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode != 0
    assert "did not report ready within" in res.stderr, res.stderr
    assert "--start-timeout" in res.stderr
    assert "Traceback" not in res.stderr
    wait_for(
        lambda: planet_processes(state) == [],
        timeout_s=20,
        what="every process of the failed start-up to exit",
    )


@pytest.mark.parametrize("detach", [True, False])
def test_a_taken_entry_port_fails_before_anything_starts(tmp_path: Path, detach: bool) -> None:
    """The entry's port is reserved first: a taken port fails the start at once, naming the port,
    and no core, hub or node was started (the planet's own outbound connections cannot take a
    free port the caller picked, because it is bound before they are made)."""
    state = tmp_path / "planet"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        args = [*EDGEFN, "up", "--locations", "2", "--no-emulate-rtt", "--state-dir", str(state)]
        args += ["--entry-port", str(port)] + (["--detach"] if detach else [])
        res = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in res.stderr, res.stderr
    assert "starting core" not in res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert planet_processes(state) == []


def test_start_timeout_must_be_positive(tmp_path: Path) -> None:
    res = subprocess.run(
        [*EDGEFN, "up", "--start-timeout", "0", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert res.returncode != 0
    assert "--start-timeout 0.0 must be positive" in res.stderr


@pytest.mark.parametrize("command", ["up", "node"])
def test_kv_wait_out_of_range_is_a_clear_error(tmp_path: Path, command: str) -> None:
    res = subprocess.run(
        [*EDGEFN, command, "--kv-wait-ms", "-5", "--state-dir", str(tmp_path)]
        + (
            ["--location", "fra", "--region", "eu", "--nats", "nats://127.0.0.1:9"]
            if command == "node"
            else []
        ),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert res.returncode != 0
    assert "--kv-wait-ms -5 is out of range" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
