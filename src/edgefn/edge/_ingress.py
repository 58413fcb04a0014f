"""Connection limits for every HTTP listener edgefn serves: a uvicorn (httptools) protocol subclass.

uvicorn bounds what an ASGI app is handed, but not the connection: it times out an idle keep-alive
connection only after a response (a new connection that sends nothing, or its headers a byte at a
time, is held for ever), it caps requests per server, not per connection, and it accumulates
headers without a size bound until the parser sees their end. The rules added here:

- the request line and headers must be complete within ``header_timeout_s`` of the connection
  opening or of the request's first byte; past it the client gets ``408 {"error":
  "header_timeout"}`` and the connection is closed (slowloris);
- request line and headers together are at most ``max_head_bytes`` (``431``, closed): the node
  checks count and size again with the request id once they are complete;
- an idle keep-alive connection is closed after ``keepalive_idle_s`` (uvicorn's own timer);
- a connection serves at most ``max_requests`` requests: the last answer says ``connection:
  close`` and the connection closes after it;
- a request the parser refuses (Content-Length and Transfer-Encoding together, two different
  lengths, a malformed chunk: request smuggling) is ``400 {"error": "bad_request"}`` in JSON, with
  the parser's reason, and the connection is closed. llhttp (httptools) makes these checks itself.

Writes of one turn of the event loop go out together (:class:`edgefn._loop.CoalescingTransport`): uvicorn writes a
response's head and its body separately, and a small answer then costs two ``send`` syscalls;
coalesced, it costs one (design 0017). A write that fills ``FLUSH_BYTES`` goes out at once, so
what waits is bounded, and ``close()`` writes what waits first.

Body time limits are the node's (``BODY_GRACE_S``, the minimum rate): they need the function's
``max_body_kb``, which only the app knows.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from edgefn._loop import CoalescingTransport

__all__ = ["IngressLimits", "ingress_protocol"]


@dataclass(frozen=True, slots=True)
class IngressLimits:
    header_timeout_s: float = 10.0
    keepalive_idle_s: float = 5.0
    max_requests: int = 1000
    max_head_bytes: int = 128 * 1024


def ingress_protocol(limits: IngressLimits) -> type[HttpToolsProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` enforcing ``limits``."""
    return type("IngressProtocol", (_IngressProtocol,), {"limits": limits})


def _answer(status: str, body: dict[str, str]) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + payload


class _IngressProtocol(HttpToolsProtocol):
    limits: ClassVar[IngressLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.limits.keepalive_idle_s  # type: ignore[assignment]
        self._header_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._head_too_large = False
        self._served = 0

    # -- connection -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as err:
            if self._head_too_large:
                self._refuse("431 Request Header Fields Too Large", "headers_too_large",
                             f"request line and headers over {self.limits.max_head_bytes} bytes",
                             "send fewer or smaller headers")  # fmt: skip
            else:
                self._refuse("400 Bad Request", "bad_request", f"malformed request: {err}",
                             "send one Content-Length or Transfer-Encoding: chunked, not both")  # fmt: skip

    def _refuse(self, status: str, code: str, message: str, hint: str) -> None:
        self._cancel_header_timer()
        if not self.transport.is_closing():
            body = {"error": code, "message": message, "hint": hint}
            self.transport.write(_answer(status, body))
            self.transport.close()

    # -- the header deadline --------------------------------------------------------------
    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(
                self.limits.header_timeout_s, self._header_timeout
            )

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request's headers are slow while an earlier answer is still being
            # written: a 408 now would land inside that answer. Give it another period.
            self._arm_header_timer()
            return
        seconds = f"{self.limits.header_timeout_s:g}"
        self._refuse("408 Request Timeout", "header_timeout",
                     f"the request headers did not arrive within {seconds} s",
                     "send the request line and headers at once")  # fmt: skip

    # -- parser callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        super().on_header(name, value)

    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self.limits.max_head_bytes:
            self._head_too_large = True
            raise ValueError("request head too large")  # httptools re-raises it from feed_data

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        self._served += 1
        super().on_headers_complete()
        if self._served >= self.limits.max_requests and self.cycle is not None:
            # uvicorn then answers with `connection: close` and closes after the response.
            self.cycle.keep_alive = False
