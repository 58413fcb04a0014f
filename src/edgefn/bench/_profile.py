"""Where a server's CPU goes: CPU time per request from ``/proc``, and py-spy profiles.

**CPU per request.** ``snapshot(root)`` reads ``/proc/<pid>/stat`` (utime + stime, in clock ticks) of a
server process and all its descendants, each with a role: ``main`` (the process started), ``zygote``
(a child running ``edgefn.runtime.zygote``), ``workers`` (the zygote's descendants: it is a child
subreaper, so the double-forked workers stay in the tree) and ``children`` (anything else, e.g. a
granian worker). ``cpu_us_per_request(before, after, requests)`` divides each role's CPU delta by the
requests served in between. A process that started in between counts from zero; one that exited in
between is missing (the hello-world benchmark kills none).

**Profiles.** ``PySpy(exe, pid, path)`` runs ``py-spy record --nonblocking --format raw`` on one
process: the target is never paused (sampling reads its memory), idle threads are not sampled, so a
process's samples are where its CPU went (on a contended machine a thread that is runnable but
preempted counts as busy too, which favours the functions that wake another process). The raw format is flamegraph-collapsed stacks, one
``frame;frame;...;frame count`` line per distinct stack (``process <pid>:"<cmdline>"`` roots them
under ``--subprocesses``, which ``summarise`` skips). ``summarise`` counts self samples (the
innermost frame) per function and per source file. py-spy sees Python frames only (``--native``
cannot be combined with ``--nonblocking``): time spent in C — uvloop's loop, httptools, msgspec, the
socket calls — is charged to the Python function that called into it.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefn.errors import EdgefnError

CLK_TCK = os.sysconf("SC_CLK_TCK")
TOP = 25
RATE_HZ = 250  # samples per second; py-spy's default is 100
# Where a source file's self time goes, for the per-component summary; the first match wins, so
# the specific prefixes come before the general ones. The paths are as py-spy prints them.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("event loop (uvloop, in C: epoll, socket reads, callbacks)", ("asyncio/runners.py",)),
    (
        "HTTP ingress (uvicorn/httptools, edgefn's protocol, response writes)",
        ("uvicorn/", "httptools/", "edgefn/edge/_ingress.py", "edgefn/edge/request_io.py"),
    ),
    ("asyncio in Python (timeouts, tasks, futures, queues, streams)", ("asyncio/",)),
    (
        "sandbox pool and IPC, node side (frames, policy, cgroup reads)",
        (
            "edgefn/runtime/sandbox.py",
            "edgefn/runtime/pool_policy.py",
            "edgefn/runtime/_cgroup.py",
            "edgefn/runtime/keepalive.py",
        ),
    ),
    ("IPC frame codec", ("edgefn/runtime/protocol.py",)),
    ("worker runtime (dispatch, send)", ("edgefn/runtime/",)),
    ("routing, traffic policy, response checks, stats", ("edgefn/edge/", "edgefn/routing/")),
    ("observability (stats, logs, metrics)", ("edgefn/observe/", "prometheus_client/")),
    ("SDK objects (Request, Headers, Response)", ("edgefn/sdk/",)),
)
OTHER = "other (stdlib, dataclass __init__s, function code)"

_PROCESS = re.compile(r'^process (\d+):"(.*)"$')
_FRAME = re.compile(r"^(.*) \(([^()]*?)(?::\d+)?\)$")
_STARTED = b"Sampling process"  # py-spy's stderr line once it samples


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    ppid: int
    start_ticks: int
    cpu_ticks: int  # utime + stime, every thread
    sys_ticks: int  # stime alone: system calls and the kernel work they cause
    cmdline: str


Snapshot = dict[int, tuple[str, ProcStat]]  # pid -> (role, its /proc entry)


def read_stat(pid: int) -> ProcStat | None:
    """One process's ``/proc`` entry, or None when it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as fb:
            cmdline = fb.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces; fields after it are plain.
    rest = stat[stat.rindex(")") + 2 :].split()
    return ProcStat(
        pid=pid,
        ppid=int(rest[1]),
        start_ticks=int(rest[19]),
        cpu_ticks=int(rest[11]) + int(rest[12]),
        sys_ticks=int(rest[12]),
        cmdline=cmdline,
    )


def snapshot(root: int) -> Snapshot:
    """``root`` and its descendants with their roles (see the module docstring)."""
    every = [s for p in os.listdir("/proc") if p.isdigit() and (s := read_stat(int(p)))]
    children: dict[int, list[ProcStat]] = {}
    for s in every:
        children.setdefault(s.ppid, []).append(s)
    top = read_stat(root)
    if top is None:
        raise EdgefnError(f"process {root} is gone", hint="the server under test exited early")
    out: Snapshot = {root: ("main", top)}
    stack: list[tuple[ProcStat, str]] = [(top, "main")]
    while stack:
        parent, parent_role = stack.pop()
        for child in children.get(parent.pid, []):
            if parent_role in ("zygote", "workers"):
                role = "workers"
            elif "edgefn.runtime.zygote" in child.cmdline:
                role = "zygote"
            else:
                role = "children"
            out[child.pid] = (role, child)
            stack.append((child, role))
    return out


def _used_ticks(before: Snapshot, after: Snapshot, *, sys_only: bool = False) -> dict[int, int]:
    used = {}
    for pid, (_role, now) in after.items():
        then = before.get(pid)
        if then is not None and then[1].start_ticks != now.start_ticks:
            then = None  # the pid was reused
        if sys_only:
            used[pid] = now.sys_ticks - (then[1].sys_ticks if then else 0)
        else:
            used[pid] = now.cpu_ticks - (then[1].cpu_ticks if then else 0)
    return used


def _us(ticks: int, requests: int) -> float:
    return ticks / CLK_TCK * 1e6 / max(1, requests)


def cpu_us_per_request(
    before: Snapshot, after: Snapshot, requests: int, *, sys_only: bool = False
) -> dict[str, float]:
    """CPU microseconds per request by role, and ``total``; roles that used nothing are left out.
    With ``sys_only``, only the system time (the kernel's share of the same)."""
    per_role: Counter[str] = Counter()
    for pid, ticks in _used_ticks(before, after, sys_only=sys_only).items():
        per_role[after[pid][0]] += ticks
    out = {role: round(_us(t, requests), 1) for role, t in sorted(per_role.items()) if t}
    out["total"] = round(_us(sum(per_role.values()), requests), 1)
    return out


def cpu_us_per_request_by_pid(before: Snapshot, after: Snapshot, requests: int) -> dict[int, float]:
    """CPU microseconds per request of each process of ``after``."""
    return {p: round(_us(t, requests), 1) for p, t in _used_ticks(before, after).items()}


def pyspy_exe() -> str | None:
    """py-spy on PATH, or beside this interpreter (a venv's bin directory need not be on PATH)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


class PySpy:
    """One ``py-spy record`` of a process tree; the constructor returns once it samples."""

    def __init__(
        self, exe: str, pid: int, path: Path, *, rate_hz: int = RATE_HZ, timeout_s: float = 30
    ) -> None:
        self.path = path
        # py-spy reports on stdout ("py-spy> Sampling process ..."), errors on stderr: read both.
        self.proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--nonblocking",
                "--format",
                "raw",
                "--rate",
                str(rate_hz),
                "--output",
                str(path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        seen = b""
        deadline = time.monotonic() + timeout_s
        while _STARTED not in seen:
            ready, _, _ = select.select([self.proc.stdout], [], [], deadline - time.monotonic())
            chunk = os.read(self.proc.stdout.fileno(), 4096) if ready else b""
            if not chunk:  # py-spy exited, or did not start sampling in time
                self.proc.kill()
                self.proc.communicate()
                said = seen.decode(errors="replace").split("Stack backtrace")[0].strip()
                raise EdgefnError(
                    f"py-spy could not record process {pid}: {said[-500:]}",
                    hint="py-spy needs root or CAP_SYS_PTRACE (ptrace_scope 0 for own processes)",
                )
            seen += chunk

    def stop(self) -> Path:
        """Stop sampling (SIGINT, as Control-C) and return the path of the written stacks."""
        self.proc.send_signal(signal.SIGINT)
        try:
            rest, _ = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, _ = self.proc.communicate()
        if self.proc.returncode != 0 or not self.path.exists():
            raise EdgefnError(f"py-spy failed ({self.proc.returncode}): {rest.decode()[-500:]}")
        return self.path


@dataclass(frozen=True, slots=True)
class ProcessProfile:
    pid: int
    samples: int
    self_samples: dict[str, int]  # function "name (file)" -> samples where it was innermost
    module_samples: dict[str, int]  # file -> self samples of its functions

    def top(self, n: int = TOP, *, us_per_request: float | None = None) -> list[dict[str, Any]]:
        """The ``n`` functions with the most self samples; with the process's CPU per request,
        each one's share of it in microseconds (samples are CPU time: idle threads are skipped)."""
        return _rows("function", self.self_samples, self.samples, n, us_per_request)

    def top_modules(
        self, n: int = TOP, *, us_per_request: float | None = None
    ) -> list[dict[str, Any]]:
        """As :meth:`top`, with the self samples of each source file's functions added up."""
        return _rows("module", self.module_samples, self.samples, n, us_per_request)

    def components(self, *, us_per_request: float | None = None) -> list[dict[str, Any]]:
        """Self samples added up by :data:`COMPONENTS`, largest first."""
        counts: Counter[str] = Counter()
        for module, count in self.module_samples.items():
            counts[component_of(module)] += count
        return _rows("component", dict(counts), self.samples, len(counts), us_per_request)


def component_of(module: str) -> str:
    for name, prefixes in COMPONENTS:
        if module.startswith(prefixes):
            return name
    return OTHER


def _rows(
    name: str, counts: dict[str, int], total: int, n: int, us_per_request: float | None
) -> list[dict[str, Any]]:
    rows = []
    for key, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]:
        share = count / max(1, total)
        row: dict[str, Any] = {name: key, "self_samples": count, "self_pct": round(100 * share, 2)}
        if us_per_request is not None:
            row["self_us_per_request"] = round(share * us_per_request, 2)
        rows.append(row)
    return rows


def _function(frame: str) -> tuple[str, str]:
    """``fetch (main.py:5)`` -> ("fetch (main.py)", "main.py"); other frames stay as they are."""
    m = _FRAME.match(frame)
    if m is None:
        return frame, frame
    return f"{m[1]} ({m[2]})", m[2]


def summarise(collapsed: str, *, pid: int) -> ProcessProfile:
    """Self samples per function of one process's recording (``process ...`` frames skipped)."""
    funcs: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [f for f in stack.split(";") if not _PROCESS.match(f)]
        if frames:
            fn, module = _function(frames[-1])
            funcs[fn] += int(count_text)
            modules[module] += int(count_text)
    return ProcessProfile(pid, sum(funcs.values()), dict(funcs), dict(modules))


def format_summary(profile: dict[str, Any]) -> str:
    """The ``profile`` section of a bench result as plain text: per process, the top functions."""
    if "skipped" in profile:
        return f"profile skipped: {profile['skipped']}"
    lines = [f"py-spy profiles ({profile['sampler']})"]
    for label, run in profile.items():
        if not isinstance(run, dict):
            continue
        lines.append(
            f"\n{label}: {run['rps_while_profiling']} req/s while profiled, "
            f"CPU µs per request {run['cpu_us_per_request']}"
        )
        for name in ("node", "worker"):
            part = run.get(name, "not profiled")
            if not isinstance(part, dict):
                lines.append(f"  {name}: {part}")
                continue
            lines.append(
                f"  {name} (pid {part['pid']}): {part['samples']} samples, "
                f"{part['cpu_us_per_request']} µs CPU per request; top {len(part['top_self'])} "
                f"functions by self time (stacks: {part['stacks_file']})"
            )
            for key, rows in (("component", part["components"]), ("function", part["top_self"])):
                lines.append(f"  {'self %':>7} {'µs/req':>7}  {key}")
                for row in rows:
                    us = row.get("self_us_per_request", "")
                    lines.append(f"  {row['self_pct']:>7} {us:>7}  {row[key]}")
    return "\n".join(lines)
