"""Fixtures for attacks on the sandbox: a real node (strict isolation) with a hostile and a victim
function, plus things outside the sandbox that must stay untouched: a TCP listener, a host Unix
socket and a victim process. Every check looks at those from outside; none asks the sandbox."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefn.edge import EdgeNode
from edgefn.observe import JsonLog

# The attacker's view of the control API reuses the real-core fixtures of tests/integration/control.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration" / "control"))

from _control_fixtures import control, core, nc, signing_key

from tests.waiting import until

__all__ = ["control", "core", "nc", "signing_key"]

FUNCTIONS = Path(__file__).parent / "functions"


@dataclass
class Sandboxed:
    node: EdgeNode
    client: httpx.AsyncClient
    log: io.StringIO
    versions: dict[str, str]  # function -> version
    state_dir: Path

    async def call(self, function: str, path: str, **query: Any) -> httpx.Response:
        return await self.client.get(
            self.node.url + path,
            params={k: str(v) for k, v in query.items()},
            headers={"host": f"{function}.localhost"},
        )

    def code_dir(self, function: str) -> Path:
        return self.state_dir / "versions" / self.versions[function]

    def worker_pids(self, function: str) -> list[int]:
        return [
            w.pid
            for w in self.node.pool.workers.values()
            if w.spec is not None and w.spec.function == function and not w.dead
        ]

    async def assert_still_serving(self) -> None:
        """After any attack the node still answers a normal request."""
        res = await self.call("victim", "/")
        assert res.status_code == 200, res.text
        assert res.text == "victim ok"


async def wait_until(condition: Callable[[], Any], *, timeout_s: float = 10.0) -> Any:
    """The shared poll (tests/waiting.py), with the security suite's default deadline."""
    return await until(condition, timeout_s=timeout_s)


@pytest.fixture
async def s(tmp_path: Path) -> AsyncIterator[Sandboxed]:
    log = io.StringIO()
    state = tmp_path / "node"
    node = EdgeNode("sec", state_dir=state, log=JsonLog(log, location="sec"), isolation="strict")
    await node.start()
    try:
        versions = {name: await node.deploy_dir(FUNCTIONS / name) for name in ("hostile", "victim")}
        async with httpx.AsyncClient(timeout=20) as client:
            s = Sandboxed(node, client, log, versions, state)
            await s.assert_still_serving()
            yield s
    finally:
        await node.stop()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP listener on 127.0.0.1 that must never see a connection."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


@pytest.fixture
def unix_listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A Unix socket on the host (world-connectable) that must never see a connection."""
    path = str(tmp_path / "host.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o777)
    sock.listen(8)
    sock.setblocking(False)
    try:
        yield sock, path
    finally:
        sock.close()


@pytest.fixture
def victim_process() -> Iterator[subprocess.Popen[bytes]]:
    """A process started by the test that must survive every attack."""
    proc = subprocess.Popen(["sleep", "120"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def assert_no_connection(sock: socket.socket) -> None:
    try:
        conn, peer = sock.accept()
    except BlockingIOError:
        return
    conn.close()
    raise AssertionError(f"the listener got a connection from {peer}")
