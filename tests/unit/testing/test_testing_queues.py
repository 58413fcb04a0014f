"""edgefn.testing runs queues in-process with a node's code: sends (checks, ids, dedupe), batches
(per-key order, back-off, the dead-letter queue) and a batch's strong writes committed with it."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from edgefn.edge.queue_policy import partition_of
from edgefn.errors import ManifestError, QueueError, UsageError
from edgefn.sdk._queue import Queue
from edgefn.testing import TestClient

EXAMPLE = Path(__file__).parents[3] / "examples/queue-counter"

MANIFEST = """
name = "qt"
[[kv_namespaces]]
binding = "KV"
namespace = "qt"
[[queues.producers]]
binding = "JOBS"
queue = "jobs"
[[queues.producers]]
binding = "PLAIN"
queue = "plain"
[[queues.producers]]
binding = "OTHER"
queue = "other"
[[queues.consumers]]
queue = "jobs"
max_batch_size = 3
max_retries = 2
retry_delay_s = 10
dead_letter_queue = "jobs-dlq"
[[queues.consumers]]
queue = "plain"
max_retries = 0
"""

# Each batch appends [[n, key, attempts], ...] to the strong key "log" (committed with the
# batch); a message's body says what to do with it.
MAIN = """
import asyncio
from edgefn import Response

async def fetch(request, env, ctx):
    if request.path == "/write":
        await env.KV.put(request.query["key"], [], consistency="strong")
        return Response("ok")
    try:
        await env.JOBS.send(await request.json(), key="k")
    except Exception as err:
        return Response.json({"error": type(err).__name__, "message": str(err)}, status=400)
    return Response("queued", status=202)

async def queue(batch, env, ctx):
    log = await env.KV.get("log", consistency="strong", type="json") or []
    log.append([[m.body.get("n"), m.key, m.attempts] for m in batch.messages])
    await env.KV.put("log", log, consistency="strong")
    for m in batch.messages:
        do = m.body.get("do", "ack")
        if do == "retry":
            m.retry()
        elif do == "retry_first":
            if m.attempts == 1:
                m.retry(delay_s=5)
        elif do == "raise":
            await env.KV.put("eventual", "kept")
            raise RuntimeError("boom")
        elif do == "read_then_wait":
            await asyncio.sleep(0.05)
        elif do == "strong_list":
            # The SDK offers no strong list; ask the node for one as a worker would.
            await env.KV._worker.kv_call("KV", "list", {"consistency": "strong"})
        elif do == "eventual_list":
            await env.KV.put("e1", "v")
            listed = await env.KV.list()
            await env.KV.put("listed", [k["name"] for k in listed["keys"]], consistency="strong")
"""


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    (tmp_path / "edgefn.toml").write_text(MANIFEST)
    (tmp_path / "main.py").write_text(MAIN)
    return TestClient(tmp_path)


async def _log(client: TestClient) -> list[list[list[Any]]]:
    got = await client.kv["KV"].get("log", consistency="strong", type="json")
    return list(got or [])


def _same_partition_keys(n: int) -> list[str]:
    """``n`` keys whose messages land in one partition (so they can share a batch)."""
    keys = (f"key-{i}" for i in itertools.count())
    first = next(keys)
    out = [first]
    while len(out) < n:
        k = next(keys)
        if partition_of(k, "") == partition_of(first, ""):
            out.append(k)
    return out


def test_example_counts_each_message_once_in_key_order_and_dead_letters_poison() -> None:
    client = TestClient(EXAMPLE)
    messages = [{"body": {"n": n}, "key": k} for n in range(6) for k in ("a", "b", "c")]
    messages += [{"body": {"poison": True}}, {"body": {"poison": True}, "key": "p"}]
    resp = client.request("/send", method="POST", body=json.dumps({"messages": messages}))
    assert resp.status == 202
    ids = resp.json()["ids"]
    assert len(client.queue_messages("jobs")) == len(messages)

    outcomes = client.run_queues(wait=True)

    assert client.queue_messages("jobs") == []
    assert client.queue_messages("jobs-dlq") == []  # its consumer marked them dead
    for mid in ids[:-2]:
        assert client.request(f"/count?id={mid}").json() == {"count": 1, "dead": False}
    for mid in ids[-2:]:
        assert client.request(f"/count?id={mid}").json() == {"count": 0, "dead": True}
    for k in ("a", "b", "c"):
        assert client.request(f"/key?key={k}").json() == {"last": 5, "out_of_order": 0}
    dead = client.dead_letters("jobs")
    assert sorted(m.id for m in dead) == sorted(ids[-2:])
    assert {m.attempts for m in dead} == {3}  # max_retries = 2: the third failure is the last
    assert all(len(o.ids) <= 16 for o in outcomes)
    assert {o.queue for o in outcomes} == {"jobs", "jobs-dlq"}


async def test_one_message_per_key_in_flight_in_send_order(client: TestClient) -> None:
    a, b = _same_partition_keys(2)
    batch = [{"body": {"n": n}, "key": k} for n in range(3) for k in (a, b)]
    await client.env.JOBS.send_batch(batch)
    outcomes = await client.drain_queues()
    log = await _log(client)
    assert len(outcomes) == len(log) == 3  # one of each key per batch
    for entries in log:
        assert sorted(key for _n, key, _at in entries) == sorted([a, b])
    for k in (a, b):
        assert [n for entries in log for n, key, _at in entries if key == k] == [0, 1, 2]


async def test_batches_hold_at_most_max_batch_size(client: TestClient) -> None:
    keys = _same_partition_keys(5)
    await client.env.JOBS.send_batch([{"body": {"n": n}, "key": k} for n, k in enumerate(keys)])
    outcomes = await client.drain_queues()
    assert [len(o.acked) for o in outcomes] == [3, 2]  # max_batch_size = 3
    assert [[n for n, _k, _at in entries] for entries in await _log(client)] == [[0, 1, 2], [3, 4]]


async def test_a_waiting_head_holds_back_its_key_until_the_clock_moves(client: TestClient) -> None:
    await client.env.JOBS.send({"n": 0, "do": "retry_first"}, key="k")
    await client.env.JOBS.send({"n": 1}, key="k")
    first = await client.drain_queues()
    assert [len(o.retried) for o in first] == [1]
    waiting = client.queue_messages("jobs")
    assert [(m.body["n"], m.attempts) for m in waiting] == [(0, 1), (1, 0)]
    assert waiting[0].due_ms == client.now_ms + 5_000  # retry(delay_s=5), not the back-off

    client.advance(4.999)
    assert await client.drain_queues() == []
    client.advance(0.001)
    await client.drain_queues()
    assert client.queue_messages("jobs") == []
    delivered = [(n, at) for entries in await _log(client) for n, _k, at in entries]
    assert delivered == [(0, 1), (0, 2), (1, 1)]


async def test_idempotent_sends_add_one_message_within_the_window(client: TestClient) -> None:
    first = await client.env.OTHER.send({"n": 1}, idempotency_key="order-7")
    again = await client.env.OTHER.send({"n": 2}, idempotency_key="order-7")
    twice = await client.env.OTHER.send_batch(
        [{"body": 3, "idempotency_key": "order-8"}, {"body": 4, "idempotency_key": "order-8"}]
    )
    assert again == first
    assert twice[0] == twice[1]
    assert [m.body for m in client.queue_messages("other")] == [{"n": 1}, 3]
    other = await client.env.JOBS.send({"n": 1}, idempotency_key="order-7")
    assert other != first  # the id is the queue's and the key's

    client.advance(2 * 3600 + 1)  # the stream's duplicate window is 2 h
    assert await client.env.OTHER.send({"n": 5}, idempotency_key="order-7") == first
    assert [m.body for m in client.queue_messages("other")] == [{"n": 1}, 3, {"n": 5}]


async def test_retries_back_off_then_the_message_moves_to_the_dead_letter_queue(
    client: TestClient,
) -> None:
    mid = await client.env.JOBS.send({"n": 0, "do": "retry"})
    start = client.now_ms
    await client.drain_queues()
    [waiting] = client.queue_messages("jobs")
    assert (waiting.attempts, waiting.due_ms) == (1, start + 10_000)  # retry_delay_s = 10

    client.advance(9.9)
    assert await client.drain_queues() == []
    client.advance(0.1)
    await client.drain_queues()
    [waiting] = client.queue_messages("jobs")
    assert (waiting.attempts, waiting.due_ms) == (2, start + 30_000)  # doubled: 20 s more
    assert client.dead_letters("jobs") == []

    outcomes = await client.drain_queues(wait=True)
    assert [o.dead for o in outcomes] == [(mid,)]
    assert client.now_ms == start + 30_000
    assert client.queue_messages("jobs") == []
    [dead] = client.dead_letters("jobs")
    assert (dead.id, dead.attempts) == (mid, 3)
    [moved] = client.queue_messages("jobs-dlq")  # no consumer of it here: it waits
    assert (moved.id, moved.body, moved.attempts, moved.due_ms) == (mid, dead.body, 0, 0)
    assert [at for entries in await _log(client) for _n, _k, at in entries] == [1, 2, 3]


async def test_without_a_dead_letter_queue_a_dead_message_is_dropped(client: TestClient) -> None:
    mid = await client.env.PLAIN.send({"do": "retry"})
    outcomes = await client.drain_queues(wait=True)
    assert [o.dead for o in outcomes] == [(mid,)]  # max_retries = 0
    assert [m.id for m in client.dead_letters("plain")] == [mid]
    assert client.queue_messages("plain") == []
    assert client.queue_messages("jobs-dlq") == []


async def test_a_raising_handler_keeps_none_of_its_strong_writes(client: TestClient) -> None:
    ok, bad = _same_partition_keys(2)
    await client.env.JOBS.send({"n": 0}, key=ok)
    await client.env.JOBS.send({"n": 1, "do": "raise"}, key=bad)
    [outcome] = await client.drain_queues()

    assert outcome.error == "exception: RuntimeError: boom"
    assert outcome.acked == ()
    assert len(outcome.retried) == 2  # the first message's ack() did not stick
    assert await _log(client) == []  # the batch's strong write is gone
    assert await client.kv["KV"].get("eventual") == "kept"  # eventual writes apply at once
    assert [m.attempts for m in client.queue_messages("jobs")] == [1, 1]


async def test_a_commit_is_refused_when_a_key_the_handler_read_changed(client: TestClient) -> None:
    await client.env.JOBS.send({"n": 0, "do": "read_then_wait"})

    async def write_meanwhile() -> None:
        # While the handler waits (it read "log" and wrote it back), a request writes "log".
        await asyncio.sleep(0.01)
        assert (await client.fetch("/write?key=log")).status == 200

    [outcome], _ = await asyncio.gather(client.drain_queues(), write_meanwhile())
    assert outcome.error == "a key the handler read was written meanwhile (the batch is retried)"
    assert outcome.retried == outcome.ids
    assert await _log(client) == []  # the request's write, not the handler's
    assert [m.attempts for m in client.queue_messages("jobs")] == [1]
    await client.drain_queues(wait=True)  # nothing changes it now: the next try commits
    assert [at for entries in await _log(client) for _n, _k, at in entries] == [2]


async def test_a_strong_list_is_refused_in_a_queue_handler(client: TestClient) -> None:
    await client.env.JOBS.send({"do": "strong_list"})
    [outcome] = await client.drain_queues()
    assert outcome.error.startswith("exception: KVError: a strong list is not available")
    await client.env.JOBS.send({"do": "eventual_list"}, key="other")
    await client.drain_queues()
    assert await client.kv["KV"].get("listed", consistency="strong", type="json") == ["e1"]


async def test_delay_s_holds_a_message_until_the_clock_reaches_it(client: TestClient) -> None:
    start = client.now_ms
    await client.env.JOBS.send({"n": 0}, delay_s=30)
    assert await client.drain_queues() == []
    assert [m.due_ms for m in client.queue_messages("jobs")] == [start + 30_000]
    client.advance(29.999)
    assert await client.drain_queues() == []
    client.advance(0.001)
    assert [len(o.acked) for o in await client.drain_queues()] == [1]

    await client.env.JOBS.send({"n": 1}, delay_s=60)
    assert [len(o.acked) for o in await client.drain_queues(wait=True)] == [1]
    assert client.now_ms == start + 90_000


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"body": b"x" * 200_000}, "at most 128 KiB"),
        ({"body": 1, "key": ""}, "message key"),
        ({"body": 1, "key": "k" * 257}, "message key"),
        ({"body": 1, "idempotency_key": 5}, "idempotency_key"),
        ({"body": 1, "delay_s": -1}, "delay_s"),
        ({"body": 1, "delay_s": 50_000}, "delay_s"),
    ],
)
async def test_bad_sends_are_refused_and_nothing_is_queued(
    client: TestClient, kwargs: dict[str, Any], words: str
) -> None:
    body = kwargs.pop("body")
    with pytest.raises(QueueError, match=words) as err:
        await client.env.JOBS.send(body, **kwargs)
    assert "queue 'jobs'" in str(err.value)
    assert client.queue_messages("jobs") == []


async def test_a_refusal_reaches_the_fetch_handler_as_queue_error(client: TestClient) -> None:
    resp = await client.fetch("/", method="POST", body=json.dumps({"pad": "x" * 200_000}))
    assert resp.status == 400
    assert resp.json()["error"] == "QueueError"
    assert "at most 128 KiB" in resp.json()["message"]


async def test_a_binding_of_no_producer_is_refused(client: TestClient) -> None:
    stray = Queue("NOPE", client._queue_call)
    with pytest.raises(QueueError, match=r"no \[\[queues.producers\]\] binding 'NOPE'"):
        await stray.send(1)


def test_client_misuse_is_a_usage_error(client: TestClient) -> None:
    with pytest.raises(UsageError, match="names no queue 'jobz'"):
        client.queue_messages("jobz")
    with pytest.raises(UsageError, match="names no queue"):
        client.dead_letters("jobz")
    with pytest.raises(UsageError, match="only moves forward"):
        client.advance(-1)


def test_a_consumer_without_a_queue_handler_is_a_manifest_error(tmp_path: Path) -> None:
    (tmp_path / "edgefn.toml").write_text(MANIFEST)
    (tmp_path / "main.py").write_text(MAIN.split("async def queue")[0])
    with pytest.raises(ManifestError, match="queue"):
        TestClient(tmp_path)


async def test_a_consumer_that_feeds_itself_stops_at_batches_max(tmp_path: Path) -> None:
    (tmp_path / "edgefn.toml").write_text(MANIFEST)
    (tmp_path / "main.py").write_text(
        "async def fetch(request, env, ctx): ...\n"
        "async def queue(batch, env, ctx):\n"
        "    await env.JOBS.send(1)\n"
    )
    client = TestClient(tmp_path)
    await client.env.JOBS.send(0)
    with pytest.raises(QueueError, match="after 5 batches"):
        await client.drain_queues(batches_max=5)
