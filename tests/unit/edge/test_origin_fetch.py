"""The node's side of [[origins]] against a worker that forges its calls (hostile code can send
any FetchCall): only the manifest's origins, only below their URL, only their host."""

from __future__ import annotations

import asyncio

import httpx

from edgefn.bundle.manifest import Origin
from edgefn.edge.origin_fetch import OriginFetch
from edgefn.edge.outbound import Outbound, SubrequestRules
from edgefn.runtime import protocol as p

ORIGIN = Origin("ORIGIN", "http://origin.test/base")


async def _public(_host: str, _port: int) -> list[str]:
    return ["93.184.216.34"]


def _node(seen: list[str]) -> OriginFetch:
    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(f"{req.headers['host']}{req.url.path}")
        if req.url.path == "/base/moved":
            return httpx.Response(302, headers={"location": "http://elsewhere.test/x"})
        return httpx.Response(
            200, headers={"cache-control": "max-age=60"}, stream=httpx.ByteStream(b"ok")
        )

    return OriginFetch(Outbound(resolver=_public, transport=httpx.MockTransport(handler)))


def _call(url: str, origin: str = "ORIGIN") -> p.FetchCall:
    return p.FetchCall(1, 1, url, "GET", [], b"", 5000, origin)


RULES = SubrequestRules(10, None, (), (ORIGIN,))


def test_forged_origin_calls_are_refused_before_any_connection() -> None:
    async def main() -> None:
        seen: list[str] = []
        node = _node(seen)
        unknown = await node.fetch("f", "r1", _call("http://origin.test/base/a", "OTHER"), RULES)
        assert unknown.error_kind == "error"
        assert "no [[origins]] binding 'OTHER'" in unknown.error_message
        for url in (
            "http://evil.test/base/a",
            "http://origin.test/basement",
            "http://origin.test/",
        ):
            out = await node.fetch("f", "r1", _call(url), RULES)
            assert out.error_kind == "egress_denied", (url, out)
        assert seen == []
        # A redirect away from the origin's host is refused like any other host.
        moved = await node.fetch("f", "r1", _call("http://origin.test/base/moved"), RULES)
        assert moved.error_kind == "egress_denied", moved
        ok = await node.fetch("f", "r1", _call("http://origin.test/base/a?q=1"), RULES)
        assert (ok.status, ok.body) == (200, b"ok")
        assert ("x-edgefn-cache", "MISS") in ok.headers
        assert seen == ["origin.test/base/moved", "origin.test/base/a"]

    asyncio.run(main())


def test_cache_api_calls_count_against_the_subrequest_limit() -> None:
    async def main() -> None:
        node = _node([])
        rules = SubrequestRules(2, None)
        call = p.FetchCall(1, 1, "https://example.com/k", "GET", [], b"", 5000, "", "match")
        assert node.cache_api("f", "r2", call, rules).error_kind == ""
        assert node.cache_api("f", "r2", call, rules).error_kind == ""
        assert node.cache_api("f", "r2", call, rules).error_kind == "subrequest_limit"
        bad = p.FetchCall(1, 1, "https://example.com/k", "GET", [], b"", 5000, "", "drop-all")
        assert "unknown operation" in node.cache_api("f", "r3", bad, rules).error_message

    asyncio.run(main())
