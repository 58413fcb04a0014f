"""Scenario parsing errors, trace readers, determinism and the planet model."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from simulator_helpers import queue_scenario

from edgefn.errors import ScenarioError
from edgefn.sim import (
    NON_DETERMINISTIC_KEYS,
    build_planet,
    load_scenario,
    parse_scenario,
    read_azure2019,
    read_azure2021,
    simulate,
    trace_arrivals,
)

DATA = Path(__file__).parent.parent / "data" / "azure"
EXAMPLES = Path(__file__).parent.parent.parent / "examples" / "scenarios"


def _planet_doc(**world: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "run": {"duration_s": 86_400, "seed": 5},
        "world": {"pops": 20, "servers": 8, "requests_per_day": 200_000, "functions": 50} | world,
        "service": {"distribution": "lognormal", "mean_ms": 100, "scv": 2.0},
        "cold_start": {"enabled": True, "mean_ms": 300},
    }
    return doc


def _strip(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in NON_DETERMINISTIC_KEYS}


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda d: d["run"].pop("duration_s"), "run.duration_s"),
        (lambda d: d["run"].update(typo=1), "run.typo"),
        (lambda d: d["run"].update(warmup_s=1e9), "run.warmup_s"),
        (lambda d: d["run"].update(engine="warp"), "run.engine"),
        (lambda d: d["locations"][0].update(servers=0), "locations[0].servers"),
        (lambda d: d["locations"][0].update(servers="ten"), "locations[0].servers"),
        (lambda d: d["workload"].update(arrivals="trace"), "workload.trace"),
        (lambda d: d["service"].update(distribution="hyperexponential", scv=0.5), "service.scv"),
        (lambda d: d["service"].update(distribution="lognormal", scv=0.0), "service.scv"),
        (lambda d: d["cold_start"].update(enabled="yes"), "cold_start.enabled"),
        (lambda d: d.update(extra={}), "extra"),
        (lambda d: d.update(locations=[{"name": "a", "servers": 1}] * 2), "locations"),
        (lambda d: d["locations"][0].update(share=0.0), "locations.share"),
        (lambda d: d.update(faults=[{"kind": "meteor"}]), "faults[0].kind"),
        (lambda d: d.update(world={"pops": 3}), "locations"),
        (lambda d: d.update(service=[1]), "service"),
    ],
)
def test_scenario_errors_name_the_key(mutate: Any, key: str) -> None:
    doc = queue_scenario(rate_per_s=1.0, servers=1)
    mutate(doc)
    with pytest.raises(ScenarioError) as info:
        parse_scenario(doc, path="s.toml")
    assert info.value.key == key
    assert "s.toml" in str(info.value)
    assert info.value.hint


def test_scenario_without_locations_or_world() -> None:
    with pytest.raises(ScenarioError, match="no \\[\\[locations\\]\\]"):
        parse_scenario({"run": {"duration_s": 1}}, path="s.toml")


def test_memory_budget_needs_the_exact_engine() -> None:
    doc = queue_scenario(rate_per_s=1.0, servers=1, cold_start={"enabled": True})
    doc["locations"][0]["memory_budget_mb"] = 512
    with pytest.raises(ScenarioError, match="exact engine") as info:
        parse_scenario(doc)
    assert info.value.key == "run.engine"


def test_bad_world_pops_and_fault_windows() -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(_planet_doc(pops=[1, 2]))
    assert info.value.key == "world.pops"
    doc = _planet_doc()
    doc["faults"] = [{"kind": "partition", "region": "oc", "start_s": 10, "end_s": 5}]
    with pytest.raises(ScenarioError) as info:
        parse_scenario(doc)
    assert info.value.key == "faults[0].end_s"


def test_load_scenario_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\n")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(bad)


def test_examples_parse() -> None:
    for path in sorted(EXAMPLES.glob("*.toml")):
        load_scenario(path)


def test_read_azure2021_sample() -> None:
    tr = read_azure2021(str(DATA / "Azure2021_200.csv"))
    assert len(tr.arrival_ms) == 199
    assert bool(np.all(np.diff(tr.arrival_ms) >= 0))
    assert tr.service_ms is not None
    assert float(tr.service_ms.min()) >= 0.0
    assert len(tr.names) == int(tr.function.max()) + 1


def test_read_azure2019_sample() -> None:
    counts, _names, triggers = read_azure2019(str(DATA / "invocations.csv"))
    assert counts.shape == (4, 1440)
    assert set(triggers) <= {
        "http",
        "queue",
        "event",
        "timer",
        "orchestration",
        "storage",
        "others",
    }
    tr = trace_arrivals(str(DATA / "invocations.csv"), "azure2019", np.random.default_rng(1))
    assert len(tr.arrival_ms) == int(counts.sum())
    minute = (tr.arrival_ms // 60_000).astype(int)
    assert np.array_equal(np.bincount(minute, minlength=1440)[:1440], counts.sum(axis=0))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a,b,c,d\n1,2,3,4\n", "unexpected header"),
        ("app,func,end_timestamp,duration\nx,y,notanumber,1\n", "bad row"),
        ("", "empty trace"),
    ],
)
def test_trace_reader_errors(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "t.csv"
    p.write_text(text)
    with pytest.raises(ScenarioError, match=match):
        read_azure2021(str(p))


def test_trace_2019_errors(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f,http,1\n")
    with pytest.raises(ScenarioError, match="fields"):
        read_azure2019(str(p))
    with pytest.raises(ScenarioError, match="cannot read"):
        read_azure2019(str(tmp_path / "none.csv"))


def test_same_seed_same_json_different_seed_different() -> None:
    doc = queue_scenario(
        rate_per_s=3.0,
        servers=2,
        duration_s=5_000,
        cold_start={"enabled": True, "keep_alive": "hybrid"},
        functions=20,
    )
    s = parse_scenario(doc)
    a = _strip(simulate(s, workers=1))
    b = _strip(simulate(s, workers=2, replications=1))
    assert a == b
    c = _strip(simulate(s, seed=99, workers=1))
    assert c != a


def test_planet_is_deterministic_across_worker_counts() -> None:
    s = parse_scenario(_planet_doc())
    a = simulate(s, workers=1)
    b = simulate(s, workers=2)
    assert _strip(a) == _strip(b)
    assert a["requests"] == pytest.approx(200_000, rel=0.02)
    assert 0.0 < a["cold_start_fraction"] < 0.5
    assert set(a["regions"]) <= {
        "af",
        "as-east",
        "as-south",
        "eu-east",
        "eu-west",
        "me",
        "na-east",
        "na-west",
        "oc",
        "sa",
    }
    assert len(a["locations"]) == 20


def test_planet_faults_reroute_and_fail() -> None:
    """A down PoP gets no traffic in its window; a partition cuts users off a single-PoP function."""
    doc = _planet_doc(pops=30)
    doc["functions"] = [
        {"name": "everywhere", "weight": 3.0, "replicas": 30},
        {"name": "solo", "weight": 1.0, "replicas": 1},
    ]
    m = build_planet(parse_scenario(doc))
    solo_pop = m.pops[int(m.placement.mask[1].argmax())]
    victim = next(p.id for p in m.pops if p.region != solo_pop.region)
    doc["faults"] = [
        {"kind": "location_down", "location": victim, "start_s": 0, "end_s": 86_400},
        {"kind": "partition", "region": solo_pop.region, "start_s": 0, "end_s": 43_200},
    ]
    r = simulate(parse_scenario(doc), workers=1)
    assert r["locations"][victim]["requests"] == 0
    assert r["failed"] > 0
    healthy = simulate(parse_scenario(_planet_doc(pops=30) | {"functions": doc["functions"]}))
    assert healthy["failed"] == 0


def test_planet_fault_on_unknown_pop() -> None:
    doc = _planet_doc()
    doc["faults"] = [{"kind": "location_down", "location": "zzz", "start_s": 0, "end_s": 10}]
    with pytest.raises(ScenarioError) as info:
        build_planet(parse_scenario(doc))
    assert info.value.key == "faults[0].location"


def test_replications_give_replication_intervals() -> None:
    doc = copy.deepcopy(queue_scenario(rate_per_s=5.0, servers=2, mean_ms=300, duration_s=2000))
    r = simulate(parse_scenario(doc), replications=4, workers=2)
    assert r["ci95"]["wait_ms_mean"]["method"] == "replications"
    assert r["ci95"]["wait_ms_mean"]["n"] == 4


def test_edgefn_routing_policy_routes_flows_like_nearest_without_load() -> None:
    """With no load reports the platform's RoutingPolicy serves at the ingress when it can."""
    doc = _planet_doc(pops=12, functions=10)
    doc["policies"] = {"placement": "everywhere", "routing": "edgefn"}
    routed = build_planet(parse_scenario(doc))
    doc["policies"]["routing"] = "nearest"
    nearest = build_planet(parse_scenario(doc))
    assert np.array_equal(routed.assignment, nearest.assignment)
    r = simulate(parse_scenario(doc | {"policies": {"routing": "edgefn"}}), workers=1)
    assert r["requests"] > 0
