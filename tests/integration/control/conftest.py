"""Fixtures: a real JetStream server, the control service + API over real HTTP, simulated nodes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from _control_fixtures import Control, SimNode, control, core, nc, signing_key

__all__ = ["control", "core", "nc", "signing_key"]  # shared with tests/security
from nats.aio.client import Client

from edgefn.control import VersionStats

pytestmark = pytest.mark.integration


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
