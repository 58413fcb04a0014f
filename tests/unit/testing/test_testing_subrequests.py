"""edgefn.testing's subrequest rules are the node's: the same URLs give the same answers and errors.

The node side is the node's ``Outbound`` itself, its DNS answered by a resolver giving a public
address and its network by an ``httpx.MockTransport``; the testing side is a ``TestClient`` with a
``fetch=`` fake. Both must let the same subrequests through and refuse the others with the same
errors and messages (the limit counts refused subrequests too).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from edgefn import Response
from edgefn.bundle import load_manifest
from edgefn.edge.outbound import Outbound, SubrequestRules
from edgefn.runtime import protocol as p
from edgefn.runtime.worker import fetch_response
from edgefn.sdk import Subrequest
from edgefn.sdk._fetch import MAX_SUBREQUEST_BODY_BYTES
from edgefn.testing import TestClient

MANIFEST = """
name = "caller"
[limits]
subrequests = 4
[egress]
allow = ["allowed.test"]
"""
MAIN = """
import json
import edgefn
from edgefn import Response

async def fetch(request, env, ctx):
    out = []
    for url in json.loads(await request.text()):
        try:
            r = await edgefn.fetch(url)
            out.append(["ok", r.status, (await r.body()).decode()])
        except Exception as err:
            out.append([type(err).__name__, str(err)])
    return Response.json(out)
"""
URLS = [
    "http://allowed.test/a",
    "http://other.test/",
    "http://169.254.169.254/latest/meta-data/",
    "http://allowed.test/b",
    "http://allowed.test/c",
]


async def _public(host: str, port: int) -> Sequence[str]:
    return ["93.184.216.34"]


async def _on_node(manifest_dir: Path, urls: list[str]) -> list[list[Any]]:
    rules = SubrequestRules.of(load_manifest(manifest_dir))
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, stream=httpx.ByteStream(b"pong"))
    )
    outbound = Outbound(resolver=_public, transport=transport)
    ids = itertools.count(1)
    out: list[list[Any]] = []
    try:
        for url in urls:
            call = p.FetchCall(0, next(ids), url, "GET", [], b"", 10_000)
            try:
                r = fetch_response(await outbound.fetch("test-1", call, rules))
                out.append(["ok", r.status, (await r.body()).decode()])
            except Exception as err:
                out.append([type(err).__name__, str(err)])
    finally:
        await outbound.aclose()
    return out


def _function(tmp_path: Path) -> Path:
    fn = tmp_path / "fn"
    fn.mkdir()
    (fn / "edgefn.toml").write_text(MANIFEST)
    (fn / "main.py").write_text(MAIN)
    return fn


async def test_testing_subrequests_answer_as_the_node(tmp_path: Path) -> None:
    fn = _function(tmp_path)
    seen: list[str] = []

    async def fake(sub: Subrequest) -> Response:
        seen.append(sub.url)
        return Response(b"pong", status=200)

    resp = await TestClient(fn, fetch=fake).fetch("/", method="POST", body=json.dumps(URLS))
    in_testing = resp.json()
    assert in_testing == await _on_node(fn, URLS)
    assert [o[0] for o in in_testing] == [
        "ok",
        "EgressDeniedError",
        "EgressDeniedError",
        "ok",
        "SubrequestLimitError",
    ]
    assert "request test-1 made more than 4 subrequests" in in_testing[-1][1]
    assert seen == ["http://allowed.test/a", "http://allowed.test/b"]


async def test_a_body_over_the_limit_never_reaches_the_backend(tmp_path: Path) -> None:
    fn = tmp_path / "big"
    fn.mkdir()
    (fn / "edgefn.toml").write_text(MANIFEST)
    (fn / "main.py").write_text(
        "import edgefn\nfrom edgefn import Response\n\n"
        "async def fetch(request, env, ctx):\n"
        "    try:\n"
        f"        await edgefn.fetch('http://allowed.test/', method='POST', "
        f"body=b'x' * {MAX_SUBREQUEST_BODY_BYTES + 1})\n"
        "    except Exception as err:\n"
        "        return Response.text(type(err).__name__)\n"
        "    return Response.text('sent')\n"
    )
    called: list[str] = []

    async def fake(sub: Subrequest) -> Response:
        called.append(sub.url)
        return Response(b"")

    resp = await TestClient(fn, fetch=fake).fetch("/")
    assert resp.text_body == "SubrequestLimitError"
    assert called == []
