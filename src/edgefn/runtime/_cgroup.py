"""Per-worker cgroups (v1): memory, pids and CPU accounting that covers every thread and page.

Layout: ``/sys/fs/cgroup/<controller>/edgefn/<node-id>/<worker>`` for the memory, pids, cpu and
cpuacct controllers. The node creates ``edgefn/<node-id>`` at start; the zygote creates a worker's
group when it pre-forks it, sets ``pids.max`` and moves the intermediate child in (the worker is
forked from there and inherits it). At Load the node sets ``memory.limit_in_bytes``; its monitor
reads ``cpuacct.usage`` and, after a worker died, ``memory.oom_control`` to tell an OOM kill from a
crash. Groups are removed when their worker has exited and when the pool stops.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids", "cpu", "cpuacct")
PIDS_MAX = 32


def available() -> str:
    """ "on" when every controller is mounted and writable by this process, else "off: why"."""
    for ctrl in CONTROLLERS:
        d = ROOT / ctrl
        if not (d / "cgroup.procs").exists():
            return f"off: cgroup v1 controller {ctrl!r} is not mounted at {d}"
        if not os.access(d, os.W_OK):
            return f"off: {d} is not writable (run the node as root)"
    return "on"


def _dirs(group: str) -> list[Path]:
    seen: set[Path] = set()
    out = []
    for ctrl in CONTROLLERS:
        d = ROOT / ctrl / group
        real = (ROOT / ctrl).resolve()
        if real not in seen:
            seen.add(real)
            out.append(d)
    return out


def create(group: str) -> None:
    for d in _dirs(group):
        d.mkdir(parents=True, exist_ok=True)


def create_worker(group: str) -> None:
    """Create a worker's group (as the zygote, at pre-fork) with its pids limit."""
    create(group)
    (ROOT / "pids" / group / "pids.max").write_text(str(PIDS_MAX))


def join(group: str, pid: int) -> None:
    for d in _dirs(group):
        (d / "cgroup.procs").write_text(str(pid))


def set_memory_limit(group: str, limit_bytes: int) -> None:
    (ROOT / "memory" / group / "memory.limit_in_bytes").write_text(str(limit_bytes))


def memory_usage(group: str) -> int:
    try:
        return int((ROOT / "memory" / group / "memory.usage_in_bytes").read_text())
    except (OSError, ValueError):
        return 0


def cpu_ns(group: str) -> int:
    """CPU time of every thread ever in the group (ns); 0 when unreadable."""
    try:
        with open(ROOT / "cpuacct" / group / "cpuacct.usage", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def oom_killed(group: str) -> bool:
    try:
        text = (ROOT / "memory" / group / "memory.oom_control").read_text()
        failcnt = int((ROOT / "memory" / group / "memory.failcnt").read_text())
    except (OSError, ValueError):
        return False
    fields = dict(line.split() for line in text.splitlines() if line.count(" ") == 1)
    return int(fields.get("oom_kill", "0")) > 0 or (failcnt > 0 and fields.get("under_oom") == "1")


def memory_limit_hit(group: str) -> bool:
    """Whether the group's memory use has reached its limit at least once (``failcnt``)."""
    try:
        return int((ROOT / "memory" / group / "memory.failcnt").read_text()) > 0
    except (OSError, ValueError):
        return False


def remove(group: str) -> bool:
    """Remove a group (its tasks must be gone); True when no directory is left."""
    done = True
    for d in _dirs(group):
        try:
            d.rmdir()
        except FileNotFoundError:
            pass  # never made, or removed already: gone is what the caller wants
        except OSError:
            done = False  # EBUSY: a task is still in it
    return done


def remove_tree(group: str) -> None:
    """Remove ``group`` and all groups under it (children first)."""
    for d in _dirs(group):
        if not d.is_dir():
            continue
        try:
            children = sorted((p for p in d.rglob("*") if p.is_dir()), reverse=True)
        except FileNotFoundError:
            continue  # another node's sweep removed it meanwhile (nodes start concurrently)
        for child in children:
            with contextlib.suppress(OSError):
                child.rmdir()
        with contextlib.suppress(OSError):
            d.rmdir()


def sweep_orphans(base: str = "edgefn") -> None:
    """Remove ``<base>/<pid>-<n>`` groups whose node process is gone (a node killed with SIGKILL
    cannot clean up after itself)."""
    d = ROOT / "memory" / base
    if not d.is_dir():
        return
    try:
        children = list(d.iterdir())
    except FileNotFoundError:
        return
    for child in children:
        pid, _, _ = child.name.partition("-")
        if child.is_dir() and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            remove_tree(f"{base}/{child.name}")
