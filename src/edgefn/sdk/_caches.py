"""``edgefn.caches.default``: the Cache API of the location's edge cache (as Workers' ``caches``).

    from edgefn import Response, caches

    async def fetch(request, env, ctx):
        cached = await caches.default.match(request)
        if cached is not None:
            return cached                                 # x-edgefn-cache: HIT
        resp = Response.json(await expensive(), headers={"cache-control": "public, max-age=60",
                                                         "cache-tag": "reports"})
        await caches.default.put(request, resp)           # a bytes body can still be sent
        return resp

The cache is this location's, per function: another function can never read or purge what you
put, and ``edgefn cache purge FUNCTION --tag reports`` drops it everywhere. ``put`` follows RFC
9111 for a shared cache (a response with ``no-store`` or ``private``, without freshness
information, a 206 or ``Vary: *`` is not stored: ``put`` returns False), keys on the GET of the
URL and its ``Vary`` headers; ``match`` returns only a fresh response. Each call counts against ``[limits]
subrequests``. Nothing is replicated to other locations: that is what ``[[origins]]`` and the
region tier are for (docs/design/0026-edge-cache.md).
"""

from __future__ import annotations

from edgefn.errors import FetchError, InvalidURLError
from edgefn.sdk._fetch import (
    DEFAULT_TIMEOUT_MS,
    Subrequest,
    current_request_id,
    fetch_backend,
    url_problem,
)
from edgefn.sdk._request import Request
from edgefn.sdk._response import Response

__all__ = ["API_HEADER", "Cache", "Caches", "caches"]

MAX_PUT_BYTES = 4 * 1024 * 1024
# The node's answer to a cache call: "hit" (the stored response follows), "none", "stored",
# "not_stored" (the reason is the body) or "deleted".
API_HEADER = "x-edgefn-cache-api"


def _target(what: str, target: str | Request) -> tuple[str, list[tuple[str, str]]]:
    if isinstance(target, Request):
        if target.method not in ("GET", "HEAD"):
            raise FetchError(
                f"caches.default.{what}: only GET requests are cached, not {target.method}"
            )
        return target.url, target.headers.items()
    problem = url_problem(target)
    if problem is not None:
        raise InvalidURLError(
            f"caches.default.{what}({target!r}): {problem}",
            hint="pass the incoming request, or an absolute http(s) URL",
        )
    return target, []


async def _call(what: str, sub: Subrequest) -> Response:
    backend = fetch_backend.get()
    if backend is None:
        raise FetchError(
            f"caches.default.{what}() was called outside a request",
            hint="call it from inside fetch(request, env, ctx), or use edgefn.testing.TestClient",
        )
    return await backend(sub)


class Cache:
    """One cache (``caches.default``)."""

    __slots__ = ()

    async def match(self, target: str | Request) -> Response | None:
        """A fresh stored response for ``target`` (a request or URL), or None."""
        url, headers = _target("match", target)
        got = await _call("match", Subrequest(url, "GET", headers, b"", DEFAULT_TIMEOUT_MS,
                                              cache_op="match"))  # fmt: skip
        if got.headers.get(API_HEADER) != "hit":
            return None
        got.headers.delete(API_HEADER)
        return got

    async def put(self, target: str | Request, response: Response) -> bool:
        """Store ``response`` for ``target``; False if RFC 9111 does not let a shared cache keep
        it (the reason is in the function's log as a warning). The response's body is read."""
        url, headers = _target("put", target)
        if not isinstance(response, Response):
            raise TypeError(
                f"caches.default.put needs an edgefn.Response, not {type(response).__name__}"
            )
        body = b"".join([chunk async for chunk in response.iter_body()])
        if len(body) > MAX_PUT_BYTES:
            rid = current_request_id.get()
            raise FetchError(
                f"caches.default.put({url[:200]!r}): a body of {len(body)} bytes is over "
                f"{MAX_PUT_BYTES}" + (f" (request {rid})" if rid else "")
            )
        got = await _call("put", Subrequest(
            url, "GET", headers, body, DEFAULT_TIMEOUT_MS, cache_op="put",
            put_status=response.status, put_headers=response.headers.items(),
        ))  # fmt: skip
        if got.headers.get(API_HEADER) != "stored":
            reason = (await got.body()).decode("utf-8", "replace")
            print(f"warning: caches.default.put({url[:200]!r}) not stored: {reason}")
            return False
        return True

    async def delete(self, target: str | Request) -> bool:
        """Drop the stored responses of ``target``; False if there were none."""
        url, headers = _target("delete", target)
        got = await _call("delete", Subrequest(url, "GET", headers, b"", DEFAULT_TIMEOUT_MS,
                                               cache_op="delete"))  # fmt: skip
        return got.headers.get(API_HEADER) == "deleted"


class Caches:
    """``edgefn.caches``: ``caches.default`` is the location's edge cache."""

    __slots__ = ()
    default = Cache()


caches = Caches()
