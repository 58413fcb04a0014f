"""Warm throughput of ``edgefn bench runtime``: the node against the bare servers, side by side.

Every server runs in its own process (``_serve.py``; workerd is its own binary) and is measured in
turn in one run, so the ratios compare figures taken minutes apart on the same machine:

1. ``bare_granian`` — hello-world ASGI on granian, one worker (skipped when granian is missing);
2. ``bare_uvicorn`` — the same app on uvicorn + httptools + uvloop, the stack the node listens with;
3. ``edgefn_node`` — a full edge node, strict isolation, serving a hello-world function through
   ingress, routing, IPC and the sandbox; then ``edgefn_node_relaxed`` with relaxed isolation;
4. ``workerd`` — Cloudflare's runtime serving the same in JS, when installed.

Before the load each server must answer one request with 200 and ``Hello, world!``, so no run
measures a server that is failing fast. Around the load the server's process tree is sampled in
``/proc`` (``_profile.snapshot``): ``cpu_us_per_request`` is where the CPU went, by role (``main``
is the process started: for the node, the node; then ``workers``, ``zygote``, and ``children`` such
as granian's worker), ``sys_us_per_request`` the kernel's part of it, and ``client_cpu_us_per_request`` what the load
generator itself spent. With a profile directory, each node gets a second, profiled load run
(py-spy attached; the figures above stay unperturbed) summarised in ``profile``: py-spy cannot read
a strict worker (``STRICT_WORKER_NOTE``), so the worker's profile comes from the relaxed node.
"""

from __future__ import annotations

import http.client
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edgefn.bench import _profile
from edgefn.bench._wrk import LoadGenerator
from edgefn.errors import EdgefnError

BODY = b"Hello, world!"
WORKERD_JS = 'export default { async fetch() { return new Response("Hello, world!"); } };\n'


def start_server(args: list[str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgefn.bench._serve", *args], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        stop_server(proc)
        raise EdgefnError(f"bench server {' '.join(args)} failed to start: {line.strip()!r}")
    return proc, int(line.split()[1])


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout:
        proc.stdout.close()


def check_hello(port: int, host_header: str) -> None:
    """One request before the load: the server must answer 200 with the hello-world body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/", headers={"Host": host_header})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200 or body != BODY:
        raise EdgefnError(
            f"the server on port {port} (Host {host_header}) answered {resp.status} {body[:200]!r}",
            hint="expected 200 'Hello, world!'; the benchmark would measure a failing server",
        )


def measure(
    gen: LoadGenerator, pid: int, port: int, host: str, concurrency: int, duration_s: float
) -> dict[str, Any]:
    """One load run against the server ``pid`` (and its descendants) listening on ``port``."""
    check_hello(port, host)
    before = _profile.snapshot(pid)
    run = gen.run(port=port, host_header=host, concurrency=concurrency, duration_s=duration_s)
    after = _profile.snapshot(pid)
    requests = max(1, int(run.result["requests"]))
    return {
        **run.result,
        "cpu_us_per_request": _profile.cpu_us_per_request(before, after, requests),
        "sys_us_per_request": _profile.cpu_us_per_request(before, after, requests, sys_only=True),
        "client_cpu_us_per_request": round(run.client_cpu_s * 1e6 / requests, 1),
    }


SAMPLER = f"py-spy record --nonblocking --format raw --rate {_profile.RATE_HZ}"
STRICT_WORKER_NOTE = (
    "py-spy reads a process's binaries through /proc/<pid>/root, and a strict worker's private "
    "root does not hold libpython (mapped before pivot_root); the relaxed node's worker has no "
    "private root and runs the same code"
)


def profiled(
    gen: LoadGenerator,
    pid: int,
    port: int,
    host: str,
    concurrency: int,
    duration_s: float,
    out_dir: Path,
    label: str,
) -> dict[str, Any]:
    """A second load run under py-spy: for the node and its busiest worker, the top functions by
    self time, each with its share of that process's CPU microseconds per request.

    One recorder per process (``--subprocesses`` from the node does not reach the zygote's
    double-forked workers); the worker is the one that has used the most CPU so far, i.e. the
    one that served the measured run.
    """
    exe = _profile.pyspy_exe()
    assert exe is not None, "the caller checks that py-spy is installed"
    out_dir.mkdir(parents=True, exist_ok=True)
    before = _profile.snapshot(pid)
    workers = [s for role, s in before.values() if role == "workers"]
    targets = {"node": pid}
    if workers:
        targets["worker"] = max(workers, key=lambda s: s.cpu_ticks).pid
    spies: dict[str, _profile.PySpy | str] = {}
    for name, target in targets.items():
        try:
            spies[name] = _profile.PySpy(exe, target, out_dir / f"{label}.{name}.collapsed.txt")
        except EdgefnError as err:
            spies[name] = f"{err.message} ({STRICT_WORKER_NOTE})"
    try:
        run = gen.run(port=port, host_header=host, concurrency=concurrency, duration_s=duration_s)
    finally:
        for spy in spies.values():
            if isinstance(spy, _profile.PySpy):
                spy.stop()
    after = _profile.snapshot(pid)
    requests = max(1, int(run.result["requests"]))
    per_pid = _profile.cpu_us_per_request_by_pid(before, after, requests)
    out: dict[str, Any] = {
        "rps_while_profiling": run.result["rps"],
        "requests": requests,
        "cpu_us_per_request": _profile.cpu_us_per_request(before, after, requests),
        "sys_us_per_request": _profile.cpu_us_per_request(before, after, requests, sys_only=True),
    }
    for name, spy in spies.items():
        if isinstance(spy, str):
            out[name] = spy
            continue
        target, us = targets[name], per_pid.get(targets[name])
        profile = _profile.summarise(spy.path.read_text(), pid=target)
        out[name] = {
            "pid": target,
            "stacks_file": str(spy.path),
            "samples": profile.samples,
            "cpu_us_per_request": us,
            "components": profile.components(us_per_request=us),
            "top_self": profile.top(us_per_request=us),
            "top_modules": profile.top_modules(us_per_request=us),
        }
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def workerd(
    gen: LoadGenerator, root: Path, concurrency: int, duration_s: float
) -> dict[str, Any] | str:
    exe = os.environ.get("EDGEFN_WORKERD") or shutil.which("workerd")
    if exe is None:
        return "not installed (npm package `workerd`; or set EDGEFN_WORKERD); skipped"
    port = _free_port()
    (root / "w.js").write_text(WORKERD_JS)
    (root / "config.capnp").write_text(
        'using Workerd = import "/workerd/workerd.capnp";\n'
        "const config :Workerd.Config = (\n"
        '  services = [(name = "main", worker = .w)],\n'
        f'  sockets = [(name = "http", address = "127.0.0.1:{port}", http = (), service = "main")]\n'
        ");\n"
        'const w :Workerd.Worker = (modules = [(name = "w", esModule = embed "w.js")], '
        'compatibilityDate = "2024-01-01");\n'
    )
    proc = subprocess.Popen(
        [exe, "serve", str(root / "config.capnp")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    return f"workerd exited with code {proc.returncode} before listening; skipped"
                if time.monotonic() >= deadline:
                    return f"workerd did not listen on 127.0.0.1:{port} within 10 s; skipped"
                time.sleep(0.05)
        return measure(gen, proc.pid, port, "localhost", concurrency, duration_s)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _ratio(a: Any, b: Any, key: str = "rps") -> float | None:
    if not (isinstance(a, dict) and isinstance(b, dict)) or not b.get(key):
        return None
    return round(float(a[key]) / float(b[key]), 3)


def _median_round(runs: list[Any]) -> Any:
    """The round with the median rps (the upper one of an even count), with every round's rps."""
    measured = [r for r in runs if isinstance(r, dict)]
    if not measured:
        return runs[0]
    median = dict(sorted(measured, key=lambda r: r["rps"])[len(measured) // 2])
    median["rounds_rps"] = [r["rps"] for r in measured]
    return median


def throughput(
    gen: LoadGenerator,
    fn_dir: Path,
    root: Path,
    *,
    concurrency: int,
    duration_s: float,
    profile_dir: Path | None,
    rounds: int = 1,
) -> dict[str, Any]:
    """Every server in turn, ``rounds`` times over (interleaved, so that a burst of load from
    elsewhere on the machine hits all of them alike); each keeps its median round."""
    assert rounds >= 1
    results: dict[str, Any] = {
        "load_generator": gen.describe(concurrency=concurrency, duration_s=duration_s),
        "rounds": rounds,
    }
    profile: dict[str, Any] | None = None
    if profile_dir is not None:
        if _profile.pyspy_exe() is None:
            profile = {"skipped": "py-spy not installed (pip install 'edgefn[dev]')"}
            profile_dir = None
        else:
            profile = {"sampler": SAMPLER}
    servers: list[tuple[str, list[str], str]] = [
        ("bare_granian", ["--mode", "bare-granian"], "localhost"),
        ("bare_uvicorn", ["--mode", "bare"], "localhost"),
        ("edgefn_node", ["--mode", "node", "--function-dir", str(fn_dir)], "hello.localhost"),
        (
            "edgefn_node_relaxed",
            ["--mode", "node-relaxed", "--function-dir", str(fn_dir)],
            "hello.localhost",
        ),
    ]
    runs: dict[str, list[Any]] = {}
    for round_ in range(rounds):
        for label, args, host in servers:
            if label == "bare_granian" and importlib.util.find_spec("granian") is None:
                runs.setdefault(label, []).append(
                    "skipped: granian not installed (pip install 'edgefn[dev]')"
                )
                continue
            proc, port = start_server(args)
            try:
                runs.setdefault(label, []).append(
                    measure(gen, proc.pid, port, host, concurrency, duration_s)
                )
                if (
                    profile_dir
                    and profile is not None
                    and round_ == 0
                    and label.startswith("edgefn")
                ):
                    profile[label] = profiled(
                        gen, proc.pid, port, host, concurrency, duration_s, profile_dir, label
                    )
            finally:
                stop_server(proc)
        runs.setdefault("workerd", []).append(workerd(gen, root, concurrency, duration_s))
    for label, measured in runs.items():
        results[label] = _median_round(measured)
    if profile is not None:
        results["profile"] = profile
    node = results["edgefn_node"]
    # The keys committed results and other code read first (ratio_node_vs_bare is vs uvicorn).
    results["ratio_node_vs_bare"] = _ratio(node, results["bare_uvicorn"])
    results["ratio_strict_vs_relaxed"] = _ratio(node, results["edgefn_node_relaxed"])
    for key, other in (
        ("ratio_node_vs_workerd", "workerd"),
        ("ratio_node_vs_bare_granian", "bare_granian"),
        ("ratio_node_vs_bare_uvicorn", "bare_uvicorn"),
    ):
        if (value := _ratio(node, results[other])) is not None:
            results[key] = value
    if (p99 := _ratio(node, results["workerd"], "p99_ms")) is not None:
        results["ratio_p99_node_vs_workerd"] = p99
    return results
