"""Queues on a real planet (#14): 10,000 messages over 50 keys sent from 4 locations, one location
killed and another partitioned while they flow, are processed with per-key order intact, each
message's effect applied exactly once, poison messages in the dead-letter queue after
``max_retries``, and nothing lost.

``examples/queue-counter``: the consumer adds 1 to a strong counter per message id and checks
that each key's ``n`` follows the last one it processed; both writes commit atomically with the
batch's acknowledgement (docs/design/0028-queues.md). Each key has one sender (a thread per
location, its keys sent in ``n`` order, each send acknowledged before the next); a send that
fails is retried, with the same ``idempotency_key``, at the next location. The verification reads
every counter straight from the strong KV's home bucket (one watch), not through a function.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefn.bus.credentials import load_credentials
from edgefn.bus.jetstream import connect, jetstream
from edgefn.bus.subjects import KV_HOME_BUCKET
from edgefn.state.driver import decode_home_value
from tests.planet_helpers import REPO, Planet, PlanetFactory, PlanetSpec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOST = {"host": "queue-counter.localhost"}
KEYS = 50
PER_KEY = int(os.environ.get("EDGEFN_QUEUE_TEST_PER_KEY", "200"))  # 50 x 200 = 10,000 keyed
POISON = 20
SENDERS = 4
NAMESPACE = "queue-counts"


@pytest.fixture(scope="module")
def planet(planet_factory: PlanetFactory) -> Planet:
    p = planet_factory("queues", PlanetSpec(locations=SENDERS))
    p.deploy(REPO / "examples/queue-counter")
    return p


def _read_counts(planet: Planet) -> dict[str, Any]:
    """Every key of the example's namespace in the home bucket -> its JSON value."""

    async def read() -> dict[str, Any]:
        info = planet.info
        nc = await connect(
            [info["core"]["client_url"]],
            name="test-queues",
            creds=load_credentials(Path(info["admin_creds"])),
            connect_deadline_s=5,
        )
        try:
            kv = await jetstream(nc, timeout_s=10).key_value(KV_HOME_BUCKET)
            watcher = await kv.watch(f"{NAMESPACE}.>", ignore_deletes=True)
            out: dict[str, Any] = {}
            try:
                async for entry in watcher:
                    if entry is None:
                        break
                    token = entry.key.rsplit(".", 1)[-1]
                    key = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
                    value, _meta, _exp = decode_home_value(entry.value)
                    out[key] = json.loads(value)
            finally:
                await watcher.stop()
            return out
        finally:
            await nc.close()

    return asyncio.run(read())


@pytest.mark.timeout(900)
def test_ten_thousand_messages_through_a_kill_and_a_partition(planet: Planet) -> None:
    names = planet.names
    urls = planet.public_urls
    killed, cut = names[3], names[2]
    ids: dict[str, str] = {}  # idempotency key -> message id
    poison_ids: set[str] = set()
    lock = threading.Lock()
    errors: list[str] = []
    progress = [0]

    def send(c: httpx.Client, order: list[str], messages: list[dict[str, Any]]) -> list[str]:
        deadline = time.monotonic() + 120
        at = 0
        while True:
            assert time.monotonic() < deadline, f"a send was never acknowledged: {errors[-3:]}"
            where = order[at % len(order)]
            try:
                r = c.post(f"{urls[where]}/send", json={"messages": messages}, headers=HOST)
                if r.status_code == 202:
                    return list(r.json()["ids"])
                errors.append(f"{where}: {r.status_code} {r.text[:160]}")
            except httpx.HTTPError as err:
                errors.append(f"{where}: {type(err).__name__}")
            at += 1
            time.sleep(0.1)

    def sender(index: int) -> None:
        order = names[index:] + names[:index]  # own location first, then the others
        keys = [f"k{k}" for k in range(KEYS) if k % SENDERS == index]
        with httpx.Client(timeout=30, trust_env=False) as c:
            for n in range(PER_KEY):
                batch = [{"body": {"n": n}, "key": k, "idempotency_key": f"{k}-{n}"} for k in keys]
                if n % max(PER_KEY // (POISON // SENDERS), 1) == 0 and n < PER_KEY:
                    batch.append(
                        {"body": {"poison": True}, "idempotency_key": f"poison-{index}-{n}"}
                    )
                got = send(c, order, batch)
                with lock:
                    for item, mid in zip(batch, got, strict=True):
                        ids[item["idempotency_key"]] = mid
                        if item["body"].get("poison"):
                            poison_ids.add(mid)
                    progress[0] += len(batch)

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(SENDERS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    total = KEYS * PER_KEY + POISON
    while progress[0] < total // 4 and any(t.is_alive() for t in threads):
        time.sleep(0.05)
    planet.edgefn("net", "kill", killed)
    at_kill = progress[0]
    while progress[0] < total // 2 and any(t.is_alive() for t in threads):
        time.sleep(0.05)
    planet.edgefn("net", "partition", cut, "--json")
    at_cut = progress[0]
    time.sleep(15)  # past a lease: the cut location's partitions move; its sends are buffered
    planet.edgefn("net", "heal", "--json")
    for t in threads:
        t.join(timeout=600)
    sent_s = time.monotonic() - t0
    assert all(not t.is_alive() for t in threads)
    assert len(ids) == total

    deadline = time.monotonic() + 600
    while True:
        counts = _read_counts(planet)
        done = sum(1 for mid in ids.values() if f"count:{mid}" in counts or f"dead:{mid}" in counts)
        if done == total or time.monotonic() > deadline:
            break
        time.sleep(3)
    elapsed = time.monotonic() - t0
    keyed = [mid for idem, mid in ids.items() if not idem.startswith("poison")]
    missing = [mid for mid in keyed if f"count:{mid}" not in counts]
    twice = {mid: counts[f"count:{mid}"] for mid in keyed if counts.get(f"count:{mid}", 1) != 1}
    dead = {mid for mid in poison_ids if f"dead:{mid}" in counts}
    out_of_order = {k: v for k, v in counts.items() if k.startswith("bad:")}
    last = {f"k{k}": counts.get(f"last:k{k}") for k in range(KEYS)}
    print(
        f"{total} messages sent in {sent_s:.1f} s ({at_kill} before {killed} was killed, "
        f"{at_cut} before {cut} was cut off for 15 s), all processed after {elapsed:.1f} s; "
        f"{len(errors)} sends retried; missing {len(missing)}, applied twice {len(twice)}, "
        f"dead {len(dead)}/{len(poison_ids)}, keys out of order {len(out_of_order)}"
    )
    assert not missing, f"{len(missing)} messages never processed, e.g. {missing[:3]}"
    assert not twice, f"effects applied more than once: {list(twice.items())[:5]}"
    assert not out_of_order, out_of_order
    assert all(v == PER_KEY - 1 for v in last.values()), last
    assert dead == poison_ids, f"{len(poison_ids - dead)} poison messages not in the DLQ"
    assert not any(f"count:{mid}" in counts for mid in poison_ids)
