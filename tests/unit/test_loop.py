"""``cancel_and_wait``: every task is stopped, and one that swallows its cancellation cannot hang
the shutdown."""

from __future__ import annotations

import asyncio

from edgefn._loop import cancel_and_wait, run


def test_tasks_are_cancelled_and_a_stubborn_one_is_returned_not_waited_for() -> None:
    async def main() -> tuple[list[str], bool, bool]:
        async def polite() -> None:
            await asyncio.sleep(60)

        async def failing() -> None:
            raise RuntimeError("boom")

        async def stubborn() -> None:
            for _ in range(2):  # swallows the first cancellation, as a library loop might
                try:
                    await asyncio.sleep(60)
                except asyncio.CancelledError:
                    continue

        tasks = [asyncio.create_task(f(), name=f.__name__) for f in (polite, failing, stubborn)]
        await asyncio.sleep(0)
        stuck = await cancel_and_wait(tasks, timeout_s=0.2)
        await asyncio.sleep(0)
        return [t.get_name() for t in stuck], tasks[0].cancelled(), tasks[2].done()

    stuck, polite_cancelled, stubborn_done = run(main())
    assert stuck == ["stubborn"]
    assert polite_cancelled
    assert stubborn_done  # the second cancellation ended it


def test_no_tasks_is_nothing_to_do() -> None:
    assert run(cancel_and_wait([])) == []
