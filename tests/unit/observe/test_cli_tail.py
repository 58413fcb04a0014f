"""`edgefn tail` as a user runs it, against a fake control API: arguments, output, --limit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgefn.cli import _tail
from edgefn.cli.main import app
from edgefn.errors import PlanetError

runner = CliRunner()


def _event(i: int, status: int = 200) -> dict[str, Any]:
    return {
        "type": "request",
        "request_id": f"r{i}",
        "ts_ms": 1_700_000_000_000 + i,
        "location": "fra",
        "function": "hello",
        "version": "v1abc",
        "method": "GET",
        "path": f"/p/{i}",
        "status": status,
        "duration_ms": 2.5,
        "cold": i == 0,
        "client": "",
        "sample": 0.25,
        "logs": [["info", f"line {i}"]],
    }


class FakeClient:
    def __init__(self, lines: list[dict[str, Any]], error: PlanetError | None = None) -> None:
        self.lines, self.error = lines, error
        self.params: list[tuple[str, str]] = []
        self.closed = False
        self.read = 0
        self.stream_closed = False

    def tail(self, name: str, params: list[tuple[str, str]]) -> Iterator[dict[str, Any]]:
        self.params = params
        if self.error is not None:
            raise self.error
        try:
            for line in self.lines:
                self.read += 1
                yield line
        finally:
            self.stream_closed = True

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    client = FakeClient(
        [
            {"type": "session", "session": "a" * 16},
            *[_event(i) for i in range(3)],
            {"type": "dropped", "count": 4},
            _event(3, 503),
            {"type": "heartbeat"},
            _event(4),
        ]
    )
    monkeypatch.setattr(_tail, "_client", lambda _state_dir: client)
    return client


def test_json_prints_one_event_a_line_and_stops_at_the_limit(fake: FakeClient) -> None:
    res = runner.invoke(app, ["tail", "hello", "--json", "--limit", "4"])
    assert res.exit_code == 0, res.output
    events = [json.loads(line) for line in res.stdout.splitlines()]
    assert [e["request_id"] for e in events] == ["r0", "r1", "r2", "r3"]
    assert "type" not in events[0]
    assert "4 events dropped" in res.stderr
    assert fake.read == 6  # it stopped reading at the limit
    assert fake.stream_closed
    assert fake.closed


def test_pretty_lines_show_location_status_duration_path_and_fraction(fake: FakeClient) -> None:
    res = runner.invoke(app, ["tail", "hello"])
    assert res.exit_code == 0, res.output
    first, log = res.stdout.splitlines()[:2]
    for part in ("fra", "200", "2.5 ms", "GET /p/0", "cold", "sample 0.25", "[r0]"):
        assert part in first, first
    assert log.strip() == "info: line 0"


def test_filters_travel_as_query_parameters(fake: FakeClient) -> None:
    args = [
        "tail",
        "hello",
        "--location",
        "fra",
        "--location",
        "ams",
        "--status",
        "5xx",
        "--search",
        "pay",
        "--sample",
        "0.5",
        "--json",
    ]
    assert runner.invoke(app, args).exit_code == 0
    assert fake.params == [
        ("location", "fra"),
        ("location", "ams"),
        ("status", "5xx"),
        ("search", "pay"),
        ("sample", "0.5"),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--status", "7xx"], "not a status class"),
        (["--status", "500"], "not a status class"),
        (["--sample", "2"], "is not in (0, 1]"),
        (["--sample", "0"], "is not in (0, 1]"),
        (["--limit", "-1"], "is negative"),
        (["--search", "x" * 300], "over 256 characters"),
    ],
)
def test_bad_arguments_fail_before_anything_is_sent(
    fake: FakeClient, args: list[str], message: str
) -> None:
    res = runner.invoke(app, ["tail", "hello", *args])
    assert res.exit_code == 2
    assert message in res.stderr
    assert "hint:" in res.stderr
    assert fake.params == []


def test_api_errors_are_reported_with_their_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    client = FakeClient(
        [], PlanetError("unknown function 'x'", hint="GET /v1/functions lists them")
    )
    monkeypatch.setattr(_tail, "_client", lambda _state_dir: client)
    res = runner.invoke(app, ["tail", "x"])
    assert res.exit_code == 2
    assert "unknown function 'x'" in res.stderr
    assert client.closed


def test_no_planet_running(tmp_path: Path) -> None:
    res = runner.invoke(app, ["tail", "hello", "--state-dir", str(tmp_path)])
    assert res.exit_code == 2
    assert "no planet is running" in res.stderr
