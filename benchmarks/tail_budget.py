"""Tail throughput (design record 0020): the tap's cost per request and what one node sends.

    .venv/bin/python benchmarks/tail_budget.py

1. The pure tap: offers per second of CPU with one session (all kept, and sampled to the
   default budget).
2. One node's publisher against a real nats-server and the core's TailHub in this process:
   requests offered as fast as the loop allows for ``SECONDS``; events per second that reach the
   hub, at the default budget (200/s) and with the budget out of the way (the publisher's ceiling).
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path

from edgefn.bus import CoreConfig, NatsServer, connect
from edgefn.control.tail import TailHub
from edgefn.edge.tail import TailPublisher
from edgefn.observe.tail import TailAnnounce, TailBudget, TailRequest, TailTap

SECONDS = 3.0


def _req(i: int, status: int = 200) -> TailRequest:
    return TailRequest(f"{i:016x}", 0, "hello", "v1", "GET", f"/p/{i}", status, 1.0, False)


def pure(budget: float) -> float:
    tap = TailTap("fra", budget=TailBudget(events_per_s=budget, queue_max=1 << 20), rng=random.Random(1))
    tap.announce(TailAnnounce(session="a" * 16, function="hello", ttl_ms=30_000), 0)
    n = 200_000
    t0 = time.perf_counter()
    for i in range(n):
        tap.offer(_req(i), i // 100)  # 100 requests per ms of simulated time
        if i % 1000 == 0:
            tap.take(1 << 20)
    return n / (time.perf_counter() - t0)


async def driven(url: str, budget: float) -> tuple[float, float, int]:
    nc = await connect(url, name="bench-core")
    hub = TailHub(nc, buffer_max=1 << 20)
    pub = TailPublisher("fra", budget=TailBudget(events_per_s=budget, queue_max=4096))
    await pub.start([url])
    stream = await hub.open("hello")
    deadline = time.perf_counter() + 10
    while not pub.watching("hello"):  # the session announcement reaches the publisher
        if time.perf_counter() > deadline:
            raise SystemExit("the tail session never reached the publisher within 10 s")
        await asyncio.sleep(0.01)
    t0 = time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < SECONDS:
        for _ in range(200):
            pub.offer(_req(i))
            i += 1
        await asyncio.sleep(0)
    await asyncio.sleep(0.5)  # a schedule: let the last events arrive
    elapsed = time.perf_counter() - t0
    got = stream.received
    await hub.close(stream)
    await pub.stop()
    await nc.close()
    return i / elapsed, got / elapsed, pub.statistics().dropped_queue_full


async def main() -> None:
    print(f"pure tap, all kept:        {pure(1e9):10.0f} offers/s")
    print(f"pure tap, 200/s budget:    {pure(200):10.0f} offers/s")
    with tempfile.TemporaryDirectory() as d:
        server = NatsServer(CoreConfig(name="bench", store_dir=Path(d) / "js"), work_dir=Path(d))
        await server.start()
        try:
            for budget in (200.0, 1e9):
                offered, received, dropped = await driven(server.client_url, budget)
                print(
                    f"node -> core, budget {budget:g}/s: offered {offered:.0f}/s, "
                    f"received {received:.0f} events/s, queue-full drops {dropped}"
                )
        finally:
            await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
