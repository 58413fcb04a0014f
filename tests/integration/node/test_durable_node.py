"""Durable objects on one real node (real workers): storage, transactions, one-at-a-time, alarms."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from tests.waiting import until

from edgefn.edge import EdgeNode

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
HOST = {"host": "durable-counter.localhost"}


async def test_a_counter_counts_every_concurrent_increment_once(node: EdgeNode) -> None:
    await node.deploy_dir(REPO / "examples/durable-counter")
    async with httpx.AsyncClient(base_url=node.url, timeout=30) as c:

        async def inc(i: int) -> int:
            r = await c.post("/increment", params={"name": "a", "op": f"op-{i}"}, headers=HOST)
            assert r.status_code == 200, r.text
            return int(r.json()["n"])

        counts = await asyncio.gather(*(inc(i) for i in range(40)))
        assert sorted(counts) == list(range(1, 41))  # one at a time: each saw its own count
        again = await c.post("/increment", params={"name": "a", "op": "op-3"}, headers=HOST)
        assert again.json() == {"n": 40, "applied": False, "home": "test"}
        other = await c.get("/value", params={"name": "b"}, headers=HOST)
        assert other.json() == {"n": 0, "rang": 0, "home": "test"}
        await c.post("/remind", params={"name": "a", "in_ms": "200"}, headers=HOST)

        async def rang() -> bool:
            r = await c.get("/value", params={"name": "a"}, headers=HOST)
            return bool(r.json()["rang"] == 1)

        await until(rang, timeout_s=10, what="the alarm to ring", interval_s=0.1)
    assert node.durable.statistics()["homes"] == 2
