"""RoutingPolicy: scoring, penalties, weights, affinity and loop safety."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefn.routing import (
    HealthChanged,
    LoadReport,
    LoadReported,
    RouteDecision,
    RouteReason,
    RouteRequest,
    RoutingConfig,
    RoutingConfigError,
    RoutingPolicy,
    WeightsChanged,
    rendezvous_choose,
)

# Locations on a line; RTT is 1 ms per unit of distance.
POS = {"fra": 0.0, "ams": 5.0, "lhr": 10.0, "iad": 80.0, "nrt": 200.0}
ALL = tuple(POS)


def rtt(a: str, b: str) -> float:
    return abs(POS[a] - POS[b])


def report(
    loc: str,
    *,
    conc: int = 0,
    queue: int = 0,
    limit: int = 10,
    service: float = 20.0,
    overloaded: bool = False,
    draining: bool = False,
    at_ms: int = 0,
) -> LoadReport:
    return LoadReport(loc, conc, queue, limit, service, overloaded, draining, at_ms)


def policy(*reports: LoadReport, config: RoutingConfig | None = None) -> RoutingPolicy:
    p = RoutingPolicy(rtt, config=config, rng=random.Random(7))
    for r in reports:
        assert p.handle(LoadReported(r)) == []
    return p


def req(ingress: str = "fra", candidates: tuple[str, ...] = ALL, **kw: object) -> RouteRequest:
    return RouteRequest(
        ingress=ingress, function="hello", candidates=candidates, now_ms=1_000, **kw
    )  # type: ignore[arg-type]


def idle() -> list[LoadReport]:
    return [report(loc) for loc in ALL]


def test_idle_ingress_serves_here_and_lists_nearest_alternates() -> None:
    p = policy(*idle())
    [d] = p.handle(req())
    assert d == RouteDecision("fra", RouteReason.LOCAL_BEST, ("ams", "lhr"), 0.0, serve_here=True)
    p.check_invariants()


def test_function_not_placed_here_forwards_to_the_nearest() -> None:
    d = policy(*idle()).decide(req(candidates=("lhr", "nrt", "ams")))
    assert d.target == "ams"
    assert d.reason is RouteReason.FORWARD_BETTER
    assert d.score_ms == pytest.approx(5.0 + 1.0)
    assert not d.serve_here
    assert d.alternates == ("lhr", "nrt")


def test_queueing_at_ingress_forwards_to_a_nearby_idle_location() -> None:
    """10 servers all busy plus 20 queued at 20 ms: the wait is 21 * 20 / 10 = 42 ms > 6 ms away."""
    p = policy(report("fra", conc=10, queue=20), *[report(x) for x in ALL[1:]])
    assert p.queue_delay_ms("fra", 1_000) == pytest.approx(42.0)
    d = p.decide(req())
    assert d.target == "ams"
    assert d.alternates == ("lhr", "fra")


def test_small_queue_is_not_worth_a_forward() -> None:
    p = policy(report("fra", conc=10, queue=1), *[report(x) for x in ALL[1:]])
    assert p.decide(req()).target == "fra"


def test_overloaded_and_draining_are_penalised_not_excluded() -> None:
    p = policy(report("fra", draining=True), report("ams", overloaded=True), report("lhr"))
    d = p.decide(req(candidates=("fra", "ams", "lhr")))
    assert d.target == "lhr"
    assert d.alternates == ("ams", "fra")
    only = p.decide(req(candidates=("fra",)))
    assert only.target == "fra"


def test_unhealthy_and_forwarders_are_excluded_but_ingress_always_eligible() -> None:
    p = policy(*idle())
    p.handle(HealthChanged("ams", healthy=False))
    p.handle(HealthChanged("fra", healthy=False))
    d = p.decide(req(forwarded_from=("lhr",)))
    assert d.target == "fra"
    assert "ams" not in d.alternates
    assert "lhr" not in d.alternates
    assert p.unhealthy == frozenset({"ams", "fra"})
    p.handle(HealthChanged("ams", healthy=True))
    assert p.decide(req(candidates=("ams", "nrt"))).target == "ams"


def test_no_eligible_candidate_rejects() -> None:
    p = policy(*idle())
    p.handle(HealthChanged("ams", healthy=False))
    d = p.decide(req(candidates=("ams", "lhr"), forwarded_from=("lhr",)))
    assert d == RouteDecision(None, RouteReason.NO_CANDIDATE)
    assert p.decide(req(candidates=())).target is None
    assert p.statistics().rejected == 2


def test_hop_limit_serves_here_or_rejects_never_forwards() -> None:
    p = policy(report("fra", conc=10, queue=500), *[report(x) for x in ALL[1:]])
    d = p.decide(req(hop=2))
    assert d.target == "fra"
    assert d.reason is RouteReason.HOP_LIMIT
    assert d.alternates == ()
    assert p.decide(req(hop=2, candidates=("ams",))) == RouteDecision(None, RouteReason.HOP_LIMIT)


def test_stale_reports_are_ignored_and_unknown_load_costs_a_little() -> None:
    cfg = RoutingConfig(report_ttl_ms=500)
    p = policy(report("fra", conc=10, queue=100, at_ms=0), report("ams", at_ms=900), config=cfg)
    assert p.queue_delay_ms("fra", 1_000) is None
    d = p.decide(req(candidates=("fra", "ams")))
    # fra: unknown load (5 ms penalty); ams: 5 ms RTT + 1 ms forward cost + 0 wait.
    assert d.target == "fra"
    assert d.score_ms == pytest.approx(5.0)


def test_out_of_order_reports_keep_the_newest() -> None:
    p = policy(report("fra", queue=50, conc=10, at_ms=900))
    p.handle(LoadReported(report("fra", at_ms=800)))
    assert p.report("fra") == report("fra", queue=50, conc=10, at_ms=900)


def test_pending_forwards_spread_load_between_reports() -> None:
    """Without pending accounting every request would go to ams until its next report."""
    p = policy(
        report("fra", conc=10, queue=40),
        report("ams", limit=2, service=100.0),
        report("lhr", limit=2, service=100.0),
    )
    targets = [p.decide(req(candidates=("fra", "ams", "lhr"))).target for _ in range(6)]
    assert set(targets) == {"ams", "lhr"}
    p.check_invariants()
    p.handle(LoadReported(report("ams", limit=2, service=100.0, at_ms=1_000)))
    assert p.decide(req(candidates=("fra", "ams", "lhr"))).target == "ams"


def test_weights_choose_among_weighted_eligible_locations() -> None:
    p = policy(*idle())
    p.handle(WeightsChanged({("eu", "hello"): [("lhr", 3.0), ("iad", 1.0), ("nrt", 0.0)]}))
    targets = [p.decide(req(client_region="eu")).target for _ in range(400)]
    assert set(targets) == {"lhr", "iad"}
    assert 0.65 < targets.count("lhr") / 400 < 0.85
    d = p.decide(req(client_region="eu"))
    assert d.reason is RouteReason.WEIGHTS
    # Another region or function has no weights: back to scoring.
    assert p.decide(req(client_region="us")).target == "fra"


def test_weights_skip_overloaded_and_fall_back_when_none_left() -> None:
    p = policy(report("fra"), report("lhr", overloaded=True), report("iad", draining=True))
    p.handle(WeightsChanged({("eu", "hello"): [("lhr", 1.0), ("iad", 1.0)]}))
    d = p.decide(req(candidates=("fra", "lhr", "iad"), client_region="eu"))
    assert d.target == "fra"
    assert d.reason is RouteReason.LOCAL_BEST


def test_weights_with_affinity_are_sticky() -> None:
    p = policy(*idle())
    p.handle(WeightsChanged({("eu", "hello"): [("lhr", 1.0), ("iad", 1.0)]}))
    first = {p.decide(req(client_region="eu", affinity_key="user-9")).target for _ in range(20)}
    assert first == {rendezvous_choose("user-9", {"lhr": 1.0, "iad": 1.0})}


def test_bad_weights_are_a_config_error_naming_the_key() -> None:
    p = policy()
    with pytest.raises(RoutingConfigError, match=r"routing weights\['eu', 'hello'\]"):
        p.handle(WeightsChanged({("eu", "hello"): [("lhr", -1.0)]}))


def test_affinity_picks_by_hash_within_the_slack() -> None:
    p = policy(*idle())
    pool = ["fra", "ams", "lhr"]  # scores 0, 6, 11 are within 20 ms; iad and nrt are not
    for i in range(30):
        key = f"u{i}"
        d = p.decide(req(affinity_key=key))
        assert d.target == rendezvous_choose(key, pool)
        assert d.reason is RouteReason.AFFINITY


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"max_hops": 0}, "max_hops"),
        ({"max_hops": 9}, "max_hops"),
        ({"forward_cost_ms": -1.0}, "forward_cost_ms"),
        ({"report_ttl_ms": 0}, "report_ttl_ms"),
        ({"max_alternates": -1}, "max_alternates"),
    ],
)
def test_config_errors_name_the_setting(kwargs: dict[str, float], key: str) -> None:
    with pytest.raises(RoutingConfigError, match=rf"\[routing\] {key}"):
        RoutingConfig(**kwargs)  # type: ignore[arg-type]


def test_bounded_memory() -> None:
    cfg = RoutingConfig(max_locations=2, rtt_cache_size=2)
    p = policy(report("fra"), report("ams"), report("lhr"), config=cfg)
    p.handle(HealthChanged("a", False))
    p.handle(HealthChanged("b", False))
    p.handle(HealthChanged("c", False))
    for _ in range(3):
        p.decide(req())
    assert p.statistics().reports_known == 2
    assert p.statistics().unhealthy == 2
    assert p.statistics().dropped_updates == 2
    p.check_invariants()


# -- property: forwarding never loops ----------------------------------------------------------

NAMES = [f"l{i}" for i in range(6)]


@st.composite
def planets(draw: st.DrawFn) -> tuple[dict[str, RoutingPolicy], RouteRequest, int]:
    coords = {n: draw(st.floats(0, 300)) for n in NAMES}
    max_hops = draw(st.integers(1, 4))
    cfg = RoutingConfig(max_hops=max_hops)
    policies = {}
    for name in NAMES:
        p = RoutingPolicy(
            lambda a, b: abs(coords[a] - coords[b]),
            config=cfg,
            rng=random.Random(draw(st.integers(0, 9))),
        )
        # Every location has its own (possibly inconsistent) view of the others.
        for other in NAMES:
            if draw(st.booleans()):
                p.handle(
                    LoadReported(
                        LoadReport(
                            other,
                            draw(st.integers(0, 50)),
                            draw(st.integers(0, 200)),
                            draw(st.integers(1, 20)),
                            draw(st.floats(0.1, 500)),
                            draw(st.booleans()),
                            draw(st.booleans()),
                            draw(st.integers(0, 2_000)),
                        )
                    )
                )
            if draw(st.booleans()):
                p.handle(HealthChanged(other, healthy=False))
        if draw(st.booleans()):
            p.handle(WeightsChanged({("r", "f"): [(n, draw(st.floats(0, 5))) for n in NAMES]}))
        policies[name] = p
    candidates = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=6))
    request = RouteRequest(
        ingress=draw(st.sampled_from(NAMES)),
        function="f",
        candidates=candidates,
        now_ms=2_000,
        client_region=draw(st.sampled_from([None, "r"])),
        affinity_key=draw(st.sampled_from([None, "k1", "k2"])),
    )
    return policies, request, max_hops


@settings(max_examples=150, deadline=None)
@given(planets())
def test_no_forwarding_loops_whatever_the_views(
    planet: tuple[dict[str, RoutingPolicy], RouteRequest, int],
) -> None:
    """Follow every forward (and every failover alternate): the path never revisits a location
    and never exceeds max_hops forwards; it ends in a serve or a reject."""
    policies, request, max_hops = planet
    stack = [(request.ingress, 0, ())]
    while stack:
        here, hop, path = stack.pop()
        assert here not in path, (here, path)
        d = policies[here].decide(
            RouteRequest(
                ingress=here,
                function="f",
                candidates=request.candidates,
                now_ms=2_000,
                hop=hop,
                forwarded_from=path,
                client_region=request.client_region,
                affinity_key=request.affinity_key,
            )
        )
        policies[here].check_invariants()
        if d.target is not None:
            assert d.target in request.candidates
        for target in filter(None, (d.target, *d.alternates)):
            if target != here:
                assert hop + 1 <= max_hops
                stack.append((target, hop + 1, (*path, here)))
