"""`edgefn plan --orlib` reproduces the published optima of the OR-Library development subset."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefn.cli._plan import solve_orlib_file
from edgefn.errors import PlanInputError
from edgefn.placement import lp_bound, parse_orlib, read_orlib, solve_facility

DATA = Path(__file__).parents[2] / "data" / "orlib"


def _optima(name: str) -> dict[str, float]:
    out = {}
    for line in (DATA / name).read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0][:3] in ("cap", "pme"):
            out[parts[0]] = float(parts[1])
    return out


CAP = _optima("capopt.txt")
UNCAP = _optima("uncapopt.txt")
PMED = _optima("pmedopt.txt")


@pytest.mark.parametrize("name", sorted(CAP))
def test_capacitated_optimum(name: str) -> None:
    out = solve_orlib_file(str(DATA / f"{name}.txt"), None, False, 60.0)
    assert out["status"] == "optimal"
    assert out["objective"] == pytest.approx(CAP[name], rel=1e-7)
    assert out["gap"] <= 1e-6
    assert all(1 <= i <= 50 for i in out["open"])


@pytest.mark.parametrize("name", sorted(UNCAP))
def test_uncapacitated_optimum(name: str) -> None:
    out = solve_orlib_file(str(DATA / f"{name}.txt"), None, True, 60.0)
    assert out["status"] == "optimal"
    assert out["objective"] == pytest.approx(UNCAP[name], rel=1e-7)


@pytest.mark.parametrize("name", sorted(PMED))
def test_pmedian_optimum(name: str) -> None:
    out = solve_orlib_file(str(DATA / f"{name}.txt"), None, False, 60.0)
    assert out["status"] == "optimal"
    assert out["objective"] == pytest.approx(PMED[name], rel=1e-7)
    problem = read_orlib(DATA / f"{name}.txt")
    assert len(out["open"]) == problem.open_exactly


def test_disaggregated_relaxation_is_tighter() -> None:
    problem = read_orlib(DATA / "cap64.txt")
    strong = lp_bound(problem, formulation="disaggregated")
    weak = lp_bound(problem, formulation="aggregated")
    assert weak < strong <= CAP["cap64"] + 1e-6
    assert (CAP["cap64"] - strong) / CAP["cap64"] < 0.01
    assert (CAP["cap64"] - weak) / CAP["cap64"] > 0.05
    # Both formulations give the same integer optimum.
    result = solve_facility(problem, formulation="aggregated")
    assert result.objective == pytest.approx(CAP["cap64"], rel=1e-7)


def test_capacity_word_needs_a_value() -> None:
    text = "2 1\ncapacity 10\ncapacity 20\n5 1 2\n"
    with pytest.raises(PlanInputError, match="capa/capb/capc") as info:
        parse_orlib(text, path="capa.txt")
    assert "--capacity" in info.value.hint
    problem = parse_orlib(text, path="capa.txt", capacity=7.0)
    assert problem.capacity == (7.0, 7.0)
    assert solve_facility(problem).objective == pytest.approx(11.0)


def test_pmed_last_duplicate_edge_wins() -> None:
    problem = parse_orlib("3 3 1\n1 2 5\n2 3 1\n1 2 1\n")
    assert problem.cost[0][1] == 1.0
    assert problem.cost[0][2] == 2.0


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("1 2 3 4\n", "first line has 4 numbers"),
        ("2 1\n10 5\n", "file ends early"),
        ("1 1\n10 x\n1 2\n", "expected a number"),
        ("1 1\n10 5\n1 2\n9\n", "unexpected numbers"),
        ("0 1\n", "whole number from 1"),
        ("2 1 3\n1 2 1\n", "p = 3 exceeds"),
        ("2 1 1\n1 5 1\n", "outside vertices"),
        ("3 1 1\n1 2 1\n", "not connected"),
    ],
)
def test_parse_errors(text: str, match: str) -> None:
    with pytest.raises(PlanInputError, match=match) as info:
        parse_orlib(text, path="bad.txt")
    assert info.value.path == "bad.txt"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlanInputError, match="file not found"):
        read_orlib(tmp_path / "none.txt")
