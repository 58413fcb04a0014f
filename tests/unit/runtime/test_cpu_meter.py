"""The worker's per-invocation CPU meter: each task is charged the CPU time of its own steps,
not its neighbours' (many invocations share one worker's loop)."""

from __future__ import annotations

import asyncio
import time

from edgefn.runtime.worker import CpuMeter


def _burn(ms: float) -> None:
    end = time.thread_time() + ms / 1000
    while time.thread_time() < end:
        pass


async def _work(ms_per_step: float, steps: int, seen: list[int], meter: CpuMeter) -> None:
    for _ in range(steps):
        _burn(ms_per_step)
        await asyncio.sleep(0)  # let the other invocation run a step
    seen.append(meter.used_us())  # includes the running step, read before the task ends


def test_each_invocation_is_charged_its_own_steps() -> None:
    async def main() -> tuple[list[int], list[int], CpuMeter, CpuMeter]:
        heavy_seen: list[int] = []
        light_seen: list[int] = []
        heavy, light = CpuMeter(), CpuMeter()
        loop = asyncio.get_running_loop()
        t1 = loop.create_task(heavy.run(_work(8.0, 5, heavy_seen, heavy)))
        t2 = loop.create_task(light.run(_work(1.0, 5, light_seen, light)))
        await asyncio.gather(t1, t2)
        return heavy_seen, light_seen, heavy, light

    heavy_seen, light_seen, heavy, light = asyncio.run(main())
    # 40 ms and 5 ms of burning, interleaved step by step: each meter saw its own (plus a little
    # loop overhead), far from the other's.
    assert 40_000 <= heavy.used_us() < 60_000, heavy.used_us()
    assert 5_000 <= light.used_us() < 15_000, light.used_us()
    assert heavy_seen[0] <= heavy.used_us()
    assert light_seen[0] <= light.used_us()


def test_exceptions_and_cancellation_pass_through() -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    async def main() -> tuple[BaseException | None, bool]:
        loop = asyncio.get_running_loop()
        m1 = CpuMeter()
        t1 = loop.create_task(m1.run(fails()))
        err = None
        try:
            await t1
        except ValueError as e:
            err = e
        m2 = CpuMeter()
        t2 = loop.create_task(m2.run(asyncio.sleep(10)))
        await asyncio.sleep(0)
        t2.cancel()
        try:
            await t2
        except asyncio.CancelledError:
            pass
        return err, t2.cancelled()

    err, cancelled = asyncio.run(main())
    assert isinstance(err, ValueError)
    assert str(err) == "boom"
    assert cancelled
