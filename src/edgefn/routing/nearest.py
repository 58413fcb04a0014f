"""The nearest-location baseline: the routing a plain anycast network would do.

:func:`route_nearest` is what a node decides with ``--routing nearest`` (the traffic benchmark's
baseline, :attr:`~edgefn.edge.traffic_config.TrafficConfig.smart_routing` false). It is a pure
function of one :class:`~edgefn.routing.policy.RouteRequest` and what the caller knows about
health; it ignores load reports, planner weights and affinity, so it shows what
:class:`~edgefn.routing.policy.RoutingPolicy` adds. The rules, in order:

1. **Runs here.** If the ingress is among the candidates (the function runs there), serve here,
   whatever the load or the hop count.
2. **Loop safety.** ``hop >= max_hops``: reject (``HOP_LIMIT``); never forward further.
3. **Nearest.** Otherwise rank the candidates that are healthy and not in ``forwarded_from`` by
   RTT from the ingress (ties to the smallest location id) and forward to the first; the next
   ``max_alternates`` are the failover alternates and the score is the target's RTT. No candidate
   left: reject (``NO_CANDIDATE``).

Unlike :meth:`RoutingPolicy.decide` it counts nothing and keeps no state, so the smart policy's
statistics and its pending-forward estimate are untouched by baseline traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from edgefn.routing.policy import RouteDecision, RouteReason, RouteRequest, RoutingConfig

__all__ = ["route_nearest"]


def route_nearest(
    request: RouteRequest,
    *,
    rtt_ms: Callable[[str, str], float],
    unhealthy: Collection[str],
    config: RoutingConfig,
) -> RouteDecision:
    """Serve here if the function runs here, else forward to the nearest healthy candidate."""
    ingress = request.ingress
    if ingress in request.candidates:
        return RouteDecision(ingress, RouteReason.LOCAL_BEST, serve_here=True)
    if request.hop >= config.max_hops:
        return RouteDecision(None, RouteReason.HOP_LIMIT)
    excluded = request.forwarded_from
    ranked = sorted(
        (rtt_ms(ingress, loc), loc)
        for loc in request.candidates
        if loc not in unhealthy and loc not in excluded
    )
    if not ranked:
        return RouteDecision(None, RouteReason.NO_CANDIDATE)
    names = tuple(loc for _, loc in ranked)
    alternates = names[1 : 1 + config.max_alternates]
    return RouteDecision(names[0], RouteReason.FORWARD_BETTER, alternates, ranked[0][0])
