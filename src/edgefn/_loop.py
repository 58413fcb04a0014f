"""Run a coroutine on the fastest available event loop (uvloop where installed); stop tasks."""

from __future__ import annotations

import asyncio
import contextlib
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


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel every task, then wait for each to finish (its cancellation is not an error)."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError):
            await task
