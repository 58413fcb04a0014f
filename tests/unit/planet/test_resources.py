"""A location's resources: read from the kernel, rates from deltas, nothing invented."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgefn.planet.resources import (
    ResourceSampler,
    energy_delta_uj,
    parse_meminfo,
    stat_ticks,
)

STAT = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 {ut} {st} 0 0 20 0 1 0 5 0 0"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _proc(root: Path, pid: int, ut: int, st: int, resident_pages: int) -> None:
    d = root / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    (d / "stat").write_text(STAT.format(ut=ut, st=st))
    (d / "statm").write_text(f"1000 {resident_pages} 10 1 0 50 0\n")


def test_parsers() -> None:
    assert stat_ticks(STAT.format(ut=7, st=5)) == 12
    info = parse_meminfo("MemTotal:       24000000 kB\nMemAvailable:   12000000 kB\nHuge: x\n")
    assert info == {"MemTotal": 24000000, "MemAvailable": 12000000}
    assert energy_delta_uj(100, 350, 1000) == 250
    assert energy_delta_uj(900, 100, 1000) == 200  # the counter wrapped


def test_rates_come_from_deltas_per_pid_and_the_host_files(tmp_path: Path) -> None:
    proc, sysfs, clock = tmp_path / "proc", tmp_path / "sys", Clock()
    ticks = os.sysconf("SC_CLK_TCK")
    (proc).mkdir()
    (proc / "meminfo").write_text("MemTotal: 2048000 kB\nMemAvailable: 1024000 kB\n")
    _proc(proc, 10, 0, 0, 256)
    _proc(proc, 11, 50, 50, 256)
    zone = sysfs / "class" / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "temp").write_text("47500\n")
    (zone / "type").write_text("x86_pkg_temp\n")
    rapl = sysfs / "class" / "powercap" / "intel-rapl:0"
    rapl.mkdir(parents=True)
    (rapl / "name").write_text("package-0\n")
    (rapl / "energy_uj").write_text("1000000\n")
    (rapl / "max_energy_range_uj").write_text("262143328850\n")
    pids = [10, 11]
    sampler = ResourceSampler(
        disk_path=tmp_path, pids=lambda: pids, proc=proc, sysfs=sysfs, clock=clock, max_age_s=1
    )
    first = sampler.sample()
    assert first.cpu_percent is None  # no previous sample: no rate
    assert first.power_w == {}
    assert first.thermal_c == {"thermal_zone0:x86_pkg_temp": 47.5}
    assert first.host_memory_mb == 2000.0
    assert first.host_memory_available_mb == 1000.0
    assert first.processes == 2
    assert first.unavailable == ()
    page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
    assert first.rss_mb == round(512 * page_mb, 1)
    # Half a second later: a cached sample, files not read again.
    clock.now += 0.5
    _proc(proc, 10, ticks, 0, 256)
    assert sampler.sample() is first
    # Two seconds after the first: pid 10 used one second of CPU, 11 exited, 12 is new.
    clock.now += 1.5
    pids[:] = [10, 12]
    _proc(proc, 12, 900, 900, 100)
    (rapl / "energy_uj").write_text("21000000\n")  # 20 J in 2 s
    second = sampler.sample()
    assert second.cpu_percent == 50.0  # 1 s of CPU in 2 s; neither the exit nor the newcomer counts
    assert second.power_w == {"intel-rapl:0:package-0": 10.0}
    assert second.processes == 2


def test_a_host_without_sensors_says_so(tmp_path: Path) -> None:
    sampler = ResourceSampler(
        disk_path=tmp_path / "gone", pids=lambda: [], proc=tmp_path, sysfs=tmp_path
    )
    res = sampler.sample()
    assert res.thermal_c == {}
    assert res.power_w == {}
    assert res.cpu_percent is None
    assert res.rss_mb is None
    kinds = [u.split(":")[0] for u in res.unavailable]
    assert kinds == ["disk", "thermal", "power"]


def test_real_processes_on_this_host(tmp_path: Path) -> None:
    """This process and a child burning CPU, read from the real /proc and /sys."""
    burner = subprocess.Popen(
        [sys.executable, "-c", "import time\nt=time.time()+30\nwhile time.time()<t: pass"]
    )
    try:
        sampler = ResourceSampler(
            disk_path=tmp_path, pids=lambda: [os.getpid(), burner.pid], max_age_s=0
        )
        first = sampler.sample()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            time.sleep(0.5)  # the measured span of CPU use, not a wait for a condition
            second = sampler.sample()
        assert first.cpu_percent is None
        assert second.cpu_percent is not None
        assert 5.0 < second.cpu_percent < 100.0 * (os.cpu_count() or 1) + 50
        assert second.processes == 2
        assert second.rss_mb is not None
        assert second.rss_mb > 5
        assert second.open_sockets is not None
        assert second.open_sockets >= 1
        assert second.disk_free_mb is not None
        assert second.disk_mb is not None
        assert 0 < second.disk_free_mb <= second.disk_mb
        assert second.thermal_c or any(u.startswith("thermal:") for u in second.unavailable)
        assert second.power_w or any(u.startswith("power:") for u in second.unavailable)
    finally:
        burner.kill()
        burner.wait()


@pytest.mark.parametrize("text", ["", "garbage without parens"])
def test_unreadable_stat_is_skipped(tmp_path: Path, text: str) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "stat").write_text(text)
    (tmp_path / "7" / "statm").write_text("1 2 3\n")
    sampler = ResourceSampler(disk_path=tmp_path, pids=lambda: [7], proc=tmp_path, sysfs=tmp_path)
    assert sampler.sample().processes == 0
