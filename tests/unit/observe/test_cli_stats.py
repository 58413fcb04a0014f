"""`edgefn stats` as a user runs it, against a fake control API: a bad --window fails before
anything is asked, an API error is printed with its hint, a table or JSON otherwise."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from edgefn.cli import _stats
from edgefn.cli.main import app
from edgefn.errors import PlanetError

runner = CliRunner()
ROW = {
    "location": "fra",
    "client_region": "eu-west",
    "requests": 10,
    "by_status": {"2xx": 9, "3xx": 0, "4xx": 0, "5xx": 1},
    "error_rate": 0.1,
    "latency_ms_p50": 3.2,
    "latency_ms_p95": 9.0,
    "latency_ms_p99": 12.5,
    "cold_start_rate": 0.1,
    "cpu_ms": None,
}


class FakeClient:
    def __init__(self, answer: dict[str, Any] | None = None) -> None:
        self.answer = answer
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def api_call(self, method: str, path: str, **kw: Any) -> Any:
        self.calls.append((path, kw))
        if self.answer is None:
            raise PlanetError("unknown function 'nope'", hint="GET /v1/functions lists them")
        return self.answer


def _use(monkeypatch: pytest.MonkeyPatch, client: FakeClient) -> FakeClient:
    monkeypatch.setattr(_stats, "_client", lambda _state_dir: client)
    return client


@pytest.mark.parametrize("window", ["5", "5 minutes", "0s", "31d", "1.5h"])
def test_bad_window_fails_before_the_planet_is_asked(
    monkeypatch: pytest.MonkeyPatch, window: str
) -> None:
    client = _use(monkeypatch, FakeClient({}))
    res = runner.invoke(app, ["stats", "fn", "--window", window])
    assert res.exit_code == 2
    assert f"--window {window!r}" in res.output
    assert "hint: give a number and a unit" in res.output
    assert client.calls == []


def test_unknown_function_is_reported_with_the_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, FakeClient(None))
    res = runner.invoke(app, ["stats", "nope"])
    assert res.exit_code == 2
    assert "error: unknown function 'nope'" in res.output
    assert "GET /v1/functions" in res.output


def test_table_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    answer = {"rows": [ROW], "totals": [{**ROW, "client_region": "*"}], "overflow_requests": 0}
    client = _use(monkeypatch, FakeClient(answer))
    res = runner.invoke(app, ["stats", "fn", "--window", "2h"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert client.calls == [("/v1/stats/fn", {"params": {"window": "2h"}})]
    for text in ("fra", "eu-west", "10.00%", "12.5", "-"):
        assert text in res.output
    res = runner.invoke(app, ["stats", "fn", "--json"])
    assert json.loads(res.output) == answer
    empty = _use(monkeypatch, FakeClient({"rows": [], "totals": [], "overflow_requests": 0}))
    res = runner.invoke(app, ["stats", "fn"])
    assert "no requests in the last 5m" in res.output
    assert empty.calls
