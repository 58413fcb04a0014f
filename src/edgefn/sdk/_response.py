"""Responses: what ``fetch`` returns, and what ``edgefn.fetch`` gives back for a subrequest.

A body is bytes, str (UTF-8 encoded) or an async iterator of bytes that the platform streams to the
client chunk by chunk as the function produces it.
"""

from __future__ import annotations

import functools
import json as _json
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, overload

from edgefn.sdk._headers import Headers, HeadersInit

Body = bytes | bytearray | memoryview | str | AsyncIterable[bytes] | None
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


class _Dual:
    """Class access returns the constructor, instance access the reader."""

    def __init__(self, on_class: Callable[..., Any], on_instance: Callable[..., Any]) -> None:
        self._on_class = on_class
        self._on_instance = on_instance

    @overload
    def __get__(self, obj: None, objtype: type[Any]) -> Callable[..., Response]: ...
    @overload
    def __get__(
        self, obj: object, objtype: type[Any] | None = None
    ) -> Callable[[], Awaitable[Any]]: ...
    def __get__(self, obj: object | None, objtype: type[Any] | None = None) -> Callable[..., Any]:
        if obj is None:
            return functools.partial(self._on_class, objtype)
        return functools.partial(self._on_instance, obj)


def _make_json(
    cls: type[Response], obj: Any, *, status: int = 200, headers: HeadersInit = None
) -> Response:
    """A JSON response (``content-type: application/json``)."""
    hdrs = Headers(headers)
    hdrs.set("content-type", "application/json")
    return cls(_json.dumps(obj, separators=(",", ":")).encode(), status=status, headers=hdrs)


def _make_text(
    cls: type[Response], text: str, *, status: int = 200, headers: HeadersInit = None
) -> Response:
    """A plain-text UTF-8 response."""
    hdrs = Headers(headers)
    hdrs.set("content-type", "text/plain; charset=utf-8")
    return cls(text.encode(), status=status, headers=hdrs)


class Response:
    """An HTTP response. ``Response(body, status=200, headers=...)``.

    ``Response.json(obj, status=)`` and ``Response.text(str)`` build responses;
    ``await resp.json()`` / ``await resp.text()`` / ``await resp.body()`` read one (subrequests).
    """

    __slots__ = ("_body", "headers", "status")

    def __init__(
        self, body: Body = None, *, status: int = 200, headers: HeadersInit = None
    ) -> None:
        if type(status) is not int or not 200 <= status <= 599:
            raise ValueError(f"status must be an int from 200 to 599, got {status!r}")
        self.status = status
        self.headers = Headers(headers)
        self._body: bytes | AsyncIterable[bytes]
        if isinstance(body, str):
            self._body = body.encode()
            if "content-type" not in self.headers:
                self.headers.set("content-type", "text/plain; charset=utf-8")
        elif isinstance(body, bytes | bytearray | memoryview):
            self._body = bytes(body)
        elif body is None:
            self._body = b""
        elif isinstance(body, AsyncIterable):
            self._body = body
        else:
            raise TypeError(
                f"Response body must be bytes, str or an async iterator of bytes, "
                f"not {type(body).__name__}"
            )

    @classmethod
    def redirect(cls, location: str, *, status: int = 302) -> Response:
        """A redirect to ``location`` (301, 302, 303, 307 or 308)."""
        if status not in _REDIRECT_CODES:
            raise ValueError(f"redirect status must be one of {sorted(_REDIRECT_CODES)}")
        return cls(b"", status=status, headers={"location": location})

    @property
    def is_streaming(self) -> bool:
        """True when the body is an async iterator."""
        return not isinstance(self._body, bytes)

    @property
    def ok(self) -> bool:
        """True for 2xx statuses."""
        return 200 <= self.status < 300

    async def iter_body(self) -> AsyncIterator[bytes]:
        """Yield the body in chunks (one chunk unless streaming)."""
        if isinstance(self._body, bytes):
            if self._body:
                yield self._body
            return
        async for chunk in self._body:
            piece: object = chunk
            if isinstance(piece, str):
                piece = piece.encode()
            if not isinstance(piece, bytes | bytearray | memoryview):
                raise TypeError(f"streamed body chunks must be bytes, got {type(piece).__name__}")
            yield bytes(piece)

    async def body(self) -> bytes:
        """The whole body (consumes a streaming body)."""
        if isinstance(self._body, bytes):
            return self._body
        data = b"".join([c async for c in self.iter_body()])
        self._body = data
        return data

    async def _read_text(self) -> str:
        return (await self.body()).decode("utf-8", errors="replace")

    async def _read_json(self) -> Any:
        return _json.loads(await self.body())

    # ``Response.json(obj)`` builds a response; ``await response.json()`` reads one, as in the
    # Fetch API. A descriptor tells the two apart by class or instance access.
    json: _Dual = _Dual(_make_json, _read_json)
    text: _Dual = _Dual(_make_text, _read_text)

    def __repr__(self) -> str:
        return f"<Response {self.status}>"
