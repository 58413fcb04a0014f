"""``edgefn core``, ``edgefn region``, ``edgefn node``: the planet's roles, one process each.

Use these to run a planet across several machines (each role takes its peers' URLs); ``edgefn up``
starts the same roles on one machine. Every role authenticates to NATS with its own credentials
file (``--creds``, from ``<state-dir>/creds/`` of ``edgefn up`` or your own); the servers take their
users' list (``--users``) and, off loopback, a TLS certificate (``--tls-cert/--tls-key/--tls-ca``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgefn.cli._output import fail, fail_from
from edgefn.planet import CLOCK_SKEW_MAX_MS


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("core")(core)
    app.command("region")(region)
    app.command("node")(node)


def _keys(paths: list[Path], *, required: bool = True) -> list[str]:
    keys = []
    for p in paths:
        if not p.is_file():
            fail(f"--trusted-key {p}: no such file", hint="pass the planet's public key PEM file")
        keys.append(p.read_text())
    if not keys and required:
        fail(
            "at least one --trusted-key is required",
            hint="edgefn up writes .edgefn/deployer-key.pub",
        )
    return keys


def _file(path: Path | None, flag: str, hint: str) -> Path:
    if path is None or not path.is_file():
        fail(f"{flag} {path or ''}: no such file".replace("  ", " "), hint=hint)
    assert path is not None
    return path


_CREDS_HINT = "edgefn up writes every role's file to <state-dir>/creds/ (see docs/design/0007)"


def _tls(cert: Path | None, key: Path | None, ca: Path | None) -> Any:
    from edgefn.bus.nats_config import TlsFiles

    if cert is None and key is None and ca is None:
        return None
    hint = "pass all three: --tls-cert, --tls-key and --tls-ca (edgefn up writes them to creds/)"
    return TlsFiles(
        _file(cert, "--tls-cert", hint), _file(key, "--tls-key", hint), _file(ca, "--tls-ca", hint)
    )


def _bus_files(creds: Path | None, users: Path | None) -> tuple[Any, Any]:
    from edgefn.bus.credentials import load_credentials, load_users
    from edgefn.errors import EdgefnError

    try:
        loaded = load_credentials(_file(creds, "--creds", _CREDS_HINT))
        return loaded, (None if users is None else load_users(_file(users, "--users", _CREDS_HINT)))
    except EdgefnError as err:
        fail(err.message, hint=err.hint)
    raise AssertionError("unreachable")


CredsOpt = Annotated[Path | None, typer.Option(help="This process's NATS credentials (JSON)")]
UsersOpt = Annotated[Path | None, typer.Option(help="The NATS users this server accepts (JSON)")]
TlsCertOpt = Annotated[Path | None, typer.Option(help="Server TLS certificate (PEM)")]
TlsKeyOpt = Annotated[Path | None, typer.Option(help="Server TLS private key (PEM)")]
TlsCaOpt = Annotated[Path | None, typer.Option(help="Planet CA certificate (PEM)")]


def core(
    state_dir: Annotated[Path, typer.Option(help="Where JetStream and logs live")] = Path(
        ".edgefn/core"
    ),
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    client_port: Annotated[int, typer.Option(help="NATS client port (0: any)")] = 0,
    leafnode_port: Annotated[int, typer.Option(help="NATS leafnode port for hubs (0: any)")] = 0,
    api_port: Annotated[int, typer.Option(help="Control API port (0: any)")] = 0,
    trusted_key: Annotated[
        list[Path],
        typer.Option(help="Deployer public key PEM to register for account 'default'"),
    ] = [],  # noqa: B006
    admin_token_file: Annotated[
        Path | None,
        typer.Option(help="On first start, write a bootstrap admin API token here (mode 0600)"),
    ] = None,
    gate_min_requests: Annotated[
        int, typer.Option(help="Requests a new version needs before its health gate is judged")
    ] = 100,
    gate_soak_ms: Annotated[int, typer.Option(help="Minimum time a rollout stage soaks")] = 60_000,
    gate_advance_requests: Annotated[
        int, typer.Option(help="Requests after which a healthy stage advances early")
    ] = 1000,
    creds: CredsOpt = None,
    users: UsersOpt = None,
    core_signing_key: Annotated[
        Path | None, typer.Option(help="Ed25519 key PEM that signs desired state (core-key.pem)")
    ] = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    tls_ca: TlsCaOpt = None,
    secrets_key: Annotated[
        Path | None,
        typer.Option(
            help="Secrets master key file (32 bytes, mode 0600; created if missing). "
            "Default: secrets.key in --state-dir. Share one file between core hosts."
        ),
    ] = None,
    server_name: Annotated[
        str, typer.Option(help="This server's name (unique within a clustered core)")
    ] = "core",
    cluster_port: Annotated[
        int, typer.Option(help="Cluster (route) port of a clustered core server (0: none)")
    ] = 0,
    cluster_peer: Annotated[
        list[str],
        typer.Option(help="host:port of another server's cluster port (2 or 4 of them)"),
    ] = [],  # noqa: B006
    cluster_name: Annotated[str, typer.Option(help="Name of the clustered core")] = "edgefn-core",
    route_creds: Annotated[
        Path | None, typer.Option(help="Route user/password of the clustered core (route.json)")
    ] = None,
    peer_url: Annotated[
        list[str],
        typer.Option(help="Another core server's client URL, for the control service"),
    ] = [],  # noqa: B006
    control: Annotated[
        bool, typer.Option(help="Run the control service and API with this server")
    ] = True,
    start_timeout: Annotated[
        float, typer.Option(help="Seconds the server (and a cluster) may take to become ready")
    ] = 60.0,
    incident_routes: Annotated[
        Path | None,
        typer.Option(help="Incident notification routes (TOML: region = webhook URL, default)"),
    ] = None,
    otlp_endpoint: Annotated[
        str | None,
        typer.Option(help="Export kept traces by OTLP/HTTP to this URL (…/v1/traces)"),
    ] = None,
    replan_interval_s: Annotated[
        float,
        typer.Option(help="Seconds between re-plans of smart placement from observed demand"),
    ] = 60.0,
) -> None:
    """Run the core: nats-server with JetStream plus the control API and reconciler.

    A clustered core is three (or five) of these, each given --cluster-port and the other
    servers' --cluster-peer; one of them runs the control service (--peer-url: the others'
    client URLs), the others --no-control.
    """
    from edgefn._loop import run
    from edgefn.control.gates import GateThresholds
    from edgefn.planet.roles import run_core

    if gate_min_requests < 1 or gate_soak_ms < 0 or gate_advance_requests < gate_min_requests:
        fail(
            "gate options out of range",
            hint="--gate-min-requests >= 1, --gate-soak-ms >= 0, "
            "--gate-advance-requests >= --gate-min-requests",
        )
    routes = _incident_routes(incident_routes)  # checked first: a bad file names file and key
    if otlp_endpoint is not None:
        _check_otlp(otlp_endpoint)
    gates = GateThresholds(
        min_requests=gate_min_requests,
        min_soak_ms=gate_soak_ms,
        advance_requests=gate_advance_requests,
    )
    from edgefn.control.desired_signing import DesiredSigner

    cluster = _cluster(cluster_name, cluster_port, cluster_peer, route_creds)
    if cluster is None and (peer_url or not control):
        fail(
            "--peer-url and --no-control need a clustered core",
            hint="give --cluster-port and --cluster-peer for every other server of the core",
        )
    if start_timeout <= 0:
        fail(f"--start-timeout {start_timeout} must be positive", hint="e.g. --start-timeout 60")
    check_replan_interval(replan_interval_s)
    loaded, nats_users = _bus_files(creds, users)
    if nats_users is None:
        fail("--users is required", hint=_CREDS_HINT)
    key_path = _file(core_signing_key, "--core-signing-key", "edgefn up writes core-key.pem")
    signer = DesiredSigner.from_pem(key_path.read_bytes())
    tls = _tls(tls_cert, tls_key, tls_ca)

    run(
        run_core(
            state_dir=state_dir,
            host=host,
            client_port=client_port,
            leafnode_port=leafnode_port,
            api_port=api_port,
            trusted_keys=_keys(trusted_key, required=False),
            admin_token_file=admin_token_file,
            users=nats_users,
            creds=loaded,
            tls=tls,
            desired_key=signer,
            gates=gates,
            secrets_key_file=secrets_key,
            server_name=server_name,
            cluster=cluster,
            peer_urls=tuple(peer_url),
            control=control,
            start_timeout_s=start_timeout,
            incident_routes=routes,
            otlp_endpoint=otlp_endpoint,
            replan_interval_s=replan_interval_s,
        )
    )


def check_replan_interval(seconds: float) -> None:
    if not 1.0 <= seconds <= 86_400.0:
        fail(
            f"--replan-interval-s {seconds:g} is out of range",
            hint="use 1 to 86400 seconds (default 60)",
        )


def _check_otlp(url: str) -> None:
    from edgefn.control.otlp_export import check_endpoint
    from edgefn.errors import EdgefnError

    try:
        check_endpoint(url)
    except EdgefnError as err:
        fail_from(err)


def _incident_routes(path: Path | None) -> Any:
    """The routes file, checked before anything starts (a bad one names the file and key)."""
    from edgefn.errors import EdgefnError
    from edgefn.observe.incident_routes import load_routes

    if path is None:
        return None
    try:
        return load_routes(path)
    except EdgefnError as err:
        fail(err.message, hint=err.hint)
    raise AssertionError("unreachable")


def _cluster(name: str, port: int, peers: list[str], route_creds: Path | None) -> Any:
    """The cluster block of a clustered core server, or None; bad options fail clearly."""
    from edgefn.bus.nats_config import ClusterConfig

    if not peers and not port and route_creds is None:
        return None
    hint = (
        "a clustered core has 3 (or 5) servers: give each --cluster-port, the others' "
        "addresses as --cluster-peer host:port, and --route-creds (edgefn up writes route.json)"
    )
    if len(peers) not in (2, 4):
        fail(f"{len(peers)} --cluster-peer given; a clustered core needs 2 or 4", hint=hint)
    if not 0 < port < 65536:
        fail(f"--cluster-port {port} is not a port the peers can reach", hint=hint)
    for peer in peers:
        host, sep, peer_port = peer.rpartition(":")
        if not sep or not host or not peer_port.isdigit() or not 0 < int(peer_port) < 65536:
            fail(f"--cluster-peer {peer!r} is not host:port", hint=hint)
    if route_creds is None:
        fail("--route-creds is required for a clustered core", hint=hint)
    route, _ = _bus_files(route_creds, None)
    return ClusterConfig(
        name=name, port=port, routes=tuple(peers), user=route.user, password=route.password
    )


def region(
    name: Annotated[str, typer.Option(help="Region id (e.g. eu-west)")],
    core_leaf: Annotated[list[str], typer.Option(help="Core leafnode URL nats-leaf://host:port")],
    state_dir: Annotated[Path, typer.Option(help="Where the hub's files live")] = Path(
        ".edgefn/region"
    ),
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    client_port: Annotated[int, typer.Option(help="NATS client port for nodes (0: any)")] = 0,
    creds: CredsOpt = None,
    leaf_creds: Annotated[
        Path | None, typer.Option(help="The hub's leafnode credentials to the core (JSON)")
    ] = None,
    users: UsersOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Run a regional hub: nats-server leafnode to the core, plus the region's bundle cache."""
    from edgefn._loop import run
    from edgefn.planet.roles import run_region

    if not core_leaf:
        fail("--core-leaf is required", hint="the core prints its leafnode_url when it starts")
    loaded, nats_users = _bus_files(creds, users)
    leaf, _ = _bus_files(leaf_creds, None)
    if nats_users is None:
        fail("--users is required", hint=_CREDS_HINT)
    tls = _tls(tls_cert, tls_key, tls_ca)
    run(
        run_region(
            name=name,
            state_dir=state_dir,
            host=host,
            client_port=client_port,
            core_leafnode_urls=core_leaf,
            users=nats_users,
            leaf_creds=leaf,
            creds=loaded,
            tls=tls,
        )
    )


def node(
    location: Annotated[str, typer.Option(help="Location id (IATA code, e.g. fra)")],
    region: Annotated[str, typer.Option(help="Region id of the hub this node uses")],
    nats: Annotated[list[str], typer.Option(help="The regional hub's NATS URL(s)")],
    trusted_key: Annotated[
        list[Path], typer.Option(help="Public key PEM trusted for bundles")
    ] = [],  # noqa: B006
    state_dir: Annotated[Path, typer.Option(help="Where desired state and bundles persist")] = Path(
        ".edgefn/node"
    ),
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port (0: any)")] = 0,
    preload: Annotated[
        str, typer.Option(help="Modules the zygote pre-imports, comma-separated")
    ] = "",
    secret_file: Annotated[
        Path | None, typer.Option(help="Planet forwarding secret (enables routing/admission)")
    ] = None,
    locations_file: Annotated[
        Path | None, typer.Option(help="The planet's locations.json (positions for RTTs)")
    ] = None,
    routing: Annotated[
        str, typer.Option(envvar="EDGEFN_ROUTING", help="smart | nearest (baseline)")
    ] = "smart",
    client_rps: Annotated[
        float,
        typer.Option(
            envvar="EDGEFN_CLIENT_RPS",
            help="Per-client requests/s limit, keyed by the entry-signed client address (0: off)",
        ),
    ] = 0.0,
    max_concurrency: Annotated[
        int, typer.Option(envvar="EDGEFN_MAX_CONCURRENCY", help="Admission limit ceiling")
    ] = 200,
    internal_port: Annotated[
        int, typer.Option(help="Internal listener port on 127.0.0.1 (0: any; needs --secret-file)")
    ] = 0,
    metrics_token_file: Annotated[
        Path | None,
        typer.Option(help="0600 file with the bearer token for public /_edgefn/metrics"),
    ] = None,
    creds: CredsOpt = None,
    core_key: Annotated[
        Path | None, typer.Option(help="The core's public key PEM that signs desired state")
    ] = None,
    isolation: Annotated[
        str, typer.Option(help="Sandbox isolation: strict (every layer, else refuse) | relaxed")
    ] = "strict",
    kv_wait_ms: Annotated[
        int,
        typer.Option(help="How long a strong KV operation waits for the home connection (ms)"),
    ] = 2000,
    clock_skew_ms: Annotated[
        int,
        typer.Option(help="Offset of this node's KV clock (ms; for chaos tests of the HLC)"),
    ] = 0,
    tracing: Annotated[
        bool, typer.Option(help="Record spans of requests (tail-sampled, shipped to the core)")
    ] = True,
    telemetry: Annotated[
        bool,
        typer.Option(help="Record and ship rollups, serve live tail (--no-telemetry: neither)"),
    ] = True,
) -> None:
    """Run one edge location: HTTP ingress, sandbox pool and the desired-state agent."""
    from edgefn._loop import run
    from edgefn.planet.roles import run_node

    _check_kv_wait(kv_wait_ms)
    _check_clock_skew(clock_skew_ms)
    if not nats:
        fail("--nats is required", hint="the region prints its client_url when it starts")
    loaded, _ = _bus_files(creds, None)
    core_pub = _file(core_key, "--core-key", "edgefn up writes core-key.pub").read_text()
    _check_isolation(isolation)
    traffic = None
    if secret_file is not None:
        from edgefn.edge.traffic import TrafficOptions

        traffic = TrafficOptions(
            secret_file, locations_file, routing, max(0.0, client_rps), max_concurrency
        )
    run(
        run_node(
            location=location,
            region=region,
            state_dir=state_dir,
            host=host,
            port=port,
            nats_urls=nats,
            trusted_keys=_keys(trusted_key),
            preload=tuple(x for x in preload.split(",") if x),
            creds=loaded,
            core_keys=[core_pub],
            traffic=traffic,
            internal_port=internal_port,
            metrics_token_file=metrics_token_file,
            isolation=isolation,
            kv_wait_s=kv_wait_ms / 1000,
            clock_skew_ms=clock_skew_ms,
            tracing=tracing,
            telemetry=telemetry,
        )
    )


def _check_clock_skew(clock_skew_ms: int) -> None:
    if abs(clock_skew_ms) > CLOCK_SKEW_MAX_MS:
        fail(
            f"--clock-skew-ms {clock_skew_ms} is out of range",
            hint=f"use -{CLOCK_SKEW_MAX_MS} to {CLOCK_SKEW_MAX_MS} (below the HLC's 60 s drift limit)",
        )


def _check_kv_wait(kv_wait_ms: int) -> None:
    if not 0 <= kv_wait_ms <= 30_000:
        fail(f"--kv-wait-ms {kv_wait_ms} is out of range", hint="use 0 to 30000 (default 2000)")


def _check_isolation(isolation: str) -> None:
    if isolation not in ("strict", "relaxed"):
        fail(f"--isolation {isolation!r} is not known", hint="use strict or relaxed")
