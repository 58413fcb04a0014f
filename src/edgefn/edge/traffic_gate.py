"""One request's passage through the traffic driver: its gate, its client identity, its replies.

A :class:`Gate` is made for every request the node hands to
:meth:`~edgefn.edge.traffic.TrafficDriver.enter` and given back to
:meth:`~edgefn.edge.traffic.TrafficDriver.leave`. It carries the request id, the headers the
function (or the forward target) will see, the ASGI ``send`` wrapped by :func:`recording` so the
response status is known for admission and health, and, once admitted, the admission slot.
``handled`` true means the driver already answered (forwarded, 429, 502, 503).

**Client identity** (:func:`client_identity`). The per-client rate-limit key is the client's
address as the anycast entry saw it, taken only from its signed ``x-edgefn-client-addr``
(:func:`~edgefn.routing.internal_auth.verify_client`). An unsigned, forged or stale set is
stripped and this ingress signs its own socket peer instead (with the client's stated location,
if it is at most ``client_location_max_chars`` long), so a forward keeps the client's address and
no client-supplied header is ever a key. The function served here sees the address but never the
signature (:func:`unsigned_for_function`): it could replay it to be keyed as someone else.

**Replies** (:func:`reply`): the driver's own answers are JSON ``{"error", "request_id",
"location", ...detail}`` with ``x-edgefn-location``, ``x-edgefn-request-id`` and, for 429/503,
``Retry-After`` in whole seconds.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from edgefn.routing import retry_after_header
from edgefn.routing.internal_auth import (
    CLIENT_AT_HEADER,
    CLIENT_HEADERS,
    CLIENT_LOCATION_HEADER,
    CLIENT_SIG_HEADER,
    sign_client,
    verify_client,
)

__all__ = [
    "Gate",
    "Message",
    "Receive",
    "Send",
    "client_identity",
    "recording",
    "reply",
    "unsigned_for_function",
]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]


@dataclass(slots=True)
class Gate:
    """One request's passage through the driver; the node passes it back to ``leave``."""

    request_id: str
    headers: list[tuple[str, str]]
    send: Send
    handled: bool = False
    status: int = 0
    admission_id: int | None = None
    admitted_at: float = 0.0
    client_key: str = "unknown"
    # The response came from another location (a forward): that node counts it in telemetry.
    relayed: bool = False


def recording(gate: Gate, send: Send, tap: Callable[[Message], Message] | None = None) -> Send:
    """``send`` that remembers the response status in ``gate`` (for admission and health).

    ``tap`` sees (and may replace) the response's start message first: the request's tracing
    notes the status and adds its trace id header there, without a ``send`` wrapper of its own
    (one coroutine layer less per response message on the hot path)."""

    async def recording_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            if tap is not None:
                message = tap(message)
            gate.status = int(message["status"])
        await send(message)

    return recording_send


def client_identity(
    secret: bytes,
    headers: list[tuple[str, str]],
    scope: MutableMapping[str, Any],
    *,
    now_ms: int,
    location_max_chars: int,
) -> tuple[list[tuple[str, str]], str]:
    """The headers with a trustworthy client identity, and the per-client rate-limit key.

    A set the entry (or an earlier hop) signed is kept. Anything else is stripped, and this
    ingress signs its own socket peer so a forward keeps the client's address.
    """
    addr = verify_client(secret, headers, now_ms=now_ms)
    if addr is not None:
        return headers, addr
    headers = [(k, v) for k, v in headers if k not in CLIENT_HEADERS]
    peer = scope.get("client")
    if not peer:
        return headers, "unknown"
    addr = str(peer[0])
    location = next((v for k, v in headers if k == CLIENT_LOCATION_HEADER), "")
    if len(location) > location_max_chars or not addr:
        return headers, addr or "unknown"
    signed = sign_client(secret, addr=addr, location=location.strip(), at_ms=now_ms)
    return [*headers, *signed.items()], addr


def unsigned_for_function(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """What a function served here may see: the client's address, never its signature."""
    return [(k, v) for k, v in headers if k not in (CLIENT_AT_HEADER, CLIENT_SIG_HEADER)]


async def reply(
    gate: Gate,
    location: str,
    status: int,
    error: str,
    /,
    *,
    retry_after_s: float | None = None,
    **detail: Any,
) -> None:
    """Answer the request from the driver itself (429, 502, 503) and mark the gate handled.

    ``location`` is this node's; ``detail`` goes into the JSON body as strings (it may have its
    own ``location``, e.g. the forward target that failed).
    """
    headers = [
        *_JSON,
        (b"x-edgefn-location", location.encode()),
        (b"x-edgefn-request-id", gate.request_id.encode()),
    ]
    if retry_after_s is not None:
        headers.append((b"retry-after", retry_after_header(retry_after_s).encode()))
    body = {"error": error, "request_id": gate.request_id, "location": location}
    body.update({k: str(v) for k, v in detail.items()})
    gate.handled = True
    gate.status = status
    await gate.send({"type": "http.response.start", "status": status, "headers": headers})
    await gate.send({"type": "http.response.body", "body": json.dumps(body).encode()})
