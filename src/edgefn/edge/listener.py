"""Serving an ASGI app on uvicorn inside the caller's event loop, as every edgefn listener does.

:func:`serve_asgi` starts uvicorn as a task of the running loop (so a test, ``edgefn dev`` or a
planet role process can embed it) and returns once the socket is bound, with the bound port. The
server never installs signal handlers (the embedding process owns signals), never trusts
``X-Forwarded-For``, and speaks HTTP through the protocol of :mod:`edgefn.edge._ingress` with the
connection limits below. The ASGI type aliases the node's modules share live here too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import uvicorn

from edgefn.edge._ingress import IngressLimits, ingress_protocol

__all__ = [
    "HEADER_TIMEOUT_S",
    "KEEPALIVE_IDLE_S",
    "MAX_REQUESTS_PER_CONNECTION",
    "SERVE_START_TIMEOUT_S",
    "ASGIApp",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "serve_asgi",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SERVE_START_TIMEOUT_S = 30.0  # how long an HTTP listener may take to bind and start
# Connection limits of every listener (edgefn.edge._ingress): headers complete within
# HEADER_TIMEOUT_S (408), idle keep-alive closed after KEEPALIVE_IDLE_S, at most
# MAX_REQUESTS_PER_CONNECTION requests on one connection.
HEADER_TIMEOUT_S = 10.0
KEEPALIVE_IDLE_S = 5.0
MAX_REQUESTS_PER_CONNECTION = 1000


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handling: the process that embeds the node owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_asgi(
    app: ASGIApp, host: str, port: int
) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    """Run ``app`` on uvicorn in this loop; return the server, its task and the bound port."""
    limits = IngressLimits(
        header_timeout_s=HEADER_TIMEOUT_S,
        keepalive_idle_s=KEEPALIVE_IDLE_S,
        max_requests=MAX_REQUESTS_PER_CONNECTION,
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        http=ingress_protocol(limits),  # httptools with connection limits
        loop="none",
        timeout_graceful_shutdown=5,
        # uvicorn would otherwise take the client address from X-Forwarded-For of any loopback
        # peer: a client could choose its own rate-limit key. The peer is the socket's.
        proxy_headers=False,
    )
    server = _EmbeddedServer(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    # uvicorn has no "started" event to await; poll its flag, bounded.
    deadline = asyncio.get_running_loop().time() + SERVE_START_TIMEOUT_S
    while not server.started:
        if task.done():
            task.result()
            raise OSError(f"the HTTP server on {host}:{port} stopped during start-up")
        if asyncio.get_running_loop().time() > deadline:
            server.should_exit = True
            raise OSError(f"the HTTP server on {host}:{port} did not start within "
                          f"{SERVE_START_TIMEOUT_S:.0f} s")  # fmt: skip
        await asyncio.sleep(0.005)
    return server, task, int(server.servers[0].sockets[0].getsockname()[1])
