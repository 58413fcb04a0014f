"""The Lagrangian branch and bound for capacitated facility location (`_cflp_bb`).

It must reach the published optimum of every capacitated OR-Library instance in tests/data, agree
with HiGHS's MILP where capacities differ (the covering knapsack's LP bound), and say
"infeasible", "feasible" (time limit) and which method ran, truthfully.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgefn.cli.main import app
from edgefn.placement import FacilityProblem, read_orlib, solve_facility
from edgefn.placement._cflp_bb import solve_cflp_lagrangian

DATA = Path(__file__).parents[2] / "data" / "orlib"


def _optima() -> dict[str, float]:
    out = {}
    for line in (DATA / "capopt.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith("cap"):
            out[parts[0]] = float(parts[1])
    return out


CAP = _optima()


@pytest.mark.parametrize("name", sorted(CAP))
def test_reaches_every_published_optimum(name: str) -> None:
    problem = read_orlib(DATA / f"{name}.txt")
    result, stats = solve_cflp_lagrangian(problem, time_limit_s=60.0)
    assert result.status == "optimal", (result, stats)
    assert result.objective == pytest.approx(CAP[name], rel=1e-7)
    assert result.bound <= result.objective
    assert result.gap <= 1e-6 * (1 + 1e-6)
    assert result.method == "lagrangian"
    assert result.nodes == stats.nodes >= 1
    # The assignment is a solution: every customer served in full by open facilities, within
    # their capacities, at the reported cost.
    served = np.zeros(problem.n)
    load = np.zeros(problem.m)
    cost = sum(problem.fixed_cost[i] for i in result.open)
    for j, shares in enumerate(result.assignment):
        for i, frac in shares:
            assert i in result.open
            served[j] += frac
            load[i] += frac * problem.demand[j]
            cost += frac * problem.cost[i][j]
    assert np.allclose(served, 1.0, atol=1e-7)
    assert np.all(load <= np.asarray(problem.capacity) * (1 + 1e-7))
    assert cost == pytest.approx(result.objective, rel=1e-9)


def _random(seed: int, m: int, n: int, *, equal: bool, slack: float) -> FacilityProblem:
    rng = np.random.default_rng(seed)
    demand = rng.integers(5, 60, n).astype(float)
    facility = rng.random((m, 2))
    customer = rng.random((n, 2))
    dist = np.linalg.norm(facility[:, None, :] - customer[None, :, :], axis=2)
    cost = np.round(dist * demand[None, :] * 100.0, 3)
    total = demand.sum() * slack
    capacity = (
        np.full(m, np.ceil(total / m)) if equal else np.round(rng.uniform(0.4, 1.6, m) * total / m)
    )
    fixed = np.round(rng.uniform(500, 1500, m), 1)
    return FacilityProblem(
        tuple(fixed), tuple(demand), tuple(map(tuple, cost)), tuple(capacity.tolist())
    )


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("equal", [True, False])
def test_agrees_with_the_milp(seed: int, equal: bool) -> None:
    problem = _random(seed, 12, 40, equal=equal, slack=3.0)
    exact = solve_facility(problem, method="milp", rel_gap=1e-9)
    result, _ = solve_cflp_lagrangian(problem, time_limit_s=60.0)
    assert exact.status == result.status == "optimal"
    assert result.objective == pytest.approx(exact.objective, rel=2e-6)
    assert result.bound <= exact.objective * (1 + 1e-9)


def test_too_little_capacity_is_infeasible() -> None:
    problem = _random(1, 5, 20, equal=True, slack=0.9)
    result, _ = solve_cflp_lagrangian(problem, time_limit_s=10.0)
    assert result.status == "infeasible"
    assert solve_facility(problem, method="milp").status == "infeasible"


def test_the_time_limit_gives_the_incumbent_and_an_honest_bound() -> None:
    problem = read_orlib(DATA / "cap64.txt")
    result, _ = solve_cflp_lagrangian(problem, time_limit_s=1e-4)
    assert result.status in ("feasible", "no_solution")
    if result.status == "feasible":
        assert result.bound <= CAP["cap64"] <= result.objective
        assert result.gap == pytest.approx((result.objective - result.bound) / result.objective)


def test_auto_takes_the_lagrangian_method_for_large_capacitated_instances() -> None:
    small = read_orlib(DATA / "cap41.txt")
    assert solve_facility(small).method == "milp"
    large = _random(7, 60, 1000, equal=True, slack=2.5)
    result = solve_facility(large, time_limit_s=60.0)
    assert result.method == "lagrangian"
    assert result.status == "optimal"
    assert solve_facility(small.uncapacitated()).method == "milp"


def test_cli_method_lagrangian_refuses_an_uncapacitated_instance(tmp_path: Path) -> None:
    out = CliRunner().invoke(
        app, ["plan", "--orlib", str(DATA / "cap71.txt"), "--uncapacitated",
              "--method", "lagrangian", "--json"],
    )  # fmt: skip
    assert out.exit_code != 0
    assert "capacitated instances only" in out.output
    assert "Traceback" not in out.output
    ok = CliRunner().invoke(
        app, ["plan", "--orlib", str(DATA / "cap41.txt"), "--method", "lagrangian", "--json"]
    )
    assert ok.exit_code == 0, ok.output
    assert '"method": "lagrangian"' in ok.output


def test_bench_large_names_the_missing_files(tmp_path: Path) -> None:
    (tmp_path / "capa.txt").write_text("1 1\n")
    out = CliRunner().invoke(app, ["bench", "plan", "--large-dir", str(tmp_path), "--json"])
    assert out.exit_code != 0
    text = " ".join(out.output.split())
    assert "missing capb.txt, capc.txt" in text
    assert "Traceback" not in text


def test_bench_large_refuses_a_time_limit_that_is_not_positive(tmp_path: Path) -> None:
    out = CliRunner().invoke(
        app, ["bench", "plan", "--large-dir", str(tmp_path), "--large-time-limit", "0"]
    )
    assert out.exit_code != 0
    assert "--large-time-limit must be > 0" in " ".join(out.output.split())
    assert "Traceback" not in out.output
