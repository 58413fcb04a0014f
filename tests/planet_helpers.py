"""Test helpers: start a real local planet with the CLI (as a user would) and stop it by pid.

``start_planet`` is the one way a test starts a whole local planet. It runs ``edgefn up --detach``,
which returns once every role (core, region hubs, nodes, entry) has reported ready and
``planet.json`` names the supervisor; the test gets a ``Planet`` (that file and the state
directory, with the URLs, secret and CLI of that planet at hand). On the way out, whatever
happened: ``edgefn down``, SIGKILL to the supervisor's process group, then a check that no process
of the planet is left (every one names the state directory on its command line); a survivor is
killed by pid and fails the test. Module fixtures start theirs through the ``planet_factory``
fixture (tests/conftest.py) with their own ``PlanetSpec``.

Two other shapes are deliberately separate: ``running_roles`` starts one core, one region hub and
one node as plain processes wired by URL with the test's own bus credentials (no supervisor, so a
test can act as one role against the others); the multi-host test builds its planet across
network namespaces (tests/integration/multihost).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

import httpx
import pytest

from edgefn._internal_auth import InternalAuth, planet_secret
from edgefn.bundle import load_or_create_signing_key
from tests.bus_creds import BusFiles, bus_files
from tests.waiting import wait_for

__all__ = [
    "EDGEFN",
    "REPO",
    "Planet",
    "PlanetFactory",
    "PlanetSpec",
    "Role",
    "Roles",
    "cli_env",
    "credentials",
    "deployed",
    "edgefn",
    "free_port",
    "internal_client",
    "internal_urls",
    "planet_processes",
    "running_roles",
    "start_planet",
    "wait_for",  # re-exported: planet tests import it from here
    "wait_kv_connected",
]

REPO = Path(__file__).resolve().parent.parent
EDGEFN = [sys.executable, "-m", "edgefn.cli.main"]
# How long a stopped planet's processes may take to exit before the test fails (they normally
# are gone when ``edgefn down`` returns; workers may need a moment after their node died).
EXIT_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_group(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGINT, timeout_s: float = 10
) -> str:
    """Send ``sig`` to ``proc``'s process group (started with ``start_new_session``), SIGKILL it
    if it has not exited within ``timeout_s``, and return what it wrote to its piped stdout."""
    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if proc.stdout is None:
        return ""
    out = proc.stdout.read().decode()
    proc.stdout.close()
    return out


def cli_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """The environment for ``edgefn`` in tests: a deployer key next to (not in) the state dir.

    Keeping the key out of ``~/.config`` keeps tests hermetic; ``EDGEFN_TOKEN`` is dropped so the
    CLI reads the credentials ``edgefn up`` wrote, unless a test passes one.
    """
    env = {k: v for k, v in os.environ.items() if k != "EDGEFN_TOKEN"}
    env["EDGEFN_DEPLOYER_KEY"] = str(state_dir.parent / f"{state_dir.name}-deployer-key.pem")
    env.update(extra)
    return env


def credentials(state_dir: Path) -> dict[str, Any]:
    """What ``edgefn up`` wrote to ``<state-dir>/credentials.json`` (api_url, admin token)."""
    data: dict[str, Any] = json.loads((state_dir / "credentials.json").read_text())
    return data


def edgefn(
    *args: str,
    state_dir: Path,
    check: bool = True,
    timeout: float = 180,
    env: dict[str, str] | None = None,
    stdin: str = "",
) -> Any:
    """Run ``edgefn ARGS --state-dir DIR --json`` and return its parsed JSON (or the process)."""
    res = subprocess.run(
        [*EDGEFN, *args, "--state-dir", str(state_dir)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env or cli_env(state_dir),
    )
    if check and res.returncode != 0:
        raise AssertionError(
            f"edgefn {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
        )
    if "--json" in args and res.returncode == 0:
        return json.loads(res.stdout)
    return res


def internal_client(state_dir: Path, **kwargs: Any) -> httpx.Client:
    """A client for the planet's internal listeners: every request signed with its secret."""
    return httpx.Client(auth=InternalAuth(planet_secret(state_dir)), trust_env=False, **kwargs)


def internal_urls(planet: dict[str, Any]) -> dict[str, str]:
    """Location name -> the node's internal listener URL, from planet.json."""
    return {loc["name"]: loc["internal_url"] for loc in planet["locations"]}


# --------------------------------------------------------------------------- a whole planet


@dataclass(frozen=True, kw_only=True)
class PlanetSpec:
    """What ``edgefn up`` starts: the options a module's planet differs in."""

    locations: int = 4
    core_servers: int = 1
    topology: Path | None = None
    emulate_rtt: bool = False
    # Further ``edgefn up`` options, e.g. canary gates.
    extra_args: tuple[str, ...] = ()
    # Environment for the planet's processes (``edgefn up`` passes it on to every role).
    env: Mapping[str, str] = field(default_factory=dict)

    def up_args(self, entry_port: int) -> list[str]:
        args = ["up", "--detach", "--json", "--entry-port", str(entry_port)]
        if self.topology:
            args += ["--topology", str(self.topology)]
        else:
            args += ["--locations", str(self.locations)]
        if self.core_servers != 1:
            args += ["--core-servers", str(self.core_servers)]
        if not self.emulate_rtt:
            args.append("--no-emulate-rtt")
        return args + list(self.extra_args)


class Planet(NamedTuple):
    """A running planet: ``planet.json`` as ``edgefn up --json`` printed it, and its state directory.

    A tuple so a test may unpack it as ``info, state = planet``.
    """

    info: dict[str, Any]
    state: Path

    @property
    def entry_url(self) -> str:
        return str(self.info["entry_url"])

    @property
    def names(self) -> list[str]:
        """Location names, in ``planet.json`` order."""
        return [loc["name"] for loc in self.info["locations"]]

    @property
    def locations(self) -> dict[str, dict[str, Any]]:
        """Location name -> its ``planet.json`` entry (url, internal_url, region, ...)."""
        return {loc["name"]: loc for loc in self.info["locations"]}

    @property
    def public_urls(self) -> dict[str, str]:
        return {loc["name"]: loc["url"] for loc in self.info["locations"]}

    @property
    def internal_urls(self) -> dict[str, str]:
        return internal_urls(self.info)

    @property
    def secret(self) -> bytes:
        return planet_secret(self.state)

    def edgefn(self, *args: str, **options: Any) -> Any:
        """``edgefn ARGS`` against this planet (see ``edgefn`` for the options)."""
        return edgefn(*args, state_dir=self.state, **options)

    def deploy(self, function_dir: Path) -> dict[str, Any]:
        """``edgefn deploy DIR --wait``: returns once every location serves the new version."""
        out: dict[str, Any] = self.edgefn("deploy", str(function_dir), "--wait", "--json")
        return out

    def internal_client(self, **kwargs: Any) -> httpx.Client:
        return internal_client(self.state, **kwargs)


# What the ``planet_factory`` fixture (tests/conftest.py) gives a module: start a planet named
# ``name`` (its state directory's prefix) per the spec; it runs until the module is done.
PlanetFactory = Callable[[str, PlanetSpec], Planet]


def planet_processes(state_dir: Path) -> list[tuple[int, str]]:
    """(pid, command line) of every process whose command line names ``state_dir`` or below.

    Every process of a local planet does: the supervisor, roles and nats-servers by
    ``--state-dir``/config path, sandbox zygotes and workers by ``--versions-dir``.
    """
    mine = re.compile(re.escape(str(state_dir)) + r"(/|$)")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # exited meanwhile
            continue
        args = [a.decode(errors="replace") for a in argv if a]
        if any(mine.search(a) for a in args):
            found.append((int(entry.name), " ".join(args)))
    return found


def _check_nothing_left(state_dir: Path) -> None:
    """Fail if a process under ``state_dir`` outlived its planet's stop, after killing it by pid."""
    try:
        wait_for(
            lambda: not planet_processes(state_dir),
            timeout_s=EXIT_TIMEOUT_S,
            what=f"every process of the planet in {state_dir} to exit",
        )
    except AssertionError as err:
        left = planet_processes(state_dir)
        for pid, _ in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log = state_dir / "logs" / "supervisor.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no supervisor log)"
        # `from err`: err's own context is what made the planet stop (e.g. `edgefn up` failing),
        # which the report must show, not hide.
        raise AssertionError(
            f"{err}; killed the survivors: {left}\nsupervisor log tail:\n{tail}"
        ) from err


@contextmanager
def start_planet(state_dir: Path, spec: PlanetSpec | None = None) -> Iterator[Planet]:
    """``edgefn up --detach`` per ``spec``; yields the planet; always stops every process by pid."""
    spec = spec or PlanetSpec()
    env = cli_env(state_dir, **spec.env)
    info: dict[str, Any] = {}
    try:
        info = edgefn(*spec.up_args(free_port()), state_dir=state_dir, env=env)
        yield Planet(info, state_dir)
    finally:
        subprocess.run(
            [*EDGEFN, "down", "--state-dir", str(state_dir)],
            capture_output=True,
            timeout=90,
            cwd=REPO,
            env=cli_env(state_dir),
        )
        pid = info.get("supervisor_pid")
        if pid:
            try:
                os.killpg(int(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        _check_nothing_left(state_dir)


def wait_kv_connected(planet: Planet, namespace: str, *, timeout_s: float = 60) -> None:
    """Until every location's replica of ``namespace`` is on the bus and knows all the others."""

    def connected() -> bool:
        with planet.internal_client(timeout=10) as c:
            states = [
                c.get(f"{url}/_edgefn/kvstate/{namespace}").json()
                for url in planet.internal_urls.values()
            ]
        return all(
            s["driver"]["connected"] and len(s["driver"]["members"]) == len(states) for s in states
        )

    wait_for(connected, timeout_s=timeout_s, what=f"every {namespace!r} KV replica connected")


# --------------------------------------------------------------------------- roles by hand


class Role:
    """One role process (``edgefn core|region|node``) started by the test; ready once it prints
    its JSON line (``info``)."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log: IO[str] = log.open("w")
        self.proc = subprocess.Popen(
            [*EDGEFN, *args], stdout=subprocess.PIPE, stderr=self.log, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise AssertionError(f"role {args[0]} failed to start: {log.read_text()[-2000:]}")
        self.info: dict[str, Any] = json.loads(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()


class Roles(NamedTuple):
    """One core, one region hub and one node, wired by URL; files under ``tmp``.

    ``tmp`` holds ``key.pem`` (the trusted deployer key), ``admin-token``, the bus credentials
    ``bus`` names, each role's state directory (``core``, ``region``, ``node``) and log.
    """

    core: Role
    region: Role
    node: Role
    bus: BusFiles
    tmp: Path


@contextmanager
def running_roles(tmp: Path, *, region: str = "eu-west", location: str = "fra") -> Iterator[Roles]:
    """The three roles as separate processes, as on three machines (no supervisor, no entry)."""
    key = load_or_create_signing_key(tmp / "key.pem")
    pub = tmp / "key.pub"
    pub.write_text(key.public_key_pem())
    bus = bus_files(tmp, regions=[region], locations=[(location, region)])
    started: list[Role] = []
    try:
        core = Role(
            [
                *("core", "--state-dir", str(tmp / "core"), "--trusted-key", str(pub)),
                *("--admin-token-file", str(tmp / "admin-token")),
                *("--creds", str(bus["control"]), "--users", str(bus["core.users"])),
                *("--core-signing-key", str(bus.core_key), *bus.tls_args("core")),
            ],
            tmp / "core.log",
        )
        started.append(core)
        hub = Role(
            [
                *("region", "--name", region, "--core-leaf", core.info["leafnode_url"]),
                *("--state-dir", str(tmp / "region"), "--creds", str(bus[f"cache-{region}"])),
                *("--leaf-creds", str(bus[f"leaf-{region}"])),
                *("--users", str(bus[f"hub-{region}.users"]), *bus.tls_args(f"hub-{region}")),
            ],
            tmp / "region.log",
        )
        started.append(hub)
        node = Role(
            [
                *("node", "--location", location, "--region", region),
                *("--nats", hub.info["client_url"], "--trusted-key", str(pub)),
                *("--state-dir", str(tmp / "node"), "--creds", str(bus[f"node-{location}"])),
                *("--core-key", str(bus.core_pub)),
            ],
            tmp / "node.log",
        )
        started.append(node)
        yield Roles(core, hub, node, bus, tmp)
    finally:
        for role in reversed(started):
            role.stop()
        _check_nothing_left(tmp)


def deployed(
    planet: Planet, tmp_path_factory: pytest.TempPathFactory, name: str, code: str
) -> Planet:
    """``planet`` with function ``name`` (its ``main.py`` is ``code``) deployed on it."""
    d: Path = tmp_path_factory.mktemp("fns") / name
    d.mkdir()
    (d / "edgefn.toml").write_text(f'name = "{name}"\nmain = "main.py"\n')
    (d / "main.py").write_text(code)
    planet.deploy(d)
    return planet
