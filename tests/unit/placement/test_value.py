"""The value objective (`edgefn plan --objective value`): the trade-offs it prices, its site
choice against the exact MILP, its breakdown's arithmetic, and its input errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgefn.cli.main import app
from edgefn.errors import PlanInputError
from edgefn.placement import (
    Client,
    Economics,
    FunctionSpec,
    PlacementProblem,
    Site,
    _value,
    plan_value,
    read_functions,
    world_instance,
)

EXAMPLES = Path(__file__).parents[3] / "examples" / "plan"
runner = CliRunner()


def two_continents(rps: float = 1000.0) -> PlacementProblem:
    """Two sites 150 ms apart, a client region beside each (5 ms)."""
    sites = (Site("fra", 50, 8, 100, 0.05, 300), Site("sin", 1, 103, 100, 0.05, 400))
    clients = (Client("berlin", 52, 13), Client("jakarta", -6, 106))
    latency = np.array([[5.0, 150.0], [150.0, 5.0]])
    demand = np.array([[rps, rps]])
    return PlacementProblem((FunctionSpec("api"),), sites, clients, demand, latency)


def test_latency_value_buys_a_second_replica_and_coordination_takes_it_back() -> None:
    out = plan_value(two_continents(), Economics())
    api = out["functions"]["api"]
    assert api["replicas"] == 2
    assert sorted(api["locations"]) == ["fra", "sin"]
    # One client gains 145 ms: ln(1 + 145/10) per request, 0.5 $ per million, 1000 rps.
    assert api["value_latency"] == pytest.approx(1000 * 3600 / 1e6 * 0.5 * math.log1p(14.5))
    assert api["net_value_by_replicas"]["2"] > api["net_value_by_replicas"]["1"]
    costly = plan_value(two_continents(), Economics(coordination_per_pair_hour=100.0))
    assert costly["functions"]["api"]["replicas"] == 1


def test_availability_is_worth_replicas_when_revenue_is_high() -> None:
    """Identical clients, no latency to gain: only availability pays for a second replica."""
    sites = (Site("a", 0, 0, 100, 0.05, 0), Site("b", 0, 1, 100, 0.05, 0))
    problem = PlacementProblem((FunctionSpec("f"),), sites, (Client("c", 0, 0),),
                               np.array([[100.0]]), np.array([[10.0, 10.0]]))  # fmt: skip
    assert (
        plan_value(problem, Economics(revenue_per_million=0.0))["functions"]["f"]["replicas"] == 1
    )
    rich = plan_value(problem, Economics(revenue_per_million=1000.0))["functions"]["f"]
    assert rich["replicas"] == 2
    assert rich["availability"] == pytest.approx(1 - 0.01**2)
    assert rich["value_availability"] == pytest.approx(100 * 3600 / 1e6 * 1000 * (1 - 1e-4))


def test_breakdown_adds_up_by_function_and_by_location() -> None:
    out = plan_value(world_instance(n_sites=25, n_functions=4, n_clients=40, seed=2), Economics())
    assert out["status"] == "optimal"
    for fn in out["functions"].values():
        costs = sum(v for k, v in fn.items() if k.startswith("cost_"))
        assert fn["cost"] == pytest.approx(costs)
        assert fn["value"] == pytest.approx(fn["value_latency"] + fn["value_availability"])
        assert fn["net_value"] == pytest.approx(fn["value"] - fn["cost"])
        assert fn["net_value"] == pytest.approx(max(fn["net_value_by_replicas"].values()))
    locations = out["locations"].values()
    assert sum(v["value"] for v in locations) == pytest.approx(out["value"])
    assert sum(v["cost"] for v in locations) == pytest.approx(out["cost"])
    assert sum(v["replicas"] for v in locations) == sum(len(s) for s in out["placement"].values())
    json.dumps(out)  # JSON-ready


@pytest.mark.parametrize("seed", range(6))
def test_interchange_finds_the_exact_milps_sites_on_small_instances(seed: int) -> None:
    """The large-instance path (greedy plus interchange) against HiGHS's optimum, k = 1..4."""
    w = world_instance(n_sites=12, n_functions=1, n_clients=30, seed=seed)
    problem = PlacementProblem((FunctionSpec("f"),), w.sites, w.clients, w.demand_rps,
                               w.latency_ms)  # fmt: skip
    terms = _value._terms(problem, 0, Economics())
    assert terms is not None
    sites: tuple[int, ...] = ()
    for k in range(1, 5):
        sites = _value._interchange(terms, sites, k)
        exact = _value._exact_sites(terms, k, 30.0)
        assert len(sites) == k
        heuristic, optimum = _value._total(terms, list(sites)), _value._total(terms, list(exact))
        assert heuristic >= optimum - 1e-9
        assert heuristic <= optimum + 0.01 * abs(optimum), (k, sites, exact)


def test_an_sla_no_replica_count_meets_is_reported_not_placed() -> None:
    problem = two_continents()
    problem = PlacementProblem((FunctionSpec("api", sla_ms=20),), problem.sites, problem.clients,
                               problem.demand_rps, problem.latency_ms)  # fmt: skip
    assert plan_value(problem, Economics())["functions"]["api"]["replicas"] == 2
    out = plan_value(problem, Economics(max_replicas=1))
    assert out["status"] == "infeasible"
    assert out["placement"] == {}
    assert "api: no feasible placement up to 1 replicas" in out["notes"][0]


@pytest.mark.parametrize(
    ("table", "key", "message"),
    [
        ("bogus = 1", "economics.bogus", "unknown key 'bogus'"),
        ("deploy_cost_per_hour = -1", "economics.deploy_cost_per_hour", "must be a number"),
        ("write_fraction = 2", "economics.write_fraction", "must be from 0 to 1"),
        ("max_replicas = 2.5", "economics.max_replicas", "whole number"),
        ("max_replicas = 100", "economics.max_replicas", "from 1 to 64"),
        ("latency_scale_ms = 0", "economics.latency_scale_ms", "must be > 0"),
    ],
)
def test_economics_errors_name_the_file_and_key(
    tmp_path: Path, table: str, key: str, message: str
) -> None:
    path = tmp_path / "functions.toml"
    path.write_text(f'[[functions]]\nname = "f"\n\n[economics]\n{table}\n')
    with pytest.raises(PlanInputError) as err:
        read_functions(path)
    assert err.value.path == str(path)
    assert err.value.key == key
    assert message in err.value.message
    assert err.value.message.count(key) == 1


def test_the_cli_plans_by_value_and_refuses_what_it_cannot_do() -> None:
    args = ["plan", "--topology", str(EXAMPLES / "topology.toml"), "--demand",
            str(EXAMPLES / "demand.csv"), "--functions", str(EXAMPLES / "functions.toml")]  # fmt: skip
    result = runner.invoke(app, [*args, "--objective", "value", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["objective"] == "value"
    assert out["status"] == "optimal"
    assert set(out["functions"]) == {"api", "images", "eu-shop"}
    table = runner.invoke(app, [*args, "--objective", "value"])
    assert table.exit_code == 0, table.output
    assert "by location ($/h)" in table.output
    bad = runner.invoke(app, [*args, "--objective", "profit"])
    assert bad.exit_code == 2
    assert "use cost or value" in bad.output
    mixed = runner.invoke(app, [*args, "--objective", "value", "--method", "milp"])
    assert mixed.exit_code == 2
    assert "drop --orlib and --method" in mixed.output
