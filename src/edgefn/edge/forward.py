"""HTTP forwarding of one request to another location, streaming both ways.

How it works. :class:`Forwarder` owns one ``httpx.AsyncClient`` with a bounded connection pool.
:meth:`Forwarder.forward` sends the request (method, path, query, headers, body) to a target
location's URL and, once the target answers, streams its status, headers and body back through the
caller's ASGI ``send``. Hop-by-hop headers (RFC 9110 §7.6.1) are dropped both ways. With
``one_way_s`` the link's modelled latency is emulated: half the RTT before sending, half before the
response starts, like the anycast entry does for users.

The request body is a :class:`ReplayableBody`: it streams from the client's ASGI ``receive`` and
keeps a copy of what it read while that stays under ``replay_limit_bytes``. A failed attempt can
then be retried (failover) with the same body; a body that outgrew the limit cannot be replayed and
:attr:`ReplayableBody.replayable` says so.

The outcome of an attempt is a :class:`ForwardOutcome`: ``responded`` is true once response headers
went to the client (nothing can be retried after that); otherwise ``error`` says what failed and
``connect_failed`` whether it failed before any byte reached the target (always safe to retry).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["ForwardOutcome", "Forwarder", "ReplayableBody"]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


class ReplayableBody:
    """The client's request body, readable more than once while it fits ``replay_limit_bytes``."""

    def __init__(self, receive: Receive, *, replay_limit_bytes: int = 1 << 20) -> None:
        assert replay_limit_bytes >= 0, replay_limit_bytes
        self._receive = receive
        self._limit = replay_limit_bytes
        self._chunks: list[bytes] = []
        self._size = 0
        self._done = False
        self._overflow = False

    @property
    def replayable(self) -> bool:
        return not self._overflow

    async def stream(self) -> AsyncIterator[bytes]:
        """Everything read so far (kept copy), then the rest from the client."""
        assert self.replayable, "the body outgrew the replay limit"
        for kept in list(self._chunks):
            yield kept
        while not self._done:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._done = True
                return
            chunk: bytes = message.get("body", b"")
            self._done = not message.get("more_body", False)
            if not chunk:
                continue
            self._size += len(chunk)
            if self._size > self._limit:
                self._overflow = True
                self._chunks.clear()
            elif not self._overflow:
                self._chunks.append(chunk)
            yield chunk


@dataclass(frozen=True, slots=True)
class ForwardOutcome:
    """What one forwarding attempt did. ``status`` is 0 when no response came back."""

    responded: bool
    status: int
    latency_ms: float
    error: str = ""
    connect_failed: bool = False


class Forwarder:
    """Forwards requests to other locations over one pooled HTTP client."""

    def __init__(
        self,
        *,
        connect_timeout_s: float = 1.0,
        read_timeout_s: float = 60.0,
        max_connections: int = 256,
    ) -> None:
        timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s)
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections // 4
        )
        self._client = httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)
        self.attempts = 0
        self.failures = 0

    async def aclose(self) -> None:
        await self._client.aclose()

    async def forward(
        self,
        *,
        base_url: str,
        scope: MutableMapping[str, Any],
        headers: list[tuple[str, str]],
        body: ReplayableBody,
        send: Send,
        extra_response_headers: list[tuple[bytes, bytes]],
        one_way_s: float = 0.0,
    ) -> ForwardOutcome:
        """One attempt: send the request to ``base_url`` and relay the answer to ``send``."""
        self.attempts += 1
        t0 = time.perf_counter()
        url = base_url.rstrip("/") + scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        query = scope.get("query_string", b"")
        if query:
            url += "?" + query.decode("latin-1")
        out = [(k, v) for k, v in headers if k not in HOP_BY_HOP]
        if one_way_s > 0:
            await asyncio.sleep(one_way_s)
        has_body = any(k in ("content-length", "transfer-encoding") for k, _ in headers)
        request = self._client.build_request(
            scope["method"], url, headers=out, content=body.stream() if has_body else None
        )
        try:
            response = await self._client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as err:
            self.failures += 1
            return ForwardOutcome(False, 0, _ms(t0), f"connect: {err!r}", connect_failed=True)
        except httpx.HTTPError as err:
            self.failures += 1
            return ForwardOutcome(False, 0, _ms(t0), f"{type(err).__name__}: {err!r}")
        try:
            if one_way_s > 0:
                await asyncio.sleep(one_way_s)
            return await self._relay(response, send, extra_response_headers, t0)
        finally:
            await response.aclose()

    async def _relay(
        self,
        response: httpx.Response,
        send: Send,
        extra: list[tuple[bytes, bytes]],
        t0: float,
    ) -> ForwardOutcome:
        out = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP_B]
        out += extra
        status = response.status_code
        await send({"type": "http.response.start", "status": status, "headers": out})
        latency_ms = _ms(t0)
        error = ""
        try:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.HTTPError as err:
            # The status is gone already: all that is left is to end the body early.
            self.failures += 1
            error = f"body: {err!r}"
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return ForwardOutcome(True, status, latency_ms, error)


# The forwarding node's own server adds date and server; relaying the target's would double them.
_HOP_BY_HOP_B = frozenset(h.encode() for h in (*HOP_BY_HOP, "date", "server"))


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0
