"""The incoming request as function code sees it.

The node has already read and size-checked the body, so ``body()`` never blocks on the network;
it is still a coroutine to match the Fetch API and to leave room for streaming bodies later.
"""

from __future__ import annotations

import json as _json
from collections.abc import Iterator, Mapping
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

    __slots__ = ("_body", "edge", "headers", "method", "path", "query", "url")

    def __init__(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: HeadersInit = None,
        body: bytes = b"",
        edge: EdgeInfo | None = None,
    ) -> None:
        parts = urlsplit(url)
        self.url = url
        self.method = method.upper()
        self.path = parts.path or "/"
        self.query = QueryParams(parts.query)
        self.headers = Headers(headers)
        self.edge = edge or EdgeInfo(location="local", client_location="", request_id="")
        self._body = body

    async def body(self) -> bytes:
        """The whole request body."""
        return self._body

    async def text(self) -> str:
        """The body decoded as UTF-8 (invalid bytes replaced)."""
        return self._body.decode("utf-8", errors="replace")

    async def json(self) -> Any:
        """The body parsed as JSON; raises ``ValueError`` on invalid JSON."""
        return _json.loads(self._body)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url}>"
