"""What an edge location's host has and uses: CPU, memory, disk, sockets, temperature, power.

A node reports a :class:`~edgefn.control.model.NodeResources` sample in its observed state (``edgefn status`` shows it).
Every figure is read from the kernel, never estimated: CPU and resident memory of the node's own
processes (the node, its zygote and its workers, by pid from ``/proc/<pid>/stat`` and ``statm``),
the host's memory (``/proc/meminfo``), the state directory's filesystem (``statvfs``), the sockets
the node process holds (``/proc/self/fd``), temperatures (``/sys/class/thermal``) and power (RAPL
energy counters under ``/sys/class/powercap``). What the host does not expose (no thermal zones
in most VMs, no RAPL without an Intel/AMD package domain) is named in ``unavailable``, with the
reason, and its field stays empty: nothing is invented.

CPU percent and power are rates: each sample compares with the previous one (per pid, so a
worker that exited between samples does not make the figure go negative). The first sample has
neither. :meth:`ResourceSampler.sample` reuses a sample younger than ``max_age_s`` so that a
frequent caller (the node agent reports every second) reads the files at most every few seconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from edgefn.control.model import NodeResources
from edgefn.edge.thermal import MAX_ZONES, read_zones

__all__ = ["ResourceSampler", "energy_delta_uj", "parse_meminfo", "stat_ticks"]


def stat_ticks(text: str) -> int:
    """utime + stime (clock ticks) from the text of ``/proc/<pid>/stat``."""
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` as field → kB."""
    out = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[name.strip()] = int(parts[0])
    return out


def energy_delta_uj(before: int, after: int, max_range_uj: int) -> int:
    """Energy used between two RAPL counter readings; the counter wraps at ``max_range_uj``."""
    return after - before if after >= before else after + max_range_uj - before


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, ValueError):
        return None


class ResourceSampler:
    """Samples the resources of the processes ``pids()`` names and of the host they run on."""

    def __init__(
        self,
        *,
        disk_path: Path,
        pids: Callable[[], Iterable[int]],
        proc: Path = Path("/proc"),
        sysfs: Path = Path("/sys"),
        clock: Callable[[], float] = time.monotonic,
        max_age_s: float = 5.0,
    ) -> None:
        self.disk_path = disk_path
        self.pids = pids
        self.proc = proc
        self.sysfs = sysfs
        self.clock = clock
        self.max_age_s = max_age_s
        self._ticks_per_s = os.sysconf("SC_CLK_TCK")
        self._page_bytes = os.sysconf("SC_PAGE_SIZE")
        self._last: NodeResources | None = None
        self._last_at = 0.0
        self._ticks: dict[int, int] = {}
        self._energy: dict[str, int] = {}

    def sample(self) -> NodeResources:
        now = self.clock()
        if self._last is not None and now - self._last_at < self.max_age_s:
            return self._last
        elapsed = now - self._last_at if self._last is not None else 0.0
        unavailable: list[str] = []
        cpu, rss, count = self._processes(elapsed)
        mem = parse_meminfo(_read(self.proc / "meminfo") or "")
        disk_mb = disk_free_mb = None
        try:
            st = os.statvfs(self.disk_path)
            disk_mb = round(st.f_blocks * st.f_frsize / 2**20, 1)
            disk_free_mb = round(st.f_bavail * st.f_frsize / 2**20, 1)
        except OSError as err:
            unavailable.append(f"disk: {self.disk_path}: {err.strerror}")
        thermal = self._thermal(unavailable)
        power = self._power(elapsed, unavailable)
        self._last = NodeResources(
            at_ms=time.time_ns() // 1_000_000,
            cpu_cores=os.cpu_count() or 0,
            cpu_percent=cpu,
            processes=count,
            rss_mb=rss,
            host_memory_mb=round(mem["MemTotal"] / 1024, 1) if "MemTotal" in mem else None,
            host_memory_available_mb=(
                round(mem["MemAvailable"] / 1024, 1) if "MemAvailable" in mem else None
            ),
            disk_mb=disk_mb,
            disk_free_mb=disk_free_mb,
            open_sockets=self._sockets(),
            thermal_c=thermal,
            power_w=power,
            unavailable=tuple(unavailable),
        )
        self._last_at = now
        return self._last

    def _processes(self, elapsed: float) -> tuple[float | None, float | None, int]:
        ticks: dict[int, int] = {}
        pages = 0
        for pid in self.pids():
            stat = _read(self.proc / str(pid) / "stat")
            statm = _read(self.proc / str(pid) / "statm")
            if stat is None or statm is None:
                continue  # exited since it was listed
            try:
                ticks[pid] = stat_ticks(stat)
                pages += int(statm.split()[1])
            except (ValueError, IndexError):
                continue
        used = sum(t - self._ticks[pid] for pid, t in ticks.items() if pid in self._ticks)
        self._ticks = ticks
        cpu = round(100.0 * used / self._ticks_per_s / elapsed, 2) if elapsed > 0 else None
        rss = round(pages * self._page_bytes / 2**20, 1) if ticks else None
        return cpu, rss, len(ticks)

    def _sockets(self) -> int | None:
        fd_dir = self.proc / "self" / "fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            return None
        count = 0
        for name in names:
            try:
                count += os.readlink(fd_dir / name).startswith("socket:")
            except OSError:
                continue  # closed meanwhile
        return count

    def _thermal(self, unavailable: list[str]) -> dict[str, float]:
        out = read_zones(self.sysfs)
        if not out:
            unavailable.append(
                f"thermal: this host exposes no zones under {self.sysfs}/class/thermal"
            )
        return out

    def _power(self, elapsed: float, unavailable: list[str]) -> dict[str, float]:
        base = self.sysfs / "class" / "powercap"
        energy: dict[str, int] = {}
        ranges: dict[str, int] = {}
        for domain in sorted(base.glob("*rapl*"))[:MAX_ZONES]:
            uj, top = _read(domain / "energy_uj"), _read(domain / "max_energy_range_uj")
            if uj is None or top is None or not uj.strip().isdigit():
                continue  # e.g. energy_uj readable by root only
            name = f"{domain.name}:{(_read(domain / 'name') or '').strip()}"[:64]
            energy[name], ranges[name] = int(uj), int(top)
        if not energy:
            unavailable.append(f"power: no readable RAPL energy counters under {base}")
        out = {}
        if elapsed > 0:
            for name, now_uj in energy.items():
                if name in self._energy:
                    used = energy_delta_uj(self._energy[name], now_uj, ranges[name])
                    out[name] = round(used / 1e6 / elapsed, 2)
        self._energy = energy
        return out
