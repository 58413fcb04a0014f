"""The NATS driver against a real nats-server with JetStream (started and stopped by pid).

Three replicas of one namespace, each with its own SQLite file and NATS connection.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.waiting import until

from edgefn.bus import CoreConfig, NatsServer
from edgefn.errors import KVConflict, KVOutcomeUnknown, KVSessionBehind, KVUnavailable
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


async def test_eventual_write_propagates_to_every_replica(drivers: dict[str, KVDriver]) -> None:
    done = await drivers["fra"].put("greeting", b"hello")
    assert done.revision >= 1

    async def everywhere() -> bool:
        for d in drivers.values():
            if (await d.get("greeting")).item.value != b"hello":
                return False
        return True

    await until(everywhere, timeout_s=10, what="the write at every replica")
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

        await until(caught_up, timeout_s=10, what="sin to replay the writes it missed")
    finally:
        await fra.stop()
        await sin.stop()


class _StalledDriver(KVDriver):
    """A replica whose replication is stalled (a fault injected for the test): it drops what the
    stream and its peers send (writes, replays, announcements), so it cannot catch up for a
    session token; request/reply answers still reach it."""

    async def _on_stream(self, msg: Any) -> None:
        return None

    async def _on_control(self, msg: Any) -> None:
        return None


def _stalled(server: NatsServer, tmp_path: Path, name: str) -> KVDriver:
    config = ReplicaConfig(replica_id=name, replicas=NAMES, session_wait_ms=200)
    return _StalledDriver(
        namespace="counts",
        replica=Replica(config),
        store=SqliteStore(tmp_path / f"{name}-stalled.sqlite3"),
        servers=server.client_url,
    )


async def test_session_read_behind_is_served_by_the_writers_replica(
    server: NatsServer, tmp_path: Path
) -> None:
    writer = _driver(server, tmp_path, "fra")
    reader = _stalled(server, tmp_path, "sin")
    await writer.start()
    await reader.start()
    try:
        wrote = await writer.put("cart", b"2 items", consistency=Consistency.SESSION)
        got = await reader.get("cart", consistency=Consistency.SESSION, session=wrote.session)
        assert got.item.value == b"2 items"
        assert got.item.stamp is not None
        assert got.item.stamp[1] == "fra"
        assert got.session  # the extended token, usable for the next request
        assert reader.statistics().reads_forwarded == 1
        assert writer.statistics().reads_answered == 1
        # Locally the reader still has nothing: the answer came from the writer.
        local = await reader.get("cart")
        assert local.item.value is None
    finally:
        await reader.stop()
        await writer.stop()


async def test_session_read_behind_with_the_writer_gone_fails_clearly(
    server: NatsServer, tmp_path: Path
) -> None:
    writer = _driver(server, tmp_path, "fra")
    reader = _stalled(server, tmp_path, "sin")
    await writer.start()
    await reader.start()
    try:
        wrote = await writer.put("cart", b"3 items", consistency=Consistency.SESSION)
        await writer.stop()
        started = time.monotonic()
        with pytest.raises(KVSessionBehind) as info:
            await reader.get("cart", consistency=Consistency.SESSION, session=wrote.session)
        assert time.monotonic() - started < 5.0  # session wait + one bounded forward
        assert info.value.missing == {"fra": 1}
        assert "forwarded to fra" in info.value.message
        assert reader.statistics().forward_failures == 1
    finally:
        await reader.stop()


async def test_strong_operation_waits_for_the_home_connection(
    server: NatsServer, tmp_path: Path
) -> None:
    """Right after start (not yet connected) a strong write waits for the home, not 503."""
    d = _driver(server, tmp_path, "fra")
    await d.start(wait_connected=False)
    try:
        done = await d.put("first", b"1", consistency=Consistency.STRONG)
        assert done.revision >= 1
        assert d.statistics().home_failures == 0
    finally:
        await d.stop()


async def test_strong_operation_without_a_home_fails_after_its_bounded_wait(
    tmp_path: Path,
) -> None:
    config = ReplicaConfig(replica_id="fra", replicas=("fra",))
    d = KVDriver(
        namespace="counts",
        replica=Replica(config),
        store=SqliteStore(tmp_path / "alone.sqlite3"),
        servers="nats://127.0.0.1:9",  # nothing listens there
        connect_wait_s=0.5,
    )
    await d.start(wait_connected=False)
    try:
        started = time.monotonic()
        with pytest.raises(KVUnavailable) as info:
            await d.put("k", b"v", consistency=Consistency.STRONG)
        waited = time.monotonic() - started
        assert 0.4 <= waited < 3.0
        assert "not connected to the home" in info.value.message
        assert not isinstance(info.value, KVOutcomeUnknown)
    finally:
        await d.stop()


async def test_the_members_poll_backs_off_while_the_set_stays_and_a_new_member_is_learnt(
    server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stable member set is polled less and less often (here 0.05 s doubling to 0.4 s); a
    replica that joins later is still learnt (from the bucket or its announcements)."""
    from edgefn.state import driver as driver_module

    monkeypatch.setattr(driver_module, "_MEMBERS_POLL_S", 0.05)
    monkeypatch.setattr(driver_module, "_MEMBERS_POLL_MAX_S", 0.4)
    fra = _driver(server, tmp_path, "fra")
    polls: list[float] = []
    refresh = fra._refresh_members

    async def counted() -> None:
        polls.append(time.monotonic())
        await refresh()

    monkeypatch.setattr(fra, "_refresh_members", counted)
    await fra.start()
    try:
        await until(lambda: len(polls) >= 6, timeout_s=30, what="six polls")
        gaps = [b - a for a, b in itertools.pairwise(polls[1:])]
        assert gaps[-1] > 2 * gaps[0], gaps  # backed off
        config = ReplicaConfig(replica_id="new", replicas=(*NAMES, "new"))
        late = KVDriver(
            namespace="counts",
            replica=Replica(config),
            store=SqliteStore(tmp_path / "new.sqlite3"),
            servers=server.client_url,
        )
        await late.start()
        try:
            await until(
                lambda: "new" in fra.replica.config.replicas,
                timeout_s=30,
                what="the late member learnt",
            )
        finally:
            await late.stop()
    finally:
        await fra.stop()
