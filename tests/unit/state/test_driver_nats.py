"""The NATS driver against a real nats-server with JetStream (started and stopped by pid).

Three replicas of one namespace, each with its own SQLite file and NATS connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from edgefn.bus import CoreConfig, NatsServer
from edgefn.errors import KVConflict, KVUnavailable
from edgefn.state import Consistency, Replica, ReplicaConfig
from edgefn.state.driver import KVDriver
from edgefn.state.store import SqliteStore

pytestmark = pytest.mark.integration

NAMES = ("fra", "sin", "iad")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    nats = NatsServer(CoreConfig(name="core", store_dir=tmp_path / "js"), work_dir=tmp_path / "n")
    await nats.start()
    try:
        yield nats
    finally:
        await nats.stop()
        assert not nats.running()


def _driver(server: NatsServer, tmp_path: Path, name: str, **kw: int) -> KVDriver:
    config = ReplicaConfig(replica_id=name, replicas=NAMES, anti_entropy_interval_ms=200, **kw)
    return KVDriver(
        namespace="counts",
        replica=Replica(config),
        store=SqliteStore(tmp_path / f"{name}.sqlite3"),
        servers=server.client_url,
    )


@pytest.fixture
async def drivers(server: NatsServer, tmp_path: Path) -> AsyncIterator[dict[str, KVDriver]]:
    out = {name: _driver(server, tmp_path, name) for name in NAMES}
    for d in out.values():
        await d.start()
    try:
        yield out
    finally:
        for d in out.values():
            await d.stop()


async def _eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.02)


async def test_eventual_write_propagates_to_every_replica(drivers: dict[str, KVDriver]) -> None:
    done = await drivers["fra"].put("greeting", b"hello")
    assert done.revision >= 1

    async def everywhere() -> bool:
        for d in drivers.values():
            if (await d.get("greeting")).item.value != b"hello":
                return False
        return True

    await _eventually(everywhere)
    assert drivers["sin"].statistics().consumed >= 1


async def test_session_token_is_honoured_at_another_replica(drivers: dict[str, KVDriver]) -> None:
    wrote = await drivers["fra"].put("cart", b"1 item", consistency=Consistency.SESSION)
    got = await drivers["iad"].get("cart", consistency=Consistency.SESSION, session=wrote.session)
    assert got.item.value == b"1 item"


async def test_concurrent_strong_cas_increments_lose_nothing(drivers: dict[str, KVDriver]) -> None:
    acked = 0

    async def worker(d: KVDriver, rounds: int) -> None:
        nonlocal acked
        for _ in range(rounds):
            for _attempt in range(50):
                current = await d.get("counter", consistency=Consistency.STRONG)
                n = int(current.item.value or b"0")
                try:
                    await d.put(
                        "counter",
                        str(n + 1).encode(),
                        consistency=Consistency.STRONG,
                        if_revision=current.item.revision,
                    )
                except KVConflict:
                    continue
                acked += 1
                break

    await asyncio.gather(*(worker(d, 8) for d in drivers.values() for _ in range(2)))
    final = await drivers["sin"].get("counter", consistency=Consistency.STRONG)
    assert int(final.item.value or b"0") == acked
    assert acked == 48
    with pytest.raises(KVConflict) as info:
        await drivers["fra"].put("counter", b"x", consistency=Consistency.STRONG, if_revision=1)
    assert info.value.revision == final.item.revision
    listed = await drivers["iad"].list_keys(consistency=Consistency.STRONG)
    assert [i.key for i in listed.items] == ["counter"]
    await drivers["iad"].delete("counter", consistency=Consistency.STRONG)
    gone = await drivers["fra"].get("counter", consistency=Consistency.STRONG)
    assert gone.item.value is None


async def test_strong_ops_are_unavailable_when_nats_is_gone(
    server: NatsServer, tmp_path: Path
) -> None:
    d = _driver(server, tmp_path, "fra", strong_timeout_ms=500)
    d.home_timeout_s = 0.3
    await d.start()
    try:
        await server.stop()
        with pytest.raises(KVUnavailable, match="home"):
            await d.put("n", b"1", consistency=Consistency.STRONG)
        # Eventual writes stay available on this side.
        done = await d.put("local", b"still works")
        assert done.revision >= 1
        assert (await d.get("local")).item.value == b"still works"
    finally:
        await d.stop()


async def test_writes_replay_to_a_replica_that_was_down(server: NatsServer, tmp_path: Path) -> None:
    fra = _driver(server, tmp_path, "fra")
    sin = _driver(server, tmp_path, "sin")
    await fra.start()
    await sin.start()
    await sin.stop()
    for i in range(5):
        await fra.put(f"k{i}", b"v")
    sin = _driver(server, tmp_path, "sin")  # restarts from its SQLite file and durable consumer
    await sin.start()
    try:

        async def caught_up() -> bool:
            return all([(await sin.get(f"k{i}")).item.value == b"v" for i in range(5)])

        await _eventually(caught_up)
    finally:
        await fra.stop()
        await sin.stop()
