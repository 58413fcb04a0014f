"""The three process roles of a planet: ``core``, ``region`` and ``node``.

Each role is one process that takes the URLs of its peers, so the same code runs on one laptop
(started by the planet supervisor) or across real hosts (started by hand or by a service manager):

* **core** — a nats-server with JetStream (``sync_interval: always``) plus the control service and
  its HTTP API (the rollout reconciler and the registry over JetStream). On first start it writes
  a bootstrap admin API token (mode 0600) to ``admin_token_file``; ``trusted_keys`` are registered
  as deployer keys of account ``default``. A clustered core is three ``core`` processes, each
  with its server's cluster block; one of them (``control``) runs the control service, connected
  to all three servers. Each core process restarts its nats-server if it exits.
* **region** — a hub nats-server whose leafnode connects to the core, plus the region's bundle cache.
* **node** — one location: the edge node's HTTP ingress and sandbox pool, plus the node agent that
  follows desired state through the region's hub.

Every role authenticates to NATS (edgefn.bus.credentials): the core and each hub get their users'
list (``--users``), each process its own credentials file (``--creds``) which it sets as the
process's default identity. TLS: the core and hubs take a certificate from the planet CA; a server
bound to a non-loopback address without TLS or users refuses to start (``check_exposure``).

A role prints one JSON line ``{"ready": true, ...addresses}`` on stdout once it serves, then runs
until SIGTERM or SIGINT, and stops its children by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn

from edgefn._internal_auth import read_secret
from edgefn.bus.credentials import Credentials, set_default_credentials
from edgefn.bus.errors import BusError, NatsServerStartError
from edgefn.bus.jetstream import connect, wait_jetstream
from edgefn.bus.nats_config import (
    ClusterConfig,
    CoreConfig,
    HubConfig,
    TlsFiles,
    check_exposure,
    is_loopback,
)
from edgefn.bus.nats_server import NatsServer
from edgefn.bus.permissions import NatsUser
from edgefn.control.api import create_app
from edgefn.control.desired_signing import DesiredSigner
from edgefn.control.gates import GateThresholds
from edgefn.control.incidents_driver import IncidentsDriver, IncidentStore
from edgefn.control.otlp_export import OtlpExport
from edgefn.control.placement_driver import DemandWindow, SmartPlacement, telemetry_demand
from edgefn.control.reconciler import ReconcilerOptions
from edgefn.control.service import ControlService
from edgefn.control.telemetry_ingest import TelemetryIngest
from edgefn.control.trace_ingest import TraceIngest
from edgefn.edge.listener import ASGIApp, serve_asgi
from edgefn.edge.outbound import Outbound
from edgefn.edge.traffic import TrafficOptions
from edgefn.observe.incident_routes import Routes
from edgefn.observe.rollup import Rollup
from edgefn.observe.span_store import SpanStore
from edgefn.observe.telemetry_store import TelemetryStore
from edgefn.planet.assembly import NodeConfig, build_node, bus_addresses
from edgefn.planet.bundles import BundleCache
from edgefn.planet.cache_tier import RegionCacheTier
from edgefn.secrets.crypto import load_or_create_master_key

# A serving node's young-generation threshold (run_node says why).
GC_YOUNG_ALLOCS = 10_000


def announce(info: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"ready": True, **info}) + "\n")
    sys.stdout.flush()


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _serve_asgi(
    app: ASGIApp, host: str, port: int
) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    """An ASGI app on uvicorn in this loop (the node's own server setup: no proxy headers)."""
    return await serve_asgi(app, host, port)


async def run_core(
    *,
    state_dir: Path,
    host: str,
    client_port: int,
    leafnode_port: int,
    api_port: int,
    trusted_keys: list[str],
    admin_token_file: Path | None = None,
    users: tuple[NatsUser, ...],
    creds: Credentials,
    tls: TlsFiles | None = None,
    desired_key: DesiredSigner | None = None,
    gates: GateThresholds | None = None,
    secrets_key_file: Path | None = None,
    server_name: str = "core",
    cluster: ClusterConfig | None = None,
    peer_urls: tuple[str, ...] = (),
    control: bool = True,
    start_timeout_s: float = 60.0,
    incident_routes: Routes | None = None,
    otlp_endpoint: str | None = None,
    replan_interval_s: float = 60.0,
) -> None:
    """One core server, and (``control``) the control service and API.

    With ``cluster`` (whose routes name the *other* servers) this is one server of a clustered
    core: every planet-state bucket gets as many replicas as the cluster has servers, and the
    control service connects to every server (``peer_urls``: the others' client URLs) so it
    rides out the loss of any one of them.
    """
    config = CoreConfig(
        name=server_name,
        store_dir=state_dir / "jetstream",
        host=host,
        client_port=client_port,
        leafnode_port=leafnode_port,
        cluster=cluster,
        users=users,
        tls=tls,
    )
    check_exposure(config)  # Before creating anything: a refused start leaves no files behind.
    state_dir.mkdir(parents=True, exist_ok=True)
    set_default_credentials(creds)
    # A clustered server is healthy only once the cluster has a JetStream meta leader, which
    # needs a majority of the servers started: they start together, so allow for all of them.
    nats = NatsServer(config, work_dir=state_dir, start_timeout_s=start_timeout_s)
    await nats.start()
    keeper = asyncio.create_task(_keep_server_running(nats), name="keep-nats-server")
    try:
        info = {
            "role": "core",
            "server_name": server_name,
            "client_url": nats.client_url,
            "leafnode_url": nats.leafnode_url,
            "monitor_url": nats.monitor_url,
            "nats_pid": nats.pid,
        }
        if cluster is not None:
            info["cluster_url"] = f"nats-route://{nats.cluster_address}"
        if not control:
            announce(info)
            await _until_signalled()
            return
        # ``cluster.routes`` name the other servers: one replica of every bucket per server.
        replicas = 1 if cluster is None else len(cluster.routes) + 1
        await _run_control(
            nats,
            info,
            host=host,
            api_port=api_port,
            trusted_keys=trusted_keys,
            admin_token_file=admin_token_file,
            desired_key=desired_key,
            gates=gates,
            secrets_key_file=secrets_key_file or state_dir / "secrets.key",
            peer_urls=peer_urls,
            replicas=replicas,
            setup_timeout_s=start_timeout_s,
            telemetry_db=state_dir / "telemetry.sqlite",
            incident_routes=incident_routes,
            otlp_endpoint=otlp_endpoint,
            replan_interval_s=replan_interval_s,
        )
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        await nats.stop()


async def _run_control(
    nats: NatsServer,
    info: dict[str, Any],
    *,
    host: str,
    api_port: int,
    trusted_keys: list[str],
    admin_token_file: Path | None,
    desired_key: DesiredSigner | None,
    gates: GateThresholds | None,
    secrets_key_file: Path,
    peer_urls: tuple[str, ...],
    replicas: int,
    setup_timeout_s: float,
    telemetry_db: Path,
    incident_routes: Routes | None = None,
    otlp_endpoint: str | None = None,
    replan_interval_s: float = 60.0,
) -> None:
    # The secrets master key: generated at first start (0600); on several hosts, share one file.
    secrets_key = load_or_create_master_key(secrets_key_file)
    nc = await connect([_local_url(nats), *peer_urls], name="edgefn-control")
    await wait_jetstream(nc, timeout_s=setup_timeout_s)
    options = ReconcilerOptions(gates=gates) if gates is not None else None
    # Node rollups into the core's SQLite store (docs/design/0019-telemetry.md); smart placement
    # reads its demand from them (docs/design/0029-smart-placement.md).
    telemetry = TelemetryStore(telemetry_db)
    demand = DemandWindow()
    placement = SmartPlacement(
        telemetry_demand(telemetry, window=demand), interval_s=replan_interval_s
    )
    service = ControlService(
        nc,
        trusted_keys=trusted_keys,
        options=options,
        desired_key=desired_key,
        secrets_key=secrets_key,
        replicas=replicas,
        # A single server answers at once; a new cluster elects each bucket's Raft group.
        setup_timeout_s=5.0 if replicas == 1 else setup_timeout_s,
        placement=placement,
    )
    await service.start()
    await service.access.bootstrap_admin(admin_token_file)
    # Anomalies and incidents on those rollups, next to them (docs/design/0021-incidents.md).
    incidents = IncidentsDriver(
        IncidentStore(telemetry_db.with_name("incidents.sqlite")),
        routes=incident_routes,
        locations=service.location_status,
    )
    await incidents.start()

    def on_stored(rollup: Rollup) -> None:
        incidents.on_rollup(rollup)
        demand.add(rollup)

    ingest = TelemetryIngest(nc, telemetry, replicas=replicas, on_stored=on_stored)
    await ingest.start()
    # Kept traces into the span store, and to an OTLP collector (docs/design/0023-traces.md).
    spans = SpanStore(telemetry_db.with_name("spans.sqlite"))
    export = OtlpExport(otlp_endpoint) if otlp_endpoint else None
    traces = TraceIngest(nc, spans, replicas=replicas, export=export)
    await traces.start()
    app = create_app(service, telemetry=telemetry, incidents=incidents, spans=spans)
    server, task, port = await _serve_asgi(app, host, api_port)
    announce({**info, "api_url": f"http://{host}:{port}", "replicas": replicas})
    await _until_signalled()
    server.should_exit = True
    await task
    await traces.stop()
    await ingest.stop()
    await incidents.stop()
    await service.stop()
    await nc.close()
    telemetry.close()
    spans.close()
    incidents.store.close()


async def _keep_server_running(nats: NatsServer, *, poll_s: float = 0.5) -> None:
    """Restart the nats-server when it exits (a crash, or a test killing it) until cancelled.

    It comes back on the same ports and store, and a clustered server catches up from its peers
    through Raft. Failed restarts back off from 1 s to at most 10 s between attempts.
    """
    backoff_s = 1.0
    while True:
        await asyncio.sleep(poll_s)
        if nats.running():
            backoff_s = 1.0
            continue
        sys.stderr.write(f"nats-server {nats.name} exited; restarting it\n")
        try:
            await nats.start()
        except NatsServerStartError as err:
            sys.stderr.write(f"restarting nats-server {nats.name} failed: {err}\n")
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, 10.0)


def _local_url(nats: NatsServer) -> str:
    """The server's client URL as its own process reaches it (wildcard binds via 127.0.0.1)."""
    url = nats.client_url
    for wildcard in ("//0.0.0.0:", "//[::]:", "//:::"):
        url = url.replace(wildcard, "//127.0.0.1:")
    return url


async def run_region(
    *,
    name: str,
    state_dir: Path,
    host: str,
    client_port: int,
    core_leafnode_urls: list[str],
    users: tuple[NatsUser, ...],
    leaf_creds: Credentials,
    creds: Credentials,
    tls: TlsFiles | None = None,
) -> None:
    config = HubConfig(
        name=f"hub-{name}",
        core_leafnode_urls=tuple(core_leafnode_urls),
        host=host,
        client_port=client_port,
        users=users,
        leaf_user=leaf_creds.user,
        leaf_password=leaf_creds.password,
        tls=tls,
    )
    check_exposure(config)
    state_dir.mkdir(parents=True, exist_ok=True)
    set_default_credentials(creds)
    nats = NatsServer(config, work_dir=state_dir)
    await nats.start()
    try:
        tier: RegionCacheTier | None = None

        async def reconnected() -> None:
            if tier is not None:
                tier.on_reconnect()

        nc = await connect(
            _local_url(nats), name=f"bundle-cache-{name}", reconnected_cb=reconnected
        )
        cache = BundleCache(nc, name, state_dir / "bundle-cache")
        await cache.start()
        # The region's edge-cache tier fetches origins: never the hub itself, whatever a
        # function's allow_private says.
        hub = bus_addresses((nats.client_url,))
        tier = RegionCacheTier(nc, name, Outbound(deny_addresses=hub))
        await tier.start()
        announce(
            {"role": "region", "name": name, "client_url": nats.client_url, "nats_pid": nats.pid}
        )
        await _until_signalled()
        await tier.stop()
        await tier.outbound.aclose()
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
    creds: Credentials,
    core_keys: list[str] | None = None,
    traffic: TrafficOptions | None = None,
    internal_port: int = 0,
    metrics_token_file: Path | None = None,
    isolation: str = "strict",
    kv_wait_s: float = 2.0,
    clock_skew_ms: int = 0,
    tracing: bool = True,
    telemetry: bool = True,
) -> None:
    """One edge node and its agent, KV and traffic parts (built by planet/assembly.py)."""
    # The planet secret signs forwards and opens the internal listener; without it (a node run
    # by hand with no --secret-file) the node has no internal listener at all.
    secret = read_secret(traffic.secret_file) if traffic is not None else None
    metrics_token = (
        metrics_token_file.read_text().strip() if metrics_token_file is not None else None
    )
    _check_node_bus(nats_urls, creds)
    set_default_credentials(creds)
    config = NodeConfig(
        location=location,
        region=region,
        state_dir=state_dir,
        host=host,
        port=port,
        nats_urls=tuple(nats_urls),
        trusted_keys=tuple(trusted_keys),
        preload=preload,
        core_keys=None if core_keys is None else tuple(core_keys),
        traffic=traffic,
        internal_port=internal_port,
        isolation="relaxed" if isolation == "relaxed" else "strict",
        kv_wait_s=kv_wait_s,
        clock_skew_ms=clock_skew_ms,
        secret=secret,
        metrics_token=metrics_token,
        tracing=tracing,
        telemetry=telemetry,
    )
    assembled = build_node(config)
    node = assembled.node
    try:
        await assembled.start()
        # Everything start-up made (modules, the function table, routing tables, the bus
        # clients) moves to the permanent generation, so the collections that request garbage
        # triggers traverse only what requests left alive, not the whole heap: a full
        # collection of a serving node took 50-60 ms before, 3-4 ms after (gc.callbacks under
        # wrk; docs/design/0023-traces.md). In the node's own process only.
        gc.collect()
        gc.freeze()
        # Young collections only find what in-flight requests hold (their garbage is freed by
        # reference counting first), so their cost is per collection: one per GC_YOUNG_ALLOCS
        # net allocations instead of Python's 700.
        gc.set_threshold(GC_YOUNG_ALLOCS, 10, 10)
        announce(
            {
                "role": "node",
                "location": location,
                "url": node.url,
                "internal_url": node.internal_url,
            }
        )
        await _until_signalled()
    finally:
        await assembled.stop()


def _check_node_bus(nats_urls: list[str], creds: Credentials) -> None:
    """A node whose hub is not on this machine must verify it with the planet CA."""
    remote = [u for u in nats_urls if not is_loopback(urlsplit(u).hostname or "")]
    if remote and creds.ca_file is None:
        raise BusError(
            f"node would talk to NATS at {', '.join(remote)} (not loopback) without TLS",
            hint="use the credentials file `edgefn up` wrote with TLS (it names ca_file)",
        )
