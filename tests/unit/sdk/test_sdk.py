"""The SDK objects function code uses: headers, query, request, response, env, ctx."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import edgefn
from edgefn import Context, Env, Headers, Request, Response


def test_headers_are_case_insensitive_and_multi_valued() -> None:
    h = Headers([("Set-Cookie", "a=1"), ("set-cookie", "b=2"), ("X-One", "1")])
    assert h.get_all("SET-COOKIE") == ["a=1", "b=2"]
    assert h.get("set-cookie") == "a=1, b=2"
    assert "x-one" in h
    h["X-ONE"] = "2"
    assert h["x-one"] == "2"
    del h["set-cookie"]
    assert h.keys() == ["x-one"]
    assert h.get("missing", "d") == "d"


def test_headers_reject_line_breaks() -> None:
    with pytest.raises(ValueError, match="line break"):
        Headers({"x": "a\r\nInjected: 1"})


def test_request_query_and_body() -> None:
    req = Request("http://f.localhost/p/q?a=1&a=2&b=", method="post", body=b'{"k": 3}')
    assert req.method == "POST"
    assert req.path == "/p/q"
    assert req.query["a"] == "1"
    assert req.query.get_all("a") == ["1", "2"]
    assert req.query["b"] == ""
    assert dict(req.query) == {"a": "1", "b": ""}
    assert asyncio.run(req.json()) == {"k": 3}
    assert asyncio.run(req.text()) == '{"k": 3}'


def test_response_constructors_and_readers() -> None:
    r = Response.json({"a": 1}, status=201)
    assert r.status == 201
    assert r.headers["content-type"] == "application/json"
    assert asyncio.run(r.json()) == {"a": 1}
    t = Response.text("hé")
    assert asyncio.run(t.text()) == "hé"
    redirect = Response.redirect("/there", status=301)
    assert redirect.headers["location"] == "/there"
    with pytest.raises(ValueError, match="redirect status"):
        Response.redirect("/x", status=200)
    with pytest.raises(ValueError, match="status"):
        Response("x", status=99)
    with pytest.raises(TypeError, match="body must be"):
        Response(123)  # type: ignore[arg-type]


def test_streaming_body_is_iterated_in_chunks() -> None:
    async def gen() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    r = Response(gen())
    assert r.is_streaming

    async def collect() -> list[bytes]:
        return [c async for c in r.iter_body()]

    assert asyncio.run(collect()) == [b"a", b"b"]


def test_env_attribute_access_and_clear_error() -> None:
    env = Env({"GREETING": "hi"})
    assert env.GREETING == "hi"
    with pytest.raises(AttributeError, match="defined: GREETING"):
        _ = env.MISSING
    with pytest.raises(AttributeError, match="read-only"):
        env.X = 1


def test_wait_until_runs_after_and_reports_errors() -> None:
    done: list[str] = []

    async def scenario() -> list[BaseException]:
        ctx = Context()

        async def later() -> None:
            done.append("ran")

        async def broken() -> None:
            raise RuntimeError("bg")

        ctx.wait_until(later())
        ctx.wait_until(broken())
        return await ctx.drain(timeout_s=1)

    errors = asyncio.run(scenario())
    assert done == ["ran"]
    assert [str(e) for e in errors] == ["bg"]


def test_fetch_outside_a_request_says_what_to_do() -> None:
    with pytest.raises(edgefn.FetchError, match="outside a request"):
        asyncio.run(edgefn.fetch("http://127.0.0.1/"))


def test_public_api_is_sorted_and_complete() -> None:
    assert edgefn.__all__ == sorted(edgefn.__all__)
    for name in edgefn.__all__:
        assert hasattr(edgefn, name), name
    public = {n for n in dir(edgefn) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(edgefn.__all__)
