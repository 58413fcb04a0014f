"""nats-server configuration for the backbone's two roles: core and regional hub.

A config is a frozen dataclass; :func:`render_config` turns it into the dict that the driver writes
as the server's config file. nats-server's config parser accepts JSON, so the file is JSON and no
value ever needs escaping. Rendering is pure: ports must already be concrete (the driver replaces a
``0`` port with a free one before rendering).

Core: JetStream with ``sync_interval: always``, because Jepsen (2025) found that NATS' default lazy
fsync loses acknowledged writes on power loss; a client port; an HTTP monitoring port
(``/healthz``); a leafnode listen port where the regional hubs connect; and, for the three-server
HA core, a ``cluster`` block whose routes name the other two servers (authenticated with a route
user and password, and over mutually verified TLS when the core has TLS).

Hub: no JetStream of its own and one leafnode ``remotes`` entry listing the core's leafnode URLs
(in the local planet those are link-emulator addresses, not the core's own).

JetStream through a hub (verified by tests/integration/bus): with an empty JetStream domain,
nats-server does not extend ``$JS.API.>`` across a leafnode, and it never extends ``$KV.>`` or
``$O.>``. So the core runs JetStream in domain ``edgefn`` (:data:`JETSTREAM_DOMAIN`): the server
then maps ``$JS.edgefn.API.<op>`` to ``$JS.API.<op>`` and ``$JS.edgefn.API.$KV.>`` to ``$KV.>`` and
those subjects do cross leafnodes. Its built-in object-store mapping names ``$OBJ.>`` while object
stores publish on ``$O.>``, so the core config adds the mapping ``$JS.edgefn.API.$O.>`` -> ``$O.>``
itself.
Clients use :func:`edgefn.bus.jetstream.jetstream`, which prefixes KV and object-store publishes.

Authentication (edgefn.bus.permissions): with ``users`` set, the server refuses anonymous clients
(there is no ``no_auth_user``) and gives each user its role's permissions. A core's ``leaf`` users
go into ``leafnodes.authorization`` (hubs log in with them), the others into ``authorization``. A
hub logs into the core with ``leaf_user``/``leaf_password`` (URL user info of its remote). With no
users the server is open: only the bus's own tests run it that way; the roles always pass users.

TLS: with ``tls`` set, the client and leafnode listeners require TLS with the given certificate, and
a hub verifies the core's certificate against ``tls.ca_file``. :func:`check_exposure` refuses a
server that would listen on a non-loopback address without TLS or without users.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefn.bus.errors import BusError
from edgefn.bus.permissions import NatsUser, render_users
from edgefn.bus.subjects import JETSTREAM_DOMAIN

__all__ = [
    "ClusterConfig",
    "CoreConfig",
    "HubConfig",
    "NatsConfig",
    "TlsFiles",
    "check_exposure",
    "is_loopback",
    "render_config",
]

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """The ``cluster`` block of one server of an HA core.

    ``routes`` are the other servers' cluster addresses as ``host:port`` (the own address may be
    included; nats-server ignores a route to itself; the ``edgefn core`` role passes only the
    others). ``user``/``password`` authenticate routes both ways: the server accepts only routes
    that present them and presents them on its own. With the core's ``tls`` set, routes use TLS
    too and each end verifies the other's certificate against the planet CA.
    """

    name: str
    port: int
    routes: tuple[str, ...]
    user: str = ""
    password: str = ""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A server's certificate and key (PEM) and the planet CA that signed every role's certificate."""

    cert_file: Path
    key_file: Path
    ca_file: Path


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """A core server: JetStream, clients, monitoring and a leafnode port for the hubs."""

    name: str
    store_dir: Path
    host: str = "127.0.0.1"
    client_port: int = 0
    monitor_port: int = 0
    leafnode_port: int = 0
    cluster: ClusterConfig | None = None
    max_memory_store_bytes: int = 256 * _MIB
    # A budget for reservations, not disk in use: JetStream reserves each stream's and bucket's
    # max_bytes against it, and the fixed buckets alone reserve ~1.9 GiB before any KV namespace
    # stream (64 MiB each) is created.
    max_file_store_bytes: int = 8192 * _MIB
    max_payload_bytes: int = 1 * _MIB
    users: tuple[NatsUser, ...] = ()
    tls: TlsFiles | None = None


@dataclass(frozen=True, slots=True)
class HubConfig:
    """A regional hub: clients and monitoring, a leafnode connection to the core, no JetStream.

    ``core_leafnode_urls`` are ``nats-leaf://host:port`` URLs; the hub fails over between them.
    ``reconnect_ms`` is how long the hub waits between attempts to re-establish a lost leafnode
    connection (nats-server's default is one second).
    """

    name: str
    core_leafnode_urls: tuple[str, ...]
    host: str = "127.0.0.1"
    client_port: int = 0
    monitor_port: int = 0
    reconnect_ms: int = 250
    max_payload_bytes: int = 1 * _MIB
    users: tuple[NatsUser, ...] = ()
    leaf_user: str = ""
    leaf_password: str = ""
    tls: TlsFiles | None = None


NatsConfig = CoreConfig | HubConfig


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``0.0.0.0`` and ``::`` are every interface)."""
    return host == "localhost" or host.startswith("127.") or host == "::1"


def check_exposure(config: NatsConfig) -> None:
    """Refuse (:class:`BusError`) a server bound off loopback without TLS, users or route auth."""
    if is_loopback(config.host):
        return
    checks: list[tuple[str, object]] = [("TLS", config.tls), ("users", config.users)]
    if isinstance(config, CoreConfig) and config.cluster is not None:
        checks.append(("route credentials", config.cluster.password))
    missing = [what for what, ok in checks if not ok]
    if missing:
        raise BusError(
            f"nats-server {config.name!r} would listen on {config.host} (not loopback) "
            f"without {' and '.join(missing)}",
            hint="pass --tls-cert/--tls-key/--tls-ca, --users and, for a clustered core, "
            "--route-creds (edgefn up writes them to <state-dir>/creds/), or bind 127.0.0.1",
        )


def _tls_block(tls: TlsFiles) -> dict[str, Any]:
    return {
        "cert_file": str(tls.cert_file),
        "key_file": str(tls.key_file),
        "ca_file": str(tls.ca_file),
        "timeout": 2,
    }


def _common(config: NatsConfig) -> dict[str, Any]:
    assert config.client_port > 0, "resolve ports before rendering"
    assert config.monitor_port > 0, "resolve ports before rendering"
    clients = tuple(u for u in config.users if u.kind != "leaf")
    out: dict[str, Any] = {
        "server_name": config.name,
        "host": config.host,
        "port": config.client_port,
        "http": f"{config.host}:{config.monitor_port}",
        "max_payload": config.max_payload_bytes,
        # Bounded client write backlog: a slow consumer is cut instead of growing server memory.
        "max_pending": 64 * _MIB,
    }
    if clients:
        out["authorization"] = {"users": render_users(clients), "timeout": 2}
    if config.tls is not None:
        out["tls"] = _tls_block(config.tls)
    return out


def _render_core(config: CoreConfig) -> dict[str, Any]:
    assert config.leafnode_port > 0, "resolve ports before rendering"
    out = _common(config)
    out["jetstream"] = {
        "store_dir": str(config.store_dir),
        "sync_interval": "always",
        "domain": JETSTREAM_DOMAIN,
        "max_memory_store": config.max_memory_store_bytes,
        "max_file_store": config.max_file_store_bytes,
    }
    # no_advertise: a hub must reach the core only through the URLs it was given (on a planet,
    # its link emulator). Advertised, the core's own leafnode address let a hub reconnect around
    # a cut link, so partitions silently did not partition.
    out["leafnodes"] = {"host": config.host, "port": config.leafnode_port, "no_advertise": True}
    leaves = tuple(u for u in config.users if u.kind == "leaf")
    if leaves:
        out["leafnodes"]["authorization"] = {"users": render_users(leaves), "timeout": 2}
    if config.tls is not None:
        out["leafnodes"]["tls"] = _tls_block(config.tls)
    out["mappings"] = {f"$JS.{JETSTREAM_DOMAIN}.API.$O.>": "$O.>"}
    if config.cluster is not None:
        out["cluster"] = _cluster_block(config.cluster, config.host, config.tls)
    return out


def _cluster_block(cluster: ClusterConfig, host: str, tls: TlsFiles | None) -> dict[str, Any]:
    assert cluster.port > 0, "resolve ports before rendering"
    routes = [f"nats-route://{r}" for r in cluster.routes]
    out: dict[str, Any] = {"name": cluster.name, "host": host, "port": cluster.port}
    if cluster.user:
        assert cluster.password, "a route user needs its password"
        routes = [_with_userinfo(r, cluster.user, cluster.password) for r in routes]
        out["authorization"] = {"user": cluster.user, "password": cluster.password, "timeout": 2}
    out["routes"] = routes
    if tls is not None:
        # Both ends of a route are core servers holding planet-CA certificates: verify both.
        out["tls"] = {**_tls_block(tls), "verify": True}
    return out


def _render_hub(config: HubConfig) -> dict[str, Any]:
    assert config.core_leafnode_urls, "a hub needs at least one core leafnode URL"
    out = _common(config)
    reconnect_s = max(config.reconnect_ms, 1) / 1000
    urls = list(config.core_leafnode_urls)
    if config.leaf_user:
        assert config.leaf_password, "a leaf user needs its password"
        urls = [_with_userinfo(u, config.leaf_user, config.leaf_password) for u in urls]
    remote: dict[str, Any] = {"urls": urls}
    if config.tls is not None:
        remote["tls"] = {"ca_file": str(config.tls.ca_file), "timeout": 2}
    out["leafnodes"] = {"reconnect": f"{reconnect_s:g}s", "remotes": [remote]}
    return out


def _with_userinfo(url: str, user: str, password: str) -> str:
    scheme, sep, rest = url.partition("://")
    assert sep, f"leafnode URL without scheme: {url}"
    assert "@" not in rest, "pass leaf credentials separately, not in the URL"
    return f"{scheme}://{user}:{password}@{rest}"


def render_config(config: NatsConfig) -> dict[str, Any]:
    """Return the nats-server configuration (as a JSON-ready dict) for ``config``."""
    if isinstance(config, CoreConfig):
        return _render_core(config)
    return _render_hub(config)
