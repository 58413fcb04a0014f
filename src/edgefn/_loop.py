"""Run a coroutine on the fastest available event loop (uvloop where installed)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
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
