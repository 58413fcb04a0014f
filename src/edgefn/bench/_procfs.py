"""CPU and memory of a process tree, read from ``/proc``, grouped by the planet role of each process.

How it works. :func:`process_tree` lists every process whose parent chain reaches the root pid
(the planet supervisor) from ``/proc/<pid>/stat`` (field 4, ppid) and ``/proc/<pid>/cmdline``.
:func:`classify` names each process's role from its command line and its parent's role:

* ``supervisor`` — ``edgefn up`` itself; it also runs the link emulator and the anycast entry;
* ``core``, ``hub``, ``node`` — ``edgefn core|region|node``; the location of a node is its
  ``--location``;
* ``core-nats``, ``hub-nats`` — the nats-server a core or hub process runs;
* ``zygote`` (``edgefn.runtime.zygote`` forked by a node) and ``worker`` (forked by a zygote);
* ``other`` — anything else in the tree.

:func:`sample` reads each process's CPU time (utime + stime, fields 14 and 15 of ``stat``, in
clock ticks; all threads included), its threads' context switches (``task/*/status``, about one
per wake-up of an idle event loop) and, when readable, ``Rss`` and ``Pss`` from
``/proc/<pid>/smaps_rollup`` (kB). :func:`cpu_report` compares two samples taken ``wall_s``
apart: per process ``Δticks / CLK_TCK / wall_s`` is the share of one core it used, summed per role
and per location (and wake-ups per second per role) (a node with its zygote and workers). A process present in only one sample is
left out and counted. Everything takes the ``/proc`` root as an argument, so tests can build one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ProcessInfo",
    "ProcessSample",
    "classify",
    "cpu_report",
    "machine_busy_ticks",
    "memory_report",
    "process_tree",
    "read_memory_kb",
    "read_stat",
    "read_switches",
    "sample",
    "set_affinity",
]

ROLES = (
    "supervisor",
    "core",
    "core-nats",
    "hub",
    "hub-nats",
    "node",
    "zygote",
    "worker",
    "other",
)
# Roles whose cost belongs to one location; the others are the planet's shared infrastructure.
LOCATION_ROLES = frozenset({"node", "zygote", "worker"})
_MAX_DEPTH = 64  # parent chains are short; a longer one is a loop in a fake /proc


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    pid: int
    ppid: int
    role: str
    location: str  # the node's location for node/zygote/worker processes, else ""


@dataclass(frozen=True, slots=True)
class ProcessSample:
    info: ProcessInfo
    cpu_ticks: int
    rss_kb: int | None
    pss_kb: int | None
    switches: int = 0  # context switches of all its threads so far (about: wake-ups)


def read_stat(pid: int, *, proc: Path = Path("/proc")) -> tuple[int, int]:
    """``(ppid, utime + stime in clock ticks)`` of ``pid``; OSError when it is gone."""
    text = (proc / str(pid) / "stat").read_text()
    # The command name (field 2) is in parentheses and may hold spaces or ')': split after the
    # last ')'. The rest starts at field 3 (state).
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def machine_busy_ticks(*, proc: Path = Path("/proc")) -> int:
    """Clock ticks every CPU of the machine spent busy (not idle, not waiting for I/O) so far.

    From the ``cpu`` line of ``/proc/stat``: user nice system idle iowait irq softirq steal.
    Compared with the planet's own ticks it shows how much else ran during a window.
    """
    fields = (proc / "stat").read_text().splitlines()[0].split()
    assert fields[0] == "cpu", fields[0]
    values = [int(x) for x in fields[1:9]]
    return sum(values) - values[3] - values[4]


def read_memory_kb(pid: int, *, proc: Path = Path("/proc")) -> tuple[int | None, int | None]:
    """``(Rss, Pss)`` in kB from ``smaps_rollup``; None for what cannot be read."""
    rss = pss = None
    try:
        lines = (proc / str(pid) / "smaps_rollup").read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        key, _, rest = line.partition(":")
        if key == "Rss":
            rss = int(rest.split()[0])
        elif key == "Pss":
            pss = int(rest.split()[0])
    return rss, pss


def read_switches(pid: int, *, proc: Path = Path("/proc")) -> int:
    """Voluntary + involuntary context switches of every thread of ``pid`` so far.

    An idle event loop switches out once per wake-up (a timer, a socket read), so the rate is a
    count of how often the process wakes up. A thread that exits takes its count with it.
    """
    total = 0
    for task in (proc / str(pid) / "task").iterdir():
        try:
            lines = (task / "status").read_text().splitlines()
        except OSError:
            continue  # the thread exited while we looked
        for line in lines:
            if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                total += int(line.split()[1])
    return total


def set_affinity(pid: int, cpus: Iterable[int], *, proc: Path = Path("/proc")) -> int:
    """Pin every thread of ``pid`` to ``cpus``; how many threads were pinned (0: it is gone).

    A thread or process started later inherits the affinity of the thread that made it, so
    pinning a zygote pins the workers it forks afterwards. Other errors (a CPU outside the
    process's cpuset: EINVAL) are raised.
    """
    wanted = set(cpus)
    pinned = 0
    try:
        tasks = list((proc / str(pid) / "task").iterdir())
    except FileNotFoundError:
        return 0
    for task in tasks:
        try:
            os.sched_setaffinity(int(task.name), wanted)
        except ProcessLookupError:
            continue  # the thread exited while we looked
        pinned += 1
    return pinned


def _cmdline(pid: int, proc: Path) -> list[str]:
    raw = (proc / str(pid) / "cmdline").read_bytes()
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _edgefn_command(argv: list[str]) -> str:
    """The subcommand of ``python -m edgefn.cli.main <cmd>`` or ``edgefn <cmd>``; else ""."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "edgefn.cli.main" or arg.endswith("/edgefn"):
            return argv[i + 1]
    return ""


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1] if name in argv[:-1] else ""


def classify(argv: list[str], parent_role: str) -> str:
    """The planet role of a process with command line ``argv`` whose parent has ``parent_role``."""
    command = _edgefn_command(argv)
    roles = {"up": "supervisor", "core": "core", "region": "hub", "node": "node"}
    if command in roles:
        return roles[command]
    if argv and Path(argv[0]).name == "nats-server" and parent_role in ("core", "hub"):
        return f"{parent_role}-nats"
    if "edgefn.runtime.zygote" in argv:
        return "zygote" if parent_role == "node" else "worker"
    return "other"


def process_tree(root: int, *, proc: Path = Path("/proc")) -> dict[int, ProcessInfo]:
    """Every live process under ``root`` (``root`` included), classified."""
    parents: dict[int, int] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = read_stat(int(entry.name), proc=proc)[0]
            except (OSError, ValueError, IndexError):
                continue  # exited while we looked
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[int, ProcessInfo] = {}
    # Breadth first from the root, so every parent is classified before its children.
    frontier = [(root, "", "")] if root in parents else []
    for _ in range(_MAX_DEPTH):
        if not frontier:
            break
        nxt = []
        for pid, parent_role, parent_loc in frontier:
            try:
                argv = _cmdline(pid, proc)
            except OSError:
                continue
            role = classify(argv, parent_role)
            loc = _flag(argv, "--location") if role == "node" else parent_loc
            out[pid] = ProcessInfo(pid, parents[pid], role, loc if role in LOCATION_ROLES else "")
            nxt += [(c, role, out[pid].location) for c in sorted(children.get(pid, []))]
        frontier = nxt
    return out


def sample(
    tree: Mapping[int, ProcessInfo], *, memory: bool = False, proc: Path = Path("/proc")
) -> dict[int, ProcessSample]:
    """CPU ticks (and with ``memory`` RSS/PSS) of every process of ``tree`` still alive."""
    out: dict[int, ProcessSample] = {}
    for pid, info in tree.items():
        try:
            _, ticks = read_stat(pid, proc=proc)
            switches = read_switches(pid, proc=proc)
        except (OSError, ValueError, IndexError):
            continue
        rss, pss = read_memory_kb(pid, proc=proc) if memory else (None, None)
        out[pid] = ProcessSample(info, ticks, rss, pss, switches)
    return out


def _round(x: float) -> float:
    return round(x, 3)


def cpu_report(
    before: Mapping[int, ProcessSample],
    after: Mapping[int, ProcessSample],
    *,
    wall_s: float,
    locations: int,
    machine_busy_ticks: int | None = None,
    clk_tck: int | None = None,
) -> dict[str, object]:
    """Percent of one core used between two samples: per role, per location and in total.

    ``machine_busy_ticks``: the machine's busy ticks during the window
    (:func:`machine_busy_ticks` difference), reported with what of it was not the planet's.
    """
    assert wall_s > 0, wall_s
    assert locations > 0, locations
    tck = clk_tck or os.sysconf("SC_CLK_TCK")
    by_role = dict.fromkeys(ROLES, 0.0)
    wakeups = dict.fromkeys(ROLES, 0.0)
    by_location: dict[str, float] = {}
    counted = 0
    for pid, b in before.items():
        a = after.get(pid)
        if a is None:
            continue
        counted += 1
        pct = (a.cpu_ticks - b.cpu_ticks) / tck / wall_s * 100
        by_role[b.info.role] += pct
        wakeups[b.info.role] += (a.switches - b.switches) / wall_s
        if b.info.location:
            by_location[b.info.location] = by_location.get(b.info.location, 0.0) + pct
    total = sum(by_role.values())
    edge = [by_location.get(loc, 0.0) for loc in sorted(by_location)]
    machine: dict[str, float] = {}
    if machine_busy_ticks is not None:
        busy = machine_busy_ticks / tck / wall_s * 100
        machine = {
            "machine_busy_pct_of_one_core": _round(busy),
            "outside_planet_pct_of_one_core": _round(max(0.0, busy - total)),
        }
    return {
        "window_s": _round(wall_s),
        "processes": counted,
        "processes_not_in_both_samples": len(set(before) ^ set(after)),
        "total_pct_of_one_core": _round(total),
        "per_location_pct_of_one_core": _round(total / locations),
        "edge_pct_of_one_core_per_location": {
            "mean": _round(sum(edge) / len(edge)) if edge else 0.0,
            "max": _round(max(edge)) if edge else 0.0,
        },
        "shared_pct_of_one_core": _round(
            sum(v for r, v in by_role.items() if r not in LOCATION_ROLES)
        ),
        "by_role_pct_of_one_core": {r: _round(v) for r, v in by_role.items() if v or r != "other"},
        "by_location_pct_of_one_core": {k: _round(v) for k, v in sorted(by_location.items())},
        "by_role_wakeups_per_s": {r: round(v, 1) for r, v in wakeups.items() if v or r != "other"},
        **machine,
    }


def _mb(kb: float) -> float:
    return round(kb / 1024, 1)


def memory_report(samples: Iterable[ProcessSample], *, locations: int) -> dict[str, object]:
    """RSS and PSS (MB) per role, per location (node + zygote + workers) and amortised."""
    assert locations > 0, locations
    rss_role = dict.fromkeys(ROLES, 0)
    pss_role = dict.fromkeys(ROLES, 0)
    pss_loc: dict[str, int] = {}
    rss_loc: dict[str, int] = {}
    unreadable = 0
    for s in samples:
        if s.rss_kb is None or s.pss_kb is None:
            unreadable += 1
            continue
        rss_role[s.info.role] += s.rss_kb
        pss_role[s.info.role] += s.pss_kb
        if s.info.location:
            pss_loc[s.info.location] = pss_loc.get(s.info.location, 0) + s.pss_kb
            rss_loc[s.info.location] = rss_loc.get(s.info.location, 0) + s.rss_kb
    pss_total = sum(pss_role.values())
    edge = list(pss_loc.values())
    return {
        "unreadable_processes": unreadable,
        "pss_total_mb": _mb(pss_total),
        "pss_per_location_mb": _mb(pss_total / locations),
        "edge_pss_per_location_mb": {
            "mean": _mb(sum(edge) / len(edge)) if edge else 0.0,
            "max": _mb(max(edge)) if edge else 0.0,
        },
        "edge_rss_per_location_mb_mean": _mb(sum(rss_loc.values()) / len(rss_loc))
        if rss_loc
        else 0.0,
        "by_role_pss_mb": {r: _mb(v) for r, v in pss_role.items() if v or r != "other"},
        "by_role_rss_mb": {r: _mb(v) for r, v in rss_role.items() if v or r != "other"},
    }
