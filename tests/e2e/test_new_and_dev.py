"""As a user: `edgefn new`, the scaffolded test passes, `edgefn dev` serves and hot-reloads."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.planet_helpers import stop_group
from tests.waiting import wait_for

EDGEFN = [sys.executable, "-m", "edgefn.cli.main"]
pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_new_then_dev_with_hot_reload(tmp_path: Path) -> None:
    subprocess.run([*EDGEFN, "new", "hello"], cwd=tmp_path, check=True, capture_output=True)
    fn = tmp_path / "hello"
    assert (fn / "tests" / "test_main.py").exists()
    test_run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(fn / "tests")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert test_run.returncode == 0, test_run.stdout + test_run.stderr

    port = _free_port()
    proc = subprocess.Popen(
        [*EDGEFN, "dev", str(fn), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/?name=Ada"

    def body() -> str:
        try:
            return httpx.get(url, timeout=2).json()["message"]
        except (httpx.HTTPError, ValueError, KeyError):
            return ""

    def healthy() -> bool:
        try:
            return (
                httpx.get(f"http://127.0.0.1:{port}/_edgefn/health", timeout=2).status_code == 200
            )
        except httpx.HTTPError:
            return False

    try:
        # Healthy means loaded: the first request after health answers is served, never 404.
        wait_for(healthy, timeout_s=30, what="edgefn dev to be healthy")
        first = httpx.get(url, timeout=5)
        assert first.status_code == 200, first.text
        assert first.json()["message"] == "Hello, Ada!"
        main = fn / "main.py"
        main.write_text(main.read_text().replace('f"{env.GREETING}, {name}!"', 'f"Hi {name}"'))
        wait_for(lambda: body() == "Hi Ada", timeout_s=15, what="the reload")
        main.write_text(main.read_text() + "\ndef broken(\n")  # a syntax error: old version stays
        time.sleep(1.0)
        assert body() == "Hi Ada"
    finally:
        out = stop_group(proc, signal.SIGINT)  # Ctrl-C
    assert "reloaded" in out
    assert "reload failed" in out


def test_dev_on_missing_manifest_says_how_to_fix(tmp_path: Path) -> None:
    res = subprocess.run([*EDGEFN, "dev", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 2
    assert "edgefn new" in res.stderr


def test_new_rejects_bad_name(tmp_path: Path) -> None:
    res = subprocess.run([*EDGEFN, "new", "Bad_Name"], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2
    assert "invalid function name" in res.stderr
