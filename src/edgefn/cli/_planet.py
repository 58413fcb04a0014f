"""The local planet and deploys: ``up``, ``down``, ``deploy``, ``status``, ``rollback``,
``versions`` and ``net partition|heal|delay|kill|revive|links``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from edgefn.cli._output import emit_json, fail, fail_from, print_table
from edgefn.cli._roles import check_replan_interval
from edgefn.errors import EdgefnError

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir", help="The planet's state directory (default .edgefn, or $EDGEFN_STATE_DIR)"
    ),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON")]


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("up")(up)
    app.command("down")(down)
    app.command("deploy")(deploy)
    app.command("status")(status)
    app.command("rollback")(rollback)
    app.command("versions")(versions)
    net = typer.Typer(
        help="Chaos on the local planet: partitions, delays, killed locations.",
        no_args_is_help=True,
    )
    net.command("partition")(net_partition)
    net.command("heal")(net_heal)
    net.command("delay")(net_delay)
    net.command("kill")(net_kill)
    net.command("revive")(net_revive)
    net.command("skew")(net_skew)
    net.command("heat")(net_heat)
    net.command("links")(net_links)
    app.add_typer(net, name="net")


def _state_dir(state_dir: Path | None) -> Path:
    from edgefn.planet.client import default_state_dir

    return state_dir or default_state_dir()


def _client(state_dir: Path | None) -> Any:
    from edgefn.planet.client import PlanetClient

    try:
        return PlanetClient(_state_dir(state_dir))
    except EdgefnError as err:
        fail_from(err)


def choose_locations(locations: int | None, topology: Path | None) -> list[Any]:
    from edgefn.world import load_topology, spread

    if topology is not None and locations is not None:
        fail("give --locations or --topology, not both")
    try:
        if topology is not None:
            return list(load_topology(topology))
        n = locations or 6
        if n < 1 or n > 300:
            fail(f"--locations {n} is out of range", hint="use 1 to 300")
        return list(spread(n))
    except EdgefnError as err:
        fail_from(err)


def _incident_routes_args(path: Path | None) -> tuple[str, ...]:
    """``--incident-routes`` for the core, checked here so a bad file fails before anything starts."""
    from edgefn.observe.incident_routes import load_routes

    if path is None:
        return ()
    try:
        load_routes(path)
    except EdgefnError as err:
        fail_from(err)
    return ("--incident-routes", str(path.resolve()))


def up(
    locations: Annotated[
        int | None, typer.Option(help="How many real PoPs (spread worldwide)")
    ] = None,
    topology: Annotated[Path | None, typer.Option(help="A topology TOML file instead")] = None,
    detach: Annotated[bool, typer.Option(help="Return once every location is healthy")] = False,
    state_dir: StateDir = None,
    entry_port: Annotated[int, typer.Option(help="Port of the anycast entry")] = 8787,
    emulate_rtt: Annotated[bool, typer.Option(help="Delay users by their modelled RTT")] = True,
    preload: Annotated[
        str, typer.Option(help="Modules every zygote pre-imports (comma list)")
    ] = "",
    isolation: Annotated[
        str, typer.Option(help="Sandbox isolation of every node: strict | relaxed")
    ] = "strict",
    json_out: JsonOut = False,
    gate_min_requests: Annotated[
        int, typer.Option(help="Requests a new version needs before its health gate is judged")
    ] = 100,
    gate_soak_ms: Annotated[int, typer.Option(help="Minimum time a rollout stage soaks")] = 60_000,
    gate_advance_requests: Annotated[
        int, typer.Option(help="Requests after which a healthy stage advances early")
    ] = 1000,
    start_timeout: Annotated[
        float, typer.Option(help="Seconds each role process may take to report ready")
    ] = 60.0,
    core_servers: Annotated[
        int,
        typer.Option(
            help="Servers in the core: 1, or 3 (or 5) clustered, every bucket replicated on each"
        ),
    ] = 1,
    kv_wait_ms: Annotated[
        int, typer.Option(help="How long strong KV operations wait for the home connection (ms)")
    ] = 2000,
    incident_routes: Annotated[
        Path | None,
        typer.Option(help="Incident notification routes (TOML: region = webhook URL, default)"),
    ] = None,
    otlp_endpoint: Annotated[
        str | None,
        typer.Option(help="The core exports kept traces by OTLP/HTTP to this URL (…/v1/traces)"),
    ] = None,
    tracing: Annotated[
        bool, typer.Option(help="Nodes record spans of requests (tail-sampled)")
    ] = True,
    telemetry: Annotated[
        bool,
        typer.Option(help="Rollups and live tail on every node (--no-telemetry: a bench baseline)"),
    ] = True,
    replan_interval_s: Annotated[
        float,
        typer.Option(help="Seconds between re-plans of smart placement from observed demand"),
    ] = 60.0,
) -> None:
    """Start a local planet: core, regional hubs, link emulators, edge nodes, anycast entry."""
    if core_servers not in (1, 3, 5):
        fail(
            f"--core-servers {core_servers} is not supported",
            hint="use 1, or 3 (or 5) for a replicated core that survives the loss of a server",
        )
    if start_timeout <= 0:
        fail(f"--start-timeout {start_timeout} must be positive", hint="e.g. --start-timeout 90")
    if isolation not in ("strict", "relaxed"):
        fail(f"--isolation {isolation!r} is not known", hint="use strict or relaxed")
    # Passed through to every `edgefn node` (the supervisor copies node_args onto their commands).
    if not 0 <= kv_wait_ms <= 30_000:
        fail(f"--kv-wait-ms {kv_wait_ms} is out of range", hint="use 0 to 30000 (default 2000)")
    node_args: tuple[str, ...] = ("--isolation", isolation, "--kv-wait-ms", str(kv_wait_ms))
    if not tracing:
        node_args += ("--no-tracing",)
    node_args += () if telemetry else ("--no-telemetry",)
    core_args: tuple[str, ...] = (
        "--gate-min-requests",
        str(gate_min_requests),
        "--gate-soak-ms",
        str(gate_soak_ms),
        "--gate-advance-requests",
        str(gate_advance_requests),
    )
    check_replan_interval(replan_interval_s)
    core_args += ("--replan-interval-s", str(replan_interval_s))
    core_args += _incident_routes_args(incident_routes)
    if otlp_endpoint is not None:
        from edgefn.control.otlp_export import check_endpoint

        try:
            core_args += ("--otlp-endpoint", check_endpoint(otlp_endpoint))
        except EdgefnError as err:
            fail_from(err)
    from edgefn.planet.supervisor import read_planet

    sd = _state_dir(state_dir)
    try:
        read_planet(sd)
        fail(f"a planet is already running in {sd}", hint="stop it with `edgefn down` first")
    except EdgefnError:
        pass
    chosen = choose_locations(locations, topology)
    if detach:
        # The supervisor bounds each role's start itself (--start-timeout); the detached wait
        # only has to notice a supervisor that stopped making progress (no new log line), so a
        # big planet on a busy machine is not cut off while its nodes still come up one by one.
        wait_s = start_timeout + 60
        core_args += ("--start-timeout", str(start_timeout), "--core-servers", str(core_servers))
        _up_detached(
            sd,
            locations,
            topology,
            entry_port,
            emulate_rtt,
            preload,
            json_out,
            core_args,
            node_args,
            wait_s,
        )
        return
    from edgefn._loop import run

    ok = run(
        _up_foreground(
            sd,
            chosen,
            entry_port,
            emulate_rtt,
            preload,
            core_args,
            node_args,
            start_timeout,
            quiet=json_out,
            core_servers=core_servers,
        )
    )
    if not ok:
        raise typer.Exit(1)


async def _up_foreground(
    sd: Path,
    chosen: list[Any],
    entry_port: int,
    emulate_rtt: bool,
    preload: str,
    core_args: tuple[str, ...],
    node_args: tuple[str, ...],
    start_timeout_s: float,
    *,
    quiet: bool,
    core_servers: int = 1,
) -> bool:
    import asyncio
    import contextlib
    import signal

    from edgefn.planet.supervisor import Planet

    planet = Planet(
        chosen,
        state_dir=sd,
        entry_port=entry_port,
        emulate_rtt=emulate_rtt,
        preload=tuple(x for x in preload.split(",") if x),
        core_args=core_args,
        node_args=node_args,
        on_progress=lambda m: print(m, file=sys.stderr, flush=True),
        start_timeout_s=start_timeout_s,
        core_servers=core_servers,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        # A signal during start-up (e.g. `up --detach` giving up) stops the start, not just the
        # wait after it, so no half-started planet is left running.
        starting = asyncio.ensure_future(planet.start())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, EdgefnError):
                await starting
            print("error: stopped by a signal during start-up", file=sys.stderr)
            return False
        stopping.cancel()
        starting.result()
        if not quiet:
            _print_planet(planet.describe())
        print("READY", flush=True)
        await stop.wait()
        return True
    except EdgefnError as err:
        print(f"error: {err}", file=sys.stderr)
        return False
    finally:
        await planet.stop()


def _up_detached(
    sd: Path,
    locations: int | None,
    topology: Path | None,
    entry_port: int,
    emulate_rtt: bool,
    preload: str,
    json_out: bool,
    core_args: tuple[str, ...],
    node_args: tuple[str, ...],
    wait_s: float,
) -> None:
    from rich.console import Console

    from edgefn.planet.supervisor import read_planet

    (sd / "logs").mkdir(parents=True, exist_ok=True)
    args = [
        sys.executable,
        "-m",
        "edgefn.cli.main",
        "up",
        "--state-dir",
        str(sd),
        "--entry-port",
        str(entry_port),
        "--json",
    ]
    args += ["--topology", str(topology)] if topology else ["--locations", str(locations or 6)]
    args += [] if emulate_rtt else ["--no-emulate-rtt"]
    args += ["--preload", preload] if preload else []
    args += list(core_args)
    args += list(node_args)
    log_path = sd / "logs" / "supervisor.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
    console = Console(stderr=True)
    deadline = time.monotonic() + wait_s
    seen = 0
    with console.status("starting the planet…") as spinner:
        while time.monotonic() < deadline:
            size = log_path.stat().st_size
            if size != seen:  # progress: a role came up, or the supervisor moved on
                seen, deadline = size, time.monotonic() + wait_s
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                fail(
                    f"the planet failed to start (exit {proc.returncode}):\n{tail}",
                    hint=f"full log: {log_path}",
                )
            try:
                planet = read_planet(sd)
                if planet.get("supervisor_pid") == proc.pid:
                    break
            except EdgefnError:
                pass
            lines = log_path.read_text(errors="replace").strip().splitlines()
            if lines:
                spinner.update(lines[-1][:100])
            time.sleep(0.1)
        else:
            proc.terminate()
            fail(
                f"the planet's start-up made no progress for {wait_s:.0f} s",
                hint=f"see {log_path}; start fewer locations or raise --start-timeout",
            )
    if json_out:
        emit_json(planet)
    else:
        from edgefn.planet.credentials import dashboard_hint

        _print_planet(planet)
        typer.echo(
            f"Planet up (supervisor pid {proc.pid}). Try:\n"
            f"  edgefn deploy examples/hello --wait\n"
            f"  curl -H 'Host: hello.localhost' -H 'x-edgefn-client-location: NRT' "
            f"{planet['entry_url']}/\n  edgefn down"
        )
        typer.echo(dashboard_hint(planet["api_url"], planet["credentials"]))


def _print_planet(planet: dict[str, Any]) -> None:
    rows = [
        [loc["name"], loc["city"], loc["region"], f"{loc['lat']:.2f},{loc['lon']:.2f}", loc["url"]]
        for loc in planet["locations"]
    ]
    print_table(
        f"planet — entry {planet['entry_url']}  control {planet['api_url']}",
        ["location", "city", "region", "lat,lon", "url"],
        rows,
    )


def down(state_dir: StateDir = None) -> None:
    """Stop the planet running in the state directory (every process, by pid)."""
    import signal

    from edgefn.planet.supervisor import read_planet

    sd = _state_dir(state_dir)
    try:
        planet = read_planet(sd)
    except EdgefnError as err:
        fail_from(err)
    pid = int(planet["supervisor_pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            typer.echo(f"planet in {sd} stopped")
            return
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)
    typer.echo(f"planet in {sd} did not stop in 60 s; killed it")


def deploy(
    path: Annotated[Path, typer.Argument(help="Function directory")] = Path("."),
    strategy: Annotated[str, typer.Option(help="immediate | canary")] = "immediate",
    wait: Annotated[bool, typer.Option(help="Wait until every location serves it")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait")] = 120.0,
    allow_no_traffic: Annotated[
        bool,
        typer.Option(
            help="Canary: let stages advance after their soak without the gates' minimum requests"
        ),
    ] = False,
    state_dir: StateDir = None,
    json_out: JsonOut = False,
) -> None:
    """Build, sign and upload the function in PATH, then roll it out to the planet."""
    if strategy not in ("immediate", "canary"):
        fail(f"--strategy {strategy!r} is not known", hint="use immediate or canary")
    client = _client(state_dir)
    try:
        uploaded = client.upload(path)
        name, version = uploaded["function"], uploaded["version_id"]
        current = client.function_status(name) or {}
        if (current.get("active") or {}).get("version_id") == version:
            # Same content as the active version: nothing to roll out.
            started: dict[str, Any] = {"deployment_id": None, "unchanged": True}
        else:
            started = client.deploy(name, version, strategy, allow_no_traffic=allow_no_traffic)
        out: dict[str, Any] = {
            "function": name,
            "version": version,
            "strategy": strategy,
            "deployment_id": started.get("deployment_id"),
            "unchanged": bool(started.get("unchanged")),
        }
        if wait:
            out["convergence_s"] = _wait(client, name, version, timeout, quiet=json_out)
            times = sorted(out["convergence_s"].values())
            out["converged_all_s"] = times[-1] if times else None
    except EdgefnError as err:
        fail_from(err)
    if json_out:
        emit_json(out)
        return
    typer.echo(f"deployed {name} version {version} ({strategy})")
    if wait:
        print_table(
            "convergence",
            ["location", "serving after (s)"],
            sorted(out["convergence_s"].items(), key=lambda kv: kv[1]),
        )


def _wait(client: Any, name: str, version: str, timeout: float, *, quiet: bool) -> dict[str, float]:
    from rich.progress import Progress

    if quiet:
        return dict(client.wait_converged(name, version, timeout_s=timeout))
    with Progress(transient=True) as progress:
        task = progress.add_task(f"rolling out {name} {version}", total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total or None)

        return dict(client.wait_converged(name, version, timeout_s=timeout, on_progress=update))


def status(
    name: Annotated[str | None, typer.Argument(help="Only this function")] = None,
    state_dir: StateDir = None,
    json_out: JsonOut = False,
) -> None:
    """Per location: region, coordinates, URL, health and versions; per function: convergence."""
    import httpx

    client = _client(state_dir)
    try:
        st = client.status()
    except EdgefnError as err:
        fail_from(err)
    observed = {loc["location"]: loc for loc in st.get("locations", [])}
    locations = []
    for loc in client.planet["locations"]:
        isolation: dict[str, str] = {}
        try:
            health = httpx.get(f"{loc['url']}/_edgefn/health", timeout=2)
            healthy = health.status_code == 200
            isolation = dict(health.json().get("isolation") or {}) if healthy else {}
        except (httpx.HTTPError, ValueError):
            healthy = False
        fns = ((observed.get(loc["name"]) or {}).get("observed") or {}).get("functions", {})
        versions = {fn: sorted(vs) for fn, vs in fns.items() if name in (None, fn)}
        locations.append(
            {
                "name": loc["name"],
                "region": loc["region"],
                "lat": loc["lat"],
                "lon": loc["lon"],
                "url": loc["url"],
                "healthy": healthy,
                "isolation": isolation,
                "versions": versions,
                "load_errors": (observed.get(loc["name"]) or {}).get("load_errors", []),
                "resources": ((observed.get(loc["name"]) or {}).get("observed") or {}).get(
                    "resources"
                ),
            }
        )
    functions = [
        {
            "name": f["function"],
            "desired_version": (f.get("active") or {}).get("version_id"),
            "converged": f.get("converged"),
            "waiting_for": f.get("waiting_for", []),
            "deployment": f.get("deployment"),
            "targets": f.get("targets", []),
            "placement": f.get("placement"),
        }
        for f in st.get("functions", [])
        if name in (None, f["function"])
    ]
    out = {"locations": locations, "functions": functions}
    if json_out:
        emit_json(out)
        return
    print_table(
        "locations",
        [
            "location",
            "region",
            "healthy",
            "isolation",
            "cpu",
            "memory",
            "disk free",
            "thermal",
            "versions",
            "errors",
        ],
        [
            [
                x["name"],
                x["region"],
                "yes" if x["healthy"] else "NO",
                _isolation_summary(x["isolation"]),
                *_resources_summary(x["resources"]),
                " ".join(f"{k}={','.join(v)}" for k, v in x["versions"].items()),
                x["load_errors"] or "",
            ]
            for x in locations
        ],
    )
    print_table(
        "functions",
        ["function", "desired", "converged", "waiting for", "runs at"],
        [
            [
                f["name"],
                f["desired_version"],
                f["converged"],
                " ".join(f["waiting_for"]),
                ("smart: " if f["placement"] else "") + " ".join(f["targets"]),
            ]
            for f in functions
        ],
    )
    for f in functions:
        if f["placement"]:
            typer.echo(f"why {f['name']} runs at {', '.join(f['placement']['locations'])}: "
                       f"{f['placement']['reason']}")  # fmt: skip


def _resources_summary(res: dict[str, Any] | None) -> list[str]:
    """cpu, memory, disk-free and thermal cells of a location's resources ("-": not reported)."""
    if not res:
        return ["-", "-", "-", "-"]
    cpu = res.get("cpu_percent")
    rss = res.get("rss_mb")
    free = res.get("disk_free_mb")
    return [
        f"{cpu:.1f}%" if isinstance(cpu, int | float) else "-",
        f"{rss:.0f} MiB" if isinstance(rss, int | float) else "-",
        f"{free / 1024:.1f} GiB" if isinstance(free, int | float) else "-",
        _thermal_summary(res),
    ]


def _thermal_summary(res: dict[str, Any]) -> str:
    """The reading throttled on, and whether it throttles ("-": no reading)."""
    celsius = res.get("throttle_c")
    if not isinstance(celsius, int | float):
        return "-"
    if not res.get("hot"):
        return f"{celsius:.0f} °C"
    return f"{celsius:.0f} °C HOT ({float(res.get('capacity', 1.0)):.0%})"


def rollback(
    name: Annotated[str, typer.Argument(help="Function name")],
    to: Annotated[str | None, typer.Option(help="Version id (default: the previous one)")] = None,
    state_dir: StateDir = None,
    json_out: JsonOut = False,
) -> None:
    """Roll NAME back to its previous version (or --to a kept version)."""
    client = _client(state_dir)
    try:
        out = client.rollback(name, to)
    except EdgefnError as err:
        fail_from(err)
    if json_out:
        emit_json(out)
    else:
        typer.echo(f"rolling {name} back to {out.get('version_id', out)}")


def versions(
    name: Annotated[str, typer.Argument(help="Function name")],
    state_dir: StateDir = None,
    json_out: JsonOut = False,
) -> None:
    """The kept versions of NAME (newest first)."""
    client = _client(state_dir)
    try:
        out = client.versions(name)
    except EdgefnError as err:
        fail_from(err)
    if json_out:
        emit_json(out)
        return
    rows = [
        [v["version_id"], v.get("created_ms"), v.get("size_bytes"), v.get("key_id")]
        for v in out.get("versions", [])
    ]
    print_table(f"versions of {name}", ["version", "created_ms", "bytes", "signed by"], rows)


def net_partition(
    locations: Annotated[list[str], typer.Argument(help="Locations to cut off")],
    state_dir: StateDir = None,
    json_out: JsonOut = False,
) -> None:
    """Cut these locations off from the rest of the backbone (users still reach them)."""
    client = _client(state_dir)
    try:
        out = client.partition(locations)
    except EdgefnError as err:
        fail_from(err)
    emit_json(out) if json_out else typer.echo(f"cut {len(out.get('cut', []))} links")


def net_heal(state_dir: StateDir = None, json_out: JsonOut = False) -> None:
    """Restore every cut link."""
    client = _client(state_dir)
    try:
        healed = client.heal()
    except EdgefnError as err:
        fail_from(err)
    emit_json({"healed": healed}) if json_out else typer.echo(f"healed {len(healed)} links")


def net_delay(
    a: Annotated[str, typer.Argument(help="Endpoint (core, hub-<region>, loc-<id>)")],
    b: Annotated[str, typer.Argument(help="Endpoint")],
    ms: Annotated[float, typer.Argument(help="New round-trip time in ms")],
    state_dir: StateDir = None,
) -> None:
    """Set the RTT of the link between endpoints A and B."""
    if ms < 0:
        fail("the delay must be >= 0 ms")
    client = _client(state_dir)
    try:
        typer.echo(f"link {client.delay(a, b, ms)} now has RTT {ms:g} ms")
    except EdgefnError as err:
        fail_from(err)


def net_kill(location: Annotated[str, typer.Argument()], state_dir: StateDir = None) -> None:
    """SIGKILL a location's node and keep it down (the supervisor does not restart it)."""
    client = _client(state_dir)
    try:
        client.kill(location)
    except EdgefnError as err:
        fail_from(err)
    typer.echo(f"{location} killed; `edgefn net revive {location}` brings it back")


def net_revive(location: Annotated[str, typer.Argument()], state_dir: StateDir = None) -> None:
    """Start a killed location's node again."""
    client = _client(state_dir)
    try:
        out = client.revive(location)
    except EdgefnError as err:
        fail_from(err)
    typer.echo(f"{location} is back at {out.get('url')}")


def net_skew(
    location: Annotated[str, typer.Argument()],
    ms: Annotated[int, typer.Argument(help="Offset of its KV clock in ms (0: true time)")],
    state_dir: StateDir = None,
    json_out: JsonOut = False,
) -> None:
    """Restart a location's node with its KV clock MS off (HLC under skew; negative: -- -5000)."""
    from edgefn.planet import CLOCK_SKEW_MAX_MS

    if abs(ms) > CLOCK_SKEW_MAX_MS:
        fail(
            f"a skew of {ms} ms is out of range",
            hint=f"use -{CLOCK_SKEW_MAX_MS} to {CLOCK_SKEW_MAX_MS} (below the HLC's drift limit)",
        )
    client = _client(state_dir)
    try:
        out = client.skew(location, ms)
    except EdgefnError as err:
        fail_from(err)
    if json_out:
        emit_json(out)
    else:
        typer.echo(f"{location} restarted with its KV clock {ms:+d} ms off, at {out.get('url')}")


def net_heat(
    location: Annotated[str, typer.Argument()],
    celsius: Annotated[
        str, typer.Argument(help="Emulated temperature in °C, or 'off' for the host's sensors")
    ],
    state_dir: StateDir = None,
    json_out: JsonOut = False,
) -> None:
    """Emulate a location's temperature: from its thermal_soft_c (default 80 °C) it is hot
    (traffic moves to cooler neighbours) and its admission limit falls, to a quarter at its
    thermal_hard_c (default 95 °C); a topology file sets both per location."""
    value: float | None = None
    if celsius.lower() != "off":
        try:
            value = float(celsius)
        except ValueError:
            fail(f"{celsius!r} is not a temperature", hint="e.g. edgefn net heat fra 92, or off")
        if not -50 <= value <= 150:
            fail(f"{value:g} °C is out of range", hint="use -50 to 150, or off")
    client = _client(state_dir)
    try:
        out = client.heat(location, value)
    except EdgefnError as err:
        fail_from(err)
    if json_out:
        emit_json(out)
    elif out.get("celsius") is None:
        typer.echo(f"{location}: emulation off (no sensor reading: not throttled)")
    else:
        state = "hot: traffic moves to cooler neighbours" if out.get("hot") else "not hot"
        typer.echo(f"{location}: {out['celsius']:g} °C, {state}; capacity {out['capacity']:.0%}")


def net_links(state_dir: StateDir = None, json_out: JsonOut = False) -> None:
    """List the emulated links with their RTT and state."""
    client = _client(state_dir)
    try:
        links = client.links()
    except EdgefnError as err:
        fail_from(err)
    if json_out:
        emit_json(links)
        return
    print_table(
        "links",
        ["name", "a", "b", "rtt_ms", "cut"],
        [[x.get("name"), x.get("a"), x.get("b"), x.get("rtt_ms"), x.get("cut")] for x in links],
    )


def _isolation_summary(isolation: dict[str, str]) -> str:
    """``strict``, or the mode followed by the layers that are off (``relaxed -landlock``)."""
    mode = isolation.get("mode", "?")
    off = sorted(k for k, v in isolation.items() if k != "mode" and not v.startswith("on"))
    return " ".join([mode, *(f"-{k}" for k in off)])
