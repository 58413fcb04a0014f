"""``edgefn.fetch``: outbound HTTP made by the platform on the function's behalf.

Function code has no sockets. Inside a sandbox worker the runtime installs a backend that sends the
subrequest to the node over IPC; the node enforces the subrequest limit, the ``[egress] allow`` list,
the timeout and the response-size limit. ``edgefn.testing`` installs an in-process backend with the same
rules. The backend is found through a context variable, so concurrent requests never share one.

A URL that cannot be fetched at all (not absolute http(s), no host, whitespace, a bad port) fails
here at once with :class:`~edgefn.errors.InvalidURLError`, before anything is sent; the node checks
every URL again (and every redirect) with its SSRF policy, which this check does not replace.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from edgefn.errors import FetchError, InvalidURLError, SubrequestLimitError
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
    origin: str = ""  # the [[origins]] binding it goes to (through the edge cache), or ""
    cache_op: str = ""  # caches.default: "match", "put" or "delete" (nothing is fetched)
    put_status: int = 0
    put_headers: list[tuple[str, str]] = field(default_factory=list)
    ticket: str = ""  # [cdn] origin hooks: the location-tier miss being completed
    durable: str = ""  # a durable object stub's request: "<binding>\n<id>\n<location hint>"


FetchBackend = Callable[[Subrequest], Awaitable[Response]]
fetch_backend: ContextVar[FetchBackend | None] = ContextVar("edgefn_fetch_backend", default=None)
# The id of the request being served (set by the worker), for error messages.
current_request_id: ContextVar[str] = ContextVar("edgefn_request_id", default="")

MAX_URL_CHARS = 8192
# A subrequest's body travels to the node in one IPC frame (16 MiB): bounded well below it, with a
# clear error instead of a protocol failure at the frame limit.
MAX_SUBREQUEST_BODY_BYTES = 8 * 1024 * 1024
# The syntax part of the node's check (edgefn.bundle._hostport.HOSTNAME_RE, which function code
# does not import): RFC 1123 labels, underscores tolerated, at most 253 characters.
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
    r"(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$"
)


def url_problem(url: object) -> str | None:
    """What makes ``url`` impossible to fetch, or None (the node's SSRF rules still apply)."""
    if not isinstance(url, str):
        return f"the URL must be a str, not {type(url).__name__}"
    if len(url) > MAX_URL_CHARS:
        return f"the URL is longer than {MAX_URL_CHARS} characters"
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        return "it contains whitespace or control characters (percent-encode them: %20)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        return f"it is not a valid URL ({err})"
    if parts.scheme.lower() not in ("http", "https"):
        return "only http:// and https:// URLs can be fetched"
    host = parts.hostname or ""
    if not host:
        return "it has no host"
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.partition("%")[0])
        except ValueError:
            return f"{host!r} is not a valid IPv6 address"
    elif not _HOSTNAME_RE.match(host):
        return f"{host!r} is not a valid hostname"
    if port == 0:
        return "port 0 is not a valid destination"
    return None


async def fetch(
    url: str,
    *,
    method: str = "GET",
    headers: HeadersInit = None,
    body: bytes | str | None = None,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
) -> Response:
    """Make an outbound HTTP request; returns a :class:`Response` with the whole body read.

    Raises :class:`edgefn.errors.FetchError` subclasses: ``InvalidURLError`` (at once),
    ``SubrequestLimitError``, ``EgressDeniedError``, ``FetchTimeoutError``,
    ``ResponseTooLargeError``.
    """
    return await send(
        url, method=method, headers=Headers(headers).items(), body=body, timeout_ms=timeout_ms
    )


async def send(
    url: str,
    *,
    method: str,
    headers: list[tuple[str, str]],
    body: bytes | str | None,
    timeout_ms: int,
    origin: str = "",
    cache_op: str = "",
    put_status: int = 0,
    put_headers: list[tuple[str, str]] | None = None,
    ticket: str = "",
    durable: str = "",
) -> Response:
    """:func:`fetch`, and the ``env.<ORIGIN>.fetch`` of an ``[[origins]]`` binding (``origin``)."""
    backend = fetch_backend.get()
    if backend is None:
        raise FetchError(
            "edgefn.fetch() was called outside a request",
            hint="call it from inside fetch(request, env, ctx), or use edgefn.testing.TestClient",
        )
    problem = url_problem(url)
    if problem is not None:
        rid = current_request_id.get()
        raise InvalidURLError(
            f"edgefn.fetch({url!r}): {problem}" + (f" (request {rid})" if rid else ""),
            hint='pass an absolute http:// or https:// URL, e.g. "https://example.com/path"',
        )
    if not isinstance(timeout_ms, int) or timeout_ms <= 0:
        raise FetchError(f"timeout_ms must be a positive int, got {timeout_ms!r}")
    data = body.encode() if isinstance(body, str) else (body or b"")
    if len(data) > MAX_SUBREQUEST_BODY_BYTES:
        rid = current_request_id.get()
        raise SubrequestLimitError(
            f"edgefn.fetch({url[:200]!r}): a request body of {len(data)} bytes is over the "
            f"{MAX_SUBREQUEST_BODY_BYTES}-byte limit" + (f" (request {rid})" if rid else ""),
            hint="send large uploads in several subrequests, or from outside the function",
        )
    sub = Subrequest(
        url=url,
        method=method.upper(),
        headers=headers,
        body=data,
        timeout_ms=timeout_ms,
        origin=origin,
        cache_op=cache_op,
        put_status=put_status,
        put_headers=put_headers or [],
        ticket=ticket,
        durable=durable,
    )
    return await backend(sub)
