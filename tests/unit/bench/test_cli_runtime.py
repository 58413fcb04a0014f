"""``edgefn bench runtime`` refuses bad flags before it starts anything."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from edgefn.cli.main import app

runner = CliRunner()


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
