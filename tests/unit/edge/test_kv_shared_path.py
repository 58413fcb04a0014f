"""edgefn.testing's KV is the node's KV: the same call sequences give the same answers and errors.

Each scenario runs twice. Once on a ``TestClient``'s binding. Once on the node's path as a worker
reaches it: the worker's ``KVBinding``, the call and its answer through the worker ⇄ node frame
codec, ``KVService.handle_call`` and a real ``KVDriver`` (its NATS server is a closed port: a
partitioned node, which serves these eventual operations locally). The two lists of outcomes
(values, or exception type, message and conflict revision) must be equal, so a change of the
node's KV call path (limits, errors, conflicts, revisions, encodings) shows in ``edgefn.testing``.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from edgefn.bundle.manifest import KVNamespace, Manifest
from edgefn.edge.kv_binding import KVService
from edgefn.edge.kv_local import LocalKVDriver
from edgefn.edge.node import RequestContext
from edgefn.errors import KVConflict, KVLimitError
from edgefn.runtime import protocol as p
from edgefn.runtime.worker import KVBinding, kv_value
from edgefn.state import SESSION_HEADER, Consistency, Replica
from edgefn.state.records import KEY_BYTES_MAX, METADATA_BYTES_MAX, VALUE_BYTES_MAX
from edgefn.testing import MemoryKV, TestClient

LOCATION = "fra"
MANIFEST = """
name = "counter"
[[kv_namespaces]]
binding = "COUNTS"
namespace = "counts"
"""
MAIN = """
from edgefn import Response

async def fetch(request, env, ctx):
    if request.path == "/write":
        await env.COUNTS.put("k", request.query["v"], consistency="session")
        return Response.text("ok")
    return Response.text(await env.COUNTS.get("k", consistency="session") or "-")
"""

_M = TypeVar("_M", bound=p.Message)
Op = tuple[str, tuple[Any, ...], dict[str, Any]]

SCENARIOS: dict[str, list[Op]] = {
    "revisions_and_conflicts": [
        ("put", ("a", "1"), {"if_revision": 0}),
        ("put", ("a", "2"), {"if_revision": 0}),
        ("put", ("a", {"n": 2}), {"if_revision": 1}),
        ("get", ("a",), {"type": "json"}),
        ("get_entry", ("a",), {}),
        ("delete", ("a",), {"if_revision": 1}),
        ("delete", ("a",), {"if_revision": 2}),
        ("get_entry", ("a",), {}),
        ("put", ("a", "again"), {"if_revision": 0}),
    ],
    "limits_and_bad_arguments": [
        ("put", ("big", "x" * (VALUE_BYTES_MAX + 1)), {}),
        ("put", ("", "v"), {}),
        ("put", ("k" * (KEY_BYTES_MAX + 1), "v"), {}),
        ("put", ("m", "v"), {"metadata": {"x": "y" * METADATA_BYTES_MAX}}),
        ("put", ("t", "v"), {"ttl_s": -1}),
        ("put", ("r", "v"), {"if_revision": -1}),
        ("put", ("r", "v"), {"if_revision": "seven"}),
        ("put", ("o", object()), {}),
        ("get", ("a",), {"consistency": "sometimes"}),
        ("list", (), {"limit": 0}),
        ("list", (), {"limit": "many"}),
    ],
    "listing_with_prefix_limit_and_cursor": [
        ("put", ("b/1", "x"), {}),
        ("put", ("b/2", "y"), {}),
        ("put", ("b/3", "z"), {}),
        ("put", ("c/1", "w"), {}),
        ("list", (), {"prefix": "b/", "limit": 2}),
        ("list", (), {"prefix": "b/", "limit": 2, "cursor": "b/2"}),
        ("list", (), {"prefix": "c"}),
        ("list", (), {"prefix": "nothing"}),
    ],
    "metadata_types_and_ttl": [
        ("put", ("m", "v"), {"metadata": {"tag": "t", "n": 1}}),
        ("put", ("raw", b"\xff\x00"), {"ttl_s": 60}),
        ("get_entry", ("m",), {}),
        ("get_entry", ("raw",), {}),
        ("get", ("raw",), {"type": "bytes"}),
        ("get", ("raw",), {}),
        ("get", ("m",), {"type": "json"}),
        ("list", (), {}),
    ],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def across(msg: _M) -> _M:
    """What the other end of a worker's socket decodes."""
    out = p.decode(p.encode(msg)[4:])
    assert isinstance(out, type(msg))
    return out


class NodeSide:
    """A worker's ``kv_call`` reaching a node's KVService (the socket replaced by the codec)."""

    def __init__(self, service: KVService) -> None:
        self.service = service
        self.manifest = Manifest(name="counter", kv_namespaces=(KVNamespace("COUNTS", "counts"),))
        self._ids = itertools.count(1)

    async def kv_call(self, binding: str, op: str, args: dict[str, Any]) -> Any:
        call = across(p.KVCall(0, next(self._ids), binding, op, args))
        ctx = RequestContext(f"r{call.call_id}", "counter", "v1", "counter@v1", self.manifest, [])
        return kv_value(across(await self.service.handle_call(ctx, call)))


@pytest.fixture
async def node_kv(tmp_path: Path) -> AsyncIterator[KVBinding]:
    service = KVService(
        location=LOCATION,
        state_dir=tmp_path / "node",
        nats_urls=[f"nats://127.0.0.1:{free_port()}"],
    )
    try:
        yield KVBinding(NodeSide(service), "COUNTS")
    finally:
        await service.stop()


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    fn = tmp_path / "fn"
    fn.mkdir()
    (fn / "edgefn.toml").write_text(MANIFEST)
    (fn / "main.py").write_text(MAIN)
    return TestClient(fn, location=LOCATION)


async def outcomes(kv: Any, ops: list[Op]) -> list[Any]:
    out: list[Any] = []
    for name, args, kwargs in ops:
        try:
            out.append(("ok", await getattr(kv, name)(*args, **kwargs)))
        except Exception as err:
            out.append((type(err).__name__, str(err), getattr(err, "revision", None)))
    return out


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_testing_kv_answers_as_the_node(
    scenario: str, node_kv: KVBinding, client: TestClient
) -> None:
    ops = SCENARIOS[scenario]
    on_node = await outcomes(node_kv, ops)
    in_testing = await outcomes(client.kv["COUNTS"], ops)
    assert in_testing == on_node
    # The comparison is of real answers: every scenario has successes, and the error scenario
    # fails every call with the node's own errors.
    kinds = [o[0] for o in on_node]
    if scenario == "limits_and_bad_arguments":
        assert "ok" not in kinds
        assert kinds.count("KVLimitError") == len(ops) - 1
        assert "TypeError" in kinds  # object() cannot cross the worker's socket
    else:
        assert "ok" in kinds


async def test_conflict_carries_the_current_revision(client: TestClient) -> None:
    kv = client.kv["COUNTS"]
    assert await kv.put("a", "1") == 1
    assert await kv.put("a", "2") == 2
    with pytest.raises(KVConflict, match=f"at {LOCATION} has revision 2") as caught:
        await kv.put("a", "3", if_revision=1)
    assert caught.value.revision == 2


def test_session_token_goes_back_and_a_forged_one_is_ignored(client: TestClient) -> None:
    """As on a node: the token comes back as a response header, reads with it see the write, and a
    token this planet did not sign starts a fresh session instead of failing."""
    written = client.request("/write?v=one")
    token = written.headers[SESSION_HEADER]
    assert token.count(".") == 1
    read = client.request("/read", headers={SESSION_HEADER: token})
    assert read.text_body == "one"
    forged = client.request("/read", headers={SESSION_HEADER: token[:-2] + "00"})
    assert forged.text_body == "one"
    assert client._kv_host.calls.sessions_rejected == 1


async def test_strong_operations_use_the_home_model(client: TestClient) -> None:
    kv = client.kv["COUNTS"]
    assert await kv.put("s", "1", consistency="strong", if_revision=0) == 1
    with pytest.raises(KVConflict, match="at the home") as caught:
        await kv.put("s", "2", consistency="strong", if_revision=0)
    assert caught.value.revision == 1
    assert await kv.get("s", consistency="strong") == "1"
    assert client._kv_host.drivers["counts"].statistics().home_operations == 3


async def test_the_replica_is_the_nodes_machine(client: TestClient) -> None:
    kv = client.kv["COUNTS"]
    await kv.put("k", "v")
    driver = client._kv_host.drivers["counts"]
    assert isinstance(driver.replica, Replica)
    assert driver.replica.id == LOCATION
    driver.replica.check_invariants()
    assert set(driver.replica.content()) == {"k"}
    assert driver.store.statistics().entries == 1  # persisted through the node's SQLite store


async def test_memory_kv_alone_is_a_namespace() -> None:
    kv = MemoryKV()
    assert await kv.put("a", "1", if_revision=0) == 1
    listed = await kv.list(prefix="a")
    assert [k["name"] for k in listed["keys"]] == ["a"]


async def test_local_driver_limits_come_from_the_replica_config() -> None:
    driver = LocalKVDriver(namespace="n", config={"value_bytes_max": 4})
    try:
        await driver.put("k", b"1234")
        with pytest.raises(KVLimitError, match="4"):
            await driver.put("k", b"12345")
    finally:
        driver.close()


async def test_local_driver_session_read_it_cannot_cover_times_out() -> None:
    """A token naming writes of another replica waits ``session_wait_ms`` (driven by ticks), then
    fails with KVSessionBehind, as a partitioned node does."""
    driver = LocalKVDriver(namespace="n", config={"session_wait_ms": 50})
    other = LocalKVDriver(namespace="n", replica_id="elsewhere")
    try:
        written = await other.put("k", b"v", consistency=Consistency.SESSION)
        with pytest.raises(Exception, match="has not received the writes") as caught:
            await driver.get("k", consistency=Consistency.SESSION, session=written.session)
        assert type(caught.value).__name__ == "KVSessionBehind"
        assert driver.statistics().ticks >= 1
    finally:
        driver.close()
        other.close()
