"""Tiny starlette apps on real uvicorn servers stand in for edge locations."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
import uvicorn
from anycast_fakes import FakeLocation, StartLocation
from tests.waiting import until


@pytest.fixture
async def start_location() -> AsyncIterator[StartLocation]:
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(name: str) -> FakeLocation:
        location = FakeLocation(name)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(
            location.app(), log_level="warning", lifespan="off", ws="none", access_log=False
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        servers.append((server, task))
        await until(lambda: server.started, timeout_s=10, what="the location server")
        location.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return location

    yield start
    for server, _task in servers:
        server.should_exit = True
    await asyncio.gather(*(task for _server, task in servers))
