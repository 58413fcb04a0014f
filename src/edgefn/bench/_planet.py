"""A throw-away local planet for a benchmark: ``edgefn up --detach`` in a temporary state dir.

:func:`detached_planet` starts it with the CLI (as a user would), yields ``planet.json`` and the
state dir, and always stops it: ``edgefn down``, then SIGKILL to the supervisor's process group
by pid, then the state dir is removed (unless ``keep``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgefn.errors import PlanetError

__all__ = ["cli", "detached_planet"]


def cli(*args: str, state_dir: Path, timeout_s: float = 900) -> dict[str, Any]:
    """Run ``edgefn ARGS --json --state-dir DIR``; its JSON, or a PlanetError with its stderr."""
    res = subprocess.run(
        [sys.executable, "-m", "edgefn.cli.main", *args, "--json", "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if res.returncode != 0:
        raise PlanetError(
            f"edgefn {' '.join(args)} failed ({res.returncode}): {res.stderr[-2000:]}",
            hint=f"see the logs under {state_dir}",
        )
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def detached_planet(
    *,
    locations: int,
    prefix: str,
    emulate_rtt: bool = True,
    keep: bool = False,
    topology: str | None = None,
    extra_args: tuple[str, ...] = (),
) -> Iterator[tuple[dict[str, Any], Path]]:
    """A running planet of ``locations`` locations; every process stopped by pid afterwards.

    ``topology`` (the text of a topology TOML file) picks the locations instead; ``extra_args``
    are further ``edgefn up`` options (e.g. ``--incident-routes FILE``, ``--no-telemetry``).
    """
    state = Path(tempfile.mkdtemp(prefix=prefix))
    planet: dict[str, Any] = {}
    args = ["up", "--detach", "--entry-port", str(_free_port())]
    if topology is not None:
        (state.parent / f"{state.name}-topology.toml").write_text(topology)
        args += ["--topology", str(state.parent / f"{state.name}-topology.toml")]
    else:
        args += ["--locations", str(locations)]
    if not emulate_rtt:
        args.append("--no-emulate-rtt")
    args += list(extra_args)
    try:
        planet = cli(*args, state_dir=state)
        yield planet, state
    finally:
        subprocess.run(
            [sys.executable, "-m", "edgefn.cli.main", "down", "--state-dir", str(state)],
            capture_output=True,
            timeout=300,
        )
        pid = planet.get("supervisor_pid")
        if pid:
            try:
                os.killpg(int(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if not keep:
            shutil.rmtree(state, ignore_errors=True)
            (state.parent / f"{state.name}-topology.toml").unlink(missing_ok=True)
