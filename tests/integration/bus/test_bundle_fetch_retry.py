"""A node's bundle fetch through its region retries what is transient, and only that.

A region's cache answers ``Edgefn-Error`` when the core's object store did not answer (seen during
a JetStream leader election in the multi-host test: the deploy was rolled back for it). Here a
stand-in region on a real nats-server answers with errors first, then the bundle.
"""

from __future__ import annotations

import hashlib
import time

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from edgefn.bus import NatsServer
from edgefn.bus.jetstream import connect
from edgefn.bus.subjects import bundle_request_subject
from edgefn.errors import BundleError
from edgefn.planet.bundles import fetch_bundle

pytestmark = pytest.mark.integration

DATA = b"bundle bytes" * 100
SHA = hashlib.sha256(DATA).hexdigest()


async def _region(core: NatsServer, errors: list[str]) -> tuple[Client, list[int]]:
    nc = await connect(core.client_url, name="region")
    asked: list[int] = []

    async def answer(msg: Msg) -> None:
        asked.append(1)
        if errors:
            await nc.publish(msg.reply, b"", headers={"Edgefn-Error": errors.pop(0)})
            return
        await nc.publish(msg.reply, DATA, headers={"Edgefn-Total": str(len(DATA))})

    await nc.subscribe(bundle_request_subject("eu"), cb=answer)
    return nc, asked


async def test_a_transient_region_error_is_retried_until_the_bundle_arrives(
    core: NatsServer,
) -> None:
    region, asked = await _region(core, ["TimeoutError: nats: timeout", "NoStreamResponseError: x"])
    node = await connect(core.client_url, name="node")
    try:
        assert await fetch_bundle(node, "eu", SHA, deadline_s=20) == DATA
        assert len(asked) == 3
    finally:
        await node.close()
        await region.close()


async def test_a_missing_bundle_fails_at_once_and_a_lasting_outage_within_its_deadline(
    core: NatsServer,
) -> None:
    region, asked = await _region(core, ["ObjectNotFoundError: object not found"])
    node = await connect(core.client_url, name="node")
    try:
        with pytest.raises(BundleError, match="ObjectNotFoundError"):
            await fetch_bundle(node, "eu", SHA, deadline_s=20)
        assert len(asked) == 1
        region_errors = ["TimeoutError: nats: timeout"] * 50
        region2, _ = await _region(core, region_errors)
        await region.close()
        started = time.monotonic()
        with pytest.raises(BundleError, match=r"retried for 2 s"):
            await fetch_bundle(node, "eu", SHA, deadline_s=2)
        assert time.monotonic() - started < 15  # its deadline plus one request's timeout
        await region2.close()
    finally:
        await node.close()
