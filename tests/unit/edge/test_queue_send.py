"""A node's checks of ``env.Q.send`` (edge/queues.py): every refusal says what was wrong, and
nothing is published or buffered for a refused send."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest

from edgefn.bundle.manifest import parse_manifest
from edgefn.edge.functions import FunctionTable
from edgefn.edge.queue_local import LocalQueues
from edgefn.edge.queues import QueueService
from edgefn.edge.request_context import RequestContext
from edgefn.observe import JsonLog
from edgefn.runtime import protocol as p
from edgefn.state.home import HomeRegister

MANIFEST = parse_manifest(
    'name = "q"\n[[queues.producers]]\nbinding = "JOBS"\nqueue = "jobs"\n', path="edgefn.toml"
)


def _service(tmp_path: Path | None) -> QueueService:
    service = QueueService(
        location="fra",
        table=FunctionTable(),
        pool=None,  # type: ignore[arg-type]  # sends never reach a worker
        log=JsonLog(io.StringIO(), location="fra"),
        requests={},
        release=lambda rid: None,
    )
    if tmp_path is not None:
        # A bus nobody listens on: a refused send must not even try it.
        service.attach(["nats://127.0.0.1:1"], tmp_path, lambda ns: asyncio.sleep(0))
    return service


def _send(service: QueueService, args: dict[str, Any]) -> p.KVResult:
    ctx = RequestContext("r1", "q", "v1", "q@v1", MANIFEST, [])
    return asyncio.run(service.send(ctx, p.KVCall(1, 1, "=q", "send", args)))


def test_a_node_without_a_bus_refuses_with_what_to_do() -> None:
    res = _send(_service(None), {"binding": "JOBS", "messages": [{"body": 1}]})
    assert not res.ok
    assert res.error_kind == "queue"
    assert "edgefn up" in res.error_message


BAD_SENDS = [
    ({"binding": "OTHER", "messages": [{"body": 1}]}, "no [[queues.producers]] binding"),
    ({"binding": "JOBS", "messages": []}, "non-empty list"),
    ({"binding": "JOBS", "messages": ["x"]}, "a dict with a body"),
    ({"binding": "JOBS", "messages": [{"body": 1, "key": ""}]}, "message key"),
    ({"binding": "JOBS", "messages": [{"body": 1, "key": "k" * 257}]}, "message key"),
    ({"binding": "JOBS", "messages": [{"body": 1, "idempotency_key": 5}]}, "idempotency_key"),
    ({"binding": "JOBS", "messages": [{"body": 1, "delay_s": -1}]}, "delay_s"),
    ({"binding": "JOBS", "messages": [{"body": 1, "delay_s": 50_000}]}, "delay_s"),
    ({"binding": "JOBS", "messages": [{"body": 1, "delay_s": True}]}, "delay_s"),
    ({"binding": "JOBS", "messages": [{"body": b"x" * 200_000}]}, "at most 128 KiB"),
    ({"binding": "JOBS", "messages": [{"body": {"n": 2**64}}]}, "cannot be sent"),  # past msgpack
    ({"binding": "JOBS", "messages": [{"body": i} for i in range(101)]}, "at most 100"),
]


@pytest.mark.parametrize(("args", "words"), BAD_SENDS)
def test_bad_sends_are_refused_and_nothing_is_buffered(
    tmp_path: Path, args: dict[str, Any], words: str
) -> None:
    service = _service(tmp_path)
    res = _send(service, args)
    assert not res.ok
    assert res.error_kind == "queue"
    assert words in res.error_message
    assert service.outbox is not None
    assert service.outbox.count == 0
    service.outbox.close()


@pytest.mark.parametrize(("args", "words"), BAD_SENDS)
def test_edgefn_testing_refuses_each_bad_send_as_a_node_does(
    tmp_path: Path, args: dict[str, Any], words: str
) -> None:
    service = _service(tmp_path)
    node = _send(service, args)
    assert service.outbox is not None
    service.outbox.close()

    async def no_home(namespace: str) -> HomeRegister:
        raise AssertionError("a send never reads the home")

    local = LocalQueues(MANIFEST, home_for=no_home, now_ms=0)
    res = local.send(p.KVCall(1, 1, "=q", "send", args))
    assert (res.ok, res.error_kind, res.error_message) == (False, "queue", node.error_message)
    assert words in res.error_message
    assert local.statistics().stored_messages == 0
