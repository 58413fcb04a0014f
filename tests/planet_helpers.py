"""Test helpers: start a real local planet with the CLI (as a user would) and stop it by pid."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EDGEFN = [sys.executable, "-m", "edgefn.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def edgefn(
    *args: str, state_dir: Path, check: bool = True, timeout: float = 180, stdin: str = ""
) -> Any:
    """Run ``edgefn ARGS --state-dir DIR --json`` and return its parsed JSON (or the process)."""
    res = subprocess.run(
        [*EDGEFN, *args, "--state-dir", str(state_dir)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    if check and res.returncode != 0:
        raise AssertionError(
            f"edgefn {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
        )
    if "--json" in args and res.returncode == 0:
        return json.loads(res.stdout)
    return res


@contextmanager
def running_planet(
    state_dir: Path,
    *,
    locations: int = 4,
    topology: Path | None = None,
    emulate_rtt: bool = False,
    extra: tuple[str, ...] = (),
) -> Iterator[dict[str, Any]]:
    """``edgefn up --detach``; yields planet.json; always stops every process by pid."""
    port = free_port()
    args = ["up", "--detach", "--json", "--entry-port", str(port)]
    args += ["--topology", str(topology)] if topology else ["--locations", str(locations)]
    if not emulate_rtt:
        args.append("--no-emulate-rtt")
    args += list(extra)
    planet: dict[str, Any] = {}
    try:
        planet = edgefn(*args, state_dir=state_dir)
        yield planet
    finally:
        subprocess.run(
            [*EDGEFN, "down", "--state-dir", str(state_dir)],
            capture_output=True,
            timeout=90,
            cwd=REPO,
        )
        pid = planet.get("supervisor_pid")
        if pid:
            try:
                os.killpg(int(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def wait_for(predicate: Callable[[], Any], *, timeout_s: float, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value (returned) or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")
