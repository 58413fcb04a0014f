"""The incoming request as function code sees it.

The body streams: a small body arrives with the request, a larger one in pieces while the function
runs (the node has checked neither more than ``[limits] max_body_kb`` nor too slow arrives; past
either the request is cancelled and the client answered 413 / 408). ``await request.body()``
(``text()``, ``json()``) waits for all of it; ``async for chunk in request.iter_body()`` takes it
piece by piece, so the function holds one piece at a time, and each piece read lets the node send
the next (backpressure). A body is read once: after ``iter_body()`` it cannot be read again, after
``body()`` ``iter_body()`` yields the bytes already read.
"""

from __future__ import annotations

import json as _json
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from edgefn.sdk._headers import Headers, HeadersInit


@dataclass(frozen=True, slots=True)
class EdgeInfo:
    """Where the request is served: the location, the client's location and the request id."""

    location: str
    client_location: str
    request_id: str


class QueryParams(Mapping[str, str]):
    """Read-only query parameters: ``q["a"]`` is the first value, ``q.get_all("a")`` all of them."""

    __slots__ = ("_pairs",)

    def __init__(self, query_string: str) -> None:
        self._pairs = parse_qsl(query_string, keep_blank_values=True)

    def __getitem__(self, name: str) -> str:
        for key, value in self._pairs:
            if key == name:
                return value
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(k for k, _ in self._pairs))

    def __len__(self) -> int:
        return len(dict.fromkeys(k for k, _ in self._pairs))

    def get_all(self, name: str) -> list[str]:
        """Every value given for ``name``, in order."""
        return [v for k, v in self._pairs if k == name]

    def __repr__(self) -> str:
        return f"QueryParams({self._pairs!r})"


class Request:
    """An HTTP request delivered to ``fetch(request, env, ctx)``."""

    __slots__ = ("_body", "_stream", "edge", "headers", "method", "path", "query", "url")

    def __init__(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: HeadersInit = None,
        body: bytes | AsyncIterable[bytes] = b"",
        edge: EdgeInfo | None = None,
    ) -> None:
        parts = urlsplit(url)
        self.url = url
        self.method = method.upper()
        self.path = parts.path or "/"
        self.query = QueryParams(parts.query)
        self.headers = Headers(headers)
        self.edge = edge or EdgeInfo(location="local", client_location="", request_id="")
        self._body: bytes | None = None
        self._stream: AsyncIterable[bytes] | None = None
        if isinstance(body, bytes | bytearray | memoryview):
            self._body = bytes(body)
        else:
            self._stream = body

    @property
    def body_used(self) -> bool:
        """True once ``iter_body()`` has started taking a streamed body."""
        return self._body is None and self._stream is None

    async def body(self) -> bytes:
        """The whole request body (waits until it has all arrived)."""
        if self._body is None:
            self._body = b"".join([chunk async for chunk in self.iter_body()])
        return self._body

    async def iter_body(self) -> AsyncIterator[bytes]:
        """The body piece by piece as it arrives (each piece at most 64 KiB when streamed)."""
        if self._body is not None:
            if self._body:
                yield self._body
            return
        stream, self._stream = self._stream, None
        if stream is None:
            raise RuntimeError(
                f"the body of request {self.edge.request_id or '(no id)'} was already read "
                "with iter_body(); read it once (keep what you need, or use body())"
            )
        async for chunk in stream:
            yield chunk

    async def text(self) -> str:
        """The body decoded as UTF-8 (invalid bytes replaced)."""
        return (await self.body()).decode("utf-8", errors="replace")

    async def json(self) -> Any:
        """The body parsed as JSON; raises ``ValueError`` on invalid JSON."""
        return _json.loads(await self.body())

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url}>"
