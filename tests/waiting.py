"""The one way tests wait for something: poll a condition until it holds or a deadline passes.

``wait_for`` blocks (threads, subprocesses, planets driven through the CLI); ``until`` is the same
for async tests and does not block the event loop, and its condition may be sync or async. Both
return the condition's first truthy value, and on timeout fail with what was awaited and the last
value seen. Never ``sleep`` for a condition: wait for it.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["until", "wait_for"]


def _timed_out(what: str, timeout_s: float, last: Any) -> AssertionError:
    return AssertionError(f"timed out after {timeout_s:g}s waiting for {what} (last: {last!r})")


def wait_for(
    condition: Callable[[], Any],
    *,
    timeout_s: float,
    what: str = "condition",
    interval_s: float = 0.05,
) -> Any:
    """Call ``condition`` every ``interval_s`` until it returns a truthy value (returned)."""
    deadline = time.monotonic() + timeout_s
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout_s, last)
        time.sleep(interval_s)


async def until(
    condition: Callable[[], Any] | Callable[[], Awaitable[Any]],
    *,
    timeout_s: float,
    what: str = "condition",
    interval_s: float = 0.02,
) -> Any:
    """Await ``condition`` (sync or async) every ``interval_s`` until truthy (returned)."""
    deadline = time.monotonic() + timeout_s
    while True:
        last = condition()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout_s, last)
        await asyncio.sleep(interval_s)
