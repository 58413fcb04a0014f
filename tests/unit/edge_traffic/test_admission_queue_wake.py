"""The node's admission queue tells its tick loop when a request starts waiting, so the loop
can sleep while nobody waits (real asyncio, no timing bounds beyond generous ones)."""

from __future__ import annotations

import asyncio
import time

from edgefn.edge.traffic_admission import AdmissionQueue
from edgefn.routing import AdmissionConfig, Admit, LimitConfig


def _queue() -> AdmissionQueue:
    limit = LimitConfig(initial_limit=1, min_limit=1, max_limit=1)
    return AdmissionQueue(AdmissionConfig(algorithm="aimd", limit=limit, queue_timeout_ms=60_000))


async def test_until_queued_times_out_while_nobody_waits() -> None:
    q = _queue()
    t0 = time.monotonic()
    await q.until_queued(0.05)
    assert time.monotonic() - t0 >= 0.04
    assert q.waiting == 0


async def test_until_queued_returns_when_a_request_starts_waiting() -> None:
    q = _queue()
    first_id, first = await q.admit()  # takes the only slot
    assert isinstance(first, Admit)
    waiter = asyncio.ensure_future(q.admit())  # has to wait
    t0 = time.monotonic()
    await q.until_queued(30)
    assert time.monotonic() - t0 < 10
    assert q.waiting == 1
    await q.until_queued(30)  # still waiting: at once
    q.complete(first_id, latency_ms=1.0, ok=True)
    _, second = await asyncio.wait_for(waiter, 10)
    assert isinstance(second, Admit)
    assert q.waiting == 0
