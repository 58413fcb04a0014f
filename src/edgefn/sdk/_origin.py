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

from edgefn.errors import InvalidURLError
from edgefn.sdk._fetch import DEFAULT_TIMEOUT_MS, send
from edgefn.sdk._headers import Headers, HeadersInit
from edgefn.sdk._request import Request
from edgefn.sdk._response import Response

__all__ = ["Origin"]

# Hop-by-hop and per-connection headers of the incoming request are not forwarded.
_DROP = frozenset(
    {"host", "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "content-length",
     "proxy-connection", "x-edgefn-session"}
)  # fmt: skip


class Origin:
    """One origin of the manifest; ``fetch`` a path or a whole incoming request."""

    __slots__ = ("binding", "url")

    def __init__(self, binding: str, url: str) -> None:
        self.binding = binding
        self.url = url

    async def fetch(
        self,
        target: str | Request = "/",
        *,
        method: str | None = None,
        headers: HeadersInit = None,
        body: bytes | str | None = None,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
    ) -> Response:
        if isinstance(target, Request):
            query = target.url.partition("?")[2]
            path = target.path + (f"?{query}" if query else "")
            method = method or target.method
            if headers is None:
                headers = [(k, v) for k, v in target.headers.items() if k.lower() not in _DROP]
            if body is None and target.method not in ("GET", "HEAD"):
                body = await target.body()
        else:
            path = target
        if not isinstance(path, str) or not path.startswith("/") or path.startswith("//"):
            raise InvalidURLError(
                f"env.{self.binding}.fetch({path!r}): give a path starting with one '/'",
                hint='e.g. env.ORIGIN.fetch("/images/logo.png"), or pass the incoming request',
            )
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
