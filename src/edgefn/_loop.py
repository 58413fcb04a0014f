"""Run a coroutine on the fastest available event loop (uvloop where installed); stop tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

try:
    import uvloop
except ImportError:  # uvloop is optional: it is not installed on Windows
    _NEW_LOOP: Callable[[], asyncio.AbstractEventLoop] | None = None
else:
    _NEW_LOOP = uvloop.new_event_loop

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    return _NEW_LOOP


def run(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]], *, timeout_s: float = 10.0
) -> list[asyncio.Task[Any]]:
    """Cancel every task and wait up to ``timeout_s`` for all of them to finish (a cancellation
    or an error of theirs is not raised here). Returns the tasks still running then, cancelled
    once more: a task that swallows its cancellation (a library's loop catching it) must not hang
    the shutdown of everything else."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    if not pending:
        return []
    done, stuck = await asyncio.wait(pending, timeout=timeout_s)
    for task in done:
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" warning
    for task in stuck:
        task.cancel()
    return list(stuck)
