"""What a worker may answer: the node checks every status and header before it reaches a client.

A worker is hostile code with a socket to the node, so it can send any frame, not just what the
SDK builds. :func:`check_response` turns the worker's ``(status, headers)`` into wire headers or
raises :class:`BadResponse` (the node answers ``500 bad_response``):

- the status must be an integer in 200–599 (1xx are the server's own business; nothing else is a
  status);
- at most :data:`MAX_HEADERS` headers and :data:`MAX_HEADER_BYTES` in total;
- a header name is an RFC 9110 token; a value is latin-1 text without CR, LF or NUL, so a
  function can never split a response or inject a header;
- framing and hop-by-hop headers (``content-length``, ``transfer-encoding``, ``connection`` …) are
  dropped: the node frames the body itself, so a lying length cannot desynchronise the client's
  connection; so are ``x-edgefn-*`` headers, which only the node sets.
"""

from __future__ import annotations

import re

__all__ = ["MAX_HEADERS", "MAX_HEADER_BYTES", "BadResponse", "check_response"]

MAX_HEADERS = 100
MAX_HEADER_BYTES = 64 * 1024
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(r"[\r\n\x00]")
_DROPPED = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-connection",
    }
)


class BadResponse(Exception):
    """The worker's response cannot be sent; the message says why (for the log, not the client)."""


def check_response(status: object, headers: object) -> list[tuple[bytes, bytes]]:
    """Validate a worker's status and headers; return the headers to send, encoded."""
    if type(status) is not int or not 200 <= status <= 599:
        raise BadResponse(f"status {status!r} is not an HTTP status in 200-599")
    if not isinstance(headers, list) or len(headers) > MAX_HEADERS:
        raise BadResponse(f"at most {MAX_HEADERS} response headers are allowed")
    out: list[tuple[bytes, bytes]] = []
    total = 0
    for item in headers:
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise BadResponse("a response header is not a (name, value) pair")
        name, value = item
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise BadResponse(f"response header name {name!r} is not a valid token")
        if not isinstance(value, str) or _BAD_VALUE.search(value):
            raise BadResponse(f"response header {name!r} has a value with CR, LF or NUL")
        try:
            raw = (name.lower().encode("ascii"), value.encode("latin-1"))
        except UnicodeEncodeError:
            raise BadResponse(f"response header {name!r} is not latin-1 text") from None
        total += len(raw[0]) + len(raw[1]) + 4
        if total > MAX_HEADER_BYTES:
            raise BadResponse(f"response headers exceed {MAX_HEADER_BYTES} bytes")
        if raw[0] in _DROPPED_BYTES or raw[0].startswith(b"x-edgefn-"):
            continue
        out.append(raw)
    return out


_DROPPED_BYTES = frozenset(h.encode() for h in _DROPPED)
