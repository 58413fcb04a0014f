"""Assembling one planet node: every part built once, in dependency order, from one config.

A planet node is eight parts, and :func:`build_node` is the one place that builds and wires them.
Each part gets its collaborators in its constructor; nothing is attached afterwards:

1. the **function table** (:class:`~edgefn.edge.functions.FunctionTable`), first, because two
   parts share it: the node serves from it and the traffic driver advertises its names;
2. the **KV service** (:class:`~edgefn.edge.kv_binding.KVService`), which needs no node to be
   built (its sync loop is given the node when it runs: ``kv.run(node)``);
3. the **traffic driver** (:class:`~edgefn.edge.traffic.TrafficDriver`), only with traffic
   options (the planet secret and the location table);
4. the **edge node** (:class:`~edgefn.edge.node.EdgeNode`), given the table, the driver, the KV
   service's ``handle_call`` (worker KV calls) and ``asgi`` (the internal ``/_edgefn/kv*``);
5. the **node agent** (:class:`~edgefn.planet.node_agent.NodeAgent`), given the node and the KV
   service, with the log redactor it shares with the node's log;
6. the **telemetry shipper** (:class:`~edgefn.edge.telemetry_ship.TelemetryShipper`), which
   ships the rollups of the accumulator the node records every request into.
7. the **tail publisher** (:class:`~edgefn.edge.tail.TailPublisher`), built before the node (its
   request path and console-line callback feed it) with the same redactor.
8. with ``tracing`` on, the **tracer** (:class:`~edgefn.edge.tracing.NodeTracer`), built before
   the node (its request path and host callbacks record spans), and its **trace shipper**
   (:class:`~edgefn.edge.trace_ship.TraceShipper`), which ships the kept traces to the core.

:meth:`AssembledNode.start` starts them in that order (the node's listeners first, so the agent
and the driver have a URL to report) and :meth:`AssembledNode.stop` stops them in reverse.
Process-wide set-up (the bus credentials) stays with the ``node`` role in
:mod:`edgefn.planet.roles`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from edgefn.edge.cron import CronDriver, JetStreamClaims
from edgefn.edge.functions import FunctionTable
from edgefn.edge.kv_binding import KVService
from edgefn.edge.node import EdgeNode
from edgefn.edge.outbound import Outbound
from edgefn.edge.tail import TailPublisher
from edgefn.edge.telemetry_ship import TelemetryShipper, new_accumulator
from edgefn.edge.trace_ship import TraceShipper
from edgefn.edge.tracing import NodeTracer
from edgefn.edge.traffic import TrafficDriver, TrafficOptions, load_traffic_config
from edgefn.observe import JsonLog, RotatingFile
from edgefn.planet.node_agent import NODE_KEY_FILE, NodeAgent
from edgefn.runtime.sandbox import Isolation
from edgefn.secrets import Redactor, load_or_create_node_key

__all__ = ["AssembledNode", "NodeConfig", "build_node"]


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """What one planet node is told (the ``edgefn node`` flags, with its files already read).

    ``secret`` is the planet secret (None: a node run by hand, with no internal listener and no
    signed forwards); ``traffic`` None runs the node without routing or admission. ``tracing``
    False records no spans at all; ``telemetry`` False records no rollups and offers no tail
    events, and neither the shipper nor the tail publisher starts (``edgefn node --no-tracing
    --no-telemetry``: the baseline of ``edgefn bench observe``).
    """

    location: str
    region: str
    state_dir: Path
    host: str
    port: int
    nats_urls: tuple[str, ...]
    trusted_keys: tuple[str, ...]
    preload: tuple[str, ...] = ()
    core_keys: tuple[str, ...] | None = None
    traffic: TrafficOptions | None = None
    internal_port: int = 0
    isolation: Isolation = "strict"
    kv_wait_s: float = 2.0
    clock_skew_ms: int = 0
    secret: bytes | None = field(default=None, repr=False)
    metrics_token: str | None = field(default=None, repr=False)
    tracing: bool = True
    telemetry: bool = True


class AssembledNode:
    """The wired parts of one planet node. ``await start()``, ``node.url``, ``await stop()``."""

    def __init__(
        self,
        *,
        config: NodeConfig,
        node: EdgeNode,
        kv: KVService,
        traffic: TrafficDriver | None,
        agent: NodeAgent,
        log_file: RotatingFile,
        telemetry: TelemetryShipper,
        tail: TailPublisher,
        traces: TraceShipper | None = None,
        cron: CronDriver | None = None,
    ) -> None:
        self.config = config
        self.cron = cron
        self.node = node
        self.kv = kv
        self.traffic = traffic
        self.agent = agent
        self.log_file = log_file
        self.telemetry = telemetry
        self.tail = tail
        self.traces = traces
        self._kv_task: asyncio.Task[None] | None = None
        self._traffic_started = False

    async def start(self) -> None:
        """Listeners, the KV sync loop, the agent (restores and follows desired state), traffic."""
        await self.node.start()
        self._kv_task = asyncio.create_task(self.kv.run(self.node), name="kv-sync")
        await self.agent.start()
        if self.cron is not None:
            await self.cron.start()
        if self.config.telemetry:
            await self.tail.start(list(self.config.nats_urls))
        if self.traffic is not None:
            await self.traffic.start(list(self.config.nats_urls), url=self.node.url)
            self._traffic_started = True
        if self.config.telemetry:
            await self.telemetry.start()
        if self.traces is not None:
            await self.traces.start()

    async def stop(self) -> None:
        """Stop what :meth:`start` started, in reverse order; then close the log file."""
        if self._kv_task is not None:  # the node's listeners started
            if self.traces is not None:
                await self.traces.stop()
            await self.telemetry.stop()
            if self.cron is not None:
                await self.cron.stop()
            await self.agent.stop()
            if self.traffic is not None and self._traffic_started:
                await self.traffic.stop()
            await self.tail.stop()
            self._kv_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._kv_task
            await self.kv.stop()
            await self.node.stop()
        self.log_file.close()


def build_node(config: NodeConfig) -> AssembledNode:
    """Build every part of a planet node from ``config``, each with its collaborators."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    table = FunctionTable()
    kv = KVService(
        location=config.location,
        state_dir=config.state_dir,
        nats_urls=list(config.nats_urls),
        session_secret=config.secret,
        connect_wait_s=config.kv_wait_s,
        clock_skew_ms=config.clock_skew_ms,
    )
    traffic = None
    if config.traffic is not None:
        traffic = TrafficDriver(
            load_traffic_config(config.location, config.region, config.traffic),
            functions=lambda: frozenset(table.functions),
        )
    log_file = RotatingFile(config.state_dir / "node.log")
    # The agent feeds decrypted secret values to the redactor; the log hides them everywhere.
    redactor = Redactor()
    log = JsonLog(log_file, location=config.location, redact=redactor.redact)
    accumulator = new_accumulator(config.location)
    tail = TailPublisher(config.location, redact=redactor.redact)
    tracer = NodeTracer(config.location) if config.tracing else None
    node = EdgeNode(
        config.location,
        region=config.region,
        host=config.host,
        port=config.port,
        state_dir=config.state_dir,
        log=log,
        preload=config.preload,
        # The bus this node talks to is never a subrequest target, whatever a manifest allows.
        outbound=Outbound(deny_addresses=bus_addresses(config.nats_urls)),
        internal_secret=config.secret,
        internal_port=config.internal_port,
        metrics_token=config.metrics_token,
        ready=False,  # the node agent marks it ready once its functions are loaded
        isolation=config.isolation,
        table=table,
        traffic=traffic,
        kv_handler=kv.handle_call,
        kv_http=kv.asgi,
        telemetry=accumulator if config.telemetry else None,
        tail=tail if config.telemetry else None,
        tracer=tracer,
    )
    # Durable objects' records live in the strong KV's home bucket (its own connection, made on
    # the first durable object this node serves).
    node.durable.store = JetStreamClaims(
        list(config.nats_urls), location=config.location, purpose="do"
    )
    node.queues.attach(list(config.nats_urls), config.state_dir, kv.driver)
    agent = NodeAgent(
        node,
        nats_urls=list(config.nats_urls),
        region=config.region,
        trusted_keys=list(config.trusted_keys),
        state_dir=config.state_dir,
        core_keys=None if config.core_keys is None else list(config.core_keys),
        secrets_key=load_or_create_node_key(config.state_dir / NODE_KEY_FILE),
        redactor=redactor,
        kv=kv,
    )
    telemetry = TelemetryShipper(accumulator, nats_urls=list(config.nats_urls), log=log)
    traces = None
    if tracer is not None:
        traces = TraceShipper(tracer, nats_urls=list(config.nats_urls), log=log)
    cron = CronDriver(
        location=config.location,
        table=table,
        run=node.scheduled.run,
        log=log,
        nats_urls=list(config.nats_urls),
        claim_delay=traffic.claim_delay_ms if traffic is not None else None,
    )
    return AssembledNode(
        config=config,
        cron=cron,
        node=node,
        kv=kv,
        traffic=traffic,
        agent=agent,
        log_file=log_file,
        telemetry=telemetry,
        tail=tail,
        traces=traces,
    )


def bus_addresses(nats_urls: tuple[str, ...]) -> list[tuple[str, int]]:
    """The (IP, port) of each bus URL whose host is an IP literal (on a planet, 127.0.0.1)."""
    out = []
    for url in nats_urls:
        parts = urlsplit(url)
        if not (parts.hostname and parts.port):
            continue
        with contextlib.suppress(ValueError):
            out.append((str(ipaddress.ip_address(parts.hostname)), parts.port))
    return out
