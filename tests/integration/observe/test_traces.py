"""Traces on the shared 4-location planet: a request with a client ``traceparent`` whose function
makes an ``edgefn.fetch`` subrequest (to a real HTTP server on 127.0.0.1) and a KV call.

Seen from outside: the client's response names the trace (``x-edgefn-trace-id``), the upstream
receives a ``traceparent`` of the same trace whose parent is the subrequest span, ``edgefn trace
ID --json`` shows every span (server, invoke, subrequest, KV) with correct parent links, and the
local OTLP receiver (conftest.py) decoded the same spans from the core's protobuf export. An
invalid ``traceparent`` is ignored (a new trace, a normal answer). Another account's token can
neither list nor read the trace; no token is refused. (The API is polled directly; the CLI runs
once for each output.)

Sampling: a 200 that is not slow is kept with the base probability, decided from the trace
id's low 56 bits; the client's trace id here has them near zero, so every location keeps it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.observe.conftest import OtlpReceiver
from tests.planet_helpers import Planet, credentials
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FN = "traced"
TRACE_ID = "4bf92f3577b34da6a300000000000001"
CLIENT_SPAN = "00f067aa0ba902b7"
CODE = """
import edgefn
from edgefn import Response

async def fetch(request, env, ctx):
    upstream = await edgefn.fetch(request.query["upstream"] + "/up")
    try:
        await env.KV.put("seen", "1")
        kv = "ok"
    except Exception as err:  # the span records the KV call either way
        kv = type(err).__name__
    return Response(f"{upstream.status} {kv}")
"""
MANIFEST = f"""name = "{FN}"
main = "main.py"
[egress]
allow = ["127.0.0.1"]
allow_private = ["127.0.0.1"]
[[kv_namespaces]]
binding = "KV"
namespace = "traced-ns"
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A real HTTP server on 127.0.0.1 that records the headers of every request it gets."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"up")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def planet(observed_planet: Planet, tmp_path_factory: pytest.TempPathFactory) -> Planet:
    d: Path = tmp_path_factory.mktemp("fns") / FN
    d.mkdir()
    (d / "edgefn.toml").write_text(MANIFEST)
    (d / "main.py").write_text(CODE)
    observed_planet.deploy(d)
    return observed_planet


def _get(planet: Planet, url: str, headers: dict[str, str]) -> httpx.Response:
    location_url = next(iter(planet.public_urls.values()))
    return httpx.get(
        f"{location_url}/work",
        params={"upstream": url},
        headers={"host": f"{FN}.localhost", **headers},
        timeout=30,
        trust_env=False,
    )


def _trace(planet: Planet, trace_id: str) -> dict[str, Any] | None:
    """``GET /v1/traces/ID`` with the planet's admin token (the CLI's call; polled cheaply)."""
    r = httpx.get(
        f"{planet.info['api_url']}/v1/traces/{trace_id}",
        headers={"authorization": f"Bearer {credentials(planet.state)['token']}"},
        timeout=10,
    )
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def test_a_request_with_a_subrequest_and_a_kv_call_shows_all_its_spans(
    planet: Planet,
    upstream: tuple[str, list[dict[str, str]]],
    otlp_receiver: OtlpReceiver,
) -> None:
    url, seen = upstream
    r = _get(planet, url, {"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01", "tracestate": "a=b"})
    assert r.status_code == 200, r.text
    assert r.headers["x-edgefn-trace-id"] == TRACE_ID
    assert r.text.startswith("200 ")
    [up] = seen
    assert up["traceparent"].startswith(f"00-{TRACE_ID}-")
    assert up["tracestate"] == "a=b"

    def complete() -> dict[str, Any] | None:
        out = _trace(planet, TRACE_ID)
        if out is None or len(out["spans"]) < 4:
            return None
        return out

    wait_for(complete, timeout_s=30, what="the trace's four spans at the core")
    out = planet.edgefn("trace", TRACE_ID, "--json")  # what a user runs
    spans = {s["name"]: s for s in out["spans"]}
    assert set(spans) == {"GET", "edgefn.invoke", "kv.put KV"}, sorted(spans)
    # Two spans are named GET (the server span and the subrequest): tell them by kind.
    by_kind = {(s["name"], s["kind"]): s for s in out["spans"]}
    server, sub = by_kind[("GET", 1)], by_kind[("GET", 2)]
    invoke, kv = spans["edgefn.invoke"], spans["kv.put KV"]
    assert len(out["spans"]) == 4
    assert (server["parent_id"], server["remote_parent"]) == (CLIENT_SPAN, True)
    assert invoke["parent_id"] == server["span_id"]
    assert sub["parent_id"] == invoke["span_id"]
    assert kv["parent_id"] == invoke["span_id"]
    assert up["traceparent"] == f"00-{TRACE_ID}-{sub['span_id']}-01"
    assert server["attributes"]["http.response.status_code"] == 200
    assert server["attributes"]["edgefn.request_id"] == r.headers["x-edgefn-request-id"]
    assert server["attributes"]["edgefn.location"] == r.headers["x-edgefn-location"]
    assert server["attributes"]["edgefn.version"] == r.headers["x-edgefn-version"]
    assert sub["attributes"]["url.full"] == f"{url}/up"
    assert sub["attributes"]["http.response.status_code"] == 200
    assert kv["attributes"]["db.operation.name"] == "put"
    assert {s["function"] for s in out["spans"]} == {FN}
    assert {s["probability"] for s in out["spans"]} == {0.1}  # the base probability, recorded
    # The readable tree shows all four, nested.
    tree = planet.edgefn("trace", TRACE_ID).stdout.splitlines()
    assert len(tree) == 4, tree
    assert tree[0].startswith("GET [server]"), tree
    assert tree[1].startswith("  edgefn.invoke"), tree
    # The OTLP receiver decoded the same spans from the core's protobuf export.
    ids = {s["span_id"] for s in out["spans"]}
    wait_for(lambda: ids <= set(otlp_receiver.spans), timeout_s=30, what="the spans over OTLP")
    for s in out["spans"]:
        got = otlp_receiver.spans[s["span_id"]]
        assert (got["trace_id"], got["name"]) == (TRACE_ID, s["name"])
        assert got["parent_id"] == s["parent_id"]
        assert got["resource"]["edgefn.location"] == s["location"]
        assert got["attributes"]["edgefn.sampling.probability"].double_value == 0.1
    listed = planet.edgefn("traces", FN, "--json")
    assert TRACE_ID in [t["trace_id"] for t in listed["traces"]]


def test_an_invalid_traceparent_starts_a_new_trace(
    planet: Planet, upstream: tuple[str, list[dict[str, str]]]
) -> None:
    url, seen = upstream
    r = _get(planet, url, {"traceparent": f"00-{TRACE_ID.upper()}-{CLIENT_SPAN}-01"})
    assert r.status_code == 200, r.text
    new = r.headers["x-edgefn-trace-id"]
    assert len(new) == 32
    assert new != TRACE_ID.lower()
    assert seen[-1]["traceparent"].startswith(f"00-{new}-")


FAR = "tracedfar"
FAR_TRACE_ID = "4bf92f3577b34da6a300000000000002"


def test_a_forwarded_request_joins_one_trace_across_two_locations(
    planet: Planet, tmp_path: Path
) -> None:
    """A function placed only in the last location's region, asked at a location of another
    region: the ingress forwards it, and the trace holds the ingress's server span (child of
    the client's span) and the serving location's server span (child of the ingress's)."""
    serving = planet.info["locations"][-1]
    ingress = next(
        (loc for loc in planet.info["locations"] if loc["region"] != serving["region"]), None
    )
    # The shared planet spans several regions (conftest.OBSERVED): a test that cannot forward
    # would prove nothing, so it fails rather than skips.
    assert ingress is not None, "every location of the planet is in one region"
    d = tmp_path / FAR
    d.mkdir()
    (d / "edgefn.toml").write_text(
        f'name = "{FAR}"\nmain = "main.py"\n[placement]\nmode = "regions"\n'
        f'regions = ["{serving["region"]}"]\n'
    )
    (d / "main.py").write_text(
        "from edgefn import Response\n\nasync def fetch(request, env, ctx):\n"
        "    return Response('far')\n"
    )
    planet.deploy(d)
    host = {"host": f"{FAR}.localhost"}
    wait_for(
        lambda: httpx.get(ingress["url"], headers=host, timeout=10).status_code == 200,
        timeout_s=30,
        what=f"{ingress['name']} to forward {FAR}",
    )
    r = httpx.get(
        ingress["url"],
        headers={**host, "traceparent": f"00-{FAR_TRACE_ID}-{CLIENT_SPAN}-01"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert (r.headers["x-edgefn-via"], r.headers["x-edgefn-location"]) == (
        ingress["name"],
        serving["name"],
    )
    assert r.headers["x-edgefn-trace-id"] == FAR_TRACE_ID

    def joined() -> dict[str, Any] | None:
        out = _trace(planet, FAR_TRACE_ID)
        return out if out is not None and len(out["spans"]) >= 3 else None

    out = wait_for(joined, timeout_s=30, what="both locations' spans of the forwarded trace")
    assert out is not None
    servers = {s["location"]: s for s in out["spans"] if s["kind"] == 1}
    assert set(servers) == {ingress["name"], serving["name"]}, out["spans"]
    first, second = servers[ingress["name"]], servers[serving["name"]]
    assert (first["parent_id"], first["remote_parent"]) == (CLIENT_SPAN, True)
    assert (second["parent_id"], second["remote_parent"]) == (first["span_id"], True)
    [invoke] = [s for s in out["spans"] if s["name"] == "edgefn.invoke"]
    assert (invoke["location"], invoke["parent_id"]) == (serving["name"], second["span_id"])


def test_another_accounts_token_cannot_read_the_trace(planet: Planet) -> None:
    wait_for(lambda: _trace(planet, TRACE_ID), timeout_s=30, what="the trace at the core")
    api, admin = planet.info["api_url"], credentials(planet.state)["token"]
    made = httpx.post(
        f"{api}/v1/tokens",
        json={"name": "other", "scopes": ["read"], "account": "other"},
        headers={"authorization": f"Bearer {admin}"},
        timeout=10,
    )
    assert made.status_code == 201, made.text
    other = {"authorization": f"Bearer {made.json()['token']}"}
    one = httpx.get(f"{api}/v1/traces/{TRACE_ID}", headers=other, timeout=10)
    assert one.status_code == 404, one.text  # as if it did not exist
    listing = httpx.get(f"{api}/v1/traces", params={"function": FN}, headers=other, timeout=10)
    assert listing.status_code == 403, listing.text
    for path in (f"/v1/traces/{TRACE_ID}", "/v1/traces?function=" + FN):
        assert httpx.get(api + path, timeout=10).status_code == 401
