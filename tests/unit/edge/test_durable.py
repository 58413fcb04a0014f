"""Durable objects' rules and the node driver's leases and fencing, against the in-memory store.

The driver runs its objects' code in workers; here ``_run`` is replaced by the storage calls a
worker would make, so the lease, claim, renewal and fencing logic is tested without processes.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.waiting import until

from edgefn.bundle.manifest import DurableObjectClass, Manifest
from edgefn.edge import durable_policy as dp
from edgefn.edge._clock import wall_ms
from edgefn.edge.durable import (
    DurableObjects,
    DurableReply,
    DurableRequest,
    MemoryRecordStore,
    _Home,
)
from edgefn.edge.functions import ActiveFunction, ActiveVersion, FunctionTable
from edgefn.edge.request_context import RequestContext
from edgefn.observe import JsonLog
from edgefn.runtime import protocol as p
from edgefn.runtime.sandbox import LoadSpec


class _Direct(DurableObjects):
    """Each request is one storage call (method = op, body = msgpack args)."""

    rang: list[str]

    async def _run(self, home: _Home, req: DurableRequest) -> DurableReply:
        if req.method == "ALARM":
            self.rang.append(req.oid)
            return DurableReply(204)
        self._running["r"] = home.key
        args = msgspec.msgpack.decode(req.body)
        res = await self.storage("r", p.KVCall(0, 1, "=do", req.method.lower(), args))
        self._running.pop("r")
        if not res.ok:
            return DurableReply(500, [], res.error_message.encode())
        return DurableReply(200, [], msgspec.msgpack.encode(res.value))


def _table() -> FunctionTable:
    manifest = Manifest(name="fn", durable_objects=(DurableObjectClass("OBJ", "Obj"),))
    spec = LoadSpec("fn", "v", "", "main.py", {}, 128, 100)
    table = FunctionTable()
    table.activate(ActiveFunction("fn", (ActiveVersion("v", 1.0, spec, manifest),)))
    return table


def _node(store: MemoryRecordStore, location: str = "fra") -> _Direct:
    node = _Direct(
        location=location,
        table=_table(),
        pool=None,  # type: ignore[arg-type]  # _run is replaced: no worker is started
        log=JsonLog(io.StringIO(), location=location),
        requests={},
        release=lambda _rid: None,
        store=store,
    )
    node.rang = []
    return node


def _req(op: str, args: dict[str, Any], oid: str = "0" * 32) -> DurableRequest:
    return DurableRequest(
        "fn", "Obj", oid, op.upper(), "http://x/", [], msgspec.msgpack.encode(args), 5000
    )


def test_a_stale_homes_write_is_refused_and_the_new_home_keeps_what_was_acknowledged() -> None:
    async def main() -> None:
        store = MemoryRecordStore()
        fra = _node(store)
        ok = await fra.route(_req("put", {"entries": {"n": 1}}))
        assert ok.status == 200
        key = dp.record_key("fn", "Obj", "0" * 32)
        # Another location took the object over (fra's lease ran out while it was cut off) and
        # wrote n = 2; fra still believes it is the home.
        raw, revision = await store.read(key)
        assert raw is not None
        taken = dp.claimed(dp.decode_record(raw), "ams", wall_ms())
        taken = msgspec.structs.replace(taken, data={"n": 2}, lease_until_ms=wall_ms() - 1)
        assert await store.write(key, dp.encode_record(taken), revision)
        stale = await fra.route(_req("put", {"entries": {"n": 99}}))
        # The write on fra's old revision was refused; fra dropped the object, found the lease
        # over, claimed it again (a new epoch) and served the request there, on ams's data.
        assert stale.status == 500
        assert b"fenced" in stale.body
        again = await fra.route(_req("get", {"keys": ["n"]}))
        assert msgspec.msgpack.decode(again.body) == {"n": 2}
        raw, _ = await store.read(key)
        record = dp.decode_record(raw or b"")
        assert (record.holder, record.epoch) == ("fra", 3)
        assert fra.stats["fenced"] == 1

    asyncio.run(main())


def test_a_live_lease_elsewhere_is_never_claimed() -> None:
    async def main() -> None:
        store = MemoryRecordStore()
        ams, fra = _node(store, "ams"), _node(store, "fra")
        assert (await ams.route(_req("put", {"entries": {"n": 1}}))).status == 200
        asked: list[str] = []

        async def remote(location: str, req: DurableRequest) -> DurableReply | None:
            asked.append(location)
            return await ams.route(req)

        fra.remote = remote
        got = await fra.route(_req("get", {"keys": ["n"]}))
        assert msgspec.msgpack.decode(got.body) == {"n": 1}
        assert asked == ["ams"]
        assert fra.statistics()["homes"] == 0
        await ams.stop()  # lets go: fra may claim at once
        fra.remote = None
        got = await fra.route(_req("get", {"keys": ["n"]}))
        assert msgspec.msgpack.decode(got.body) == {"n": 1}
        assert fra.statistics()["homes"] == 1

    asyncio.run(main())


def test_an_alarm_rings_at_its_home_and_wakes_the_object_when_its_home_died() -> None:
    async def main() -> None:
        store = MemoryRecordStore()
        fra, ams = _node(store, "fra"), _node(store, "ams")
        key = dp.record_key("fn", "Obj", "0" * 32)
        # At a live home the alarm rings by itself and leaves the index.
        soon = wall_ms() + 100
        assert (await fra.route(_req("set_alarm", {"ms": soon}))).status == 200
        index_key = dp.alarm_index_key("fn")
        assert dp.decode_index((await store.read(index_key))[0]) == {"Obj\n" + "0" * 32: soon}
        await until(lambda: fra.rang == ["0" * 32], timeout_s=5, what="the alarm at fra")
        await until(
            lambda: store.records[index_key][0] == dp.encode_index({}),
            timeout_s=5,
            what="the alarm to leave the index",
        )
        # Set again, then fra dies before it rings: no release, its lease runs out.
        due = wall_ms() + 100
        assert (await fra.route(_req("set_alarm", {"ms": due}))).status == 200
        home = fra._homes.pop(key)
        assert home.alarm is not None
        home.alarm.cancel()
        raw, revision = await store.read(key)
        dead = msgspec.structs.replace(dp.decode_record(raw or b""), lease_until_ms=wall_ms() - 1)
        assert await store.write(key, dp.encode_record(dead), revision)
        assert await ams.scan_alarms() == 0  # not due yet
        await asyncio.sleep(0.15)
        assert await ams.scan_alarms() == 1
        await until(lambda: ams.rang == ["0" * 32], timeout_s=5, what="the alarm at ams")
        assert fra.rang == ["0" * 32]
        assert await ams.scan_alarms() == 0  # its home is ams now, and it rang
        await ams.stop()

    asyncio.run(main())


def test_forged_stub_and_storage_calls_are_refused() -> None:
    async def main() -> None:
        fra = _node(MemoryRecordStore())
        manifest = Manifest(name="fn", durable_objects=(DurableObjectClass("OBJ", "Obj"),))
        ctx = RequestContext("r1", "fn", "v", "fn@v", manifest, [])

        def call(durable: str) -> p.FetchCall:
            return p.FetchCall(1, 1, "http://x/", "GET", [], b"", 5000, durable=durable)

        out = await fra.call(ctx, call("OTHER\n" + "0" * 32 + "\n"))
        assert "no [[durable_objects]] binding 'OTHER'" in out.error_message
        out = await fra.call(ctx, call("OBJ\n../../etc\n"))
        assert "is not a durable object id" in out.error_message
        # A storage call from an invocation that runs no object (a hostile worker's frame).
        res = await fra.storage("r1", p.KVCall(0, 1, "=do", "put", {"entries": {"k": 1}}))
        assert not res.ok
        assert "fenced" in res.error_message

    asyncio.run(main())


def test_where_and_claims() -> None:
    now = 1_000_000
    assert dp.where(None, "fra", now) == ("free", "")
    mine = dp.claimed(None, "fra", now)
    assert (mine.epoch, mine.lease_until_ms) == (1, now + dp.LEASE_MS)
    assert dp.where(mine, "fra", now) == ("mine", "fra")
    assert dp.where(mine, "ams", now) == ("held", "fra")
    # The home stops serving before its lease ends; others wait for the end itself.
    late = now + dp.LEASE_MS - dp.SAFETY_MS // 2
    assert dp.where(mine, "fra", late) == ("free", "")
    assert dp.where(mine, "ams", late) == ("held", "fra")
    assert dp.where(mine, "ams", now + dp.LEASE_MS) == ("free", "")
    assert dp.where(dp.released(mine), "ams", now) == ("free", "")


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["get", "put", "delete", "list", "txn", "set_alarm", "bogus"]),
            st.dictionaries(
                st.sampled_from(["keys", "entries", "prefix", "limit", "ops", "ms"]),
                st.none()
                | st.integers()
                | st.text(max_size=5)
                | st.lists(st.text(max_size=3))
                | st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
                max_size=3,
            ),
        ),
        max_size=8,
    )
)
def test_any_storage_op_gives_a_result_or_a_storage_error(
    ops: list[tuple[str, dict[str, Any]]],
) -> None:
    record = dp.Record()
    kinds: set[str] = set()
    for op, args in ops:
        try:
            new, _ = dp.apply_op(record, op, args)
        except dp.StorageError as err:
            kinds.add(err.kind)
            continue
        if new is not None:
            assert op in dp.WRITES
            record = new
    assert len(dp.encode_record(record)) <= dp.MAX_RECORD_BYTES
    assert kinds <= {"invalid", "storage_full"}


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1])
def test_a_value_msgpack_cannot_hold_is_an_invalid_storage_op(value: Any) -> None:
    # Found by the property test above: an int past 64 bits escaped as OverflowError.
    for op, args in [
        ("put", {"entries": {"k": value}}),
        ("txn", {"ops": [["put", {"entries": {"k": value}}]]}),
    ]:
        with pytest.raises(dp.StorageError, match="cannot be encoded") as err:
            dp.apply_op(dp.Record(), op, args)
        assert err.value.kind == "invalid"


def test_storage_ops() -> None:
    r = dp.Record()
    r, _ = dp.apply_op(r, "put", {"entries": {"b": 2, "a": 1, "c": None}})  # type: ignore[assignment]
    assert dp.apply_op(r, "get", {"keys": ["a", "c", "z"]}) == (None, {"a": 1, "c": None})
    assert dp.apply_op(r, "list", {"prefix": "", "limit": 2}) == (None, [["a", 1], ["b", 2]])
    new, n = dp.apply_op(r, "delete", {"keys": ["a", "z"]})
    assert n == 1
    assert new is not None
    assert set(new.data) == {"b", "c"}
    new, results = dp.apply_op(
        r, "txn", {"ops": [["put", {"entries": {"x": 1}}], ["get", {"keys": ["x"]}]]}
    )
    assert results == [None, {"x": 1}]
    with pytest.raises(dp.StorageError, match="cannot run in a transaction"):
        dp.apply_op(r, "txn", {"ops": [["set_alarm", {"ms": 1}]]})
    with pytest.raises(dp.StorageError, match="over"):
        dp.apply_op(r, "put", {"entries": {"big": b"x" * dp.MAX_RECORD_BYTES}})
