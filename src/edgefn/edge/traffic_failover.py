"""Forwarding a request to another location, with one failover, and what it teaches health.

:class:`FailoverForwarder` sends a request the routing decision sent elsewhere. Each attempt goes
through :class:`~edgefn.edge.forward.Forwarder` (streaming both ways) to the target's URL from
the peer table, with the next hop's signed forwarding headers (:func:`~edgefn.routing.next_forward`
then :func:`~edgefn.routing.sign_forward`; the request id travels in them, so the caller's
``x-edgefn-request-id`` is dropped) and ``x-edgefn-via: <this location>`` on the response. With
``emulate_rtt`` each attempt waits half the modelled RTT before sending and before answering.

The pure rules of :mod:`edgefn.routing.failover` decide what to try: the target, then up to
``max_failovers`` alternates of the decision, moving on only while
:func:`~edgefn.routing.failover.may_retry` allows it (nothing reached the target, or the method
is idempotent, or the manifest says ``retry_safe``; and the body is still replayable, i.e. under
``replay_limit_bytes``). Once a target has sent response headers there is no retry. If no attempt
answered, the client gets ``502 forward_failed`` naming the last location tried.

Every attempt's outcome goes to :class:`~edgefn.edge.traffic_health.HealthDriver` (passive
outlier detection: ok iff answered below 500); a refused connection makes the target suspect at
once, so the next requests avoid it.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from edgefn.edge._clock import mono_ms, wall_ms
from edgefn.edge.forward import Forwarder, ForwardOutcome, ReplayableBody
from edgefn.edge.traffic_bus import PeerTable
from edgefn.edge.traffic_config import TrafficConfig
from edgefn.edge.traffic_gate import Gate, Receive, reply
from edgefn.edge.traffic_health import HealthDriver
from edgefn.routing import (
    ForwardInfo,
    RouteDecision,
    failover_targets,
    may_retry,
    next_forward,
    sign_forward,
)
from edgefn.routing.headers import REQUEST_ID_HEADER

__all__ = ["FailoverForwarder", "FailoverStatistics"]

# A 502's detail quotes the transport error, cut so a long one cannot bloat the reply.
_DETAIL_MAX_CHARS = 200


@dataclass(frozen=True, slots=True)
class FailoverStatistics:
    forwarded: int
    failovers: int
    forward_failed: int


class FailoverForwarder:
    """Forward one request at a time to its target, failing over to an alternate."""

    def __init__(
        self,
        config: TrafficConfig,
        *,
        forwarder: Forwarder,
        peers: PeerTable,
        health: HealthDriver,
        rtt_ms: Callable[[str, str], float],
    ) -> None:
        self.config = config
        self.location = config.location
        self._forwarder = forwarder
        self._peers = peers
        self._health = health
        self._rtt_ms = rtt_ms
        self._forwarded = 0
        self._failovers = 0
        self._forward_failed = 0

    async def forward(
        self,
        gate: Gate,
        scope: MutableMapping[str, Any],
        receive: Receive,
        decision: RouteDecision,
        info: ForwardInfo | None,
        *,
        retry_safe: bool,
    ) -> None:
        """Forward to ``decision.target`` (then an alternate); answers 502 if none answered."""
        body = ReplayableBody(receive, replay_limit_bytes=self.config.replay_limit_bytes)
        method = str(scope["method"])
        targets = failover_targets(decision, max_failovers=self.config.max_failovers)
        self._forwarded += 1
        outcome: ForwardOutcome | None = None
        target = targets[0]
        for attempt, target in enumerate(targets):
            if attempt:
                self._failovers += 1
            outcome = await self._attempt(gate, scope, body, target, info)
            if outcome.responded:
                return
            retry = may_retry(
                method,
                connect_failed=outcome.connect_failed,
                retry_safe=retry_safe,
                replayable=body.replayable,
            )
            if not retry:
                break
        self._forward_failed += 1
        detail = outcome.error if outcome else ""
        await reply(
            gate,
            self.location,
            502,
            "forward_failed",
            location=target,
            detail=detail[:_DETAIL_MAX_CHARS],
        )

    async def _attempt(
        self,
        gate: Gate,
        scope: MutableMapping[str, Any],
        body: ReplayableBody,
        target: str,
        info: ForwardInfo | None,
    ) -> ForwardOutcome:
        fields = next_forward(
            info, location=self.location, request_id=gate.request_id, now_ms=wall_ms()
        )
        headers = [(k, v) for k, v in gate.headers if k != REQUEST_ID_HEADER]
        headers += list(sign_forward(self.config.secret, fields).items())
        # Half the modelled RTT each way, from milliseconds to seconds.
        one_way_s = self._rtt_ms(self.location, target) / 2000 if self.config.emulate_rtt else 0.0
        outcome = await self._forwarder.forward(
            base_url=self._peers.url(target),
            scope=scope,
            headers=headers,
            body=body,
            send=gate.send,
            extra_response_headers=[(b"x-edgefn-via", self.location.encode())],
            one_way_s=one_way_s,
        )
        if outcome.responded:
            gate.handled = True
            gate.status = outcome.status
            gate.relayed = True
        ok = outcome.responded and outcome.status < 500 and not outcome.error
        self._health.outcome(
            target,
            ok=ok,
            latency_ms=outcome.latency_ms,
            connect_failed=outcome.connect_failed,
            now_ms=mono_ms(),
        )
        return outcome

    def statistics(self) -> FailoverStatistics:
        return FailoverStatistics(
            forwarded=self._forwarded,
            failovers=self._failovers,
            forward_failed=self._forward_failed,
        )
