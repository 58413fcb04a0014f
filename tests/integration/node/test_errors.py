"""Every row of the error table against a real node; after each failure the node still serves."""

from __future__ import annotations

import httpx
import pytest

from edgefn.edge import EdgeNode

pytestmark = pytest.mark.integration


async def _get(node: EdgeNode, path: str, **kw: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=node.url, timeout=20) as c:
        return await c.request(
            kw.pop("method", "GET"),
            path,  # type: ignore[arg-type]
            headers={"host": "errors.localhost"},
            **kw,
        )  # type: ignore[arg-type]


async def _still_serves(node: EdgeNode) -> None:
    ok = await _get(node, "/fine?x=1")
    assert ok.status_code == 200
    assert ok.json() == {"ok": True, "greeting": "hi", "query": {"x": "1"}}


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/raise", 500, "exception"),
        ("/sleep", 504, "timeout"),
        ("/loop", 503, "exceeded_cpu"),
        ("/memory", 503, "exceeded_memory"),
        ("/bad", 500, "bad_response"),
    ],
)
async def test_failure_gives_json_error_and_node_keeps_serving(
    node: EdgeNode, path: str, status: int, error: str
) -> None:
    resp = await _get(node, path)
    assert resp.status_code == status
    body = resp.json()
    assert body["error"] == error
    assert body["request_id"] == resp.headers["x-edgefn-request-id"]
    assert "secret" not in resp.text
    assert "Traceback" not in resp.text
    await _still_serves(node)


async def test_exception_traceback_goes_to_the_log(node: EdgeNode) -> None:
    resp = await _get(node, "/raise")
    log = node.log.stream.getvalue()  # type: ignore[attr-defined]
    rid = resp.json()["request_id"]
    lines = [line for line in log.splitlines() if rid in line and '"kind":"error"' in line]
    assert lines
    assert "secret detail" in lines[0]
    assert "Traceback" in lines[0]


async def test_body_over_limit_is_413(node: EdgeNode) -> None:
    resp = await _get(node, "/echo", method="POST", content=b"x" * 5000)
    assert resp.status_code == 413
    assert resp.json()["error"] == "body_too_large"
    small = await _get(node, "/echo", method="POST", content=b"y" * 100)
    assert small.status_code == 200
    assert small.content == b"y" * 100


async def test_unknown_host_is_404(node: EdgeNode) -> None:
    async with httpx.AsyncClient(base_url=node.url) as c:
        resp = await c.get("/", headers={"host": "nosuch.localhost"})
    assert resp.status_code == 404
    assert resp.json()["error"] == "no_such_function"
    await _still_serves(node)


async def test_other_functions_unaffected_by_a_crash(node: EdgeNode) -> None:
    await _get(node, "/loop")
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as c:
        resp = await c.get("/", headers={"host": "streamer.localhost"})
    assert resp.status_code == 200
    assert resp.text == "chunk 0\nchunk 1\nchunk 2\n"


async def test_response_headers_and_cold_start(node: EdgeNode) -> None:
    node.pool.retire("errors@" + node.active_versions()["errors"][0])
    first = await _get(node, "/fine")
    assert first.headers["x-edgefn-location"] == "test"
    assert first.headers["x-edgefn-version"] == node.active_versions()["errors"][0]
    assert len(first.headers["x-edgefn-request-id"]) == 16
    second = await _get(node, "/fine")
    assert "x-edgefn-cold" not in second.headers
    assert first.headers.get("x-edgefn-cold") == "1"


METRICS_TOKEN = "test-metrics-token"  # the node fixture's (conftest.py)


async def test_health_and_metrics(node: EdgeNode) -> None:
    await _get(node, "/fine")
    await _get(node, "/raise")
    async with httpx.AsyncClient(base_url=node.url) as c:
        health = (await c.get("/_edgefn/health")).json()
        refused = await c.get("/_edgefn/metrics")
        wrong = await c.get("/_edgefn/metrics", headers={"authorization": "Bearer nope"})
        auth = {"authorization": f"Bearer {METRICS_TOKEN}"}
        metrics = (await c.get("/_edgefn/metrics", headers=auth)).text
    # Metrics are not public: without the token they do not exist.
    assert refused.status_code == wrong.status_code == 404
    assert refused.json() == {"error": "not_found"}
    assert health["status"] == "ok"
    assert set(health["functions"]) == {"errors", "fetcher", "streamer"}
    assert 'edgefn_requests_total{function="errors",location="test",status="200"}' in metrics
    assert 'edgefn_errors_total{error="exception",function="errors",location="test"}' in metrics
    assert "edgefn_request_duration_seconds_bucket" in metrics
    assert "edgefn_pool_workers" in metrics
