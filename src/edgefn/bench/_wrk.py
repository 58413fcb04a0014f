"""Closed-loop HTTP load for ``edgefn bench runtime``: ``wrk`` when it is installed, else asyncio.

The field measures web servers with ``wrk`` (a C load generator: one thread serves thousands of
requests per core-millisecond, so the server, not the client, is what saturates). Our own asyncio
generator (``_http_load.py``) costs tens of microseconds of Python per request and saturates first
against a fast server; it stays as the fallback on machines without ``wrk``, and the result says
which one drove the load (``LoadGenerator.describe``).

``parse_wrk`` reads wrk's standard report (``--latency`` adds the percentile block)::

    Running 6s test @ http://127.0.0.1:8000/
      1 threads and 64 connections
      Thread Stats   Avg      Stdev     Max   +/- Stdev
        Latency     1.05ms  311.13us   8.95ms   87.74%
        Req/Sec    61.27k     3.51k   65.81k    80.00%
      Latency Distribution
         50%    0.98ms
         99%    2.20ms
      365712 requests in 6.00s, 47.08MB read
      Socket errors: connect 0, read 0, write 0, timeout 12     (only when there were any)
      Non-2xx or 3xx responses: 5                              (only when there were any)
    Requests/sec:  60948.25

wrk counts a response as "Non-2xx or 3xx" when its status is 400 or more; every server under test
answers 200 to the one request it gets (the caller checks that once before the load).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Literal

from edgefn.errors import EdgefnError

Kind = Literal["wrk", "asyncio"]

# wrk prints times with the unit that keeps the number small (format_time in wrk's units.c).
_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_TIME = r"([0-9.]+)(us|ms|s|m|h)"
_SUMMARY = re.compile(r"^\s*(\d+) requests in " + _TIME + r",", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([0-9.]+)\s*$", re.MULTILINE)
_LATENCY = re.compile(r"^\s*Latency\s+" + _TIME + r"\s+" + _TIME + r"\s+" + _TIME, re.MULTILINE)
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+" + _TIME + r"\s*$", re.MULTILINE)
_SOCKET_ERRORS = re.compile(
    r"^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)\s*$", re.MULTILINE
)
_NON_2XX = re.compile(r"^\s*Non-2xx or 3xx responses: (\d+)\s*$", re.MULTILINE)
_VERSION = re.compile(r"^wrk\s+(?:\S*/)?(\d+\.\d+(?:\.\d+)?)")

WARMUP_S = 1


@dataclass(frozen=True, slots=True)
class WrkReport:
    """What one wrk run measured. Latencies in milliseconds."""

    requests: int
    duration_s: float
    rps: float
    latency_ms_mean: float
    latency_ms_max: float
    latency_ms_p50: float
    latency_ms_p75: float
    latency_ms_p90: float
    latency_ms_p99: float
    errors_connect: int
    errors_read: int
    errors_write: int
    timeouts: int
    status_errors: int  # responses with a status >= 400 ("Non-2xx or 3xx responses")

    @property
    def errors(self) -> int:
        return (
            self.errors_connect
            + self.errors_read
            + self.errors_write
            + self.timeouts
            + self.status_errors
        )

    def as_dict(self) -> dict[str, Any]:
        """The asyncio generator's keys (requests, errors, rps, p50_ms, p99_ms) and wrk's extras."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "rps": round(self.rps, 1),
            "p50_ms": self.latency_ms_p50,
            "p99_ms": self.latency_ms_p99,
            "p75_ms": self.latency_ms_p75,
            "p90_ms": self.latency_ms_p90,
            "mean_ms": self.latency_ms_mean,
            "max_ms": self.latency_ms_max,
            "duration_s": self.duration_s,
            "socket_errors": {
                "connect": self.errors_connect,
                "read": self.errors_read,
                "write": self.errors_write,
                "timeout": self.timeouts,
            },
            "status_4xx_5xx": self.status_errors,
        }


def _ms(value: str, unit: str) -> float:
    return round(float(value) * _TIME_UNITS_MS[unit], 4)


def parse_wrk(text: str) -> WrkReport:
    """Parse wrk's report (run with ``--latency``); raise EdgefnError naming what is missing."""
    summary, rps, latency = _SUMMARY.search(text), _RPS.search(text), _LATENCY.search(text)
    percentiles = {int(m[1]): _ms(m[2], m[3]) for m in _PERCENTILE.finditer(text)}
    missing = [
        name
        for name, found in (
            ("'N requests in T' summary", summary),
            ("'Requests/sec:' line", rps),
            ("'Latency' thread stats", latency),
            ("'Latency Distribution' block (run wrk with --latency)", len(percentiles) == 4),
        )
        if not found
    ]
    if missing or summary is None or rps is None or latency is None:
        head = "\n".join(text.strip().splitlines()[:12])
        raise EdgefnError(
            f"cannot read wrk's output: no {', no '.join(missing)}; it printed:\n{head}",
            hint="check `wrk --version` (wrk 4.x is expected) and that the server answered",
        )
    sock = _SOCKET_ERRORS.search(text)
    connect, read, write, timeout = (int(g) for g in sock.groups()) if sock else (0, 0, 0, 0)
    non_2xx = _NON_2XX.search(text)
    return WrkReport(
        requests=int(summary[1]),
        duration_s=round(_ms(summary[2], summary[3]) / 1000, 3),
        rps=float(rps[1]),
        latency_ms_mean=_ms(latency[1], latency[2]),
        latency_ms_max=_ms(latency[5], latency[6]),
        latency_ms_p50=percentiles[50],
        latency_ms_p75=percentiles[75],
        latency_ms_p90=percentiles[90],
        latency_ms_p99=percentiles[99],
        errors_connect=connect,
        errors_read=read,
        errors_write=write,
        timeouts=timeout,
        status_errors=int(non_2xx[1]) if non_2xx else 0,
    )


def parse_wrk_version(text: str) -> str:
    """``wrk debian/4.1.0-3+b2 [epoll] Copyright ...`` -> ``4.1.0``; "unknown" when unreadable."""
    m = _VERSION.search(text.strip())
    return m[1] if m else "unknown"


@dataclass(frozen=True, slots=True)
class LoadGenerator:
    """The generator that drives the warm-throughput runs: wrk (``exe`` set) or asyncio."""

    kind: Kind
    exe: str | None = None
    version: str = ""
    threads: int = 1

    def describe(self, *, concurrency: int, duration_s: float) -> str:
        if self.kind == "asyncio":
            return "asyncio"
        return f"wrk {self.version} -t{self.threads} -c{concurrency} -d{wrk_seconds(duration_s)}s"

    def run(self, *, port: int, host_header: str, concurrency: int, duration_s: float) -> LoadRun:
        """A warm-up (discarded), then the measured run; the client's own CPU time is kept."""
        if self.kind == "asyncio":
            argv = _asyncio_argv(port, host_header, concurrency, duration_s)
            out, cpu_s = _run_measured(argv)
            return LoadRun(dict(json.loads(out)), cpu_s)
        assert self.exe is not None
        _run_measured(_wrk_argv(self, port, host_header, concurrency, WARMUP_S))
        out, cpu_s = _run_measured(_wrk_argv(self, port, host_header, concurrency, duration_s))
        return LoadRun(parse_wrk(out).as_dict(), cpu_s)


@dataclass(frozen=True, slots=True)
class LoadRun:
    result: dict[str, Any]
    client_cpu_s: float


def wrk_seconds(duration_s: float) -> int:
    """wrk takes whole seconds (``-d6s``); shorter runs are rounded up to one."""
    return max(1, round(duration_s))


def choose(prefer: Literal["auto", "wrk", "asyncio"], path: str | None = None) -> LoadGenerator:
    """wrk when ``prefer`` allows it and it is on ``path`` (default ``$PATH``), else asyncio."""
    if prefer == "asyncio":
        return LoadGenerator("asyncio")
    exe = shutil.which("wrk", path=path)
    if exe is None:
        if prefer == "wrk":
            raise EdgefnError(
                "--load-generator wrk: wrk is not on PATH",
                hint="install it (`apt-get install wrk`) or use --load-generator auto",
            )
        return LoadGenerator("asyncio")
    probe = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    return LoadGenerator("wrk", exe, parse_wrk_version(probe.stdout + probe.stderr))


def _wrk_argv(
    gen: LoadGenerator, port: int, host_header: str, concurrency: int, duration_s: float
) -> list[str]:
    assert gen.exe is not None
    return [
        gen.exe,
        f"-t{gen.threads}",
        f"-c{concurrency}",
        f"-d{wrk_seconds(duration_s)}s",
        "--latency",
        "-H",
        f"Host: {host_header}",
        f"http://127.0.0.1:{port}/",
    ]


def _asyncio_argv(port: int, host_header: str, concurrency: int, duration_s: float) -> list[str]:
    return [
        sys.executable,
        "-m",
        "edgefn.bench._http_load",
        "--port",
        str(port),
        "--host-header",
        host_header,
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration_s),
    ]


def _run_measured(argv: list[str], timeout_s: float = 600) -> tuple[str, float]:
    """Run ``argv`` to completion; its stdout and the CPU seconds it used (wait4's rusage).

    The output goes to temporary files rather than pipes so that the child can be reaped with
    ``wait4`` (which returns its rusage) without a reader thread; the poll ends within 20 ms of
    its exit.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        deadline = time.monotonic() + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise EdgefnError(f"{argv[0]} ran for more than {timeout_s:.0f} s; killed it")
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise EdgefnError(
            f"{os.path.basename(argv[0])} exited with {proc.returncode}: {stderr.strip()[-500:]}",
            hint=f"run it by hand: {' '.join(argv)}",
        )
    return stdout, usage.ru_utime + usage.ru_stime
