"""Run a coroutine on the fastest available event loop (uvloop where installed); stop tasks;
a transport that joins the writes of one loop turn."""

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


FLUSH_BYTES = 64 * 1024


class CoalescingTransport:
    """A transport whose writes of one event-loop turn go out as one write (one syscall, one
    wake-up of the reader). A write that fills ``FLUSH_BYTES`` goes out at once, so what waits
    is bounded; ``close()`` writes what waits first and ``abort()`` drops it. Used by the ingress
    (uvicorn writes a response's head and body apart) and by the node's side of a worker's
    socket (several requests dispatched to one worker in a turn)."""

    __slots__ = ("_loop", "_out", "_size", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._out: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._out.append(data)
        self._size += len(data)
        if self._size >= FLUSH_BYTES:
            self._flush()
        elif len(self._out) == 1:
            self._loop.call_soon(self._flush)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        out = self._out
        if not out:
            return
        self._out, self._size = [], 0
        if not self._transport.is_closing():
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._out, self._size = [], 0
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._size

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def __getattr__(self, name: str) -> Any:  # get_extra_info, pause_reading, ...
        return getattr(self._transport, name)
