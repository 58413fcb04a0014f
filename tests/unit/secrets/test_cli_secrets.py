"""`edgefn secret` as a user runs it: values only from stdin, never from argv (exit code 2)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from edgefn.cli import _secrets
from edgefn.cli.main import app

runner = CliRunner()
VALUE = "argv-secret-value"


class FakeClient:
    """Records what the CLI sends to the control API."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def put_secret(self, name: str, secret: str, value: str) -> dict[str, Any]:
        self.calls.append(("put", name, secret, value))
        return {"function": name, "name": secret, "generation": 1, "deployment": None}

    def delete_secret(self, name: str, secret: str) -> dict[str, Any]:
        self.calls.append(("delete", name, secret))
        return {"function": name, "name": secret, "generation": 2, "deployment": None}

    def list_secrets(self, name: str) -> dict[str, Any]:
        return {"function": name, "secrets": [{"name": "API_KEY", "updated_ms": 0}]}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    client = FakeClient()
    monkeypatch.setattr(_secrets, "_client", lambda _state_dir: client)
    return client


@pytest.mark.parametrize(
    "args",
    [
        ["secret", "put", "api", "API_KEY", VALUE],
        ["secret", "put", "api", "API_KEY", "--value", VALUE],
        ["secret", "put", "api", "API_KEY", f"--value={VALUE}"],
    ],
)
def test_values_on_the_command_line_are_refused(fake: FakeClient, args: list[str]) -> None:
    result = runner.invoke(app, args, input="from-stdin\n")
    assert result.exit_code == 2
    assert "not accepted on the command line" in result.output
    assert "stdin" in result.output
    assert fake.calls == []


def test_put_reads_stdin_and_never_prints_the_value(fake: FakeClient) -> None:
    result = runner.invoke(app, ["secret", "put", "api", "API_KEY"], input=VALUE + "\n")
    assert result.exit_code == 0, result.output
    assert fake.calls == [("put", "api", "API_KEY", VALUE)]
    assert VALUE not in result.output
    assert "first deploy" in result.output


def test_put_refuses_bad_names_and_empty_values(fake: FakeClient) -> None:
    result = runner.invoke(app, ["secret", "put", "api", "API-KEY"], input="v\n")
    assert result.exit_code == 2
    assert "invalid secret name" in result.output
    result = runner.invoke(app, ["secret", "put", "api", "API_KEY"], input="\n")
    assert result.exit_code == 2
    assert "empty" in result.output
    assert fake.calls == []


def test_list_and_delete(fake: FakeClient) -> None:
    result = runner.invoke(app, ["secret", "list", "api", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["secrets"][0]["name"] == "API_KEY"
    result = runner.invoke(app, ["secret", "delete", "api", "API_KEY", "--json"])
    assert result.exit_code == 0, result.output
    assert fake.calls == [("delete", "api", "API_KEY")]
