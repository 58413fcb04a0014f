"""Configuration of a node's traffic driver: the planet's location table, the shared forwarding
secret, and the limits, routing and admission options a node starts with.

``write_planet_files`` (called by the supervisor) writes ``planet-secret`` (0600) and
``locations.json`` in the planet's state directory; ``load_traffic_config`` reads them back in each
node and validates every option, raising :class:`~edgefn.errors.ConfigError` that names the file or
flag at fault.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from edgefn._internal_auth import SECRET_FILE
from edgefn.errors import ConfigError
from edgefn.routing import (
    AdmissionConfig,
    HealthConfig,
    LimitConfig,
    RoutingConfig,
    RoutingConfigError,
    SuspicionConfig,
    ThermalConfig,
)

__all__ = [
    "LOCATIONS_FILE",
    "METRICS_TOKEN_FILE",
    "ROUTING_MODES",
    "SECRET_FILE",
    "PeerLocation",
    "TrafficConfig",
    "TrafficOptions",
    "load_traffic_config",
    "write_metrics_token",
    "write_planet_files",
]

METRICS_TOKEN_FILE = "metrics-token"
LOCATIONS_FILE = "locations.json"
ROUTING_MODES = ("smart", "nearest")


@dataclass(frozen=True, slots=True)
class PeerLocation:
    """A location of the planet and where it is (for modelled RTTs)."""

    id: str
    region: str
    lat: float
    lon: float
    # Its grid's carbon intensity, g CO2/kWh (the topology's carbon_g_per_kwh); None: unknown.
    carbon_g_per_kwh: float | None = None


@dataclass(frozen=True, slots=True)
class TrafficConfig:
    """Everything a node's traffic driver needs; keyword-only knobs with planet defaults.

    Identity and planet: ``location``, ``region``, the planet ``secret`` (signs forwarding headers
    and client identities) and ``locations`` (positions, for modelled RTTs). ``smart_routing``
    false routes by :func:`~edgefn.routing.nearest.route_nearest` (the benchmark's baseline);
    ``emulate_rtt`` delays each forward by the modelled one-way latency both ways.

    The pure machines' own knobs: ``routing`` (also bounds the peer table by ``max_locations``),
    ``health``, ``suspicion`` (fast failover on refused connections) and ``admission``.

    Bus and timing: a heartbeat and a load beacon every ``report_interval_s``; a peer's report is
    fresh (its functions are candidates) for ``report_fresh_ms``. Between reports the driver wakes
    every ``tick_interval_s`` to expire queued requests whose wait ran out, so an admission queue
    deadline is kept to within a tick. ``bus_connect_deadline_s``: how long the background bus
    connection keeps retrying (the node serves what it runs meanwhile).

    Health probes: at most ``max_probes_in_flight`` active probes (``GET /_edgefn/health``, each
    within ``probe_timeout_s``) run at once; past that the table's ``SendProbe`` is skipped and the
    table counts the probe as unanswered when it times out.

    Per request: ``client_rate_per_s`` / ``client_burst`` (per-client GCRA, 0 = off; the client key
    is cut to ``client_key_max_chars``), ``max_functions`` (functions with a rate-limit share or
    in a peer's beacon), ``client_location_max_chars`` (a longer ``x-edgefn-client-location`` is not
    signed into the client identity), ``replay_limit_bytes`` (a forwarded body up to this size can
    be sent again on failover), ``max_failovers`` (alternates tried after the first target) and
    ``no_route_retry_after_s`` (the ``Retry-After`` of a ``503 no_route``: about when a restarted
    or newly deployed location shows up in the beacons again).

    ``unknown_rtt_ms``: the RTT assumed to or from a location without a known position, a typical
    continental RTT rather than 0 (which would make an unknown location look nearest).
    """

    location: str
    secret: bytes
    region: str = ""
    locations: tuple[PeerLocation, ...] = ()
    smart_routing: bool = True
    emulate_rtt: bool = False
    report_interval_s: float = 0.25
    report_fresh_ms: int = 3_000
    tick_interval_s: float = 0.05
    bus_connect_deadline_s: float = 3_600.0
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    health: HealthConfig = field(
        default_factory=lambda: HealthConfig(first_heartbeat_interval_ms=250)
    )
    suspicion: SuspicionConfig = field(default_factory=SuspicionConfig)
    thermal: ThermalConfig = field(default_factory=ThermalConfig)
    client_rate_per_s: float = 0.0
    client_burst: int = 20
    client_key_max_chars: int = 128
    client_location_max_chars: int = 256
    max_functions: int = 1_024
    replay_limit_bytes: int = 1 << 20
    max_failovers: int = 1
    no_route_retry_after_s: float = 1.0
    probe_timeout_s: float = 1.0
    max_probes_in_flight: int = 256
    unknown_rtt_ms: float = 50.0


@dataclass(frozen=True, slots=True)
class TrafficOptions:
    """What a ``node`` process is told about traffic management (its CLI flags)."""

    secret_file: Path
    locations_file: Path | None = None
    routing: str = "smart"
    client_rate_per_s: float = 0.0
    max_concurrency: int = 200


class _LocationsFile(msgspec.Struct, frozen=True):
    locations: list[dict[str, Any]]
    emulate_rtt: bool = False


def write_planet_files(
    state_dir: Path, locations: list[Any], *, emulate_rtt: bool
) -> tuple[Path, Path]:
    """Write (or keep) the planet's forwarding secret and its location table for the nodes."""

    secret = state_dir / SECRET_FILE
    _write_private(secret, secrets.token_hex(32))
    default = ThermalConfig()
    table = [
        {
            "id": loc.id,
            "region": loc.region,
            "lat": loc.lat,
            "lon": loc.lon,
            # The location's thermal budget (a topology's thermal_soft_c / thermal_hard_c).
            "thermal_soft_c": getattr(loc, "thermal_soft_c", default.soft_c),
            "thermal_hard_c": getattr(loc, "thermal_hard_c", default.hard_c),
            "carbon_g_per_kwh": getattr(loc, "carbon_g_per_kwh", None),
        }
        for loc in locations
    ]
    path = state_dir / LOCATIONS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.encode({"locations": table, "emulate_rtt": emulate_rtt}))
    os.replace(tmp, path)
    return secret, path


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 (never wider, even for a moment); keep an existing one."""
    if path.exists():
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def write_metrics_token(state_dir: Path) -> Path:
    """Write (or keep) the bearer token that opens ``/_edgefn/metrics`` on public listeners."""
    path = state_dir / METRICS_TOKEN_FILE
    _write_private(path, secrets.token_hex(24))
    return path


def load_traffic_config(location: str, region: str, options: TrafficOptions) -> TrafficConfig:
    """Build a node's :class:`TrafficConfig` from its files; ConfigError names the file."""
    try:
        secret = options.secret_file.read_text().strip().encode()
    except OSError as err:
        raise ConfigError(
            f"cannot read the forwarding secret: {err.strerror}",
            path=str(options.secret_file),
            hint="edgefn up writes it to <state-dir>/planet-secret; pass --secret-file",
        ) from None
    if len(secret) < 16:
        raise ConfigError(
            f"the forwarding secret has {len(secret)} bytes, needs at least 16",
            path=str(options.secret_file),
            hint="write 64 hex characters, e.g. `python -c 'import secrets; "
            "print(secrets.token_hex(32))'`",
        )
    if options.routing not in ROUTING_MODES:
        raise ConfigError(
            f"unknown routing mode {options.routing!r}",
            key="--routing",
            hint=f"use one of {', '.join(ROUTING_MODES)}",
        )
    peers: tuple[PeerLocation, ...] = ()
    emulate = False
    thermal = ThermalConfig()
    if options.locations_file is not None:
        peers, emulate, budgets = _read_locations(options.locations_file)
        thermal = budgets.get(location, thermal)
    limit = max(4, options.max_concurrency)
    admission = AdmissionConfig(
        limit=LimitConfig(initial_limit=min(20, limit), min_limit=min(4, limit), max_limit=limit)
    )
    # Every node hears every other node's beacons and probes every other node, so the bus and
    # probe load grow with the square of the planet: past 10 locations the intervals stretch in
    # proportion (50 locations: reports every 1.25 s, probes of busy or suspect peers every 5 s,
    # of quiet ones every 75 s).
    scale = max(1.0, len(peers) / 10)
    return TrafficConfig(
        location=location,
        secret=secret,
        region=region,
        locations=peers,
        smart_routing=options.routing == "smart",
        emulate_rtt=emulate,
        thermal=thermal,
        client_rate_per_s=options.client_rate_per_s,
        admission=admission,
        report_interval_s=0.25 * scale,
        report_fresh_ms=int(3_000 * scale),
        health=HealthConfig(
            first_heartbeat_interval_ms=int(250 * scale),
            probe_interval_ms=int(1_000 * scale),
            idle_probe_interval_ms=int(15_000 * scale),
        ),
    )


def _read_locations(
    path: Path,
) -> tuple[tuple[PeerLocation, ...], bool, dict[str, ThermalConfig]]:
    """The planet's locations, whether RTTs are emulated, and each location's thermal budget."""
    try:
        data = msgspec.json.decode(path.read_bytes(), type=_LocationsFile)
        peers = tuple(
            PeerLocation(
                str(d["id"]),
                str(d.get("region", "")),
                float(d["lat"]),
                float(d["lon"]),
                None if d.get("carbon_g_per_kwh") is None else float(d["carbon_g_per_kwh"]),
            )
            for d in data.locations
        )
        default = ThermalConfig()
        budgets = {
            str(d["id"]): ThermalConfig(
                soft_c=float(d.get("thermal_soft_c", default.soft_c)),
                hard_c=float(d.get("thermal_hard_c", default.hard_c)),
            )
            for d in data.locations
        }
    except OSError as err:
        raise ConfigError(
            f"cannot read the location table: {err.strerror}",
            path=str(path),
            hint="edgefn up writes it to <state-dir>/locations.json; pass --locations-file",
        ) from None
    except (msgspec.DecodeError, KeyError, TypeError, ValueError, RoutingConfigError) as err:
        raise ConfigError(
            f"malformed location table: {err}",
            path=str(path),
            hint='expected {"locations": [{"id", "region", "lat", "lon", "thermal_soft_c"?, '
            '"thermal_hard_c"?, "carbon_g_per_kwh"?}, ...]}',
        ) from None
    return peers, data.emulate_rtt, budgets
