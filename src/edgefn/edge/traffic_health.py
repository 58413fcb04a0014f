"""Health of the other locations: feed the detectors, run the probes, tell the routing policy.

:class:`HealthDriver` carries out two pure machines for one node and applies their verdicts to its
:class:`~edgefn.routing.policy.RoutingPolicy`:

* :class:`~edgefn.routing.health.HealthTable` gets every heartbeat heard on the bus
  (:meth:`HealthDriver.heartbeat`, phi accrual), the outcome of every forwarded request
  (:meth:`HealthDriver.outcome`, passive outlier detection) and a tick every report interval; it
  answers with ``SendProbe``, which the driver carries out as ``GET <url>/_edgefn/health``
  (healthy iff 200 within ``probe_timeout_s``; at most ``max_probes_in_flight`` at once, past
  that the probe is skipped and times out in the table), and ``MarkHealthy`` / ``MarkUnhealthy``.
* :class:`~edgefn.routing.suspicion.Suspicion` gets those verdicts, every refused connection and
  every heartbeat, and emits the ``HealthChanged`` updates the policy applies: a location that
  refused a forward is avoided at once and stays avoided until it heartbeats again after
  ``[suspicion] hold_ms``, whatever the table says meanwhile.

Probes go only to peers with a known URL (a probe to an unknown one fails at once). The driver
reads the clocks; the machines never do.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx

from edgefn.edge._clock import mono_ms
from edgefn.edge.traffic_bus import PeerTable
from edgefn.edge.traffic_config import TrafficConfig
from edgefn.routing import (
    ConnectRefused,
    HealthInstruction,
    HealthTable,
    HealthTick,
    HeardFrom,
    Heartbeat,
    MarkHealthy,
    MarkUnhealthy,
    ProbeResult,
    RequestOutcome,
    RoutingPolicy,
    SendProbe,
    Suspicion,
    SuspicionEvent,
    TableVerdict,
)

__all__ = ["HEALTH_PATH", "HealthDriver"]

HEALTH_PATH = "/_edgefn/health"


class HealthDriver:
    """Heartbeats, probes and request outcomes of one node, applied to its routing policy."""

    def __init__(self, config: TrafficConfig, *, policy: RoutingPolicy, peers: PeerTable) -> None:
        self.config = config
        self.table = HealthTable(config=config.health, self_location=config.location)
        self.suspicion = Suspicion(config.suspicion)
        self._policy = policy
        self._peers = peers
        self._client: httpx.AsyncClient | None = None
        self._probes: set[asyncio.Task[None]] = set()
        self._skipped_probes = 0

    def start(self) -> None:
        """Open the probe client; until then every probe fails."""
        self._client = httpx.AsyncClient(timeout=self.config.probe_timeout_s, trust_env=False)

    async def aclose(self) -> None:
        for task in self._probes:
            task.cancel()
        for task in list(self._probes):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._client is not None:
            await self._client.aclose()

    # -- events in ---------------------------------------------------------------------------
    def heartbeat(self, location: str, now_ms: int) -> None:
        """A heartbeat from ``location`` was heard on the bus."""
        self._apply(self.table.handle(Heartbeat(location, now_ms)))
        healthy = self.table.is_healthy(location)
        self._suspect(HeardFrom(location, now_ms, healthy))

    def outcome(
        self, target: str, *, ok: bool, latency_ms: float, connect_failed: bool, now_ms: int
    ) -> None:
        """A forward to ``target`` ended; a refused connection makes it suspect."""
        self._apply(self.table.handle(RequestOutcome(target, ok, latency_ms, now_ms)))
        if connect_failed and self._peers.get(target) is not None:
            self._suspect(ConnectRefused(target, now_ms))

    def tick(self, now_ms: int) -> None:
        """Once per report interval: phi checks, probe timeouts, new probes."""
        self._apply(self.table.handle(HealthTick(now_ms)))

    # -- instructions out ----------------------------------------------------------------------
    def _apply(self, instructions: list[HealthInstruction]) -> None:
        for ins in instructions:
            if isinstance(ins, MarkUnhealthy):
                self._suspect(TableVerdict(ins.location, False))
            elif isinstance(ins, MarkHealthy):
                self._suspect(TableVerdict(ins.location, True))
            elif isinstance(ins, SendProbe):
                self._start_probe(ins)

    def _suspect(self, event: SuspicionEvent) -> None:
        for change in self.suspicion.handle(event):
            self._policy.handle(change)

    def _start_probe(self, ins: SendProbe) -> None:
        if len(self._probes) >= self.config.max_probes_in_flight:
            self._skipped_probes += 1
            return
        task = asyncio.create_task(self._probe(ins), name=f"probe-{ins.location}")
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def _probe(self, ins: SendProbe) -> None:
        url = self._peers.url(ins.location)
        t0 = time.perf_counter()
        ok = False
        if url and self._client is not None:
            with contextlib.suppress(Exception):
                response = await self._client.get(url + HEALTH_PATH)
                ok = response.status_code == 200
        latency_ms = (time.perf_counter() - t0) * 1000
        event = ProbeResult(ins.location, ok, latency_ms, mono_ms(), ins.probe_id)
        self._apply(self.table.handle(event))

    # -- introspection -------------------------------------------------------------------------
    @property
    def probes_in_flight(self) -> int:
        return len(self._probes)

    @property
    def skipped_probes(self) -> int:
        return self._skipped_probes

    def check_invariants(self) -> None:
        self.table.check_invariants()
        self.suspicion.check_invariants()
        assert len(self._probes) <= self.config.max_probes_in_flight, len(self._probes)
