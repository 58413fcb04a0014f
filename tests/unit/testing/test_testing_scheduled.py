"""edgefn.testing runs cron handlers in-process with the node's event and handler checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefn.errors import ManifestError, UsageError
from edgefn.testing import TestClient

REPO = Path(__file__).resolve().parents[3]


def test_the_cron_example_counts_each_tick_once() -> None:
    client = TestClient(REPO / "examples/cron")
    client.run_scheduled(scheduled_time=1_735_689_660_000)
    client.run_scheduled(scheduled_time=1_735_689_720_000)
    resp = client.request("/runs?since=1735689600000&until=1735689780000")
    assert resp.status == 200, resp.text_body
    ticks = resp.json()["ticks"]
    assert ticks == {
        "1735689660000": {"count": 1, "attempts": [1]},
        "1735689720000": {"count": 1, "attempts": [1]},
    }


def _function(tmp_path: Path, manifest: str, main: str) -> Path:
    (tmp_path / "edgefn.toml").write_text(manifest)
    (tmp_path / "main.py").write_text(main)
    return tmp_path


def test_crons_without_a_scheduled_handler_are_refused(tmp_path: Path) -> None:
    fn = _function(
        tmp_path,
        'name = "c"\n[triggers]\ncrons = ["* * * * *"]\n',
        "async def fetch(request, env, ctx):\n    pass\n",
    )
    with pytest.raises(ManifestError, match="defines no `scheduled`"):
        TestClient(fn)


def test_a_bad_cron_or_a_missing_handler_is_a_usage_error(tmp_path: Path) -> None:
    fn = _function(tmp_path, 'name = "c"\n', "async def fetch(request, env, ctx):\n    pass\n")
    with pytest.raises(UsageError, match="defines no `async def scheduled"):
        TestClient(fn).run_scheduled()
    fn2 = _function(
        tmp_path,
        'name = "c"\n',
        "async def fetch(request, env, ctx):\n    pass\n"
        "async def scheduled(event, env, ctx):\n    raise ValueError(event.cron)\n",
    )
    with pytest.raises(UsageError, match="invalid cron"):
        TestClient(fn2).run_scheduled("61 * * * *")
    with pytest.raises(ValueError, match=r"\*/5"):
        TestClient(fn2).run_scheduled("*/5 * * * *")
