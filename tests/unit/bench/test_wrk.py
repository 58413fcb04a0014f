"""The wrk side of ``edgefn bench runtime``: reading wrk's real output, and choosing wrk or asyncio.

The outputs in tests/data/wrk are wrk 4.1.0's, captured as PROVENANCE.md there says. A fake
``wrk`` (a shell script on a temporary PATH) stands in where the choice or the command line is what
is tested: nothing here runs a load or depends on timing.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from edgefn.bench import _wrk
from edgefn.errors import EdgefnError

DATA = Path(__file__).parents[2] / "data" / "wrk"


def test_a_clean_run_is_read_with_its_percentiles_in_milliseconds() -> None:
    report = _wrk.parse_wrk((DATA / "node-200.txt").read_text())
    assert report.requests == 4434
    assert report.duration_s == 3.07
    assert report.rps == 1444.20
    assert (report.latency_ms_mean, report.latency_ms_max) == (70.79, 852.73)
    p = (report.latency_ms_p50, report.latency_ms_p75, report.latency_ms_p90)
    assert p == (38.79, 49.61, 124.15)
    assert report.latency_ms_p99 == 633.61
    assert report.errors == 0


def test_non_2xx_responses_are_errors() -> None:
    report = _wrk.parse_wrk((DATA / "node-404.txt").read_text())
    assert report.requests == 5581
    assert report.status_errors == 5581
    assert report.errors == 5581


def test_socket_errors_and_microsecond_latencies() -> None:
    report = _wrk.parse_wrk((DATA / "errors.txt").read_text())
    assert (report.errors_connect, report.errors_read, report.errors_write) == (0, 12, 0)
    assert report.timeouts == 0
    assert report.status_errors == 627
    assert report.errors == 639
    assert report.latency_ms_p50 == 0.519  # "519.00us"
    out = report.as_dict()
    assert out["socket_errors"] == {"connect": 0, "read": 12, "write": 0, "timeout": 0}
    assert (out["requests"], out["errors"], out["rps"]) == (31416, 639, 10441.8)
    assert (out["p50_ms"], out["p99_ms"]) == (0.519, 11.38)


def test_output_without_a_report_is_an_error_that_says_what_is_missing() -> None:
    assert (DATA / "refused.txt").read_text() == ""  # wrk said why on stderr only
    with pytest.raises(EdgefnError, match=r"Requests/sec"):
        _wrk.parse_wrk((DATA / "refused.txt").read_text())


def test_output_without_latency_distribution_asks_for_latency() -> None:
    text = (DATA / "node-200.txt").read_text()
    cut = text.split("  Latency Distribution")[0] + "\n" + text.split("633.61ms\n")[1]
    with pytest.raises(EdgefnError, match=r"--latency") as err:
        _wrk.parse_wrk(cut)
    assert "4434 requests" in str(err.value)  # what wrk printed is shown


def test_version() -> None:
    assert _wrk.parse_wrk_version((DATA / "version.txt").read_text()) == "4.1.0"
    assert _wrk.parse_wrk_version("wrk 4.2.0 [epoll] Copyright (C) 2012 Will Glozer") == "4.2.0"
    assert _wrk.parse_wrk_version("something else") == "unknown"


def test_durations_are_whole_seconds() -> None:
    assert [_wrk.wrk_seconds(d) for d in (0.2, 1.4, 6.0, 6.6)] == [1, 1, 6, 7]


def _fake_wrk(bindir: Path, body: str) -> Path:
    bindir.mkdir(exist_ok=True)
    exe = bindir / "wrk"
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def test_without_wrk_on_path_the_asyncio_generator_is_chosen(tmp_path: Path) -> None:
    gen = _wrk.choose("auto", path=str(tmp_path))
    assert gen.kind == "asyncio"
    assert gen.describe(concurrency=64, duration_s=6) == "asyncio"
    with pytest.raises(EdgefnError, match="not on PATH"):
        _wrk.choose("wrk", path=str(tmp_path))


def test_with_wrk_on_path_it_is_chosen_and_described(tmp_path: Path) -> None:
    _fake_wrk(tmp_path / "bin", f"cat {DATA / 'version.txt'}\nexit 1\n")
    gen = _wrk.choose("auto", path=str(tmp_path / "bin"))
    assert gen.kind == "wrk"
    assert gen.describe(concurrency=64, duration_s=6) == "wrk 4.1.0 -t1 -c64 -d6s"
    assert _wrk.choose("asyncio", path=str(tmp_path / "bin")).kind == "asyncio"


def test_a_run_passes_the_settings_and_reads_the_report(tmp_path: Path) -> None:
    args = tmp_path / "args"
    exe = _fake_wrk(tmp_path / "bin", f'echo "$@" >> {args}\ncat {DATA / "node-200.txt"}\n')
    gen = _wrk.LoadGenerator("wrk", str(exe), "4.1.0")
    run = gen.run(port=8123, host_header="hello.localhost", concurrency=64, duration_s=6)
    assert run.result["requests"] == 4434
    assert run.result["p99_ms"] == 633.61
    assert run.client_cpu_s >= 0
    warmup, measured = args.read_text().splitlines()
    assert warmup == "-t1 -c64 -d1s --latency -H Host: hello.localhost http://127.0.0.1:8123/"
    assert measured == "-t1 -c64 -d6s --latency -H Host: hello.localhost http://127.0.0.1:8123/"


def test_a_failing_wrk_is_an_error_with_its_message(tmp_path: Path) -> None:
    exe = _fake_wrk(tmp_path / "bin", 'echo "unable to connect to 127.0.0.1:9" >&2\nexit 1\n')
    gen = _wrk.LoadGenerator("wrk", str(exe), "4.1.0")
    with pytest.raises(EdgefnError, match="exited with 1: unable to connect"):
        gen.run(port=9, host_header="localhost", concurrency=1, duration_s=1)
