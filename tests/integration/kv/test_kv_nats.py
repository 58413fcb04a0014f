"""KV replicas on a real nats-server with JetStream (started and stopped by pid): anti-entropy
repairs what the stream no longer holds, values of the maximum size replicate both ways, and a
replica whose location no longer binds the namespace leaves it (and may come back).

Each replica is a real :class:`KVDriver` with its own SQLite file and NATS connection. Their
replay logs are short (``log_max``) and the test creates the replication stream beforehand with a
small ``max_msgs``, so a replica that was down for many writes can only catch up by Merkle repair.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import nats.js.errors
import pytest
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from edgefn.bus import CoreConfig, NatsServer
from edgefn.bus.jetstream import connect, jetstream
from edgefn.bus.subjects import KV_MEMBERS_BUCKET, kv_replication_subject
from edgefn.edge.kv_binding import KVService
from edgefn.state import Replica, ReplicaConfig
from edgefn.state.driver import KVDriver
from edgefn.state.records import KEY_BYTES_MAX, METADATA_BYTES_MAX, VALUE_BYTES_MAX
from edgefn.state.store import SqliteStore
from tests.kv_fakes import fake_node
from tests.waiting import until

pytestmark = pytest.mark.integration

NS = "counts"
STREAM = f"EDGEFN_KV_{NS}"
STREAM_MSGS_MAX = 20
LOG_MAX = 8
WAIT_S = 60.0


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    nats_server = NatsServer(
        CoreConfig(name="core", store_dir=tmp_path / "js"), work_dir=tmp_path / "n"
    )
    await nats_server.start()
    try:
        yield nats_server
    finally:
        await nats_server.stop()
        assert not nats_server.running()


async def _small_stream(server: NatsServer) -> None:
    """The replication stream, made before any driver, keeping only the last few writes (the
    drivers' own ``add_stream`` then finds it and keeps it)."""
    nc = await connect(server.client_url, name="test-setup")
    try:
        await jetstream(nc).add_stream(
            StreamConfig(
                name=STREAM,
                subjects=[kv_replication_subject(NS, "*")],
                storage=StorageType.FILE,
                max_msgs=STREAM_MSGS_MAX,
                discard=DiscardPolicy.OLD,
            )
        )
    finally:
        await nc.close()


async def _stream_state(server: NatsServer) -> Any:
    nc = await connect(server.client_url, name="test-info")
    try:
        return (await jetstream(nc).stream_info(STREAM)).state
    finally:
        await nc.close()


async def _wait_published(server: NatsServer, origin: KVDriver) -> Any:
    """The stream's state once every write of ``origin`` is in it (publishing is asynchronous)."""

    async def published() -> Any:
        state = await _stream_state(server)
        return state if state.last_seq >= origin.replica.own_seq else None

    return await until(published, timeout_s=WAIT_S, what="every write in the stream")


def _driver(server: NatsServer, tmp_path: Path, name: str, names: tuple[str, ...]) -> KVDriver:
    config = ReplicaConfig(
        replica_id=name, replicas=names, anti_entropy_interval_ms=200, log_max=LOG_MAX
    )
    return KVDriver(
        namespace=NS,
        replica=Replica(config),
        store=SqliteStore(tmp_path / f"{name}.sqlite3"),
        servers=server.client_url,
    )


def _digest(driver: KVDriver) -> str:
    content = driver.replica.content()
    h = hashlib.sha256()
    for key in sorted(content):
        h.update(key.encode())
        h.update(hashlib.sha256(content[key].value or b"").digest())
    return h.hexdigest()


async def _same_state(a: KVDriver, b: KVDriver) -> bool:
    return _digest(a) == _digest(b) and a.replica.tree.leaves == b.replica.tree.leaves


async def test_anti_entropy_repairs_a_replica_that_missed_more_than_the_stream_retains(
    server: NatsServer, tmp_path: Path
) -> None:
    """sin is down while fra makes 200 writes; the stream keeps 20 and fra's replay log 8, so
    sin's consumer and replay requests bring back at most 28: Merkle repair brings the rest."""
    await _small_stream(server)
    names = ("fra", "sin")
    fra, sin = (_driver(server, tmp_path, n, names) for n in names)
    await fra.start()
    await sin.start()
    try:
        await fra.put("before", b"0")
        await until(lambda: _same_state(fra, sin), timeout_s=WAIT_S, what="first write everywhere")
        await sin.stop()
        for i in range(200):
            await fra.put(f"k{i:03}", f"v{i}".encode())
        await fra.delete("before")
        state = await _wait_published(server, fra)
        assert state.messages <= STREAM_MSGS_MAX
        assert state.first_seq > 150, "the stream dropped the writes sin missed"
        assert len(fra.replica.log) <= LOG_MAX

        sin = _driver(server, tmp_path, "sin", names)  # restarts from its SQLite file
        await sin.start()
        await until(lambda: _same_state(fra, sin), timeout_s=WAIT_S, what="repair")
        assert (await sin.get("k000")).item.value == b"v0"
        assert (await sin.get("before")).item.value is None
        stats = sin.replica.statistics()
        assert stats.repairs_merged >= 150, stats
        assert stats.frontier_jumps >= 1, stats
        assert sin.replica.applied.get("fra") == fra.replica.own_seq
    finally:
        await fra.stop()
        await sin.stop()


def _max_entry(i: int) -> tuple[str, bytes, bytes]:
    """A key, value and metadata of the documented maximum sizes."""
    key = f"{i}".ljust(KEY_BYTES_MAX, "k")
    value = bytes([i % 251]) * VALUE_BYTES_MAX
    metadata = b"m" * METADATA_BYTES_MAX
    return key, value, metadata


async def test_a_value_of_the_maximum_size_replicates_through_the_stream(
    server: NatsServer, tmp_path: Path
) -> None:
    names = ("fra", "sin")
    fra, sin = (_driver(server, tmp_path, n, names) for n in names)
    await fra.start()
    await sin.start()
    try:
        key, value, metadata = _max_entry(1)
        await fra.put(key, value, metadata=metadata)

        async def arrived() -> bool:
            got = (await sin.get(key)).item
            return got.value == value and got.metadata == metadata

        await until(arrived, timeout_s=WAIT_S, what="the maximum value at sin")
        assert fra.statistics().publish_failures == 0
        assert sin.replica.statistics().repairs_merged == 0, "it came through the stream"
    finally:
        await fra.stop()
        await sin.stop()


async def test_values_of_the_maximum_size_replicate_through_repair(
    server: NatsServer, tmp_path: Path
) -> None:
    """Three maximum values that sin misses, pushed out of the stream and fra's log by later
    small writes: each repair answer is one NATS message (split under repair_bytes_max; a
    value larger than that goes alone), so all of them arrive."""
    await _small_stream(server)
    names = ("fra", "sin")
    fra, sin = (_driver(server, tmp_path, n, names) for n in names)
    await fra.start()
    await sin.start()
    await sin.stop()
    try:
        big = [_max_entry(i) for i in range(3)]
        for key, value, metadata in big:
            await fra.put(key, value, metadata=metadata)
        for i in range(STREAM_MSGS_MAX + LOG_MAX):
            await fra.put(f"small{i}", b"s")
        assert (await _wait_published(server, fra)).first_seq > len(big)
        sin = _driver(server, tmp_path, "sin", names)
        await sin.start()
        await until(lambda: _same_state(fra, sin), timeout_s=WAIT_S, what="repair")
        for key, value, metadata in big:
            got = (await sin.get(key)).item
            assert got.value == value
            assert got.metadata == metadata
        assert sin.replica.statistics().repairs_merged >= len(big)
    finally:
        await fra.stop()
        await sin.stop()


async def _members_record(server: NatsServer, name: str) -> bytes | None:
    nc = await connect(server.client_url, name="test-members")
    try:
        kv = await jetstream(nc).key_value(KV_MEMBERS_BUCKET)
        try:
            entry = await kv.get(f"{NS}.{name}")
        except nats.js.errors.KeyNotFoundError:
            return None
        return entry.value or b""
    finally:
        await nc.close()


async def _consumer_exists(server: NatsServer, name: str) -> bool:
    nc = await connect(server.client_url, name="test-consumer")
    try:
        await jetstream(nc).consumer_info(STREAM, f"kv-{name}")
    except nats.js.errors.NotFoundError:
        return False
    finally:
        await nc.close()
    return True


async def _leave(driver: KVDriver) -> bool:
    return await driver.leave()


async def test_a_replica_leaves_and_the_others_drop_it_then_it_rejoins(
    server: NatsServer, tmp_path: Path
) -> None:
    """iad wrote k, then leaves: only once fra or sin acknowledged holding it. It deregisters
    (a leave record), deletes its consumer and stops; the others drop it from their set. Its
    file keeps only counters; a re-join refills it and its next write continues its sequence."""
    names = ("fra", "iad", "sin")
    drivers = {n: _driver(server, tmp_path, n, names) for n in names}
    for d in drivers.values():
        await d.start()
    iad = drivers["iad"]
    try:
        await iad.put("k", b"from iad")
        await until(lambda: _leave(iad), timeout_s=WAIT_S, what="iad to leave")
        assert iad.left
        assert not await _consumer_exists(server, "iad")
        record = await _members_record(server, "iad")
        assert record is not None
        assert msgspec.msgpack.decode(record)[0] == 1  # final_seq: one write
        for name in ("fra", "sin"):
            d = drivers[name]

            async def dropped(d: KVDriver = d) -> bool:
                return d.statistics().members == ("fra", "sin")

            await until(dropped, timeout_s=WAIT_S, what=f"{name} to drop iad")
            assert d.statistics().departed == ("iad",)
            assert (await d.get("k")).item.value == b"from iad"
        kept = SqliteStore(tmp_path / "iad.sqlite3")
        restarted = kept.recover(0)
        kept.close()
        assert restarted.entries == ()
        assert restarted.meta.left
        assert restarted.meta.own_seq == 1

        # Re-join: registers again, refills from the others, continues at seq 2.
        iad = drivers["iad"] = _driver(server, tmp_path, "iad", names)
        await iad.start()

        async def refilled() -> bool:
            return (await iad.get("k")).item.value == b"from iad" and not iad.replica.refill_seq

        await until(refilled, timeout_s=WAIT_S, what="iad refilled")
        assert await _members_record(server, "iad") == b""
        done = await iad.put("k2", b"again")
        assert done.stamp is not None
        assert iad.replica.own_seq == 2

        async def back() -> bool:
            fra = drivers["fra"]
            return (await fra.get("k2")).item.value == b"again" and "iad" in (
                fra.statistics().members
            )

        await until(back, timeout_s=WAIT_S, what="fra to see iad again")
    finally:
        for d in drivers.values():
            await d.stop()


async def test_the_kv_service_leaves_a_namespace_no_function_binds_any_more(
    server: NatsServer, tmp_path: Path
) -> None:
    """Two locations' KV services bind 'counts'; the function leaves iad. iad's service makes its
    replica leave, and fra's kvstate endpoint shows the shrunken member list."""
    services = {
        loc: KVService(
            location=loc,
            state_dir=tmp_path / loc,
            nats_urls=[server.client_url],
            config={"anti_entropy_interval_ms": 200},
        )
        for loc in ("fra", "iad")
    }
    bound = fake_node((NS,))
    try:
        for svc in services.values():
            await svc.sync_namespaces(bound)
        fra, iad = services["fra"], services["iad"]

        async def joined() -> bool:
            state = await fra._state(NS)
            return (
                list(state["driver"]["members"]) == ["fra", "iad"] and state["driver"]["connected"]
            )

        await until(joined, timeout_s=WAIT_S, what="both replicas registered")
        await (await iad.driver(NS)).put("k", b"v")
        unbound = fake_node(())

        async def left() -> bool:
            await iad.sync_namespaces(unbound)
            return NS not in iad.drivers

        await until(left, timeout_s=WAIT_S, what="iad's replica to leave")
        assert {"kind": "kv", "event": "namespace_left", "namespace": NS} in unbound.events

        async def shrunk() -> dict[str, Any] | None:
            state = await fra._state(NS)
            return state if list(state["driver"]["members"]) == ["fra"] else None

        state = await until(shrunk, timeout_s=WAIT_S, what="fra's members to shrink")
        assert list(state["driver"]["departed"]) == ["iad"]
        assert state["replica"]["departed"] == 1
        assert state["keys"] == 1
    finally:
        for svc in services.values():
            await svc.stop()
