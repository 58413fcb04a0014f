"""The I/O parts of ``edgefn bench observe``: webhook receiver, traffic, tail, stats, incidents.

Each piece talks to a running planet the way a user or an operator would: requests to the
locations' public listeners, ``edgefn tail`` as a subprocess, the control API's ``/v1/stats``
and ``/v1/incidents`` with the planet's admin token, the hubs' NATS monitoring ``/connz`` for the
bytes each node's telemetry connection sent. The arithmetic on what they return is in
:mod:`edgefn.bench.observe` (pure, unit-tested).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import httpx

from edgefn.errors import PlanetError
from edgefn.planet.client import PlanetClient

__all__ = [
    "FaultTraffic",
    "LoadAverage",
    "TailRun",
    "WebhookReceiver",
    "function_requests",
    "incidents",
    "send",
    "telemetry_bytes",
]

# Bounds: a receiver keeps at most this many calls; a tail run is killed past its timeout.
_CALLS_MAX = 1000
_BODY_MAX = 1 << 20


class WebhookReceiver:
    """The incident routes' target: records (path, JSON body, monotonic time) of every POST.

    It listens on 127.0.0.1 only, for the bench's own planet, and only records: it acts on
    nothing it receives (the core sends unsigned JSON, docs/design/0021-incidents.md).
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], float]] = []
        calls, lock = self.calls, threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("content-length", "0") or 0), _BODY_MAX)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"unreadable": raw[:200].decode(errors="replace")}
                with lock:
                    if len(calls) < _CALLS_MAX:
                        calls.append((self.path, body, time.monotonic()))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def send(http: httpx.Client, url: str, function: str) -> tuple[str, int, str]:
    """One GET of ``function`` at a location's public URL: (request id, status, served by)."""
    r = http.get(url + "/", headers={"host": f"{function}.localhost"})
    return (
        r.headers.get("x-edgefn-request-id", ""),
        r.status_code,
        r.headers.get("x-edgefn-location", ""),
    )


class FaultTraffic:
    """One thread per location sending ``function`` requests every ``pace_s`` until stopped
    (at most ``max_s``); counts (served by, status)."""

    def __init__(
        self, urls: Mapping[str, str], function: str, *, pace_s: float, max_s: float
    ) -> None:
        self.served: dict[tuple[str, int], int] = {}
        self.errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_s
        self._threads = [
            threading.Thread(target=self._run, args=(u, function, pace_s), daemon=True)
            for u in urls.values()
        ]

    def __enter__(self) -> FaultTraffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _run(self, url: str, function: str, pace_s: float) -> None:
        with httpx.Client(timeout=10, trust_env=False) as http:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                try:
                    _, status, served = send(http, url, function)
                except httpx.HTTPError:
                    with self._lock:
                        self.errors += 1
                else:
                    with self._lock:
                        key = (served or "?", status)
                        self.served[key] = self.served.get(key, 0) + 1
                self._stop.wait(pace_s)


class TailRun:
    """``edgefn tail NAME --json --limit N`` as a subprocess; (arrival time, event) per line."""

    def __init__(self, state: Path, function: str, limit: int) -> None:
        argv = [sys.executable, "-m", "edgefn.cli.main", "tail", function, "--json"]
        argv += ["--limit", str(limit), "--state-dir", str(state)]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[tuple[float, dict[str, Any]]] = []
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, out: IO[str]) -> None:
        for line in out:
            self.lines.append((time.monotonic(), json.loads(line)))

    def running(self) -> bool:
        return self.proc.poll() is None

    def finish(self, timeout_s: float) -> str:
        """Wait for the command to end (killed by pid past ``timeout_s``); its stderr."""
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=10)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return err


def function_requests(client: PlanetClient, function: str) -> int:
    """Requests of ``function`` the stats API counts over the last hour, every location."""
    out = client.api_call("GET", f"/v1/stats/{function}", params={"window": "1h"})
    return sum(int(n) for row in out["rows"] for n in row["by_status"].values())


def incidents(client: PlanetClient) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = client.api_call("GET", "/v1/incidents")["incidents"]
    return found


def _hub_monitor_urls(state: Path, regions: Sequence[str]) -> list[str]:
    urls = []
    for region in regions:
        conf = (state / "regions" / region / f"hub-{region}.conf").read_text()
        found = re.search(r'"http"\s*:\s*"([^"]+)"', conf)
        if found is None:
            raise PlanetError(
                f"hub {region}'s nats-server configuration names no monitoring address",
                hint=f"see {state / 'regions' / region}",
            )
        urls.append(f"http://{found.group(1)}")
    return urls


def telemetry_bytes(state: Path, regions: Sequence[str]) -> dict[str, int]:
    """Bytes each node's telemetry connection (``telemetry-<loc>``) has sent its hub so far:
    ``in_bytes`` at the hub's nats-server (``/connz``), rollups and their protocol lines."""
    out: dict[str, int] = {}
    with httpx.Client(timeout=10, trust_env=False) as http:
        for url in _hub_monitor_urls(state, regions):
            connz = http.get(f"{url}/connz", params={"limit": 4096}).json()
            for conn in connz.get("connections") or []:
                name = str(conn.get("name") or "")
                if name.startswith("telemetry-"):
                    out[name.removeprefix("telemetry-")] = int(conn["in_bytes"])
    return out


class LoadAverage:
    """The machine's 1-minute load average sampled every ``every_s`` while the block runs, so a
    result measured on a busy machine says so (others' work shares these cores)."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.samples: list[float] = []
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LoadAverage:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while len(self.samples) < 100_000:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(self._every_s):
                return

    def summary(self) -> dict[str, float | None]:
        s = self.samples
        if not s:
            return {"min": None, "mean": None, "max": None}
        return {"min": round(min(s), 2), "mean": round(sum(s) / len(s), 2), "max": round(max(s), 2)}
