"""The pure parts of ``edgefn bench observe``: the arithmetic of the report, the planet it asks
for, the verdicts on incidents and webhooks, and the CLI's refusals of bad flags.

The measurements themselves need real planets (minutes); they are run by the bench and their
result is committed (benchmarks/results/observe.json). Nothing here depends on timing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefn.bench import _procfs
from edgefn.bench.observe import (
    FAULT_REGION,
    OFF_UP_ARGS,
    bytes_per_minute,
    choose_topology,
    cpu_split,
    fault_verdict,
    latency_summary,
    overhead_report,
    routes_toml,
    targets,
    topology_toml,
    webhook_verdict,
)
from edgefn.cli.main import app
from edgefn.observe.incident_routes import load_routes
from edgefn.world import get_location, load_topology


def test_latency_summary_is_nearest_rank_and_none_when_empty() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100 ms
    assert latency_summary(values) == {"n": 100, "p50": 51.0, "p99": 100.0, "max": 100.0}
    assert latency_summary([]) == {"n": 0, "p50": None, "p99": None, "max": None}


def _round(config: str, rps: float, p99: float = 10.0) -> dict[str, float | str]:
    return {"config": config, "rps": rps, "p50_ms": p99 / 2, "p99_ms": p99, "errors": 0}


def test_overhead_is_the_median_of_adjacent_off_on_pairs() -> None:
    """A machine that slows down during the run: each pair compares rounds run back to back,
    so the drift (1000 -> 800 rps) does not show as overhead; the ratio of medians would."""
    rounds = [
        _round("off", 1000),
        _round("on", 990, 12),
        _round("off", 900),
        _round("on", 882, 12),
        _round("off", 800),
        _round("on", 800, 12),
    ]
    out = overhead_report(rounds)
    assert out["pair_ratios"] == [0.99, 0.98, 1.0]
    assert out["ratio_on_vs_off"] == 0.99
    assert out["overhead_pct"] == 1.0
    assert (out["off"]["rps_median"], out["on"]["rps_median"]) == (900, 882)
    assert out["ratio_of_medians"] == 0.98
    assert out["p99_ratio_on_vs_off"] == 1.2
    assert out["off"]["rounds"] == out["on"]["rounds"] == 3
    # An (on, off) pair is not a pair: only off followed by on counts.
    assert overhead_report([_round("on", 500), _round("off", 1000), *rounds[:2]])[
        "pair_ratios"
    ] == [0.99]


def test_the_nodes_under_test_get_the_highest_cpu_and_the_rest_the_others() -> None:
    assert cpu_split({0, 1}) == ([1], [0])
    assert cpu_split([5, 2, 3, 2]) == ([5], [2, 3])
    assert cpu_split({0}) is None
    assert cpu_split([]) is None


def test_pinning_a_process_pins_every_thread_and_what_it_forks_later() -> None:
    """A real child (a thread and, later, a grandchild): every thread of it moves to the CPU,
    and a process it forks afterwards inherits it; a gone process pins nothing."""
    cpu = max(os.sched_getaffinity(0))
    code = (
        "import os, sys, threading, time\n"
        "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        "print('up', flush=True); sys.stdin.readline()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    print(sorted(os.sched_getaffinity(0)), flush=True); os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdin is not None
            assert child.stdout.readline().strip() == "up"
            assert _procfs.set_affinity(child.pid, [cpu]) == 2
            for task in Path(f"/proc/{child.pid}/task").iterdir():
                assert os.sched_getaffinity(int(task.name)) == {cpu}
            child.stdin.write("\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == f"[{cpu}]"
            assert child.wait(timeout=10) == 0
        finally:
            child.kill()
            child.wait()
    assert _procfs.set_affinity(child.pid, [cpu]) == 0


def test_overhead_needs_both_configurations() -> None:
    with pytest.raises(AssertionError):
        overhead_report([_round("off", 1000)])


def test_bytes_per_minute_skips_nodes_whose_count_restarted_or_is_missing() -> None:
    before = {"ams": 1000, "fra": 5000, "nrt": 0}
    after = {"ams": 1600, "fra": 100, "lax": 900}  # fra reconnected; nrt gone; lax new
    out = bytes_per_minute(before, after, wall_s=30, nodes=["ams", "fra", "nrt", "lax"])
    assert out["per_node"] == {"ams": 1200}
    assert (out["mean"], out["max"]) == (1200, 1200)
    assert out["nodes_missing"] == ["fra", "lax", "nrt"]
    empty = bytes_per_minute({}, {}, wall_s=1, nodes=["ams"])
    assert (empty["mean"], empty["max"]) == (None, None)


@pytest.mark.parametrize(("locations", "failing"), [(12, 5), (3, 1), (2, 1), (30, 20)])
def test_the_planet_has_the_failing_locations_in_one_region_and_others_elsewhere(
    tmp_path: Path, locations: int, failing: int
) -> None:
    ids, bad = choose_topology(locations, failing)
    assert len(ids) == len(set(ids)) == locations
    assert ids[:failing] == bad
    assert {get_location(i).region for i in bad} == {FAULT_REGION}
    west = [i for i in ids if get_location(i).region == FAULT_REGION]
    # One eu-west location keeps serving when there is room for it and one elsewhere.
    assert len(west) == (failing + 1 if locations - failing >= 2 else failing)
    assert any(get_location(i).region != FAULT_REGION for i in ids)
    # The topology file `edgefn up --topology` reads names exactly these locations.
    (tmp_path / "t.toml").write_text(topology_toml(ids))
    assert [x.id for x in load_topology(tmp_path / "t.toml")] == ids


def test_routes_send_each_region_to_its_own_path(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(routes_toml("http://127.0.0.1:9", ["eu-west", "oc", "eu-west"]))
    routes = load_routes(path)
    assert routes.urls_for(("eu-west",)) == ["http://127.0.0.1:9/r/eu-west"]
    assert routes.urls_for(("oc", "eu-west")) == [
        "http://127.0.0.1:9/r/oc",
        "http://127.0.0.1:9/r/eu-west",
    ]
    assert routes.urls_for(("me",)) == ["http://127.0.0.1:9/default"]


def _inc(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "kind": "function",
        "function": "faulty",
        "versions": ["v1"],
        "locations": ["cdg", "ams"],
    }
    return base | kw


@pytest.mark.parametrize(
    ("found", "exact"),
    [
        ([_inc()], True),
        ([_inc(), _inc(kind="connectivity", function="", locations=["nrt"])], True),
        ([_inc(locations=["ams"])], False),  # not every failing location yet
        ([_inc(locations=["ams", "bcn", "cdg"])], False),  # a healthy one named
        ([_inc(versions=["v0"])], False),
        ([_inc(), _inc()], False),  # two incidents for one cause
        ([], False),
    ],
)
def test_the_fault_verdict_wants_exactly_one_incident_naming_exactly_the_failing(
    found: list[dict[str, object]], exact: bool
) -> None:
    out = fault_verdict(found, function="faulty", version="v1", failing=["ams", "cdg"])
    assert out["names_function_version_locations"] is exact
    if exact:
        assert out["incident"] == found[0]


def test_the_webhook_verdict_counts_calls_about_the_function_per_route() -> None:
    about = {"event": "opened", "incident": {"function": "faulty"}}
    other = {"event": "opened", "incident": {"function": "", "kind": "connectivity"}}
    one = webhook_verdict(
        [("/r/eu-west", about), ("/r/oc", other)], function="faulty", route="/r/eu-west"
    )
    assert one["one_call_on_region_route"] is True
    assert one["calls_by_path"] == {"/r/eu-west": 1, "/r/oc": 1}
    twice = webhook_verdict(
        [("/r/eu-west", about), ("/r/eu-west", about)], function="faulty", route="/r/eu-west"
    )
    assert twice["one_call_on_region_route"] is False
    elsewhere = webhook_verdict([("/default", about)], function="faulty", route="/r/eu-west")
    assert elsewhere["one_call_on_region_route"] is False


def test_targets_of_the_parts_that_ran() -> None:
    fault = {
        "incident_s": 12.5,
        "after_confirm": {"names_function_version_locations": True},
        "webhooks": {
            "calls_about_function_by_path": {"/r/eu-west": 1},
            "one_call_on_region_route": True,
        },
    }
    result = {"overhead": {"overhead_pct": 3.5}, "fault": fault, "healthy": {"incidents_total": 0}}
    t = targets(result)
    assert t["overhead_pct"] == {"value": 3.5, "target": 3.0, "met": False}
    assert t["fault_to_incident_s"]["met"] is True
    assert t["one_webhook_call_on_region_route"]["met"] is True
    assert t["healthy_incidents"] == {"value": 0, "target": 0, "met": True}
    late = fault | {"incident_s": None}
    assert targets({"fault": late})["fault_to_incident_s"]["met"] is False
    assert set(targets({"overhead": {"overhead_pct": -0.4}})) == {"overhead_pct"}


def test_the_baseline_turns_telemetry_off() -> None:
    """The one place the "off" configuration is named; every flag in it is an `edgefn up` flag."""
    assert "--no-telemetry" in OFF_UP_ARGS
    help_text = CliRunner().invoke(app, ["up", "--help"], terminal_width=200).output
    for flag in OFF_UP_ARGS:
        assert flag in help_text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--part", "nope"], "--part 'nope' is not known"),
        (["--locations", "1"], "--locations 1 is out of range"),
        (["--locations", "12", "--failing", "12"], "--failing 12 must be from 1 to 11"),
        (["--failing", "0"], "--failing 0 must be from 1 to 11"),
        (["--healthy-seconds", "0"], "--healthy-seconds and --idle-seconds must be >= 1"),
        (["--rounds", "0"], "--rounds and --concurrency must be >= 1"),
    ],
)
def test_bad_flags_fail_before_any_planet_starts(args: list[str], message: str) -> None:
    res = CliRunner().invoke(app, ["bench", "observe", *args])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "hint:" in res.output
