"""``edgefn bench observe``: what observability costs a node, and how fast it tells.

Everything runs on real planets started with the CLI (``edgefn up --detach``) and stopped by pid,
side by side in one run. Two parts:

1. **Overhead** (``part`` "overhead"): two one-location planets up at once, one as planets run by
   default (every request recorded into the telemetry rollup, rollups shipped every 5 s, the
   tail publisher listening for sessions, every request traced and tail-sampled, kept traces
   shipped every second) and one with observability off (:data:`OFF_UP_ARGS`). The same hello
   function on both. In each round ``wrk`` (same settings) drives **both nodes at once**, and
   with ``pin`` (the default, two or more CPUs) the nodes under test (node, zygote and workers of
   both planets) share one CPU of their own while everything else (``wrk``, the cores, hubs,
   nats-servers, this process) runs on the others (:func:`cpu_split`, ``sched_setaffinity``).
   The scheduler shares that CPU fairly between the two saturated nodes, so the ratio of their
   requests/s is the inverse ratio of their CPU per request, measured on the same machine state
   at the same moment: on this VM the speed of a core drifts by ±20 % from one run to the next,
   which a one-after-the-other comparison cannot tell from the cost (two identical "off" nodes
   measured this way came out within 3 %, docs/design/0023-traces.md). The core's ingest of the
   "on" planet's spans and rollups, which a real planet runs elsewhere, does not compete with
   the nodes. Per configuration the median round's requests/s, p50 and p99; the headline ratio
   on/off is the median over rounds of that round's ratio (:func:`overhead_report`). Target
   (issue #13): on costs at most 3 %.
2. **Planet** (``part`` "planet"): ``locations`` locations (default 12), ``failing`` (default 5)
   of them and one more in region eu-west, the rest spread over other regions
   (:func:`choose_topology`); incident routes (``--incident-routes``) send each region to its
   own path of a webhook receiver in this process (``/r/<region>``), anything else to
   ``/default``. Measured in this order:

   a. **idle rollup bytes** per node per minute over ``idle_s`` without traffic: ``in_bytes`` of
      each node's ``telemetry-<loc>`` connection at its hub (NATS ``/connz``);
   b. **tail latency**: ``edgefn tail healthy --json --limit N`` as a subprocess while requests
      go to every location in turn; per event, the response's arrival at the client → the
      event's line on the tail's stdout (both clocks this process's monotonic clock);
   c. **stats latency**: per trial, one request to a function nobody else calls, then
      ``/v1/stats`` polled every 0.1 s until it counts it (response → counted);
   d. **healthy run**: ``edgefn load``'s open-loop traffic (:func:`edgefn.bench.traffic.run_load`,
      Poisson arrivals from the world's cities, through the anycast entry) for ``healthy_s``;
      rollup bytes per node per minute while serving, and every incident the planet opened up
      to two rollup periods after the traffic stopped (target: none);
   e. **fault → incident**: a function whose first version answers 500 at the ``failing``
      locations gets requests at every location (one client thread each); time from the first
      request until exactly one incident names the function, its version and exactly those
      locations, and until the receiver got the notification on eu-west's route; then the
      fault goes on for ``confirm_s`` and the incident and webhook counts are checked again
      (target: within 30 s, one incident, one call, on eu-west's route only).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import httpx

from edgefn.bench import _observe_io as io
from edgefn.bench import _procfs, _wrk
from edgefn.bench._planet import cli, detached_planet
from edgefn.bench.traffic import run_load
from edgefn.errors import PlanetError
from edgefn.planet.client import PlanetClient
from edgefn.planet.supervisor import wait_until
from edgefn.world import get_location, pops, spread

__all__ = [
    "FAULT_REGION",
    "OFF_UP_ARGS",
    "TARGETS",
    "bytes_per_minute",
    "choose_topology",
    "cpu_split",
    "fault_verdict",
    "latency_summary",
    "overhead_report",
    "routes_toml",
    "run",
    "targets",
    "webhook_verdict",
]

Part = Literal["all", "overhead", "planet"]
Progress = Callable[[str], None]

# THE one place that says what "observability off" is for the overhead baseline: rollups, live
# tail and traces all off at once.
OFF_UP_ARGS: tuple[str, ...] = ("--no-telemetry", "--no-tracing")

TARGETS = {"overhead_pct_max": 3.0, "fault_to_incident_s_max": 30.0, "healthy_incidents_max": 0}
FAULT_REGION = "eu-west"
# How long the fault goes on after the incident matched, to see that later rollup periods join
# it (two and a half 5 s periods); how long the bench waits for the incident at most.
CONFIRM_S = 12.0
FAULT_WAIT_S = 90.0
# Requests per second each fault client aims for (the detector needs 10 per 5 s period).
FAULT_PACE_S = 0.1
# After the healthy traffic stops: the last rollups reach the core and are judged.
HEALTHY_DRAIN_S = 10.0

HELLO = """from edgefn import Response


async def fetch(request, env, ctx):
    return Response("Hello, world!")
"""
FAULTY = """from edgefn import Response

FAILING = {failing!r}


async def fetch(request, env, ctx):
    if request.edge.location in FAILING:
        return Response("boom", status=500)
    return Response("ok")
"""


# -- pure: the arithmetic of the report -----------------------------------------------------------


def latency_summary(values_ms: Sequence[float]) -> dict[str, Any]:
    """n, p50, p99, max (ms, rounded to 0.1); None for an empty sample (never NaN in JSON)."""
    if not values_ms:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    s = sorted(values_ms)

    def q(x: float) -> float:
        return round(s[min(len(s) - 1, int(x * len(s)))], 1)

    return {"n": len(s), "p50": q(0.5), "p99": q(0.99), "max": round(s[-1], 1)}


def overhead_report(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per configuration ("off", "on") the median round, and the on/off throughput ratio.

    ``rounds`` are in the order they ran, each ``{"config": ..., "rps": ..., "p50_ms": ...,
    "p99_ms": ..., "errors": ...}``. ``ratio_on_vs_off`` is the median over adjacent (off, on)
    pairs of on/off requests/s (a pair: one round, both nodes measured at once);
    ``overhead_pct`` is ``(1 - ratio) * 100``: what observability costs, negative when "on" came
    out faster (noise).
    """
    out: dict[str, Any] = {}
    for config in ("off", "on"):
        mine = [r for r in rounds if r["config"] == config]
        assert mine, f"no {config!r} round"
        out[config] = {
            "rounds": len(mine),
            "rps_median": round(statistics.median(r["rps"] for r in mine), 1),
            "rps_rounds": [r["rps"] for r in mine],
            "p50_ms_median": round(statistics.median(r["p50_ms"] for r in mine), 3),
            "p99_ms_median": round(statistics.median(r["p99_ms"] for r in mine), 3),
            "errors": sum(int(r["errors"]) for r in mine),
        }
    pairs = [
        b["rps"] / a["rps"]
        for a, b in itertools.pairwise(rounds)
        if (a["config"], b["config"]) == ("off", "on") and a["rps"] > 0
    ]
    assert pairs, "no adjacent (off, on) pair of rounds"
    ratio = statistics.median(pairs)
    out["pair_ratios"] = [round(p, 4) for p in pairs]
    out["ratio_on_vs_off"] = round(ratio, 4)
    out["ratio_of_medians"] = round(out["on"]["rps_median"] / out["off"]["rps_median"], 4)
    out["overhead_pct"] = round((1 - ratio) * 100, 2)
    out["p99_ratio_on_vs_off"] = round(out["on"]["p99_ms_median"] / out["off"]["p99_ms_median"], 3)
    return out


def cpu_split(available: Iterable[int]) -> tuple[list[int], list[int]] | None:
    """``(CPUs of the nodes under test, CPUs of everything else)``; None with fewer than two.

    The nodes get the highest-numbered CPU, the rest the others.
    """
    cpus = sorted(set(available))
    if len(cpus) < 2:
        return None
    return cpus[-1:], cpus[:-1]


def bytes_per_minute(
    before: Mapping[str, int], after: Mapping[str, int], *, wall_s: float, nodes: Sequence[str]
) -> dict[str, Any]:
    """Telemetry bytes each node sent per minute between two ``/connz`` reads.

    A node missing from a read, or whose count went down (its connection was re-opened, the
    count restarted), is listed in ``nodes_missing`` rather than guessed.
    """
    assert wall_s > 0, wall_s
    per = {
        n: round((after[n] - before[n]) * 60 / wall_s)
        for n in nodes
        if n in before and n in after and after[n] >= before[n]
    }
    values = list(per.values())
    return {
        "window_s": round(wall_s, 1),
        "per_node": dict(sorted(per.items())),
        "mean": round(statistics.fmean(values)) if values else None,
        "max": max(values) if values else None,
        "nodes_missing": sorted(set(nodes) - set(per)),
    }


def choose_topology(locations: int, failing: int) -> tuple[list[str], list[str]]:
    """(every location id, the failing ones) for a planet of ``locations`` locations.

    The failing ones are the first ``failing`` eu-west PoPs by id; one more eu-west PoP that
    keeps serving (when there is room: the incident must name only the failing ones of the
    region); the others from :func:`edgefn.world.spread` outside eu-west (other regions,
    other routes).
    """
    assert 1 <= failing < locations, (failing, locations)
    west = sorted(p.id for p in pops() if p.region == FAULT_REGION)
    assert failing < len(west), failing
    chosen = west[:failing]
    if locations - failing >= 2:
        chosen.append(west[failing])
    others = [x.id for x in spread(locations * 2 + 10) if x.region != FAULT_REGION]
    chosen += others[: locations - len(chosen)]
    assert len(chosen) == locations, chosen
    return chosen, west[:failing]


def topology_toml(ids: Sequence[str]) -> str:
    return "".join(f'[[locations]]\nid = "{i}"\n\n' for i in ids)


def routes_toml(base_url: str, regions: Sequence[str]) -> str:
    """Incident routes: each region to ``<base>/r/<region>``, anything else to ``/default``."""
    lines = [f'default = "{base_url}/default"', "", "[regions]"]
    lines += [f'{r} = "{base_url}/r/{r}"' for r in sorted(set(regions))]
    return "\n".join(lines) + "\n"


def fault_verdict(
    found: Sequence[Mapping[str, Any]], *, function: str, version: str, failing: Sequence[str]
) -> dict[str, Any]:
    """Whether exactly one incident names ``function``, ``version`` and exactly ``failing``."""
    mine = [i for i in found if i.get("kind") == "function" and i.get("function") == function]
    exact = (
        len(mine) == 1
        and list(mine[0].get("versions", ())) == [version]
        and sorted(mine[0].get("locations", ())) == sorted(failing)
    )
    return {
        "incidents_of_function": len(mine),
        "other_incidents": len(found) - len(mine),
        "names_function_version_locations": exact,
        "incident": mine[0] if len(mine) == 1 else None,
    }


def webhook_verdict(
    calls: Sequence[tuple[str, Mapping[str, Any]]], *, function: str, route: str
) -> dict[str, Any]:
    """The webhook calls about ``function``'s incidents: exactly one, on ``route``?"""
    by_path: dict[str, int] = {}
    about: dict[str, int] = {}
    for path, body in calls:
        by_path[path] = by_path.get(path, 0) + 1
        incident = body.get("incident") or {}
        if incident.get("function") == function:
            about[path] = about.get(path, 0) + 1
    return {
        "calls_by_path": dict(sorted(by_path.items())),
        "calls_about_function_by_path": dict(sorted(about.items())),
        "one_call_on_region_route": about == {route: 1},
    }


def targets(result: Mapping[str, Any]) -> dict[str, Any]:
    """Each target of issue #13 with the measured value, for the parts that ran."""
    out: dict[str, Any] = {}
    if "overhead" in result:
        pct = result["overhead"]["overhead_pct"]
        limit = TARGETS["overhead_pct_max"]
        out["overhead_pct"] = {"value": pct, "target": limit, "met": pct <= limit}
    if "fault" in result:
        f = result["fault"]
        limit = TARGETS["fault_to_incident_s_max"]
        s = f["incident_s"]
        met = (
            s is not None and s <= limit and f["after_confirm"]["names_function_version_locations"]
        )
        out["fault_to_incident_s"] = {"value": s, "target": limit, "met": met}
        out["one_webhook_call_on_region_route"] = {
            "value": f["webhooks"]["calls_about_function_by_path"],
            "met": f["webhooks"]["one_call_on_region_route"],
        }
    if "healthy" in result:
        n = result["healthy"]["incidents_total"]
        limit = TARGETS["healthy_incidents_max"]
        out["healthy_incidents"] = {"value": n, "target": limit, "met": n <= limit}
    return out


# -- I/O: the overhead part -----------------------------------------------------------------------


def _write_function(directory: Path, name: str, code: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "main.py").write_text(code)
    (directory / "edgefn.toml").write_text(f'name = "{name}"\nmain = "main.py"\n')
    return directory


def _pin_locations(planets: Sequence[Mapping[str, Any]], cpus: Sequence[int]) -> dict[str, int]:
    """Pin the node, zygote and workers of every planet to ``cpus``; processes pinned per role."""
    pinned = dict.fromkeys(sorted(_procfs.LOCATION_ROLES), 0)
    for planet in planets:
        for pid, info in _procfs.process_tree(int(planet["supervisor_pid"])).items():
            if info.role in _procfs.LOCATION_ROLES and _procfs.set_affinity(pid, cpus):
                pinned[info.role] += 1
    return pinned


def _overhead(
    *, rounds: int, duration_s: float, concurrency: int, pin: bool, progress: Progress
) -> dict[str, Any]:
    original = os.sched_getaffinity(0)
    split = cpu_split(original) if pin else None
    if split is not None:
        # Everything started from here on (planets, wrk) inherits the "rest" CPUs.
        os.sched_setaffinity(0, split[1])
    try:
        return _overhead_pinned(
            rounds=rounds,
            duration_s=duration_s,
            concurrency=concurrency,
            split=split,
            progress=progress,
        )
    finally:
        os.sched_setaffinity(0, original)


def _overhead_pinned(
    *,
    rounds: int,
    duration_s: float,
    concurrency: int,
    split: tuple[list[int], list[int]] | None,
    progress: Progress,
) -> dict[str, Any]:
    gen = _wrk.choose("auto")
    progress("overhead: starting two one-location planets (observability on, off)")
    with (
        detached_planet(locations=1, prefix="edgefn-bench-obs-on-", emulate_rtt=False) as on,
        detached_planet(
            locations=1, prefix="edgefn-bench-obs-off-", emulate_rtt=False, extra_args=OFF_UP_ARGS
        ) as off,
    ):
        ports = {}
        for label, (planet, state) in (("on", on), ("off", off)):
            cli(
                "deploy",
                str(_write_function(state / "hello", "hello", HELLO)),
                "--wait",
                state_dir=state,
            )
            url = planet["locations"][0]["url"]
            with httpx.Client(timeout=10, trust_env=False) as http:
                _, status, _ = io.send(http, url, "hello")
            if status != 200:
                raise _bench_error(f"hello answered {status} on the {label} planet", state)
            ports[label] = int(url.rsplit(":", 1)[1])
        pinning: dict[str, Any] = {"pinned": False}
        if split is not None:
            counts = _pin_locations([on[0], off[0]], split[0])
            if counts["node"] != 2 or counts["worker"] < 2:
                raise _bench_error(f"pinning the nodes under test found {counts}", on[1])
            pinning = {
                "pinned": True,
                "node_cpus": split[0],
                "other_cpus": split[1],
                "processes": counts,
            }
        done: list[dict[str, Any]] = []
        with ThreadPoolExecutor(2, thread_name_prefix="overhead-wrk") as pool:
            for i in range(rounds):
                progress(f"overhead: round {i + 1}/{rounds}, both nodes at once")
                load_1m = round(os.getloadavg()[0], 2)
                runs = {
                    config: pool.submit(
                        gen.run,
                        port=ports[config],
                        host_header="hello.localhost",
                        concurrency=concurrency,
                        duration_s=duration_s,
                    )
                    for config in ("off", "on")
                }
                for config in ("off", "on"):  # adjacent (off, on): one round's pair
                    r = runs[config].result().result
                    done.append({"config": config, "load_avg_1m": load_1m, "round": i, **r})
        # The baseline really ran without telemetry: its hub sees no telemetry connection.
        shipping = {
            label: sorted(io.telemetry_bytes(state, list(planet["regions"])))
            for label, (planet, state) in (("on", on), ("off", off))
        }
        if shipping["off"] or not shipping["on"]:
            raise _bench_error(f"telemetry connections at the hubs: {shipping}", off[1])
    report = overhead_report(done)
    report["telemetry_connections"] = shipping
    report["cpu_pinning"] = pinning
    report["method"] = "both nodes loaded at once, one (pinned) CPU shared"
    report["load_generator"] = gen.describe(concurrency=concurrency, duration_s=duration_s)
    report["off_up_args"] = list(OFF_UP_ARGS)
    report["rounds_run"] = [
        {k: r[k] for k in ("config", "rps", "p50_ms", "p99_ms", "errors", "load_avg_1m")}
        for r in done
    ]
    return report


def _bench_error(message: str, state: Path) -> PlanetError:
    return PlanetError(message, hint=f"see the logs under {state}")


# -- I/O: the planet part -------------------------------------------------------------------------


class _Planet:
    """The running planet of the planet part, its client and the bench's own bookkeeping."""

    def __init__(self, info: dict[str, Any], state: Path) -> None:
        self.info, self.state = info, state
        self.client = PlanetClient(state)
        self.urls = {loc["name"]: loc["url"] for loc in info["locations"]}
        self.regions = list(info["regions"])

    def deploy(self, name: str, code: str) -> str:
        out = cli(
            "deploy",
            str(_write_function(self.state / name, name, code)),
            "--wait",
            state_dir=self.state,
        )
        return str(out["version"])

    def bytes_now(self) -> tuple[dict[str, int], float]:
        return io.telemetry_bytes(self.state, self.regions), time.monotonic()


def _idle_bytes(p: _Planet, idle_s: float) -> dict[str, Any]:
    before, t0 = p.bytes_now()
    time.sleep(idle_s)
    after, t1 = p.bytes_now()
    return bytes_per_minute(before, after, wall_s=t1 - t0, nodes=list(p.urls))


def _tail_latency(p: _Planet, n: int) -> dict[str, Any]:
    """Requests to every location in turn while ``edgefn tail`` runs until it printed ``n``."""
    seen: dict[str, float] = {}
    tail = io.TailRun(p.state, "healthy", n)
    deadline = time.monotonic() + 60 + n * 0.2
    names = list(p.urls)
    with httpx.Client(timeout=10, trust_env=False) as http:
        i = 0
        while tail.running() and time.monotonic() < deadline:
            rid, _, _ = io.send(http, p.urls[names[i % len(names)]], "healthy")
            seen[rid] = time.monotonic()
            i += 1
            time.sleep(0.05)  # a pace (~15 requests/s), far under every node's tail budget
    err = tail.finish(timeout_s=15)
    delays = [
        (at - seen[e["request_id"]]) * 1000 for at, e in tail.lines if e["request_id"] in seen
    ]
    if not delays:
        raise _bench_error(
            f"edgefn tail printed no event of the bench's requests: {err[-500:]}", p.state
        )
    return {
        "requests_sent": len(seen),
        "events": len(tail.lines),
        "events_of_unknown_requests": sum(1 for _, e in tail.lines if e["request_id"] not in seen),
        "locations": sorted({e["location"] for _, e in tail.lines}),
        "sample_fractions": sorted({float(e["sample"]) for _, e in tail.lines}),
        "latency_ms": latency_summary(delays),
    }


def _stats_latency(p: _Planet, trials: int) -> dict[str, Any]:
    """Per trial one request to ``statsfn`` (nobody else calls it), until /v1/stats counts it.

    Trials start at spread phases of the shippers' 5 s cut (0.7 s apart modulo 5 s), a schedule
    rather than a wait.
    """
    names = list(p.urls)
    sent = 0
    delays: list[float] = []
    missed = 0
    with httpx.Client(timeout=10, trust_env=False) as http:
        for i in range(trials):
            if not wait_until(
                functools.partial(_counted, p.client, sent, exactly=True),
                timeout_s=30,
                interval_s=0.1,
            ):
                raise _bench_error(f"stats never settled at {sent} requests of statsfn", p.state)
            time.sleep((i * 0.7) % 5.0)
            _, status, _ = io.send(http, p.urls[names[i % len(names)]], "statsfn")
            t0 = time.monotonic()
            if status != 200:
                raise _bench_error(f"statsfn answered {status}", p.state)
            sent += 1
            counted = wait_until(
                functools.partial(_counted, p.client, sent, exactly=False),
                timeout_s=30,
                interval_s=0.1,
            )
            if counted:
                delays.append((time.monotonic() - t0) * 1000)
            else:
                missed += 1
    return {
        "trials": trials,
        "not_counted_in_30s": missed,
        "latency_ms": latency_summary(delays),
        "trial_ms": [round(d) for d in delays],
    }


def _counted(client: PlanetClient, n: int, *, exactly: bool) -> bool:
    got = io.function_requests(client, "statsfn")
    return got == n if exactly else got >= n


def _healthy(p: _Planet, healthy_s: float, rps: float, progress: Progress) -> dict[str, Any]:
    before_ids = {i["id"] for i in io.incidents(p.client)}
    bytes0, t0 = p.bytes_now()

    def tick(done: int, total: int) -> None:
        progress(f"healthy run: {done}/{total} requests of edgefn load traffic")

    with io.LoadAverage() as machine:
        load = asyncio.run(
            run_load(
                entry_url=p.info["entry_url"],
                name="healthy",
                rps=rps,
                duration_s=healthy_s,
                on_progress=tick,
            )
        )
    bytes1, t1 = p.bytes_now()
    progress("healthy run: letting the last rollups be judged")
    time.sleep(HEALTHY_DRAIN_S)
    found = io.incidents(p.client)
    return {
        "seconds": healthy_s,
        "rps": rps,
        "load": {
            "not_sent": load.not_sent,
            "elapsed_s": round(load.elapsed_s, 1),
            **_load_brief(load.summary),
        },
        "serving_bytes_per_node_per_minute": bytes_per_minute(
            bytes0, bytes1, wall_s=t1 - t0, nodes=list(p.urls)
        ),
        "machine_load_avg_1m": machine.summary(),
        "incidents_total": len(found),
        "incidents_opened_during_run": len([i for i in found if i["id"] not in before_ids]),
        "incidents": [
            {k: i.get(k) for k in ("id", "kind", "title", "function", "locations")} for i in found
        ],
    }


def _load_brief(summary: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("requests", "overall", "status", "served_by")
    return {k: summary[k] for k in keep if k in summary}


def _fault(
    p: _Planet,
    version: str,
    failing: Sequence[str],
    receiver: io.WebhookReceiver,
    progress: Progress,
) -> dict[str, Any]:
    route = f"/r/{FAULT_REGION}"
    verdict: dict[str, Any] = {}

    def matched() -> bool:
        verdict.update(
            fault_verdict(
                io.incidents(p.client), function="faulty", version=version, failing=failing
            )
        )
        return bool(verdict["names_function_version_locations"])

    def any_incident() -> bool:
        return any(i.get("function") == "faulty" for i in io.incidents(p.client))

    calls0 = len(receiver.calls)
    with io.FaultTraffic(
        p.urls, "faulty", pace_s=FAULT_PACE_S, max_s=FAULT_WAIT_S + CONFIRM_S + 60
    ) as traffic:
        fault = time.monotonic()
        progress(f"fault: 500s at {len(failing)} locations; waiting for the incident")
        first = wait_until(any_incident, timeout_s=FAULT_WAIT_S, interval_s=0.25)
        first_s = time.monotonic() - fault if first else None
        ok = wait_until(
            matched, timeout_s=max(1.0, FAULT_WAIT_S - (time.monotonic() - fault)), interval_s=0.25
        )
        incident_s = time.monotonic() - fault if ok else None
        told = wait_until(
            lambda: any(c[0] == route for c in receiver.calls[calls0:]),
            timeout_s=20,
            interval_s=0.1,
        )
        progress(f"fault: incident after {incident_s} s; confirming for {CONFIRM_S:g} s")
        time.sleep(CONFIRM_S)
        matched()
        served = dict(traffic.served)
        errors = traffic.errors
    calls = [(path, body) for path, body, _ in receiver.calls[calls0:]]
    webhook_at = next((at for path, _, at in receiver.calls[calls0:] if path == route), None)
    return {
        "failing_locations": sorted(failing),
        "region": FAULT_REGION,
        "version": version,
        "first_incident_s": _round(first_s),
        "incident_s": _round(incident_s),
        "webhook_s": _round(webhook_at - fault) if told and webhook_at is not None else None,
        "after_confirm": {k: v for k, v in verdict.items() if k != "incident"},
        "incident": verdict.get("incident"),
        "webhooks": webhook_verdict(calls, function="faulty", route=route),
        "served": {f"{loc} {status}": n for (loc, status), n in sorted(served.items())},
        "client_errors": errors,
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def _planet_part(
    *,
    locations: int,
    failing: int,
    idle_s: float,
    tail_events: int,
    stats_trials: int,
    healthy_s: float,
    healthy_rps: float,
    progress: Progress,
) -> dict[str, Any]:
    ids, failing_ids = choose_topology(locations, failing)
    receiver = io.WebhookReceiver()
    try:
        regions = sorted({get_location(i).region for i in ids})
        routes = (
            Path(os.environ.get("TMPDIR", "/tmp")) / f"edgefn-bench-obs-routes-{os.getpid()}.toml"
        )
        routes.write_text(routes_toml(receiver.url(""), regions))
        progress(f"planet: starting {locations} locations ({failing} failing in {FAULT_REGION})")
        t0 = time.monotonic()
        with detached_planet(
            locations=locations,
            prefix="edgefn-bench-obs-planet-",
            topology=topology_toml(ids),
            extra_args=("--incident-routes", str(routes)),
        ) as (info, state):
            up_s = time.monotonic() - t0
            p = _Planet(info, state)
            try:
                progress("planet: deploying healthy, statsfn and faulty")
                p.deploy("healthy", HELLO)
                p.deploy("statsfn", HELLO)
                version = p.deploy("faulty", FAULTY.format(failing=tuple(failing_ids)))
                progress(f"planet: idle rollup bytes over {idle_s:g} s")
                out: dict[str, Any] = {
                    "locations": ids,
                    "regions": regions,
                    "planet_up_s": round(up_s, 1),
                }
                out["idle_bytes_per_node_per_minute"] = _idle_bytes(p, idle_s)
                progress(f"planet: request -> tail, {tail_events} events")
                out["tail"] = _tail_latency(p, tail_events)
                progress(f"planet: request -> stats, {stats_trials} trials")
                out["stats"] = _stats_latency(p, stats_trials)
                out["healthy"] = _healthy(p, healthy_s, healthy_rps, progress)
                out["fault"] = _fault(p, version, failing_ids, receiver, progress)
            finally:
                p.client.close()
        routes.unlink(missing_ok=True)
        return out
    finally:
        receiver.stop()


def run(
    *,
    part: Part = "all",
    locations: int = 12,
    failing: int = 5,
    healthy_s: float = 60.0,
    healthy_rps: float = 40.0,
    idle_s: float = 30.0,
    tail_events: int = 100,
    stats_trials: int = 6,
    rounds: int = 4,
    duration_s: float = 5.0,
    concurrency: int = 32,
    pin: bool = True,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """One run of the parts ``part`` names, measured as the module docstring says."""
    progress = on_progress or (lambda _msg: None)
    result: dict[str, Any] = {
        "benchmark": "observe",
        "machine": {"cores": os.cpu_count(), "load_avg_1m_at_start": round(os.getloadavg()[0], 2)},
    }
    t0 = time.monotonic()
    if part in ("all", "overhead"):
        result["overhead"] = _overhead(
            rounds=rounds,
            duration_s=duration_s,
            concurrency=concurrency,
            pin=pin,
            progress=progress,
        )
    if part in ("all", "planet"):
        planet = _planet_part(
            locations=locations,
            failing=failing,
            idle_s=idle_s,
            tail_events=tail_events,
            stats_trials=stats_trials,
            healthy_s=healthy_s,
            healthy_rps=healthy_rps,
            progress=progress,
        )
        for key in ("healthy", "fault"):
            result[key] = planet.pop(key)
        result["planet"] = planet
    result["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    result["elapsed_s"] = round(time.monotonic() - t0, 1)
    result["targets"] = targets(result)
    result["targets_met"] = all(t["met"] for t in result["targets"].values())
    return result
