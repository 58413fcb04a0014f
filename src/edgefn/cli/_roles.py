"""``edgefn core``, ``edgefn region``, ``edgefn node``: the planet's roles, one process each.

Use these to run a planet across several machines (each role takes its peers' URLs); ``edgefn up``
starts the same roles on one machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgefn.cli._output import fail


def register(app: typer.Typer, bench: typer.Typer) -> None:
    app.command("core")(core)
    app.command("region")(region)
    app.command("node")(node)


def _keys(paths: list[Path]) -> list[str]:
    keys = []
    for p in paths:
        if not p.is_file():
            fail(f"--trusted-key {p}: no such file", hint="pass the planet's public key PEM file")
        keys.append(p.read_text())
    if not keys:
        fail(
            "at least one --trusted-key is required",
            hint="edgefn up writes .edgefn/signing-key.pub",
        )
    return keys


def core(
    state_dir: Annotated[Path, typer.Option(help="Where JetStream and logs live")] = Path(
        ".edgefn/core"
    ),
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    client_port: Annotated[int, typer.Option(help="NATS client port (0: any)")] = 0,
    leafnode_port: Annotated[int, typer.Option(help="NATS leafnode port for hubs (0: any)")] = 0,
    api_port: Annotated[int, typer.Option(help="Control API port (0: any)")] = 0,
    trusted_key: Annotated[
        list[Path], typer.Option(help="Public key PEM trusted for bundles")
    ] = [],  # noqa: B006
    gate_min_requests: Annotated[
        int, typer.Option(help="Requests a new version needs before its health gate is judged")
    ] = 100,
    gate_soak_ms: Annotated[int, typer.Option(help="Minimum time a rollout stage soaks")] = 60_000,
    gate_advance_requests: Annotated[
        int, typer.Option(help="Requests after which a healthy stage advances early")
    ] = 1000,
) -> None:
    """Run the core: nats-server with JetStream plus the control API and reconciler."""
    from edgefn._loop import run
    from edgefn.control.gates import GateThresholds
    from edgefn.planet.roles import run_core

    if gate_min_requests < 1 or gate_soak_ms < 0 or gate_advance_requests < gate_min_requests:
        fail(
            "gate options out of range",
            hint="--gate-min-requests >= 1, --gate-soak-ms >= 0, "
            "--gate-advance-requests >= --gate-min-requests",
        )
    gates = GateThresholds(
        min_requests=gate_min_requests,
        min_soak_ms=gate_soak_ms,
        advance_requests=gate_advance_requests,
    )

    run(
        run_core(
            state_dir=state_dir,
            host=host,
            client_port=client_port,
            leafnode_port=leafnode_port,
            api_port=api_port,
            trusted_keys=_keys(trusted_key),
            gates=gates,
        )
    )


def region(
    name: Annotated[str, typer.Option(help="Region id (e.g. eu-west)")],
    core_leaf: Annotated[list[str], typer.Option(help="Core leafnode URL nats-leaf://host:port")],
    state_dir: Annotated[Path, typer.Option(help="Where the hub's files live")] = Path(
        ".edgefn/region"
    ),
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    client_port: Annotated[int, typer.Option(help="NATS client port for nodes (0: any)")] = 0,
) -> None:
    """Run a regional hub: nats-server leafnode to the core, plus the region's bundle cache."""
    from edgefn._loop import run
    from edgefn.planet.roles import run_region

    if not core_leaf:
        fail("--core-leaf is required", hint="the core prints its leafnode_url when it starts")
    run(
        run_region(
            name=name,
            state_dir=state_dir,
            host=host,
            client_port=client_port,
            core_leafnode_urls=core_leaf,
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
        float, typer.Option(help="Per-client-key requests/s limit (0: off)")
    ] = 0.0,
    max_concurrency: Annotated[
        int, typer.Option(envvar="EDGEFN_MAX_CONCURRENCY", help="Admission limit ceiling")
    ] = 200,
    isolation: Annotated[
        str, typer.Option(help="Sandbox isolation: strict (every layer, else refuse) | relaxed")
    ] = "strict",
) -> None:
    """Run one edge location: HTTP ingress, sandbox pool and the desired-state agent."""
    from edgefn._loop import run
    from edgefn.planet.roles import run_node

    if not nats:
        fail("--nats is required", hint="the region prints its client_url when it starts")
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
            traffic=traffic,
            isolation=isolation,
        )
    )


def _check_isolation(isolation: str) -> None:
    if isolation not in ("strict", "relaxed"):
        fail(f"--isolation {isolation!r} is not known", hint="use strict or relaxed")
