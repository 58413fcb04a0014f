"""edgefn.testing: users' in-process test helper, including its rules and KV."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefn import Response
from edgefn.errors import EgressDeniedError, KVConflict, ManifestError, UsageError
from edgefn.sdk import Subrequest
from edgefn.testing import MemoryKV, TestClient


def _write(d: Path, manifest: str, main: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "edgefn.toml").write_text(manifest)
    (d / "main.py").write_text(main)
    return d


MAIN = """
import edgefn
from edgefn import Response

async def fetch(request, env, ctx):
    if request.path == "/kv":
        rev = await env.COUNTS.put("k", "v")
        return Response.json({"rev": rev, "v": await env.COUNTS.get("k")})
    if request.path == "/out":
        r = await edgefn.fetch(request.query["u"])
        return Response(await r.body(), status=r.status)
    return Response.text(env.GREETING + " " + request.query.get("name", "?"))
"""
MANIFEST = """
name = "t"
[vars]
GREETING = "hey"
[limits]
subrequests = 1
[egress]
allow = ["allowed.test"]
[[kv_namespaces]]
binding = "COUNTS"
namespace = "counts"
"""


def test_calls_function_with_vars_and_kv(tmp_path: Path) -> None:
    client = TestClient(_write(tmp_path / "f", MANIFEST, MAIN))
    assert client.request("/?name=Ada").text_body == "hey Ada"
    assert client.request("/kv").json() == {"rev": 1, "v": "v"}


def test_fetch_rules_apply(tmp_path: Path) -> None:
    seen: list[str] = []

    async def backend(sub: Subrequest) -> Response:
        seen.append(sub.url)
        return Response(b"pong", status=201)

    client = TestClient(_write(tmp_path / "f", MANIFEST, MAIN), fetch=backend)
    resp = client.request("/out?u=http://allowed.test/ping")
    assert (resp.status, resp.body) == (201, b"pong")
    with pytest.raises(EgressDeniedError):
        client.request("/out?u=http://other.test/")
    assert seen == ["http://allowed.test/ping"]


def test_missing_fetch_is_a_clear_error(tmp_path: Path) -> None:
    d = _write(tmp_path / "f", 'name = "t"\n', "x = 1\n")
    with pytest.raises(ManifestError, match="async def fetch"):
        TestClient(d)


async def test_memory_kv_revisions_and_conflicts() -> None:
    kv = MemoryKV()
    assert await kv.put("a", "1", if_revision=0) == 1
    with pytest.raises(KVConflict):
        await kv.put("a", "2", if_revision=0)
    entry = await kv.get_entry("a")
    assert entry.revision == 1
    assert entry.value == "1"
    await kv.put("a", {"n": 2}, if_revision=1)
    assert await kv.get("a", type="json") == {"n": 2}
    listed = await kv.list(prefix="a")
    assert [(k["name"], k["revision"]) for k in listed["keys"]] == [("a", 2)]


SECRET_MAIN = """
from edgefn import Response

async def fetch(request, env, ctx):
    return Response.text(env.API_KEY)
"""


def test_secrets_become_env_and_follow_platform_rules(tmp_path: Path) -> None:
    fn = _write(tmp_path / "s", MANIFEST, SECRET_MAIN)
    client = TestClient(fn, secrets={"API_KEY": "test-key"})
    assert client.request("/").text_body == "test-key"
    with pytest.raises(UsageError, match="invalid secret name"):
        TestClient(fn, secrets={"API-KEY": "x"})
    with pytest.raises(UsageError, match="vars"):
        TestClient(fn, secrets={"GREETING": "x"})
    with pytest.raises(UsageError, match="vars"):
        TestClient(fn, secrets={"COUNTS": "x"})
