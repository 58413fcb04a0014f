"""The planet's files and its role processes' command lines, for one machine or several.

``edgefn up`` (:mod:`edgefn.planet.supervisor`) and anything that starts the roles elsewhere
(the multi-host test puts each in its own network namespace) build them here, so there is one
copy of "which files does a role get, and with which flags".

:func:`write_planet_files` writes, under the state directory, everything the roles share or own:
the deployer's public key (its private key stays outside, see ``planet.credentials``), the bus
credentials and users' lists (``creds/``, edgefn.bus.credentials), the planet CA and a TLS
certificate per server (``core`` for every core server, ``hub-<region>``; valid for loopback plus
the addresses given in ``server_hosts``), the core's desired-state key (``creds/core-key.pem``,
public half ``core-key.pub``), the planet secret, the location table and the metrics token.

:func:`core_argv`, :func:`region_argv` and :func:`node_argv` return ``edgefn <role> ...``
arguments (without the interpreter). A clustered core is described by :class:`CoreServer` per
server: server 0 runs the control service, and its state directory is ``<state>/core`` (where
``edgefn up`` expects the bootstrap admin token); servers 1.. use ``<state>/core-<i>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgefn.bundle import load_or_create_signing_key
from edgefn.bus.credentials import write_planet_credentials
from edgefn.bus.nats_config import TlsFiles
from edgefn.bus.tls import issue_server_cert
from edgefn.planet.credentials import (
    ADMIN_TOKEN_FILE,
    DEPLOYER_PUBLIC_KEY_FILE,
    deployer_key_path,
)
from edgefn.world import Location

__all__ = [
    "CoreServer",
    "PlanetFiles",
    "core_argv",
    "core_state_dir",
    "hub_sites",
    "node_argv",
    "region_argv",
    "write_planet_files",
]


@dataclass(frozen=True, slots=True)
class PlanetFiles:
    """Where :func:`write_planet_files` put everything (``creds``: identity name -> file)."""

    state_dir: Path
    creds: dict[str, Path]
    server_tls: dict[str, TlsFiles]
    deployer_pub: Path
    core_pub: Path
    secret_file: Path
    locations_file: Path
    metrics_token_file: Path


@dataclass(frozen=True, slots=True)
class CoreServer:
    """One server of a clustered core: its index, ports and its peers' addresses.

    ``cluster_peers`` are the other servers' ``host:port`` cluster addresses and ``peer_urls``
    their client URLs (used by the control service on server 0).
    """

    index: int
    cluster_port: int
    cluster_peers: tuple[str, ...]
    peer_urls: tuple[str, ...] = ()
    client_port: int = 0
    leafnode_port: int = 0


def hub_sites(locations: Sequence[Location]) -> dict[str, Location]:
    """Region id → the location its hub sits at (the region's first location)."""
    sites: dict[str, Location] = {}
    for loc in locations:
        sites.setdefault(loc.region, loc)
    return sites


def write_planet_files(
    state_dir: Path,
    locations: Sequence[Location],
    *,
    tls: bool,
    emulate_rtt: bool,
    server_hosts: Mapping[str, Sequence[str]] | None = None,
) -> PlanetFiles:
    """Write (or keep) every file the planet's roles need; see the module docstring."""
    # lazy: importing edgefn.edge loads the whole node (uvicorn, sandbox pool; ~0.4 s), and every
    # command that finds a running planet imports this module (through planet.supervisor).
    from edgefn.edge.traffic_config import write_metrics_token
    from edgefn.edge.traffic_config import write_planet_files as write_traffic_files

    state_dir.mkdir(parents=True, exist_ok=True)
    key = load_or_create_signing_key(deployer_key_path())
    deployer_pub = state_dir / DEPLOYER_PUBLIC_KEY_FILE
    deployer_pub.write_text(key.public_key_pem())
    creds_dir = state_dir / "creds"
    regions = list(hub_sites(locations))
    server_tls: dict[str, TlsFiles] = {}
    if tls:
        hosts = server_hosts or {}
        for name in ["core", *(f"hub-{r}" for r in regions)]:
            server_tls[name] = issue_server_cert(creds_dir, name, hosts.get(name, ()))
    creds = write_planet_credentials(
        creds_dir,
        regions=regions,
        locations=[(loc.id, loc.region) for loc in locations],
        ca_file=creds_dir / "ca.pem" if tls else None,
    )
    core_key = load_or_create_signing_key(creds_dir / "core-key.pem")
    core_pub = state_dir / "core-key.pub"
    core_pub.write_text(core_key.public_key_pem())
    secret, table = write_traffic_files(state_dir, list(locations), emulate_rtt=emulate_rtt)
    return PlanetFiles(
        state_dir=state_dir,
        creds=creds,
        server_tls=server_tls,
        deployer_pub=deployer_pub,
        core_pub=core_pub,
        secret_file=secret,
        locations_file=table,
        metrics_token_file=write_metrics_token(state_dir),
    )


def _tls_args(files: PlanetFiles, name: str) -> list[str]:
    tls = files.server_tls.get(name)
    if tls is None:
        return []
    return [
        *("--tls-cert", str(tls.cert_file)),
        *("--tls-key", str(tls.key_file)),
        *("--tls-ca", str(tls.ca_file)),
    ]


def core_state_dir(state_dir: Path, index: int = 0) -> Path:
    """Server ``index``'s state directory (server 0, the control service's: ``<state>/core``)."""
    return state_dir / ("core" if index == 0 else f"core-{index}")


def core_argv(
    files: PlanetFiles,
    *,
    server: CoreServer | None = None,
    host: str = "127.0.0.1",
    extra: Sequence[str] = (),
) -> list[str]:
    """``edgefn core ...`` for the single core server, or for one server of a clustered core."""
    sd = files.state_dir
    index = 0 if server is None else server.index
    args = [
        "core",
        "--state-dir",
        str(core_state_dir(sd, index)),
        "--host",
        host,
        "--trusted-key",
        str(files.deployer_pub),
        "--admin-token-file",
        str(sd / ADMIN_TOKEN_FILE),
        "--creds",
        str(files.creds["control"]),
        "--users",
        str(files.creds["core.users"]),
        "--core-signing-key",
        str(sd / "creds/core-key.pem"),
        *_tls_args(files, "core"),
    ]
    if server is not None:
        args += [
            "--server-name",
            f"core-{index}",
            "--cluster-port",
            str(server.cluster_port),
            "--route-creds",
            str(files.creds["route"]),
        ]
        for peer in server.cluster_peers:
            args += ["--cluster-peer", peer]
        for url in server.peer_urls:
            args += ["--peer-url", url]
        if server.client_port:
            args += ["--client-port", str(server.client_port)]
        if server.leafnode_port:
            args += ["--leafnode-port", str(server.leafnode_port)]
        if index != 0:
            args.append("--no-control")
    return [*args, *extra]


def region_argv(
    files: PlanetFiles, region: str, *, core_leaf_urls: Sequence[str], host: str = "127.0.0.1"
) -> list[str]:
    """``edgefn region ...``: the hub of ``region`` with a leafnode to every core server."""
    args = ["region", "--name", region, "--host", host]
    for url in core_leaf_urls:
        args += ["--core-leaf", url]
    return [
        *args,
        "--state-dir",
        str(files.state_dir / f"regions/{region}"),
        "--creds",
        str(files.creds[f"cache-{region}"]),
        "--leaf-creds",
        str(files.creds[f"leaf-{region}"]),
        "--users",
        str(files.creds[f"hub-{region}.users"]),
        *_tls_args(files, f"hub-{region}"),
    ]


def node_argv(
    files: PlanetFiles,
    loc: Location,
    *,
    nats_url: str,
    host: str = "127.0.0.1",
    preload: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> list[str]:
    """``edgefn node ...`` for location ``loc``, connected to its hub at ``nats_url``."""
    args = [
        "node",
        "--location",
        loc.id,
        "--region",
        loc.region,
        "--host",
        host,
        "--nats",
        nats_url,
        "--trusted-key",
        str(files.deployer_pub),
        "--state-dir",
        str(files.state_dir / f"nodes/{loc.id}"),
        "--creds",
        str(files.creds[f"node-{loc.id}"]),
        "--core-key",
        str(files.core_pub),
    ]
    if preload:
        args += ["--preload", ",".join(preload)]
    args += [
        "--secret-file",
        str(files.secret_file),
        "--locations-file",
        str(files.locations_file),
        "--metrics-token-file",
        str(files.metrics_token_file),
    ]
    return [*args, *extra]
