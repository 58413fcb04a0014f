"""Fixtures: a real JetStream core and a regional hub leafnode-connected to it, on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edgefn.bus import CoreConfig, HubConfig, NatsServer

pytestmark = pytest.mark.integration


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[NatsServer]:
    server = NatsServer(
        CoreConfig(name="core", store_dir=tmp_path / "js"), work_dir=tmp_path / "core"
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        assert not server.running()


@pytest.fixture
async def hub(core: NatsServer, tmp_path: Path) -> AsyncIterator[NatsServer]:
    server = NatsServer(
        HubConfig(name="hub-eu", core_leafnode_urls=(core.leafnode_url,)),
        work_dir=tmp_path / "hub",
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        assert not server.running()
