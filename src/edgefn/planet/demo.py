"""``make demo``: a local planet serving the example functions to simulated users worldwide.

Steps: start a planet (``edgefn up --detach`` in ``.edgefn/demo``), deploy ``examples/hello``,
``examples/echo-stream`` and ``examples/durable-counter``, then send requests from users in cities
on every continent through the anycast entry (each request carries the user's city in
``x-edgefn-client-location``; the entry adds the modelled network RTT). A live table shows, per
city, which location served it, with what version and latency; below it, one durable object
counts a click from every city in turn, wherever the city is served, at its one home. Halfway through, a new version of ``hello`` rolls out with a canary, so the
table shows versions changing location by location. Stops after ``DEMO_SECONDS`` (0: Ctrl-C) and
takes the planet down.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

DEMO_CITIES = (
    "Tokyo", "Seoul", "Jakarta", "Singapore", "Mumbai", "Dubai", "Cairo", "Lagos", "Nairobi",
    "Johannesburg", "London", "Paris", "Frankfurt", "Moscow", "New York", "Chicago", "Toronto",
    "Los Angeles", "Mexico City", "Sao Paulo", "Buenos Aires", "Sydney", "Auckland",
)  # fmt: skip


@dataclass(slots=True)
class CityStats:
    city: str
    served_by: str = "-"
    version: str = "-"
    ok: int = 0
    failed: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=50))
    message: str = ""


def _edgefn(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgefn.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


class Demo:
    def __init__(
        self,
        *,
        locations: int,
        seconds: float,
        state_dir: Path,
        examples: Path,
        entry_port: int,
        rps_per_city: float = 2.0,
    ) -> None:
        self.locations = locations
        self.seconds = seconds
        self.state_dir = state_dir
        self.examples = examples
        self.entry_port = entry_port
        self.rps = rps_per_city
        self.stats = {c: CityStats(c) for c in DEMO_CITIES}
        self.events: deque[str] = deque(maxlen=6)
        self.planet: dict[str, Any] = {}
        # The durable counter: its last count, its home, and the clicks acknowledged.
        self.counter: dict[str, Any] = {"n": 0, "home": "-", "acked": 0, "failed": 0}

    def start_planet(self) -> None:
        res = _edgefn(
            "up",
            "--locations",
            str(self.locations),
            "--detach",
            "--json",
            "--state-dir",
            str(self.state_dir),
            "--entry-port",
            str(self.entry_port),
            "--gate-min-requests",
            "20",
            "--gate-soak-ms",
            "3000",
            "--gate-advance-requests",
            "40",
        )
        if res.returncode != 0:
            raise SystemExit(f"could not start the planet:\n{res.stderr}")
        self.planet = json.loads(res.stdout)

    def deploy(self, path: Path, strategy: str = "immediate", wait: bool = True) -> str:
        args = [
            "deploy",
            str(path),
            "--strategy",
            strategy,
            "--json",
            "--state-dir",
            str(self.state_dir),
        ]
        res = _edgefn(*args, *(["--wait"] if wait else []))
        if res.returncode != 0:
            raise SystemExit(f"deploy of {path} failed:\n{res.stderr}")
        out = json.loads(res.stdout)
        self.events.append(f"deployed {out['function']} {out['version']} ({strategy})")
        return str(out["version"])

    def stop_planet(self) -> None:
        _edgefn("down", "--state-dir", str(self.state_dir))

    async def _user(self, client: httpx.AsyncClient, city: str, stop_at: float) -> None:
        st = self.stats[city]
        interval = 1.0 / self.rps
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            try:
                r = await client.get(
                    f"{self.planet['entry_url']}/?name={city.replace(' ', '+')}",
                    headers={"host": "hello.localhost", "x-edgefn-client-location": city},
                )
                ms = (time.perf_counter() - t0) * 1000
                if r.status_code == 200:
                    st.ok += 1
                    st.latencies_ms.append(ms)
                    st.served_by = r.headers.get("x-edgefn-location", "?")
                    st.version = r.headers.get("x-edgefn-version", "?")
                    st.message = r.json().get("message", "")
                else:
                    st.failed += 1
            except httpx.HTTPError:
                st.failed += 1
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - t0)))

    async def _clicks(self, client: httpx.AsyncClient, stop_at: float) -> None:
        """One click a second on the durable counter, from each city in turn (op ids make a
        retried click count once)."""
        n = 0
        while time.monotonic() < stop_at:
            city = DEMO_CITIES[n % len(DEMO_CITIES)]
            n += 1
            try:
                r = await client.post(
                    f"{self.planet['entry_url']}/increment?name=demo&op=demo-{n}",
                    headers={"host": "durable-counter.localhost", "x-edgefn-client-location": city},
                )
                if r.status_code == 200:
                    body = r.json()
                    self.counter.update(n=body["n"], home=body["home"], via=city)
                    self.counter["acked"] += 1
                else:
                    self.counter["failed"] += 1
            except httpx.HTTPError:
                self.counter["failed"] += 1
            await asyncio.sleep(1.0)

    def counter_line(self) -> Text:
        c = self.counter
        return Text(
            f"durable object 'demo': {c['n']} clicks counted at its home {c['home']} "
            f"(last from {c.get('via', '-')}; {c['failed']} failed)",
            style="bold",
        )

    def table(self) -> Any:
        cities = {loc["name"]: loc["city"] for loc in self.planet.get("locations", [])}
        t = Table(
            title=f"edgefn demo — {len(cities)} locations, entry {self.planet.get('entry_url')}",
            caption=f"dashboard: {self.planet.get('api_url')}/dashboard "
            f"(token: {self.planet.get('credentials')})",
        )
        for col in ("user in", "served by", "version", "p50 ms", "last ms", "ok", "failed", "says"):
            t.add_column(col)
        for st in self.stats.values():
            lat = list(st.latencies_ms)
            t.add_row(
                st.city,
                f"{st.served_by} ({cities.get(st.served_by, '')})",
                st.version,
                f"{statistics.median(lat):.0f}" if lat else "-",
                f"{lat[-1]:.0f}" if lat else "-",
                str(st.ok),
                str(st.failed),
                st.message,
            )
        return t

    async def run_traffic(self) -> None:
        forever = self.seconds <= 0
        stop_at = time.monotonic() + (10**9 if forever else self.seconds)
        rollout_at = time.monotonic() + (15 if forever else self.seconds / 2)
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(timeout=10, limits=limits, trust_env=False) as client:
            users = [asyncio.create_task(self._user(client, c, stop_at)) for c in DEMO_CITIES]
            users.append(asyncio.create_task(self._clicks(client, stop_at)))
            rolled = False
            with Live(refresh_per_second=4) as live:
                while time.monotonic() < stop_at:
                    if not rolled and time.monotonic() >= rollout_at:
                        rolled = True
                        v2 = self._make_v2()
                        loop = asyncio.get_running_loop()
                        loop.run_in_executor(None, self.deploy, v2, "canary", False)
                        self.events.append("rolling out hello v2 (canary: one location first)")
                    log = Text("\n".join(self.events), style="dim")
                    live.update(Group(self.table(), self.counter_line(), log))
                    await asyncio.sleep(0.25)
            for u in users:
                u.cancel()
            await asyncio.gather(*users, return_exceptions=True)

    def _make_v2(self) -> Path:
        # In the demo's state directory (taken down and replaced by the next demo), not /tmp.
        d = self.state_dir / "hello-v2" / "hello"
        shutil.rmtree(d.parent, ignore_errors=True)
        shutil.copytree(self.examples / "hello", d)
        manifest = d / "edgefn.toml"
        manifest.write_text(
            manifest.read_text().replace('GREETING = "Hello"', 'GREETING = "Bonjour"')
        )
        return d

    def summary(self) -> dict[str, Any]:
        lat = [x for st in self.stats.values() for x in st.latencies_ms]
        return {
            "requests_ok": sum(st.ok for st in self.stats.values()),
            "requests_failed": sum(st.failed for st in self.stats.values()),
            "latency_ms_p50": round(statistics.median(lat), 1) if lat else None,
            "served_by": {st.city: st.served_by for st in self.stats.values()},
            "durable_counter": {k: self.counter[k] for k in ("n", "home", "acked", "failed")},
        }
