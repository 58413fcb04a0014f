"""CPU per request from /proc and py-spy's collapsed stacks, as ``edgefn bench runtime`` reads them.

``worker.collapsed.txt`` is a real ``py-spy record --nonblocking --format raw`` of a relaxed
node's worker under wrk load (tests/data/pyspy/PROVENANCE.md). The process-tree test starts real
processes and stops them by pid; nothing here depends on timing.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.waiting import wait_for

from edgefn.bench import _profile
from edgefn.bench._profile import ProcStat

DATA = Path(__file__).parents[2] / "data" / "pyspy"


def test_self_samples_per_function_merge_line_numbers() -> None:
    profile = _profile.summarise((DATA / "worker.collapsed.txt").read_text(), pid=7)
    assert (profile.pid, profile.samples) == (7, 119)
    top = profile.top(3, us_per_request=119.0)
    assert [r["function"] for r in top] == [
        "Runner.run (asyncio/runners.py)",
        "decode (edgefn/runtime/protocol.py)",  # lines 270 (1 + 6 samples)
        "Headers.__init__ (edgefn/sdk/_headers.py)",  # lines 27 and 28
    ]
    assert [r["self_samples"] for r in top] == [79, 7, 6]
    assert top[0]["self_pct"] == 66.39
    assert top[0]["self_us_per_request"] == 79.0  # 79/119 of 119 µs
    modules = profile.top_modules(2)
    assert modules[0] == {"module": "asyncio/runners.py", "self_samples": 79, "self_pct": 66.39}
    assert modules[1]["module"] == "asyncio/streams.py"
    assert sum(profile.self_samples.values()) == profile.samples


def test_process_frames_and_odd_lines_are_skipped() -> None:
    collapsed = (
        'process 12:"python -m x";main (x.py:3);work (x.py:9) 5\n'
        'process 12:"python -m x";main (x.py:3) 2\n'
        'process 12:"python -m x" 4\n'  # nothing but the process frame
        "garbage without a count\n"
        "<native> 1\n"
    )
    profile = _profile.summarise(collapsed, pid=12)
    assert profile.self_samples == {"work (x.py)": 5, "main (x.py)": 2, "<native>": 1}
    assert profile.samples == 8


def _stat(pid: int, cpu: int, *, start: int = 1, sys: int = 0, role: str = "main") -> tuple:
    return role, ProcStat(pid, 1, start, cpu, sys, "x")


def test_cpu_per_request_by_role_counts_new_and_reused_pids_from_zero() -> None:
    hz = _profile.CLK_TCK
    before = {1: _stat(1, 100), 2: _stat(2, 50, role="workers"), 3: _stat(3, 10, role="workers")}
    after = {
        1: _stat(1, 100 + hz, sys=hz // 2),  # one second more, half of it in the kernel
        2: _stat(2, 50 + hz, role="workers"),
        3: _stat(3, hz, start=2, role="workers"),  # pid 3 exited and was reused: all of it counts
        4: _stat(4, hz, role="zygote"),  # new
    }
    cpu = _profile.cpu_us_per_request(before, after, 1000)
    assert cpu == {"main": 1000.0, "workers": 2000.0, "zygote": 1000.0, "total": 4000.0}
    sys = _profile.cpu_us_per_request(before, after, 1000, sys_only=True)
    assert sys == {"main": 500.0, "total": 500.0}
    assert _profile.cpu_us_per_request_by_pid(before, after, 1000)[2] == 1000.0


def test_snapshot_finds_the_tree_and_its_roles() -> None:
    # sh's $0 makes its command line look like a zygote's; its child sleep is then a worker.
    zygote = subprocess.Popen(
        ["sh", "-c", "sleep 60 & wait", "edgefn.runtime.zygote"], start_new_session=True
    )
    other = subprocess.Popen(["sleep", "60"])
    try:
        snap = wait_for(
            lambda: (s := _profile.snapshot(os.getpid())) and len(s) >= 4 and s,
            timeout_s=10,
            what="the children in /proc",
        )
        roles = {pid: role for pid, (role, _s) in snap.items()}
        assert roles[os.getpid()] == "main"
        assert roles[zygote.pid] == "zygote"
        assert roles[other.pid] == "children"
        (worker,) = [p for p, (_r, s) in snap.items() if s.ppid == zygote.pid]
        assert roles[worker] == "workers"
        assert snap[os.getpid()][1].cpu_ticks > 0  # this interpreter has run
    finally:
        os.killpg(zygote.pid, signal.SIGKILL)  # sh and its child, in the session sh leads
        for proc in (zygote, other):
            proc.kill()
            proc.wait()


def test_components_add_up_the_files_self_samples() -> None:
    profile = _profile.summarise((DATA / "worker.collapsed.txt").read_text(), pid=7)
    got = {r["component"]: r["self_samples"] for r in profile.components()}
    assert got == {
        "event loop (uvloop, in C: epoll, socket reads, callbacks)": 79,
        "asyncio in Python (timeouts, tasks, futures, queues, streams)": 15,  # streams.py
        "IPC frame codec": 9,  # decode, decode_length, encode
        "SDK objects (Request, Headers, Response)": 9,
        "worker runtime (dispatch, send)": 5,
        _profile.OTHER: 2,  # a dataclass __init__ (<string>) and urllib's parse_qsl
    }
    assert sum(got.values()) == profile.samples
