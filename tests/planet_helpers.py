"""Test helpers: start a real local planet with the CLI (as a user would) and stop it by pid."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from edgefn._internal_auth import InternalAuth, planet_secret

REPO = Path(__file__).resolve().parent.parent
EDGEFN = [sys.executable, "-m", "edgefn.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """The environment for ``edgefn`` in tests: a deployer key next to (not in) the state dir.

    Keeping the key out of ``~/.config`` keeps tests hermetic; ``EDGEFN_TOKEN`` is dropped so the
    CLI reads the credentials ``edgefn up`` wrote, unless a test passes one.
    """
    env = {k: v for k, v in os.environ.items() if k != "EDGEFN_TOKEN"}
    env["EDGEFN_DEPLOYER_KEY"] = str(state_dir.parent / f"{state_dir.name}-deployer-key.pem")
    env.update(extra)
    return env


def credentials(state_dir: Path) -> dict[str, Any]:
    """What ``edgefn up`` wrote to ``<state-dir>/credentials.json`` (api_url, admin token)."""
    data: dict[str, Any] = json.loads((state_dir / "credentials.json").read_text())
    return data


def edgefn(
    *args: str,
    state_dir: Path,
    check: bool = True,
    timeout: float = 180,
    env: dict[str, str] | None = None,
    stdin: str = "",
) -> Any:
    """Run ``edgefn ARGS --state-dir DIR --json`` and return its parsed JSON (or the process)."""
    res = subprocess.run(
        [*EDGEFN, *args, "--state-dir", str(state_dir)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env or cli_env(state_dir),
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
            env=cli_env(state_dir),
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


async def wait_for_async(
    predicate: Callable[[], Awaitable[Any]], *, timeout_s: float, what: str = "condition"
) -> Any:
    """:func:`wait_for` inside an event loop: poll ``await predicate()`` until truthy."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


def internal_client(state_dir: Path, **kwargs: Any) -> httpx.Client:
    """A client for the planet's internal listeners: every request signed with its secret."""
    return httpx.Client(auth=InternalAuth(planet_secret(state_dir)), trust_env=False, **kwargs)


def internal_urls(planet: dict[str, Any]) -> dict[str, str]:
    """Location name -> the node's internal listener URL, from planet.json."""
    return {loc["name"]: loc["internal_url"] for loc in planet["locations"]}
