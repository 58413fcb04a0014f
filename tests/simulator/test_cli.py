"""``edgefn simulate`` as a user runs it, on the shipped examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefn.cli.main import app

EXAMPLES = Path(__file__).parent.parent.parent / "examples" / "scenarios"
REQUIRED = (
    "requests",
    "wait_ms",
    "response_ms",
    "p_wait",
    "utilization",
    "cold_start_fraction",
    "locations",
    "regions",
    "ci95",
    "sim_requests_per_s",
    "wall_s",
)


def _write_small_planet(tmp_path: Path) -> Path:
    text = (EXAMPLES / "planet.toml").read_text()
    text = text.replace("requests_per_day = 10_000_000", "requests_per_day = 100_000")
    text = text.replace("pops = 300", "pops = 40").replace('location = "fra"', 'location = "ist"')
    p = tmp_path / "planet.toml"
    p.write_text(text)
    return p


def test_simulate_mmc_json_and_report(tmp_path: Path) -> None:
    path = tmp_path / "mmc.toml"
    path.write_text((EXAMPLES / "mmc.toml").read_text().replace("200000", "20000"))
    res = CliRunner().invoke(
        app,
        ["simulate", str(path), "--json", "--report", str(tmp_path / "r"), "--replications", "2"],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    for key in REQUIRED:
        assert key in out
    assert out["ci95"]["wait_ms_mean"]["method"] == "replications"
    for name in (
        "index.html",
        "latency_cdf_by_region.png",
        "cold_start_rate.png",
        "utilization_map.png",
    ):
        assert (tmp_path / "r" / name).stat().st_size > 0


def test_simulate_planet_json_and_report(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app,
        ["simulate", str(_write_small_planet(tmp_path)), "--json", "--report", str(tmp_path / "r")],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["kind"] == "planet"
    assert len(out["locations"]) == 40
    assert out["requests"] > 90_000
    assert "eu-west" in out["regions"]
    assert (tmp_path / "r" / "utilization_map.png").stat().st_size > 0


def test_simulate_table_output(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["simulate", str(EXAMPLES / "trace.toml")])
    assert res.exit_code == 0, res.output
    assert "cold_start_fraction" in res.stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [("[run]\nduration_s = 1\n", "no [[locations]]"), ("[run\n", "not valid TOML")],
)
def test_simulate_reports_scenario_errors(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    res = CliRunner().invoke(app, ["simulate", str(p), "--json"])
    assert res.exit_code == 2
    assert message in res.output
    assert "hint:" in res.output
