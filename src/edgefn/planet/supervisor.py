"""The local planet (``edgefn up``): every role as a process on 127.0.0.1, links emulated.

Layout. One ``core`` process (nats-server with JetStream + control API) sits at the first chosen
location. Each region present among the locations gets one hub (``region`` process) placed at the
region's first location; its leafnode to the core goes through a link-emulator ``Link`` whose RTT
is the world model's RTT between the two places. Each location runs a ``node`` process whose NATS
connection goes through a link to its region's hub. Every link is named by its endpoints
(``core``, ``hub-<region>``, ``loc-<id>``) so ``edgefn net partition fra`` cuts ``loc-fra`` off
from everything else while users can still reach the location over HTTP (edge autonomy).

The anycast entry (``127.0.0.1:8787`` by default) sends each user to the nearest healthy location.
A small supervisor API (``/state``, ``/kill``, ``/revive``; every call signed with the planet secret,
see :mod:`edgefn._internal_auth`) lets ``edgefn net kill|revive`` stop a node and keep it down; any other node that exits is restarted. ``planet.json`` in the state
directory records every address and pid, so other commands find the running planet; ``down`` (or
SIGTERM/SIGINT) stops every child by pid. Children also get ``PR_SET_PDEATHSIG`` so none outlives a
supervisor that is killed outright.

Credentials. The supervisor loads (or creates) the deployer's signing key outside the state
directory (``edgefn.planet.credentials.deployer_key_path``) and hands the core and the nodes only
its public key (``deployer-key.pub``): the core registers it for account ``default``, nodes
verify bundles with it. The core writes a bootstrap admin token to ``core/admin-token`` on first
start; the supervisor copies it with the API URL to ``credentials.json`` (0600) for the CLI.

Bus security (docs/design/0007-backbone.md). Before starting anything the supervisor writes
``<state-dir>/creds/``: one credentials file per NATS identity (``control``, ``admin``,
``leaf-<region>``, ``cache-<region>``, ``node-<loc>``), the users' lists of the core and each hub,
the planet CA and the core's and hubs' TLS certificates (unless ``tls=False``); and the core's
desired-state key ``core-key.pem`` (public half ``core-key.pub``, given to nodes). Each child gets
only its own files. ``planet.json`` names ``admin_creds`` for tools that need the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from edgefn._internal_auth import InternalGuard, read_secret
from edgefn.bus._ports import free_port
from edgefn.bus.link_group import LinkEmulatorGroup
from edgefn.errors import PlanetError
from edgefn.planet import CLOCK_SKEW_MAX_MS
from edgefn.planet._anycast_choice import EntryLocation
from edgefn.planet.anycast import AnycastEntry
from edgefn.planet.commands import (
    CoreServer,
    PlanetFiles,
    core_argv,
    hub_sites,
    node_argv,
    region_argv,
    write_planet_files,
)
from edgefn.planet.credentials import ADMIN_TOKEN_FILE, write_credentials
from edgefn.runtime._seccomp import set_parent_death_signal
from edgefn.world import Location, rtt_ms

__all__ = [
    "Child",
    "Planet",
    "hub_sites",
    "read_planet",
    "start_child",
    "stop_child",
    "wait_until",
]

PLANET_FILE = "planet.json"
RESTART_BACKOFF_S = 1.0
# How long one role process may take to report ready. Its clock starts when it is spawned, and at
# most START_CONCURRENCY nodes start at once: 50 nodes spawned together on 2 busy cores share the
# CPU so thinly that every one of them misses any fixed deadline, while a few at a time each start
# in a couple of seconds and the planet is up no later.
START_TIMEOUT_S = 60.0
START_CONCURRENCY = max(2, 2 * (os.cpu_count() or 1))


@dataclass(slots=True)
class Child:
    """One role process the supervisor owns."""

    name: str
    args: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0
    held_down: bool = False
    # Runs the interpreter, e.g. ``nsenter --net=/run/netns/x --`` to start it in another
    # network namespace (the multi-host test); it must exec, so ``pid`` stays the role's.
    prefix: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _pdeathsig() -> None:
    set_parent_death_signal(signal.SIGTERM)
    os.setpgrp()


async def start_child(child: Child, timeout_s: float = START_TIMEOUT_S) -> dict[str, Any]:
    """Start ``child`` and wait for its ``{"ready": true}`` line.

    A child that does not report ready within ``timeout_s`` is stopped and reported as a
    :class:`PlanetError` naming it and its log, never as a bare timeout.
    """
    log = child.log_path.open("ab")
    child.proc = subprocess.Popen(  # noqa: ASYNC220 - fork+exec only; readiness is awaited below
        [*child.prefix, sys.executable, "-m", "edgefn.cli.main", *child.args],
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        preexec_fn=_pdeathsig,
    )
    log.close()
    assert child.proc.stdout is not None
    loop = asyncio.get_running_loop()
    try:
        line = await asyncio.wait_for(
            loop.run_in_executor(None, child.proc.stdout.readline), timeout_s
        )
    except TimeoutError:
        stop_child(child, timeout_s=5)
        tail = child.log_path.read_text(errors="replace")[-1500:]
        raise PlanetError(
            f"{child.name} did not report ready within {timeout_s:.0f} s"
            + (f"; the end of its log:\n{tail}" if tail.strip() else ""),
            hint=f"the machine may be overloaded: see {child.log_path}, start fewer "
            "locations, or raise --start-timeout",
        ) from None
    if not line:
        code = child.proc.wait()
        tail = child.log_path.read_text(errors="replace")[-2000:]
        raise PlanetError(
            f"{child.name} exited with code {code} during start-up:\n{tail}",
            hint=f"see {child.log_path}",
        )
    child.info = json.loads(line)
    return child.info


def stop_child(child: Child, timeout_s: float = 10.0) -> None:
    proc = child.proc
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout:
        proc.stdout.close()


def read_planet(state_dir: Path) -> dict[str, Any]:
    """The running planet's ``planet.json``; a clear error when none runs there."""
    path = state_dir / PLANET_FILE
    if not path.exists():
        raise PlanetError(
            f"no planet is running in {state_dir}",
            hint="start one with `edgefn up --locations 6 --detach` "
            "(or pass --state-dir / set EDGEFN_STATE_DIR)",
        )
    data: dict[str, Any] = json.loads(path.read_text())
    pid = int(data.get("supervisor_pid", 0))
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        raise PlanetError(
            f"the planet in {state_dir} is not running (supervisor {pid} is gone)",
            hint="start it again with `edgefn up --detach`",
        ) from None
    return data


class Planet:
    """Starts, supervises and stops a local planet."""

    def __init__(
        self,
        locations: list[Location],
        *,
        state_dir: Path,
        entry_port: int = 8787,
        emulate_rtt: bool = True,
        preload: tuple[str, ...] = (),
        core_args: tuple[str, ...] = (),
        node_args: tuple[str, ...] = (),
        on_progress: Callable[[str], None] | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
        tls: bool | None = None,
        core_servers: int = 1,
    ) -> None:
        if not locations:
            raise PlanetError("a planet needs at least one location")
        if core_servers not in (1, 3, 5):
            raise PlanetError(
                f"a core of {core_servers} servers is not supported",
                hint="use 1 (no replication) or 3 (or 5) servers (replicated, Raft needs a majority)",
            )
        self.core_servers = core_servers
        self.locations = locations
        self.state_dir = state_dir.resolve()
        self.entry_port = entry_port
        self.emulate_rtt = emulate_rtt
        self.preload = preload
        self.core_args = core_args
        # TLS on loopback costs little (measured in docs/design/0007-backbone.md), so it is on;
        # EDGEFN_PLANET_TLS=0 turns it off, e.g. to measure that cost.
        self.tls = tls if tls is not None else os.environ.get("EDGEFN_PLANET_TLS", "1") != "0"
        self.files: PlanetFiles | None = None
        self.node_args = node_args  # e.g. ("--isolation", "relaxed"), appended to every node
        self.progress = on_progress or (lambda _msg: None)
        self.start_timeout_s = start_timeout_s
        self.core: Child | None = None  # the core server that runs the control service
        self.core_children: list[Child] = []
        self.regions: dict[str, Child] = {}
        self.nodes: dict[str, Child] = {}
        self.links: Any = None
        self.entry: Any = None
        self._api: Any = None
        self._api_task: asyncio.Task[None] | None = None
        self._supervise_task: asyncio.Task[None] | None = None
        self.api_url = ""
        self.secret = b""  # the planet secret, read in start() (signs every internal API call)

    # -- start -----------------------------------------------------------------------------
    def _write_credentials(self, api_url: str) -> None:
        path = self.state_dir / ADMIN_TOKEN_FILE
        try:
            token = path.read_text().strip()
        except FileNotFoundError:
            raise PlanetError(
                f"the core wrote no admin token to {path} (its state predates API tokens)",
                hint=f"start with a fresh state directory, or remove {self.state_dir / 'core'}",
            ) from None
        write_credentials(self.state_dir, api_url=api_url, token=token)

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        files = write_planet_files(
            self.state_dir, self.locations, tls=self.tls, emulate_rtt=self.emulate_rtt
        )
        self.files = files
        self.secret = read_secret(files.secret_file)
        self._bind_entry()
        core_site = self.locations[0]
        self.progress(
            f"starting core ({self.core_servers} nats-server with JetStream + control API)"
        )
        self.core_children = self._core_children(files)
        self.core = self.core_children[0]
        await self._start_all(
            self.core_children, "core servers", concurrency=len(self.core_children)
        )
        core_info = self.core.info
        self._write_credentials(core_info["api_url"])
        self.links = LinkEmulatorGroup()
        await self.links.start_control(secret=self.secret)
        sites = hub_sites(self.locations)
        for region, site in sites.items():
            self.progress(f"starting hub for region {region} at {site.id}")
            leaf_urls = []
            for i, core in enumerate(self.core_children):
                # One link per core server, its endpoint named after the server (`edgefn net
                # partition core-0 core-1 core-2` cuts a clustered core off).
                name = "core" if len(self.core_children) == 1 else f"core-{i}"
                link = await self.links.add_link(
                    f"{name}~hub-{region}",
                    f"hub-{region}",
                    name,
                    target_host="127.0.0.1",
                    target_port=int(core.info["leafnode_url"].rsplit(":", 1)[1]),
                    rtt_ms=rtt_ms(site, core_site),
                )
                leaf_urls.append(f"nats-leaf://127.0.0.1:{link.port}")
            self.regions[region] = Child(
                f"hub-{region}",
                region_argv(files, region, core_leaf_urls=leaf_urls),
                self.state_dir / f"logs/hub-{region}.log",
            )
        await self._start_all(list(self.regions.values()), "hubs")
        for loc in self.locations:
            hub = self.regions[loc.region]
            hub_port = int(hub.info["client_url"].rsplit(":", 1)[1])
            link = await self.links.add_link(
                f"hub-{loc.region}~loc-{loc.id}",
                f"loc-{loc.id}",
                f"hub-{loc.region}",
                target_host="127.0.0.1",
                target_port=hub_port,
                rtt_ms=rtt_ms(loc, sites[loc.region]),
            )
            args = node_argv(
                files,
                loc,
                nats_url=f"nats://127.0.0.1:{link.port}",
                preload=self.preload,
                extra=self.node_args,
            )
            self.nodes[loc.id] = Child(f"loc-{loc.id}", args, self.state_dir / f"logs/{loc.id}.log")
        self.progress(f"starting {len(self.nodes)} edge nodes")
        await self._start_all(list(self.nodes.values()), "edge nodes")
        await self._start_entry()
        await self._start_api()
        self._write_state()
        self._supervise_task = asyncio.create_task(self._supervise())
        self.progress("planet ready")

    def _core_children(self, files: PlanetFiles) -> list[Child]:
        """The core's processes: one server, or a cluster whose first server runs control."""
        timeout = ["--start-timeout", str(self.start_timeout_s)]
        if self.core_servers == 1:
            args = core_argv(files, extra=[*timeout, *self.core_args])
            return [Child("core", args, self.state_dir / "logs/core.log")]
        n = self.core_servers
        cluster = [free_port() for _ in range(n)]
        client = [free_port() for _ in range(n)]
        children = []
        for i in range(n):
            others = [j for j in range(n) if j != i]
            server = CoreServer(
                index=i,
                cluster_port=cluster[i],
                cluster_peers=tuple(f"127.0.0.1:{cluster[j]}" for j in others),
                peer_urls=tuple(f"nats://127.0.0.1:{client[j]}" for j in others) if i == 0 else (),
                client_port=client[i],
            )
            args = core_argv(files, server=server, extra=[*timeout, *self.core_args])
            children.append(Child(f"core-{i}", args, self.state_dir / f"logs/core-{i}.log"))
        return children

    async def _start_all(
        self, children: list[Child], what: str, *, concurrency: int = START_CONCURRENCY
    ) -> None:
        """Start ``children``, at most ``concurrency`` at a time, reporting progress.

        The servers of a clustered core must start together: none is ready before a majority
        of them run.
        """
        gate = asyncio.Semaphore(concurrency)
        done = 0

        async def one(child: Child) -> None:
            nonlocal done
            async with gate:
                await start_child(child, self.start_timeout_s)
            done += 1
            self.progress(f"{what}: {done}/{len(children)} ready")

        results = await asyncio.gather(*(one(c) for c in children), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    def _bind_entry(self) -> None:
        """Reserve the entry's port before anything else starts (see AnycastEntry.bind)."""
        self.entry = AnycastEntry(
            [], port=self.entry_port, emulate_rtt=self.emulate_rtt, secret=self.secret
        )
        self.entry.bind()

    async def _start_entry(self) -> None:
        assert self.entry is not None
        self.entry.set_locations(self._entry_locations())
        try:
            await self.entry.start()
        except OSError as err:
            raise PlanetError(
                f"cannot listen on 127.0.0.1:{self.entry_port}: {err}",
                hint="stop what uses the port, or pass --entry-port",
            ) from None
        for loc in self.locations:
            await self.entry.wait_health(loc.id, healthy=True, timeout_s=20)

    def _entry_locations(self) -> list[Any]:
        return [
            EntryLocation(loc.id, loc.lat, loc.lon, self.nodes[loc.id].info.get("url", ""))
            for loc in self.locations
            if self.nodes[loc.id].info.get("url")
        ]

    async def _start_api(self) -> None:
        # lazy: edgefn.edge.node (uvicorn, the sandbox pool) costs ~0.3 s, and every command that
        # finds a running planet (deploy, status, kv, load, down) imports read_planet from here.
        from edgefn.edge.node import serve_asgi

        async def state(_r: Request) -> JSONResponse:
            return JSONResponse(self.describe())

        async def kill(r: Request) -> JSONResponse:
            loc = (await r.json()).get("location", "")
            return JSONResponse(self.kill(loc))

        async def revive(r: Request) -> JSONResponse:
            loc = (await r.json()).get("location", "")
            return JSONResponse(await self.revive(loc))

        async def skew(r: Request) -> JSONResponse:
            body = await r.json()
            return JSONResponse(
                await self.skew(str(body.get("location", "")), body.get("clock_skew_ms"))
            )

        app = Starlette(
            routes=[
                Route("/state", state),
                Route("/kill", kill, methods=["POST"]),
                Route("/revive", revive, methods=["POST"]),
                Route("/skew", skew, methods=["POST"]),
            ]
        )
        # Kill/revive stop processes: only callers holding the planet secret may use them.
        guarded = InternalGuard(app, self.secret)
        self._api, self._api_task, port = await serve_asgi(guarded, "127.0.0.1", 0)
        self.api_url = f"http://127.0.0.1:{port}"

    # -- chaos -----------------------------------------------------------------------------
    def _node(self, location: str) -> Child:
        child = self.nodes.get(location)
        if child is None:
            raise PlanetError(
                f"unknown location {location!r}", hint=f"locations: {', '.join(sorted(self.nodes))}"
            )
        return child

    def kill(self, location: str) -> dict[str, Any]:
        """SIGKILL a node and keep it down until :meth:`revive`."""
        try:
            child = self._node(location)
        except PlanetError as err:
            return {"error": err.message, "hint": err.hint}
        child.held_down = True
        if child.proc is not None and child.alive():
            os.killpg(child.proc.pid, signal.SIGKILL)
            child.proc.wait()
        return {"location": location, "killed": True}

    async def revive(self, location: str) -> dict[str, Any]:
        try:
            child = self._node(location)
        except PlanetError as err:
            return {"error": err.message, "hint": err.hint}
        child.held_down = False
        if not child.alive():
            failed = await self._restart_answer(child)
            if failed:
                return failed
        return {"location": location, "revived": True, "url": child.info.get("url")}

    async def _restart_answer(self, child: Child) -> dict[str, Any] | None:
        """Restart ``child`` for the API: None when it is up, else the error to answer."""
        try:
            await self._restart(child)
        except PlanetError as err:
            hint = err.hint or f"see its log {child.log_path}"
            return {"error": f"{child.name} did not start again: {err.message}", "hint": hint}
        except OSError as err:
            hint = f"see its log {child.log_path}"
            return {"error": f"{child.name} did not start again: {err}", "hint": hint}
        return None

    async def skew(self, location: str, clock_skew_ms: Any) -> dict[str, Any]:
        """Restart a node with its KV clock ``clock_skew_ms`` off (``--clock-skew-ms``; 0 clears)."""
        try:
            child = self._node(location)
        except PlanetError as err:
            return {"error": err.message, "hint": err.hint}
        if (
            isinstance(clock_skew_ms, bool)
            or not isinstance(clock_skew_ms, int)
            or abs(clock_skew_ms) > CLOCK_SKEW_MAX_MS
        ):
            return {
                "error": f"clock_skew_ms {clock_skew_ms!r} must be an integer within "
                f"±{CLOCK_SKEW_MAX_MS} ms",
                "hint": "e.g. edgefn net skew nrt 5000",
            }
        if child.proc is not None and child.alive():
            os.killpg(child.proc.pid, signal.SIGKILL)
            child.proc.wait()
        args = child.args
        while "--clock-skew-ms" in args:  # drop the previous setting (flag and value)
            i = args.index("--clock-skew-ms")
            del args[i : i + 2]
        if clock_skew_ms:
            args += ["--clock-skew-ms", str(clock_skew_ms)]
        child.held_down = False
        failed = await self._restart_answer(child)
        if failed:
            return failed
        return {"location": location, "clock_skew_ms": clock_skew_ms, "url": child.info.get("url")}

    async def _restart(self, child: Child) -> None:
        child.restarts += 1
        port = child.info.get("url", "").rsplit(":", 1)[-1]
        if port.isdigit() and "--port" not in child.args:
            child.args += ["--port", port]  # keep the URL stable across restarts
        internal = child.info.get("internal_url", "").rsplit(":", 1)[-1]
        if internal.isdigit() and "--internal-port" not in child.args:
            child.args += ["--internal-port", internal]
        await start_child(child, self.start_timeout_s)
        self.entry.set_locations(self._entry_locations())
        self._write_state()

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            for child in list(self.nodes.values()):
                if not child.alive() and not child.held_down:
                    with contextlib.suppress(Exception):
                        await asyncio.sleep(RESTART_BACKOFF_S if child.restarts else 0)
                        await self._restart(child)

    # -- state -----------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        assert self.core is not None
        sites = hub_sites(self.locations)
        return {
            "supervisor_pid": os.getpid(),
            "supervisor_url": self.api_url,
            "state_dir": str(self.state_dir),
            "api_url": self.core.info["api_url"],
            "core": {"pid": self.core.pid, "at": self.locations[0].id, **self.core.info},
            "entry_url": self.entry.url if self.entry is not None and self.entry.started else "",
            "links_url": self.links.control_url if self.links else "",
            "credentials": str(self.state_dir / "credentials.json"),
            "secret_file": str(self.state_dir / "planet-secret"),
            "metrics_token_file": str(self.state_dir / "metrics-token"),
            "admin_creds": str(self.files.creds.get("admin", "")) if self.files else "",
            "tls": self.tls,
            # Every server of the core (one, or a cluster): pids, client/monitor/cluster URLs.
            "core_servers": [
                {"name": c.name, "pid": c.pid, "alive": c.alive(), **c.info}
                for c in self.core_children
            ],
            "regions": {
                r: {"pid": c.pid, "at": sites[r].id, **c.info} for r, c in self.regions.items()
            },
            "locations": [
                {
                    "name": loc.id,
                    "city": loc.city,
                    "region": loc.region,
                    "lat": loc.lat,
                    "lon": loc.lon,
                    "url": self.nodes[loc.id].info.get("url", ""),
                    "internal_url": self.nodes[loc.id].info.get("internal_url", ""),
                    "pid": self.nodes[loc.id].pid,
                    "alive": self.nodes[loc.id].alive(),
                    "held_down": self.nodes[loc.id].held_down,
                    "restarts": self.nodes[loc.id].restarts,
                    "log": str(self.state_dir / f"nodes/{loc.id}/node.log"),
                }
                for loc in self.locations
            ],
        }

    def _write_state(self) -> None:
        path = self.state_dir / PLANET_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.describe(), indent=2))
        os.replace(tmp, path)

    # -- stop ------------------------------------------------------------------------------
    async def stop(self) -> None:
        if self._supervise_task is not None:
            self._supervise_task.cancel()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / PLANET_FILE).unlink()
        if self._api is not None:
            self._api.should_exit = True
            assert self._api_task is not None
            await self._api_task
        if self.entry is not None:
            await self.entry.close()
        loop = asyncio.get_running_loop()
        # Nodes first, then hubs, then the core (servers together: a cluster losing its
        # majority one server at a time would only log elections).
        for tier in (self.nodes.values(), self.regions.values(), self.core_children):
            await asyncio.gather(*(loop.run_in_executor(None, stop_child, c) for c in tier))
        if self.links is not None:
            with contextlib.suppress(Exception):
                await self.links.close()


def wait_until(
    predicate: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.05
) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()
