"""Fixtures: a real JetStream server, the control service + API over real HTTP, simulated nodes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from _control_fixtures import Control, SimNode, eventually, start_control
from nats.aio.client import Client

from edgefn.bundle import SigningKey
from edgefn.bus import CoreConfig, NatsServer, connect
from edgefn.control import VersionStats

pytestmark = pytest.mark.integration


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[NatsServer]:
    server = NatsServer(CoreConfig(name="core", store_dir=tmp_path / "js"), work_dir=tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        assert not server.running()


@pytest.fixture
async def nc(core: NatsServer) -> AsyncIterator[Client]:
    client = await connect(core.client_url, name="control-test")
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def signing_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
async def control(nc: Client, signing_key: SigningKey, tmp_path: Path) -> AsyncIterator[Control]:
    service, server = await start_control(nc, signing_key)
    assert await service.access.bootstrap_admin(tmp_path / "admin-token")
    token = (tmp_path / "admin-token").read_text().strip()
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            raise AssertionError(f"uvicorn exited: {task.exception()!r}")
        return bool(server.started)

    await eventually(started)
    url = f"http://127.0.0.1:{server.config.port}"
    try:
        headers = {"authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, timeout=10.0, headers=headers) as http:
            yield Control(url, http, service, token)
    finally:
        server.should_exit = True
        await task
        await service.stop()


@pytest.fixture
def stats_table() -> dict[str, VersionStats]:
    """version id -> stats every node reports for it (tests fill it in)."""
    return {}


@pytest.fixture
async def nodes(
    nc: Client, control: Control, stats_table: dict[str, VersionStats]
) -> AsyncIterator[list[SimNode]]:
    layout = [("ams", "eu"), ("fra", "eu"), ("iad", "us")]
    sims = [SimNode(nc, loc, region, lambda _f, v: stats_table.get(v)) for loc, region in layout]
    for sim in sims:
        await sim.start()
    try:
        yield sims
    finally:
        for sim in sims:
            await sim.stop()
