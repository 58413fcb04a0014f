"""As a user: `edgefn dev --test-scheduled` fires `scheduled` in a real sandboxed worker."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from tests.planet_helpers import free_port, stop_group
from tests.waiting import wait_for

EDGEFN = [sys.executable, "-m", "edgefn.cli.main"]
pytestmark = pytest.mark.integration

MAIN = """
from edgefn import Response

async def fetch(request, env, ctx):
    return Response.text("ok")

async def scheduled(event, env, ctx):
    if event.cron == "0 0 * * *":
        raise ValueError("midnight refused")
    print("tick", event.cron, event.scheduled_time, event.attempt)
"""


def test_test_scheduled_runs_the_handler_and_reports_failures(tmp_path: Path) -> None:
    (tmp_path / "edgefn.toml").write_text('name = "tick"\n[triggers]\ncrons = ["*/5 * * * *"]\n')
    (tmp_path / "main.py").write_text(MAIN)
    port = free_port()
    proc = subprocess.Popen(
        [*EDGEFN, "dev", str(tmp_path), "--port", str(port), "--test-scheduled", "--no-reload"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{base}/_edgefn/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, timeout_s=30, what="edgefn dev to be healthy")
        ok = httpx.get(f"{base}/__scheduled", params={"time": "1735689600000"}, timeout=10)
        assert ok.status_code == 200, ok.text
        assert ok.json()["outcome"] == "ok"
        assert ok.json()["cron"] == "*/5 * * * *"  # the manifest's first by default
        assert ok.json()["scheduled_time"] == 1735689600000
        bad = httpx.get(f"{base}/__scheduled", params={"cron": "0 0 * * *"}, timeout=10)
        assert bad.status_code == 500, bad.text
        assert bad.json()["error"] == "exception"
        assert "midnight" not in bad.text  # the message goes to the log, not to the caller
        refused = httpx.get(f"{base}/__scheduled", params={"cron": "61 * * * *"}, timeout=10)
        assert refused.status_code == 400
        assert "out of range" in refused.json()["message"]
        assert httpx.get(f"{base}/", timeout=10).text == "ok"
    finally:
        out = stop_group(proc, signal.SIGINT)  # Ctrl-C
    assert "tick */5 * * * * 1735689600000 1" in out
    assert "midnight refused" in out
    assert '"kind":"scheduled"' in out
    # Ctrl-C stops it cleanly: the zygote ignores the terminal's SIGINT (the node stops it).
    assert "stopped" in out
    assert "KeyboardInterrupt" not in out


def test_without_the_flag_the_path_is_the_function_s(tmp_path: Path) -> None:
    (tmp_path / "edgefn.toml").write_text('name = "tick"\n')
    (tmp_path / "main.py").write_text(MAIN)
    port = free_port()
    proc = subprocess.Popen(
        [*EDGEFN, "dev", str(tmp_path), "--port", str(port), "--no-reload"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: _get(f"http://127.0.0.1:{port}/__scheduled") == "ok",
            timeout_s=30,
            what="the function to answer /__scheduled itself",
        )
    finally:
        out = stop_group(proc, signal.SIGTERM)  # stops as Ctrl-C does (and removes its files)
    assert proc.returncode == 0, out[-2000:]
    assert "stopped" in out


def _get(url: str) -> str:
    try:
        return httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return ""
