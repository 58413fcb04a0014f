"""The pure parts of ``edgefn bench planet``: /proc accounting, message counting, targets, shape.

A fake ``/proc`` (files written under tmp_path) stands for a planet's process tree, so the role
and location of every process and the arithmetic are checked exactly; one real child process
checks that the readers parse the kernel's own files. Nothing here depends on timing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.waiting import wait_for
from typer.testing import CliRunner

from edgefn.bench import _procfs
from edgefn.bench.planet import (
    TARGETS,
    activity_of,
    evaluate_targets,
    message_report,
    scaling,
)
from edgefn.cli.main import app

PY = "/venv/bin/python"


def _stat(pid: int, ppid: int, ticks: tuple[int, int], comm: str = "python") -> str:
    # Fields after "(comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt
    # cmajflt utime stime ...
    rest = ["S", str(ppid), "1", "1", "0", "-1", "0", "0", "0", "0", "0", *map(str, ticks)]
    return f"{pid} ({comm}) {' '.join([*rest, '0', '0', '20', '0', '1'])}\n"


def _proc(root: Path, pid: int, ppid: int, argv: list[str], ticks: tuple[int, int]) -> None:
    d = root / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    (d / "stat").write_text(_stat(pid, ppid, ticks, comm="odd) name"))
    (d / "task" / str(pid)).mkdir(parents=True, exist_ok=True)
    (d / "task" / str(pid) / "status").write_text(
        f"Name:\tx\nvoluntary_ctxt_switches:\t{sum(ticks) * 3}\nnonvoluntary_ctxt_switches:\t{pid}\n"
    )
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (d / "smaps_rollup").write_text(
        f"00400000-7fff [rollup]\nRss:  {pid * 10} kB\nPss:  {pid * 5} kB\nShared_Clean: 1 kB\n"
    )


def _edgefn(*args: str) -> list[str]:
    return [PY, "-m", "edgefn.cli.main", *args]


def _planet(root: Path, *, node_ticks: int = 0) -> None:
    """A supervisor (10) with a core (11, nats 12), a hub (13, nats 14), two nodes (20, 30)
    each with a zygote and a worker; a stray process (99) outside the tree."""
    zygote = [PY, "-I", "-m", "edgefn.runtime.zygote", "--fd", "14"]
    _proc(root, 1, 0, ["/sbin/init"], (0, 0))
    _proc(root, 10, 1, _edgefn("up", "--locations", "2"), (100, 0))
    _proc(root, 11, 10, _edgefn("core", "--state-dir", "x"), (10, 10))
    _proc(root, 12, 11, ["/venv/bin/nats-server", "-c", "core.conf"], (5, 5))
    _proc(root, 13, 10, _edgefn("region", "--name", "eu"), (1, 1))
    _proc(root, 14, 13, ["/venv/bin/nats-server", "-c", "hub.conf"], (2, 2))
    for pid, loc in ((20, "fra"), (30, "nrt")):
        _proc(root, pid, 10, _edgefn("node", "--location", loc), (node_ticks, node_ticks))
        _proc(root, pid + 1, pid, zygote, (1, 0))
        _proc(root, pid + 2, pid + 1, zygote, (0, 1))
    _proc(root, 99, 1, _edgefn("node", "--location", "zzz"), (500, 500))


def test_tree_roles_and_locations(tmp_path: Path) -> None:
    """Every process under the supervisor gets its role; node children inherit the location."""
    _planet(tmp_path)
    tree = _procfs.process_tree(10, proc=tmp_path)
    roles = {pid: (info.role, info.location) for pid, info in tree.items()}
    assert roles == {
        10: ("supervisor", ""),
        11: ("core", ""),
        12: ("core-nats", ""),
        13: ("hub", ""),
        14: ("hub-nats", ""),
        20: ("node", "fra"),
        21: ("zygote", "fra"),
        22: ("worker", "fra"),
        30: ("node", "nrt"),
        31: ("zygote", "nrt"),
        32: ("worker", "nrt"),
    }


def test_cpu_report_sums_per_role_and_location(tmp_path: Path) -> None:
    """Δticks / CLK_TCK / wall: nodes that used 1 s of CPU (0.5 user + 0.5 system) in 10 s
    use 10 % of a core each; processes gone by the second sample are left out and counted."""
    _planet(tmp_path, node_ticks=0)
    tree = _procfs.process_tree(10, proc=tmp_path)
    before = _procfs.sample(tree, proc=tmp_path)
    _planet(tmp_path, node_ticks=50)  # +100 ticks per node at CLK_TCK 100
    (tmp_path / "32" / "stat").unlink()
    after = _procfs.sample(tree, proc=tmp_path)
    report = _procfs.cpu_report(before, after, wall_s=10.0, locations=2, clk_tck=100)
    assert report["by_role_pct_of_one_core"] == {
        "supervisor": 0.0,
        "core": 0.0,
        "core-nats": 0.0,
        "hub": 0.0,
        "hub-nats": 0.0,
        "node": 20.0,
        "zygote": 0.0,
        "worker": 0.0,
    }
    assert report["by_location_pct_of_one_core"] == {"fra": 10.0, "nrt": 10.0}
    # Each node switched 3 × 100 more times (voluntary) in 10 s: 30/s each, 60/s for the role.
    assert report["by_role_wakeups_per_s"]["node"] == 60.0
    assert report["by_role_wakeups_per_s"]["supervisor"] == 0.0
    assert report["total_pct_of_one_core"] == 20.0
    assert report["per_location_pct_of_one_core"] == 10.0
    assert report["shared_pct_of_one_core"] == 0.0
    assert report["processes"] == 10
    assert report["processes_not_in_both_samples"] == 1


def test_memory_report_from_smaps_rollup(tmp_path: Path) -> None:
    """PSS per location is node + zygote + worker; an unreadable rollup is counted, not zero."""
    _planet(tmp_path)
    (tmp_path / "14" / "smaps_rollup").unlink()
    tree = _procfs.process_tree(10, proc=tmp_path)
    samples = _procfs.sample(tree, memory=True, proc=tmp_path)
    report = _procfs.memory_report(samples.values(), locations=2)
    assert report["unreadable_processes"] == 1
    # Pss = 5 kB × pid: fra 20+21+22 = 63 → 315 kB, nrt 30+31+32 = 93 → 465 kB.
    assert report["edge_pss_per_location_mb"] == {"mean": round(390 / 1024, 1), "max": 0.5}
    total_kb = 5 * (10 + 11 + 12 + 13 + 20 + 21 + 22 + 30 + 31 + 32)
    assert report["pss_total_mb"] == round(total_kb / 1024, 1)


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    # The child says when it has allocated; it then blocks on stdin (a voluntary context switch),
    # so every reading below is of a process that has run, not one still being exec'd.
    proc = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; x = bytearray(8 << 20); print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


def test_real_proc_of_a_child(child: subprocess.Popen[bytes]) -> None:
    """The kernel's own stat and smaps_rollup parse: our child is in our tree, ppid is us."""
    ppid, ticks = _procfs.read_stat(child.pid)
    assert ppid == os.getpid()
    assert ticks >= 0
    tree = _procfs.process_tree(os.getpid())
    assert tree[child.pid].ppid == os.getpid()
    assert tree[child.pid].role == "other"
    wait_for(lambda: _procfs.read_switches(child.pid) > 0, timeout_s=10, what="a context switch")
    rss, pss = _procfs.read_memory_kb(child.pid)
    assert rss is not None
    assert pss is not None
    assert 0 < pss <= rss


def _conn(cid: int, name: str | None, msgs: tuple[int, int], kind: str = "Client") -> dict:
    return {
        "cid": cid,
        "name": name,
        "kind": kind,
        "in_msgs": msgs[0],
        "out_msgs": msgs[1],
        "in_bytes": msgs[0] * 100,
        "out_bytes": msgs[1] * 100,
    }


def test_activity_from_connection_names() -> None:
    assert activity_of({"name": "traffic-fra"}) == "traffic_bus"
    assert activity_of({"name": "telemetry-fra"}) == "telemetry"
    assert activity_of({"name": "node-fra"}) == "node_agent"
    assert activity_of({"name": "kv-bench-fra"}) == "kv_replica"
    assert activity_of({"name": "edgefn-control"}) == "control_service"
    assert activity_of({"name": None}) == "other"
    assert activity_of({"name": "hub-eu", "kind": "Leafnode"}) == "long_haul_leafnode"
    assert activity_of({"name": None, "kind": "Leafnode"}) is None


def test_message_report_deltas_per_activity() -> None:
    """Deltas over the window, per activity and per location; a connection that came during the
    window is left out, as is a hub's end of a leafnode."""
    hub_before = {
        "server_id": "H",
        "connections": [
            _conn(1, "traffic-fra", (10, 100)),
            _conn(2, "traffic-nrt", (10, 100)),
            _conn(3, None, (0, 0), kind="Leafnode"),
        ],
    }
    hub_after = {
        "server_id": "H",
        "connections": [
            _conn(1, "traffic-fra", (30, 300)),
            _conn(2, "traffic-nrt", (30, 300)),
            _conn(3, None, (999, 999), kind="Leafnode"),
            _conn(4, "kv-bench-fra", (50, 50)),
        ],
    }
    report = message_report([hub_before], [hub_after], wall_s=10.0, locations=2)
    assert list(report) == ["traffic_bus"]
    traffic = report["traffic_bus"]
    assert traffic["connections"] == 2
    assert traffic["sent_per_s"] == 4.0
    assert traffic["received_per_s"] == 40.0
    assert traffic["sent_per_s_per_location"] == 2.0
    assert traffic["received_per_s_per_location"] == 20.0
    assert traffic["bytes_per_s"] == 4400


def _targets(**over: object) -> dict:
    base: dict = {
        "locations": 12,
        "slowest_path_rtt_ms": 200.0,
        "deploy_last_location_ms": [300.0, 440.0],
        "kv_p99_ms": 290.0,
        "kv_not_seen": 0,
        "idle_pct_per_location": 0.4,
        "idle_pct_total": 4.8,
    }
    return evaluate_targets(**{**base, **over})


def test_targets_met_and_missed() -> None:
    t = _targets()
    assert t["deploy_last_location_max_ms"] == {"value": 440.0, "target": 450.0, "met": True}
    assert t["kv_propagation_p99_ms"] == {"value": 290.0, "target": 300.0, "met": True}
    assert t["idle_pct_of_one_core_per_location"]["met"] is True
    assert t["idle_cores_total"] == {"value": 0.048, "target": 0.3, "met": True, "applies": False}
    assert _targets(locations=50)["idle_cores_total"]["applies"] is True
    assert _targets(deploy_last_location_ms=[451.0])["deploy_last_location_max_ms"]["met"] is False
    assert _targets(kv_p99_ms=300.5)["kv_propagation_p99_ms"]["met"] is False
    assert _targets(idle_pct_per_location=0.6)["idle_pct_of_one_core_per_location"]["met"] is False


def test_incomplete_propagation_misses_its_target() -> None:
    """A location that never served a deploy, or never saw a write, is a miss however fast the
    others were."""
    deploy = _targets(deploy_last_location_ms=[100.0, None])["deploy_last_location_max_ms"]
    assert deploy == {"value": 100.0, "target": 450.0, "met": False}
    assert _targets(kv_not_seen=1)["kv_propagation_p99_ms"]["met"] is False
    assert _targets(kv_p99_ms=float("nan"))["kv_propagation_p99_ms"]["met"] is False
    assert TARGETS["deploy_slack_ms"] == 250.0


def _run(n: int, traffic_per_loc: float, agent_per_loc: float, cpu_total: float) -> dict:
    def row(per_loc: float) -> dict:
        return {
            "sent_per_s_per_location": per_loc / 4,
            "received_per_s_per_location": per_loc * 3 / 4,
        }

    return {
        "locations": n,
        "idle": {
            "messages": {"traffic_bus": row(traffic_per_loc), "node_agent": row(agent_per_loc)},
            "cpu": {"total_pct_of_one_core": cpu_total},
        },
    }


def test_scaling_exponents() -> None:
    """Per-location rate doubling with N is N² in total (exponent 2); a constant one is N (1)."""
    table = scaling([_run(12, 80.0, 3.0, 24.0), _run(6, 40.0, 3.0, 12.0)])
    assert table["locations"] == [6, 12]
    traffic, agent = table["messages"]["traffic_bus"], table["messages"]["node_agent"]
    assert traffic["msgs_per_s_per_location"] == {"6": 40.0, "12": 80.0}
    assert traffic["exponent"] == 2.0
    assert traffic["grows_with_square"] is True
    assert agent["exponent"] == 1.0
    assert agent["grows_with_square"] is False
    assert table["cpu_exponent"] == 1.0
    assert table["cpu_pct_of_one_core_per_location"] == {"6": 2.0, "12": 2.0}


def test_machine_busy_ticks_and_what_was_not_the_planet(tmp_path: Path) -> None:
    """Busy = all ticks but idle and iowait; the rest of the machine is busy minus the planet."""
    (tmp_path / "stat").write_text("cpu  100 5 50 1000 40 3 2 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    assert _procfs.machine_busy_ticks(proc=tmp_path) == 160
    _planet(tmp_path, node_ticks=0)
    tree = _procfs.process_tree(10, proc=tmp_path)
    before = _procfs.sample(tree, proc=tmp_path)
    _planet(tmp_path, node_ticks=50)
    after = _procfs.sample(tree, proc=tmp_path)
    report = _procfs.cpu_report(
        before, after, wall_s=10.0, locations=2, machine_busy_ticks=300, clk_tck=100
    )
    assert report["machine_busy_pct_of_one_core"] == 30.0
    assert report["outside_planet_pct_of_one_core"] == 10.0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--locations", "1"], "--locations must be from 2 to 300"),
        (["--locations", "6", "--locations", "6"], "the same planet size twice"),
        (["--window", "0"], "--window must be > 0 s"),
        (["--settle", "-1"], "--settle >= 0 s"),
        (["--deploys", "0"], "--deploys must be from 1 to 50"),
        (["--writes", "0"], "--writes from 1 to 1000"),
    ],
)
def test_bad_flags_are_refused_before_any_planet_starts(args: list[str], says: str) -> None:
    result = CliRunner().invoke(app, ["bench", "planet", *args, "--json"])
    assert result.exit_code == 2
    assert says in result.output
