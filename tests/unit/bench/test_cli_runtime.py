"""``edgefn bench runtime`` refuses bad flags before it starts anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefn.cli._bench import _print_runtime
from edgefn.cli.main import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--load-generator", "ab"], "use auto, wrk or asyncio"),
        (["--rounds", "0"], "must be positive"),
        (["--duration", "0"], "must be positive"),
    ],
)
def test_bad_flags_are_refused_with_what_to_use(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["bench", "runtime", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_the_table_shows_a_committed_result(capsys: pytest.CaptureFixture[str]) -> None:
    """The human output of a real run (benchmarks/results/runtime.json): every row, and a skipped
    server shown with its reason."""
    result = json.loads((REPO / "benchmarks/results/runtime.json").read_text())
    result["warm"]["workerd"] = "not installed; skipped"
    _print_runtime(result)
    out = capsys.readouterr().out
    for row in ("cold start p50/p99 (stdlib)", "node / bare granian", "idle worker PSS"):
        assert row in out
    assert "not installed; skipped" in out
    assert f"{result['warm']['bare_granian']['rps']}" in out
