"""Reading a request off the ASGI channel within its limits, and the node's JSON answers.

Limits, in the order a request meets them: at most ``MAX_REQUEST_HEADERS`` headers of at most
``MAX_REQUEST_HEADER_BYTES`` together (else 431); a body no larger than the function's
``max_body_kb`` (a declared ``content-length`` over it is refused before reading; else 413); and
the whole body in by :func:`body_deadline`, ``BODY_GRACE_S`` plus the limit at
``BODY_MIN_BYTES_PER_S`` (else 408), so slow uploads cannot hold admission slots without bound.

:func:`read_head` reads until the body ends or one protocol chunk is in hand: a small body goes to
the worker whole in its ``Invoke`` frame and is never streamed. :func:`pump_body` streams the rest
of a larger one under the same limits and deadline. Every error the node answers itself is a JSON
body (:func:`respond`).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from edgefn.edge.listener import Receive, Send
from edgefn.runtime import protocol as p
from edgefn.runtime.sandbox import Invocation, failure

__all__ = [
    "BODY_GRACE_S",
    "BODY_MIN_BYTES_PER_S",
    "MAX_REQUEST_HEADERS",
    "MAX_REQUEST_HEADER_BYTES",
    "BodyIn",
    "BodyTooLarge",
    "ClientGone",
    "body_deadline",
    "decode_headers",
    "headers_too_large",
    "pump_body",
    "read_head",
    "respond",
    "timeout_hint",
    "too_large_hint",
]

# Request headers a node accepts (count and total bytes); more is 431 headers_too_large.
MAX_REQUEST_HEADERS = 100
MAX_REQUEST_HEADER_BYTES = 64 * 1024
# A request body must arrive within BODY_GRACE_S plus its size limit at BODY_MIN_BYTES_PER_S.
BODY_GRACE_S = 10.0
BODY_MIN_BYTES_PER_S = 64 * 1024

_JSON = [(b"content-type", b"application/json")]


class BodyTooLarge(Exception):
    """The request body is (or declares itself) over the function's ``max_body_kb``."""


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


@dataclass(slots=True)
class BodyIn:
    """A request body as the node takes it: the piece for the Invoke frame (at most one chunk),
    what else was read already, and whether the client has more to send."""

    receive: Receive
    first: bytes
    pending: bytes
    more: bool
    received: int
    limit: int
    deadline: float  # loop time by which the whole body must have arrived


def headers_too_large(raw: list[tuple[bytes, bytes]]) -> bool:
    """More headers, or more header bytes, than a node passes on to a worker."""
    if len(raw) > MAX_REQUEST_HEADERS:
        return True
    return sum(len(k) + len(v) for k, v in raw) > MAX_REQUEST_HEADER_BYTES


def decode_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw]


def body_deadline(limit: int) -> float:
    """The loop time by which a body of at most ``limit`` bytes must have arrived."""
    return asyncio.get_running_loop().time() + BODY_GRACE_S + limit / BODY_MIN_BYTES_PER_S


async def read_head(
    receive: Receive, headers: list[tuple[str, str]], limit: int, deadline: float
) -> BodyIn:
    """Read the body until it ends or one chunk is in hand (a small body is never streamed)."""
    declared = next((v for k, v in headers if k == "content-length"), None)
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        body += message.get("body", b"")
        if len(body) > limit:
            raise BodyTooLarge
        more = bool(message.get("more_body", False))
        if not more or len(body) >= p.CHUNK_BYTES:
            break
    data = bytes(body)
    first, rest = data[: p.CHUNK_BYTES], data[p.CHUNK_BYTES :]
    return BodyIn(receive, first, rest, more, len(data), limit, deadline)


async def pump_body(inv: Invocation, body: BodyIn) -> None:
    """Stream the rest of a request body to the worker as it arrives, within its credit.

    Waiting for credit means not calling ``receive()``, so uvicorn stops reading the client
    socket (backpressure all the way to the client). Any limit broken here fails the request
    at once: over ``max_body_kb`` 413, too slow 408, the client gone 499 (nobody to answer).
    """
    pending, more, received = body.pending, body.more, body.received
    try:
        async with asyncio.timeout_at(body.deadline):
            while True:
                if pending and not await inv.send_body(pending):
                    return
                if not more:
                    inv.end_body()
                    return
                message = await body.receive()
                if message["type"] == "http.disconnect":
                    inv.fail(failure("client_disconnected", "the client left mid-body"))
                    return
                pending = message.get("body", b"")
                more = message.get("more_body", False)
                received += len(pending)
                if received > body.limit:
                    inv.fail(failure("body_too_large", "", hint=too_large_hint(body.limit)))
                    return
    except TimeoutError:
        inv.fail(failure("body_timeout", "the body arrived too slowly", hint=timeout_hint()))


def too_large_hint(limit: int) -> str:
    return (
        f"the body is over [limits] max_body_kb = {limit // 1024} of this function; send less, "
        "or raise max_body_kb in edgefn.toml (at most 15360)"
    )


def timeout_hint() -> str:
    return (
        f"the body must arrive within {BODY_GRACE_S:.0f} s plus its size limit at "
        f"{BODY_MIN_BYTES_PER_S // 1024} KiB/s; send it faster"
    )


async def respond(
    send: Send, status: int, obj: Any, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer with ``obj`` as a JSON body (and ``extra`` headers)."""
    await send({"type": "http.response.start", "status": status, "headers": _JSON + (extra or [])})
    await send({"type": "http.response.body", "body": json.dumps(obj).encode()})
