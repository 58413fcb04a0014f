"""route_nearest: the nearest-location baseline of ``--routing nearest``."""

from __future__ import annotations

from edgefn.routing import RouteDecision, RouteReason, RouteRequest, RoutingConfig, route_nearest

# Locations on a line; RTT is 1 ms per unit of distance.
POS = {"fra": 0.0, "ams": 5.0, "lhr": 10.0, "iad": 80.0, "nrt": 200.0}


def rtt(a: str, b: str) -> float:
    return abs(POS[a] - POS[b])


def _route(
    candidates: tuple[str, ...],
    *,
    hop: int = 0,
    forwarded_from: tuple[str, ...] = (),
    unhealthy: frozenset[str] = frozenset(),
    config: RoutingConfig | None = None,
) -> RouteDecision:
    request = RouteRequest(
        ingress="fra",
        function="f",
        candidates=candidates,
        now_ms=0,
        hop=hop,
        forwarded_from=forwarded_from,
    )
    return route_nearest(request, rtt_ms=rtt, unhealthy=unhealthy, config=config or RoutingConfig())


def test_serves_here_whenever_the_function_runs_here_even_at_the_hop_limit() -> None:
    """The ingress among the candidates wins, whatever is nearer or the hop count."""
    for hop in (0, 5):
        decision = _route(("fra", "ams"), hop=hop)
        assert decision.serve_here
        assert decision.target == "fra"
        assert decision.reason is RouteReason.LOCAL_BEST


def test_forwards_to_the_nearest_with_the_next_ones_as_alternates() -> None:
    """Ranked by RTT from the ingress; alternates capped at max_alternates; score is the RTT."""
    decision = _route(("nrt", "lhr", "iad", "ams"))
    assert decision.target == "ams"
    assert decision.alternates == ("lhr", "iad")
    assert decision.score_ms == 5.0
    assert decision.reason is RouteReason.FORWARD_BETTER
    assert not decision.serve_here
    one = _route(("nrt", "lhr", "ams"), config=RoutingConfig(max_alternates=1))
    assert one.alternates == ("lhr",)


def test_skips_unhealthy_and_forwarders_and_rejects_when_none_is_left() -> None:
    """Unhealthy locations and those the request came through are never targets."""
    decision = _route(("ams", "lhr", "iad"), unhealthy=frozenset({"ams"}), forwarded_from=("lhr",))
    assert decision.target == "iad"
    assert decision.alternates == ()
    none = _route(("ams",), unhealthy=frozenset({"ams"}))
    assert none.target is None
    assert none.reason is RouteReason.NO_CANDIDATE
    assert _route(()).reason is RouteReason.NO_CANDIDATE


def test_never_forwards_past_the_hop_limit() -> None:
    """A request that already made max_hops hops is rejected rather than forwarded again."""
    decision = _route(("ams",), hop=2)
    assert decision.target is None
    assert decision.reason is RouteReason.HOP_LIMIT
    assert _route(("ams",), hop=1).target == "ams"


def test_ties_go_to_the_smallest_location_id() -> None:
    """Two candidates at the same RTT: the order does not depend on the candidates' order."""
    POS["aaa"] = POS["ams"]
    try:
        assert _route(("ams", "aaa")).target == "aaa"
        assert _route(("aaa", "ams")).target == "aaa"
    finally:
        del POS["aaa"]
