"""Fixtures: a real edge node (real uvicorn, real zygote and forked workers) with test functions."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
from tests.waiting import until

from edgefn.edge import EdgeNode
from edgefn.observe import JsonLog

FUNCTIONS = Path(__file__).parent / "functions"
METRICS_TOKEN = "test-metrics-token"


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[EdgeNode]:
    log = JsonLog(io.StringIO(), location="test")
    n = EdgeNode("test", state_dir=tmp_path / "node", log=log, metrics_token=METRICS_TOKEN)
    await n.start()
    for name in ("errors", "fetcher", "streamer"):
        await n.deploy_dir(FUNCTIONS / name)
    try:
        yield n
    finally:
        await n.stop()


async def _upstream_app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    assert scope["type"] == "http"
    headers = dict(scope["headers"])
    body = f"upstream saw {scope['path']} from {headers.get(b'x-from', b'?').decode()}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": body})  # type: ignore[operator]


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    """A real HTTP server on 127.0.0.1 for subrequests."""
    config = uvicorn.Config(
        _upstream_app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=None))
    await until(lambda: server.started, timeout_s=10, what="the upstream server", interval_s=0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
