"""`edgefn plan` and `edgefn bench plan` as a user runs them (in-process through typer)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from edgefn.cli.main import app
from edgefn.placement import RoutingWeights

ROOT = Path(__file__).parents[3]
ORLIB = ROOT / "tests" / "data" / "orlib"
EXAMPLES = ROOT / "examples" / "plan"
runner = CliRunner()


def test_plan_orlib_json() -> None:
    result = runner.invoke(app, ["plan", "--orlib", str(ORLIB / "cap72.txt"), "--uncapacitated",
                                 "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["status"] == "optimal"
    assert abs(out["objective"] - 977799.400) < 1e-3
    assert set(out) >= {"objective", "status", "bound", "gap", "open", "solve_s"}
    assert min(out["open"]) >= 1


def test_plan_orlib_table() -> None:
    result = runner.invoke(app, ["plan", "--orlib", str(ORLIB / "pmed4.txt")])
    assert result.exit_code == 0, result.output
    assert "3034" in result.stdout


def test_plan_topology_end_to_end(tmp_path: Path) -> None:
    routes = tmp_path / "routes.json"
    args = ["plan", "--topology", str(EXAMPLES / "topology.toml"), "--demand",
            str(EXAMPLES / "demand.csv"), "--functions", str(EXAMPLES / "functions.toml")]  # fmt: skip
    result = runner.invoke(app, [*args, "--json", "--routing-out", str(routes)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["status"] == "optimal"
    assert out["gap"] <= 1e-5
    assert set(out["placement"]) == {"api", "images", "eu-shop"}
    weights = RoutingWeights.from_json(json.loads(routes.read_text()))
    assert weights.get("London", "eu-shop")
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "predicted latency" in table.stdout


def test_plan_usage_errors(tmp_path: Path) -> None:
    nothing = runner.invoke(app, ["plan"])
    assert nothing.exit_code == 2
    assert "give --orlib FILE" in nothing.stderr
    bad_method = runner.invoke(app, ["plan", "--orlib", "x", "--method", "fast"])
    assert "unknown --method" in bad_method.stderr
    missing = runner.invoke(app, ["plan", "--orlib", str(tmp_path / "none.txt")])
    assert missing.exit_code == 2
    assert "file not found" in missing.stderr
    capa = tmp_path / "capa.txt"
    capa.write_text("1 1\ncapacity 5\n1 2\n")
    no_cap = runner.invoke(app, ["plan", "--orlib", str(capa)])
    assert "--capacity" in no_cap.stderr
    ok = runner.invoke(app, ["plan", "--orlib", str(capa), "--capacity", "3", "--json"])
    assert json.loads(ok.stdout)["objective"] == 7.0
    mixed = runner.invoke(app, ["plan", "--orlib", str(capa), "--topology", "world"])
    assert "cannot be combined" in mixed.stderr
    bad_limit = runner.invoke(app, ["plan", "--orlib", str(capa), "--time-limit", "0"])
    assert "--time-limit" in bad_limit.stderr


def test_bench_plan_small(tmp_path: Path) -> None:
    orlib = tmp_path / "orlib"
    orlib.mkdir()
    for name in ("cap71.txt", "pmed5.txt", "uncapopt.txt"):
        (orlib / name).write_text((ORLIB / name).read_text())
    (orlib / "capopt.txt").write_text("Data file   Optimal solution value\ncap71 932615.750\n")
    (orlib / "pmedopt.txt").write_text("Data file   Optimal solution value\npmed5 1355\n")
    out = tmp_path / "plan.json"
    result = runner.invoke(app, ["bench", "plan", "--orlib-dir", str(orlib), "--sites", "20",
                                 "--functions", "10", "--clients", "30", "--json", "--out",
                                 str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["orlib_all_optimal"] is True
    assert {r["instance"] for r in data["orlib"]} == {"cap71", "pmed5"}
    assert data["world"]["bound"] <= data["world"]["objective"]
    missing = runner.invoke(app, ["bench", "plan", "--orlib-dir", str(tmp_path / "nope")])
    assert missing.exit_code == 2
