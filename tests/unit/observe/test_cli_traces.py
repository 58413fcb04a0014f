"""`edgefn trace` / `edgefn traces` as a user runs them, against a fake control API: bad input
fails before the planet is asked, the tree nests children under parents, --json is the answer."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from edgefn.cli import _traces
from edgefn.cli.main import app
from edgefn.errors import PlanetError

runner = CliRunner()
TID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _span(sid: str, parent: str, name: str, kind: int, start: int, **attrs: Any) -> dict[str, Any]:
    return {"trace_id": TID, "span_id": sid, "parent_id": parent, "remote_parent": False,
            "name": name, "kind": kind, "start_ns": start, "end_ns": start + 2_000_000,
            "status": 0, "location": "fra", "function": "fn", "probability": 0.1,
            "reason": "sampled", "attributes": attrs, "duration_ms": 2.0}  # fmt: skip


SPANS = [
    _span("a" * 16, "c" * 16, "GET", 1, 0, **{"http.response.status_code": 200}),
    _span("b" * 16, "a" * 16, "edgefn.invoke", 0, 1_000_000),
    _span("d" * 16, "b" * 16, "kv.get KV", 2, 3_000_000),
    _span("e" * 16, "b" * 16, "GET", 2, 2_000_000, **{"url.full": "http://up/x"}),
]


class FakeClient:
    def __init__(self, answer: dict[str, Any] | None) -> None:
        self.answer = answer
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def api_call(self, method: str, path: str, **kw: Any) -> Any:
        self.calls.append((path, kw))
        if self.answer is None:
            raise PlanetError(
                f"no trace {TID} of a function you can read", hint="traces are sampled"
            )
        return self.answer


def _use(monkeypatch: pytest.MonkeyPatch, client: FakeClient) -> FakeClient:
    monkeypatch.setattr(_traces, "_client", lambda _state_dir: client)
    return client


def test_the_tree_nests_spans_under_their_parents_in_start_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = _use(monkeypatch, FakeClient({"trace_id": TID, "spans": SPANS}))
    res = runner.invoke(app, ["trace", TID.upper()])
    assert res.exit_code == 0, res.output
    assert client.calls == [(f"/v1/traces/{TID}", {})]
    lines = res.output.splitlines()
    assert [line.split(" [")[0] for line in lines] == [
        "GET", "  edgefn.invoke", "    GET", "    kv.get KV",
    ]  # fmt: skip
    assert "http.response.status_code=200" in lines[0]
    assert "+2.0ms 2.00ms" in lines[2]
    res = runner.invoke(app, ["trace", TID, "--json"])
    assert json.loads(res.output)["spans"] == SPANS


def test_bad_ids_and_limits_fail_before_the_planet_is_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = _use(monkeypatch, FakeClient({}))
    res = runner.invoke(app, ["trace", "xyz"])
    assert res.exit_code == 2
    assert "is not 32 hex digits" in res.output
    res = runner.invoke(app, ["traces", "fn", "--limit", "0"])
    assert res.exit_code == 2
    assert "--limit 0 is out of range" in res.output
    assert client.calls == []


def test_an_unknown_trace_is_reported_with_the_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, FakeClient(None))
    res = runner.invoke(app, ["trace", TID])
    assert res.exit_code == 2
    assert "error: no trace" in res.output
    assert "traces are sampled" in res.output


def test_traces_lists_kept_traces(monkeypatch: pytest.MonkeyPatch) -> None:
    listed = {"function": "fn", "traces": [{"trace_id": TID, "start_ms": 0, "duration_ms": 2.5,
              "spans": 4, "error": True, "locations": ["fra"], "probability": 1.0}]}  # fmt: skip
    client = _use(monkeypatch, FakeClient(listed))
    res = runner.invoke(app, ["traces", "fn"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert client.calls == [("/v1/traces", {"params": {"function": "fn", "limit": "20"}})]
    for text in (TID, "2.5", "yes", "fra"):
        assert text in res.output
    assert json.loads(runner.invoke(app, ["traces", "fn", "--json"]).output) == listed


def test_a_bad_otlp_endpoint_fails_before_anything_starts(tmp_path: Any) -> None:
    res = runner.invoke(app, ["up", "--otlp-endpoint", "ftp://x", "--state-dir", str(tmp_path)])
    assert res.exit_code == 2
    assert "--otlp-endpoint 'ftp://x' is not an http(s) URL" in res.output
    assert "/v1/traces" in res.output
