"""The three process roles of a planet: ``core``, ``region`` and ``node``.

Each role is one process that takes the URLs of its peers, so the same code runs on one laptop
(started by the planet supervisor) or across real hosts (started by hand or by a service manager):

* **core** — a nats-server with JetStream (``sync_interval: always``) plus the control service and
  its HTTP API (the rollout reconciler and the registry over JetStream).
* **region** — a hub nats-server whose leafnode connects to the core, plus the region's bundle cache.
* **node** — one location: the edge node's HTTP ingress and sandbox pool, plus the node agent that
  follows desired state through the region's hub.

A role prints one JSON line ``{"ready": true, ...addresses}`` on stdout once it serves, then runs
until SIGTERM or SIGINT, and stops its children by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

from edgefn.bus.nats_config import CoreConfig, HubConfig
from edgefn.bus.nats_server import NatsServer


def announce(info: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"ready": True, **info}) + "\n")
    sys.stdout.flush()


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _serve_asgi(app: Any, host: str, port: int) -> tuple[Any, asyncio.Task[None], int]:
    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield

    server = _Server(
        uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise OSError(f"cannot serve on {host}:{port}")
        await asyncio.sleep(0.01)
    return server, task, server.servers[0].sockets[0].getsockname()[1]


async def run_core(
    *,
    state_dir: Path,
    host: str,
    client_port: int,
    leafnode_port: int,
    api_port: int,
    trusted_keys: list[str],
    gates: Any = None,
) -> None:
    from edgefn.bus.jetstream import connect
    from edgefn.control.api import create_app
    from edgefn.control.reconciler import ReconcilerOptions
    from edgefn.control.service import ControlService

    state_dir.mkdir(parents=True, exist_ok=True)
    nats = NatsServer(
        CoreConfig(
            name="core",
            store_dir=state_dir / "jetstream",
            host=host,
            client_port=client_port,
            leafnode_port=leafnode_port,
        ),
        work_dir=state_dir,
    )
    await nats.start()
    try:
        nc = await connect(nats.client_url, name="edgefn-control")
        options = ReconcilerOptions(gates=gates) if gates is not None else None
        service = ControlService(nc, trusted_keys=trusted_keys, options=options)
        await service.start()
        server, task, port = await _serve_asgi(create_app(service), host, api_port)
        announce(
            {
                "role": "core",
                "api_url": f"http://{host}:{port}",
                "client_url": nats.client_url,
                "leafnode_url": nats.leafnode_url,
                "nats_pid": nats.pid,
            }
        )
        await _until_signalled()
        server.should_exit = True
        await task
        await service.stop()
        await nc.close()
    finally:
        await nats.stop()


async def run_region(
    *, name: str, state_dir: Path, host: str, client_port: int, core_leafnode_urls: list[str]
) -> None:
    from edgefn.bus.jetstream import connect
    from edgefn.planet.bundles import BundleCache

    state_dir.mkdir(parents=True, exist_ok=True)
    nats = NatsServer(
        HubConfig(
            name=f"hub-{name}",
            core_leafnode_urls=tuple(core_leafnode_urls),
            host=host,
            client_port=client_port,
        ),
        work_dir=state_dir,
    )
    await nats.start()
    try:
        nc = await connect(nats.client_url, name=f"bundle-cache-{name}")
        cache = BundleCache(nc, name, state_dir / "bundle-cache")
        await cache.start()
        announce(
            {"role": "region", "name": name, "client_url": nats.client_url, "nats_pid": nats.pid}
        )
        await _until_signalled()
        await cache.stop()
        await nc.close()
    finally:
        await nats.stop()


async def run_node(
    *,
    location: str,
    region: str,
    state_dir: Path,
    host: str,
    port: int,
    nats_urls: list[str],
    trusted_keys: list[str],
    preload: tuple[str, ...],
    traffic: Any = None,
    isolation: str = "strict",
) -> None:
    from edgefn.edge import EdgeNode
    from edgefn.observe import JsonLog
    from edgefn.planet.node_agent import NodeAgent

    state_dir.mkdir(parents=True, exist_ok=True)
    log_file = (state_dir / "node.log").open("a", buffering=1)
    node = EdgeNode(
        location,
        region=region,
        host=host,
        port=port,
        state_dir=state_dir,
        log=JsonLog(log_file, location=location),
        preload=preload,
        isolation="relaxed" if isolation == "relaxed" else "strict",
    )
    await node.start()
    kv, kv_task = _start_kv(node, location, state_dir, nats_urls)
    agent = NodeAgent(
        node, nats_urls=nats_urls, region=region, trusted_keys=trusted_keys, state_dir=state_dir
    )
    driver: Any = None
    try:
        await agent.start()
        driver = await _start_traffic(node, location, region, traffic, nats_urls)
        announce({"role": "node", "location": location, "url": node.url})
        await _until_signalled()
    finally:
        await agent.stop()
        if driver is not None:
            await driver.stop()
        kv_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await kv_task
        await kv.stop()
        await node.stop()
        log_file.close()


def _start_kv(
    node: Any, location: str, state_dir: Path, nats_urls: list[str]
) -> tuple[Any, asyncio.Task[None]]:
    """KV replicas for the namespaces this node's functions bind (see edge/kv_binding.py)."""
    from edgefn.edge.kv_binding import KVService

    kv = KVService(location=location, state_dir=state_dir, nats_urls=nats_urls)
    node.kv_handler = kv.handle_call
    node.kv_http = kv.asgi
    return kv, asyncio.create_task(kv.run(node), name="kv-sync")


async def _start_traffic(
    node: Any, location: str, region: str, options: Any, nats_urls: list[str]
) -> Any:
    """Routing, health, rate limits and admission for this node (see edge/traffic.py)."""
    if options is None:
        return None
    from edgefn.edge.traffic import TrafficDriver, load_traffic_config

    driver = TrafficDriver(load_traffic_config(location, region, options))
    driver.functions = lambda: frozenset(node.table.functions)
    node.traffic = driver
    await driver.start(nats_urls, url=node.url)
    return driver
