"""``edgefn.fetch``: outbound HTTP made by the platform on the function's behalf.

Function code has no sockets. Inside a sandbox worker the runtime installs a backend that sends the
subrequest to the node over IPC; the node enforces the subrequest limit, the ``[egress] allow`` list,
the timeout and the response-size limit. ``edgefn.testing`` installs an in-process backend with the same
rules. The backend is found through a context variable, so concurrent requests never share one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass

from edgefn.errors import FetchError
from edgefn.sdk._headers import Headers, HeadersInit
from edgefn.sdk._response import Response

DEFAULT_TIMEOUT_MS = 10_000


@dataclass(frozen=True, slots=True)
class Subrequest:
    """One outbound request as handed to the backend."""

    url: str
    method: str
    headers: list[tuple[str, str]]
    body: bytes
    timeout_ms: int


FetchBackend = Callable[[Subrequest], Awaitable[Response]]
fetch_backend: ContextVar[FetchBackend | None] = ContextVar("edgefn_fetch_backend", default=None)


async def fetch(
    url: str,
    *,
    method: str = "GET",
    headers: HeadersInit = None,
    body: bytes | str | None = None,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
) -> Response:
    """Make an outbound HTTP request; returns a :class:`Response` with the whole body read.

    Raises :class:`edgefn.errors.FetchError` subclasses: ``SubrequestLimitError``,
    ``EgressDeniedError``, ``FetchTimeoutError``, ``ResponseTooLargeError``.
    """
    backend = fetch_backend.get()
    if backend is None:
        raise FetchError(
            "edgefn.fetch() was called outside a request",
            hint="call it from inside fetch(request, env, ctx), or use edgefn.testing.TestClient",
        )
    if not url.startswith(("http://", "https://")):
        raise FetchError(f"edgefn.fetch() needs an absolute http(s) URL, got {url!r}")
    if not isinstance(timeout_ms, int) or timeout_ms <= 0:
        raise FetchError(f"timeout_ms must be a positive int, got {timeout_ms!r}")
    data = body.encode() if isinstance(body, str) else (body or b"")
    sub = Subrequest(
        url=url,
        method=method.upper(),
        headers=Headers(headers).items(),
        body=data,
        timeout_ms=timeout_ms,
    )
    return await backend(sub)
