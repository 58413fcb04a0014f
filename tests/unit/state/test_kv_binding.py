"""The node-side KV service (edgefn.edge.kv_binding) without NATS: a replica that cannot reach its
home still serves eventual operations; every error path maps to the right kind and status.

Drivers here point at a closed port, so they never connect: that is the partitioned-node case.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.kv_fakes import fake_node

from edgefn.bundle.manifest import KVNamespace, Manifest
from edgefn.edge.kv_binding import (
    KVService,
    decode_value,
    encode_value,
    open_session,
    sign_session,
)
from edgefn.edge.node import RequestContext
from edgefn.errors import KVError, KVLimitError
from edgefn.runtime import protocol as p
from edgefn.state import (
    SESSION_HEADER,
    MembersChanged,
    Persist,
    Replica,
    ReplicaConfig,
    ReplicaMeta,
    Tick,
    VClock,
    encode_session,
)
from edgefn.state.store import SqliteStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[KVService]:
    svc = KVService(
        location="fra",
        state_dir=tmp_path,
        nats_urls=[f"nats://127.0.0.1:{free_port()}"],
        config={"strong_timeout_ms": 300},
    )
    try:
        yield svc
    finally:
        await svc.stop()


def _ctx(headers: list[tuple[str, str]] | None = None) -> RequestContext:
    manifest = Manifest(
        name="counter", main="main.py", kv_namespaces=(KVNamespace("COUNTS", "counts"),)
    )
    return RequestContext("rid", "counter", "v1", "counter@v1", manifest, headers or [])


async def _call(svc: KVService, ctx: RequestContext, op: str, **args: Any) -> p.KVResult:
    return await svc.handle_call(ctx, p.KVCall(1, 1, "COUNTS", op, args))


async def test_put_get_list_delete_locally_and_session_header(service: KVService) -> None:
    ctx = _ctx()
    put = await _call(service, ctx, "put", key="a", value={"n": 1}, consistency="session")
    assert put.ok, put.error_message
    assert put.value >= 1
    token = dict(ctx.response_headers)[SESSION_HEADER]
    got = await _call(service, _ctx([(SESSION_HEADER, token)]), "get", key="a", type="json")
    assert got.value == {"n": 1}
    entry = await _call(service, ctx, "get_entry", key="a")
    assert entry.value["value"] == '{"n":1}'
    assert entry.value["revision"] == put.value
    listed = await _call(service, ctx, "list", prefix="")
    assert [k["name"] for k in listed.value["keys"]] == ["a"]
    await _call(service, ctx, "put", key="b", value="x", consistency="session")
    assert [v for k, v in ctx.response_headers if k == SESSION_HEADER] != [token]
    assert len([1 for k, _ in ctx.response_headers if k == SESSION_HEADER]) == 1
    deleted = await _call(service, ctx, "delete", key="a")
    assert deleted.ok
    assert (await _call(service, ctx, "get", key="a")).value is None


async def test_error_kinds(service: KVService) -> None:
    ctx = _ctx()
    strong = await _call(service, ctx, "get", key="a", consistency="strong")
    assert (strong.ok, strong.error_kind) == (False, "unavailable")
    assert "home" in strong.error_message
    bad_level = await _call(service, ctx, "get", key="a", consistency="sometimes")
    assert bad_level.error_kind == "limit"
    assert "unknown consistency" in bad_level.error_message
    await _call(service, ctx, "put", key="c", value="1")
    conflict = await _call(service, ctx, "put", key="c", value="2", if_revision=99)
    assert conflict.error_kind == "conflict"
    bad_rev = await _call(service, ctx, "put", key="c", value="2", if_revision="x")
    assert bad_rev.error_kind == "limit"
    neg_rev = await _call(service, ctx, "delete", key="c", if_revision=-1)
    assert neg_rev.error_kind == "limit"
    unknown = await service.handle_call(ctx, p.KVCall(1, 2, "NOPE", "get", {"key": "a"}))
    assert unknown.error_kind == "error"
    assert "[[kv_namespaces]]" in unknown.error_message
    bad_op = await _call(service, ctx, "increment", key="a")
    assert bad_op.error_kind == "error"
    bad_value = await _call(service, ctx, "put", key="d", value={1, 2})
    assert bad_value.error_kind == "limit"
    bad_meta = await _call(service, ctx, "put", key="d", value="v", metadata={3})
    assert bad_meta.error_kind == "limit"
    big = await _call(service, ctx, "put", key="d", value=b"x" * (1024 * 1024 + 1))
    assert big.error_kind == "limit"
    assert service.statistics().call_errors == 10


async def test_bad_namespace_and_namespace_limit(service: KVService) -> None:
    with pytest.raises(KVLimitError, match="not a valid name"):
        await service.driver("no.dots")
    service.drivers.update(dict.fromkeys((f"n{i}" for i in range(64)), None))  # type: ignore[arg-type]
    try:
        with pytest.raises(KVLimitError, match="64 KV namespaces"):
            await service.driver("one-more")
    finally:
        service.drivers.clear()


async def _asgi(
    svc: KVService,
    method: str,
    path: str,
    query: bytes = b"",
    body: bytes = b"",
    client: str = "127.0.0.1",
) -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query,
        "headers": [],
        "client": (client, 5555),
    }
    await svc.asgi(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


async def test_internal_endpoint(service: KVService) -> None:
    status, body = await _asgi(service, "PUT", "/_edgefn/kv/counts/k", body=b"v")
    assert status == 200
    assert body["stamp"][1] == "fra"
    status, body = await _asgi(service, "GET", "/_edgefn/kv/counts/k")
    assert (status, body["value"], body["location"]) == (200, "v", "fra")
    status, body = await _asgi(service, "GET", "/_edgefn/kv/counts")
    assert [k["name"] for k in body["keys"]] == ["k"]
    status, body = await _asgi(service, "GET", "/_edgefn/kvstate/counts")
    assert body["keys"] == 1
    assert body["items"]["k"]["revision"] >= 1
    status, body = await _asgi(service, "GET", "/_edgefn/kv/counts/k", b"consistency=strong")
    assert (status, body["error"]) == (503, "consistency_unavailable")
    status, body = await _asgi(service, "PUT", "/_edgefn/kv/counts/k", b"if_revision=77", b"w")
    assert (status, body["error"]) == (409, "conflict")
    assert body["revision"] >= 1
    status, body = await _asgi(service, "GET", "/_edgefn/kv/counts", b"limit=many")
    assert (status, body["error"]) == (400, "limit")
    status, body = await _asgi(service, "POST", "/_edgefn/kv/counts/k")
    assert status == 405
    status, body = await _asgi(service, "DELETE", "/_edgefn/kv/counts")
    assert status == 405
    status, body = await _asgi(service, "GET", "/_edgefn/kv/counts/k", client="10.1.2.3")
    assert (status, body["error"]) == (403, "forbidden")
    status, body = await _asgi(service, "PUT", "/_edgefn/kv/counts/big", body=b"x" * (3 << 20))
    assert (status, body["error"]) == (400, "limit")


async def test_forged_or_modified_session_tokens_are_rejected(tmp_path: Path) -> None:
    """A token claiming writes nobody made would make session reads wait and then fail; signed
    tokens mean a forged one is ignored (function path: fresh session) or refused (400)."""
    secret = b"k" * 32
    svc = KVService(
        location="fra",
        state_dir=tmp_path,
        nats_urls=[f"nats://127.0.0.1:{free_port()}"],
        config={"session_wait_ms": 200},
        session_secret=secret,
    )
    try:
        ctx = _ctx()
        put = await _call(svc, ctx, "put", key="a", value="v", consistency="session")
        token = dict(ctx.response_headers)[SESSION_HEADER]
        raw = open_session(secret, "counts", token)
        assert raw
        assert token == sign_session(secret, "counts", raw)
        assert open_session(secret, "other-namespace", token) is None
        forged_raw = encode_session(VClock({"fra": 10**9}))
        forgeries = [
            forged_raw,  # unsigned
            f"{forged_raw}.{token.rpartition('.')[2]}",  # someone else's MAC
            sign_session(b"x" * 32, "counts", forged_raw),  # another planet's key
        ]
        for forged in forgeries:
            reader = _ctx([(SESSION_HEADER, forged)])
            got = await _call(svc, reader, "get", key="a", consistency="session")
            assert got.ok, got.error_message  # no wait for the claimed write: fresh session
            assert got.value == "v"
            assert open_session(secret, "counts", dict(reader.response_headers)[SESSION_HEADER])
            status, body = await _asgi(
                svc, "GET", "/_edgefn/kv/counts/a", f"session={forged}".encode()
            )
            assert (status, body["error"]) == (400, "bad_session")
        assert svc.statistics().sessions_rejected == 2 * len(forgeries)
        status, body = await _asgi(svc, "GET", "/_edgefn/kv/counts/a", f"session={token}".encode())
        assert (status, body["value"]) == (200, "v")
        assert open_session(secret, "counts", body["session"])
        assert put.ok
    finally:
        await svc.stop()


def test_value_codecs() -> None:
    assert encode_value("é", key="k") == "é".encode()
    assert encode_value(b"\x00", key="k") == b"\x00"
    assert encode_value([1, 2], key="k") == b"[1,2]"
    assert decode_value(b"[1,2]", "json", key="k") == [1, 2]
    assert decode_value(b"\xff", "bytes", key="k") == b"\xff"
    assert decode_value(None, "text", key="k") is None
    with pytest.raises(KVError, match='type="bytes"'):
        decode_value(b"\xff", "text", key="k")
    with pytest.raises(KVError, match="not valid json"):
        decode_value(b"{", "json", key="k")


def test_membership_only_grows_and_is_remembered(tmp_path: Path) -> None:
    """MembersChanged widens the replica set (GC then waits for the new member's floor)."""
    replica = Replica(ReplicaConfig(replica_id="a", replicas=("a",)))
    replica.handle(MembersChanged(("c", "b"), 1))
    assert replica.config.replicas == ("a", "b", "c")
    replica.handle(MembersChanged(("b",), 2))
    assert replica.config.replicas == ("a", "b", "c")
    replica.handle(Tick(3))
    replica.check_invariants()
    store = SqliteStore(tmp_path / "m.sqlite3")
    store.add_members(("b", "a"))
    store.add_members(("a", "c"))
    store.close()
    assert SqliteStore(tmp_path / "m.sqlite3").members() == ("a", "b", "c")


# --- leaving a namespace no function here binds (no NATS: the partitioned / lone-node case) ----


async def test_an_unwanted_namespace_is_left_only_once_ready_and_never_by_its_only_replica(
    service: KVService,
) -> None:
    """Before the node loaded its functions an empty table says nothing; after, the replica of an
    unbound namespace asks to leave, but as the only holder of its writes it stays (serving)
    and says why; bound again, it cancels."""
    await service.sync_namespaces(fake_node(("counts",)))
    driver = service.drivers["counts"]
    await driver.put("k", b"v")
    await service.sync_namespaces(fake_node((), ready=False))
    assert not driver.leaving
    await service.sync_namespaces(fake_node(()))
    assert service.drivers["counts"] is driver
    assert driver.leaving
    assert "only replica" in driver.statistics().leave_blocked
    assert (await driver.get("k")).item.value == b"v"
    await service.sync_namespaces(fake_node(("counts",)))
    assert not driver.leaving
    assert driver.statistics().leave_blocked == ""


async def test_a_replica_that_left_but_cannot_deregister_is_replaced_when_wanted_again(
    service: KVService,
) -> None:
    """Holding nothing, the replica leaves at once, but cannot write its leave record without
    NATS: the driver stays (refusing operations, asked again each sync). Wanted again, the
    service stops it and starts a fresh replica from the same file."""
    await service.sync_namespaces(fake_node(("counts",)))
    old = service.drivers["counts"]
    await service.sync_namespaces(fake_node(()))
    assert old.left
    assert "cannot deregister" in old.statistics().leave_blocked
    assert service.drivers["counts"] is old
    result = await _call(service, _ctx(), "put", key="k", value="v")
    assert result.error_kind == "unavailable"
    assert "left the namespace" in result.error_message
    await service.sync_namespaces(fake_node(("counts",)))
    assert "counts" not in service.drivers
    await service.sync_namespaces(fake_node(("counts",)))
    fresh = service.drivers["counts"]
    assert fresh is not old
    assert (await _call(service, _ctx(), "put", key="k", value="v")).ok


async def test_replicas_left_on_disk_by_an_earlier_run_are_reopened_to_leave(
    tmp_path: Path,
) -> None:
    """The function moved away while the node was down: at the first sync after the node is
    ready, a replica on disk that never left is started (so that it can leave); one that left,
    and a file that is not a store, are not."""
    url = [f"nats://127.0.0.1:{free_port()}"]
    first = KVService(location="fra", state_dir=tmp_path, nats_urls=url)
    await first.sync_namespaces(fake_node(("counts",)))
    await first.drivers["counts"].put("k", b"v")
    await first.stop()
    gone = SqliteStore(tmp_path / "kv" / "gone.sqlite3")
    gone.apply(Persist((), (), ReplicaMeta((("fra", 3),), 3, 1, refill_seq=3, left=True)))
    gone.close()
    (tmp_path / "kv" / "junk.sqlite3").write_bytes(b"not a database" * 100)
    second = KVService(location="fra", state_dir=tmp_path, nats_urls=url)
    try:
        await second.sync_namespaces(fake_node((), ready=False))
        assert second.drivers == {}
        await second.sync_namespaces(fake_node(()))
        assert sorted(second.drivers) == ["counts"]
        driver = second.drivers["counts"]
        assert driver.leaving
        assert (await driver.get("k")).item.value == b"v"
        await second.sync_namespaces(fake_node(()))
        assert sorted(second.drivers) == ["counts"], "reopened once, not on every sync"
    finally:
        await second.stop()
