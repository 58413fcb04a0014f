"""``env.<BINDING>`` of an ``[[origins]]`` entry: requests to one origin through the edge cache.

    [[origins]]
    binding = "ORIGIN"
    url = "https://shop.example.com"

    resp = await env.ORIGIN.fetch(request)          # same path, query, method, headers, body
    resp = await env.ORIGIN.fetch("/img/logo.png")  # or a path (with its query) below the url

The node fetches ``url`` + path through its location's cache, then its region hub's, then the
origin (docs/design/0026-edge-cache.md), and says which answered in ``x-edgefn-cache``. It counts
against ``[limits] subrequests`` like :func:`edgefn.fetch`; the origin's host needs no ``[egress]
allow`` entry (a private address still needs ``[egress] allow_private``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from edgefn.errors import FetchError, InvalidURLError
from edgefn.sdk._caches import API_HEADER
from edgefn.sdk._fetch import DEFAULT_TIMEOUT_MS, send
from edgefn.sdk._headers import Headers, HeadersInit
from edgefn.sdk._request import Request
from edgefn.sdk._response import Response

__all__ = ["TICKET_HEADER", "Origin", "passed_on"]

TICKET_HEADER = "x-edgefn-cache-ticket"  # a location-tier miss the origin hooks complete

# Hop-by-hop and per-connection headers of the incoming request are not forwarded.
_DROP = frozenset(
    {"host", "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "content-length",
     "proxy-connection", "x-edgefn-session"}
)  # fmt: skip


async def passed_on(
    request: Request, method: str | None, headers: HeadersInit, body: bytes | str | None
) -> tuple[str, HeadersInit, bytes | str | None]:
    """The method, headers and body of ``request`` sent on (each unless given), without its
    hop-by-hop and per-connection headers."""
    if headers is None:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _DROP]
    if body is None and request.method not in ("GET", "HEAD"):
        body = await request.body()
    return method or request.method, headers, body


class Origin:
    """One origin of the manifest; ``fetch`` a path or a whole incoming request."""

    __slots__ = ("binding", "url")

    def __init__(self, binding: str, url: str) -> None:
        self.binding = binding
        self.url = url

    def _path(self, target: str | Request) -> str:
        if isinstance(target, Request):
            query = target.url.partition("?")[2]
            path = target.path + (f"?{query}" if query else "")
        else:
            path = target
        if not isinstance(path, str) or not path.startswith("/") or path.startswith("//"):
            raise InvalidURLError(
                f"env.{self.binding}.fetch({path!r}): give a path starting with one '/'",
                hint='e.g. env.ORIGIN.fetch("/images/logo.png"), or pass the incoming request',
            )
        return path

    async def fetch_hooked(
        self,
        request: Request,
        on_request: Callable[[Request], Awaitable[Request | Response | None]],
        on_response: Callable[[Request, Response], Awaitable[Response | None]],
    ) -> Response:
        """:meth:`fetch` with [cdn] origin hooks run between this location's cache and the
        upstream, on a miss only (edgefn.sdk._cdn)."""
        url = self.url + self._path(request)
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _DROP]
        body = b"" if request.method in ("GET", "HEAD") else await request.body()
        common = {
            "method": request.method,
            "timeout_ms": DEFAULT_TIMEOUT_MS,
            "origin": self.binding,
        }
        look = await send(url, headers=headers, body=b"", cache_op="lookup", **common)  # type: ignore[arg-type]
        if look.headers.get(API_HEADER) == "hit":
            look.headers.delete(API_HEADER)
            return look
        ticket = look.headers.get(TICKET_HEADER) or ""
        sent = [(k, v) for k, v in look.headers.items() if k not in (API_HEADER, TICKET_HEADER)]
        upstream_req = Request(
            url, method=request.method, headers=sent, body=body, edge=request.edge
        )
        out = await on_request(upstream_req)
        upstream: Response | None = out if isinstance(out, Response) else None
        if isinstance(out, Request):
            upstream_req = out
        if upstream is None:
            try:
                upstream = await send(
                    upstream_req.url, method=upstream_req.method, headers=upstream_req.headers.items(),
                    body=await upstream_req.body(), timeout_ms=DEFAULT_TIMEOUT_MS,
                    origin=self.binding, cache_op="origin",
                )  # fmt: skip
            except FetchError:
                stale = await send(url, headers=headers, body=b"", cache_op="complete",
                                   ticket=ticket, **common)  # type: ignore[arg-type]  # fmt: skip
                if stale.headers.get(API_HEADER) != "hit":
                    raise
                stale.headers.delete(API_HEADER)
                return stale
        upstream = await on_response(upstream_req, upstream) or upstream
        done = await send(
            url, headers=headers, body=await upstream.body(), cache_op="complete", ticket=ticket,
            put_status=upstream.status, put_headers=upstream.headers.items(), **common,  # type: ignore[arg-type]
        )  # fmt: skip
        done.headers.delete(API_HEADER)
        return done

    async def fetch(
        self,
        target: str | Request = "/",
        *,
        method: str | None = None,
        headers: HeadersInit = None,
        body: bytes | str | None = None,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
    ) -> Response:
        path = self._path(target)
        if isinstance(target, Request):
            method, headers, body = await passed_on(target, method, headers, body)
        return await send(
            self.url + path,
            method=method or "GET",
            headers=Headers(headers).items(),
            body=body,
            timeout_ms=timeout_ms,
            origin=self.binding,
        )

    def __repr__(self) -> str:
        return f"Origin({self.binding}={self.url})"
