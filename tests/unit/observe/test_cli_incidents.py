"""`edgefn incidents`, `edgefn incidents ack|resolve ID` as a user runs them, against a fake
control API: bad arguments fail before anything is asked, API errors keep their hint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgefn.cli import _incidents
from edgefn.cli.main import app
from edgefn.errors import PlanetError

runner = CliRunner()
INCIDENT = {
    "id": 3,
    "title": "version v7 of checkout: 5xx at 5 locations since 12:04 UTC",
    "state": "open",
    "severity": "major",
    "since_ms": 1_700_000_000_000,
    "requests_affected": 420,
}


class FakeClient:
    def __init__(self, answer: Any = None, error: PlanetError | None = None) -> None:
        self.answer, self.error = answer, error
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def api_call(self, method: str, path: str, **kw: Any) -> Any:
        self.calls.append((method, path, kw))
        if self.error is not None:
            raise self.error
        return self.answer


def _use(monkeypatch: pytest.MonkeyPatch, client: FakeClient) -> FakeClient:
    monkeypatch.setattr(_incidents, "_client", lambda _state_dir: client)
    return client


def test_list_as_table_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    client = _use(monkeypatch, FakeClient({"incidents": [INCIDENT]}))
    res = runner.invoke(app, ["incidents"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "5xx at 5 locations" in res.output
    assert "2023-11-14 22:13:20" in res.output
    res = runner.invoke(app, ["incidents", "--json", "--state", "open"])
    assert json.loads(res.output) == {"incidents": [INCIDENT]}
    assert client.calls[-1] == (
        "GET",
        "/v1/incidents",
        {"params": {"limit": "50", "state": "open"}},
    )
    client.answer = {"incidents": []}
    assert "no incidents" in runner.invoke(app, ["incidents"]).output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["incidents", "--state", "closed"], "--state 'closed' is not known"),
        (["incidents", "--limit", "0"], "--limit 0 is out of range"),
        (["incidents", "ack", "x1"], "incident id 'x1' is not a number"),
        (["incidents", "resolve", "-"], "incident id '-' is not a number"),
    ],
)
def test_bad_arguments_fail_before_the_planet_is_asked(
    monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    client = _use(monkeypatch, FakeClient({}))
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "hint:" in res.output
    assert client.calls == []


def test_ack_and_resolve_post_and_print(monkeypatch: pytest.MonkeyPatch) -> None:
    client = _use(monkeypatch, FakeClient({**INCIDENT, "state": "acknowledged"}))
    res = runner.invoke(app, ["incidents", "ack", "3"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("incident 3 acknowledged: version v7 of checkout")
    assert client.calls == [("POST", "/v1/incidents/3/ack", {})]
    client.answer = {**INCIDENT, "state": "resolved"}
    res = runner.invoke(app, ["incidents", "resolve", "3", "--json"])
    assert json.loads(res.output)["state"] == "resolved"
    assert client.calls[-1][1] == "/v1/incidents/3/resolve"


def test_an_unknown_incident_is_reported_with_the_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    _use(
        monkeypatch, FakeClient(error=PlanetError("no incident 9", hint="`edgefn incidents` lists"))
    )
    res = runner.invoke(app, ["incidents", "ack", "9"])
    assert res.exit_code != 0
    assert "no incident 9" in res.output
    assert "edgefn incidents` lists" in res.output


def test_a_bad_routes_file_is_refused_by_edgefn_up_and_core(tmp_path: Path) -> None:
    bad = tmp_path / "routes.toml"
    bad.write_text('[regions]\neu-west = "ftp://x/"\n')
    for cmd in (["up", "--state-dir", str(tmp_path / "s")], ["core"]):
        res = runner.invoke(app, [*cmd, "--incident-routes", str(bad)])
        assert res.exit_code != 0, res.output
        assert f"{bad}: regions.eu-west: 'ftp://x/' is not an http(s) URL" in res.output
        assert "hint:" in res.output
    assert not (tmp_path / "s").exists()
