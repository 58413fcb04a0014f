"""The node's side of a worker's socket writes the frames of one event-loop turn in one write.

A burst of requests dispatched to one worker in the same turn costs one syscall and one wake-up
of the worker instead of one each (design 0017); order is kept, and a frame queued right before
``close()`` (``Shutdown``) still reaches the worker.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from edgefn.runtime import protocol as p
from edgefn.runtime.sandbox import Host, WorkerProcess


async def _never(*_args: Any) -> Any:
    raise AssertionError("no worker call is expected here")


@pytest.fixture
def stand_in() -> Iterator[int]:
    """A real child's pid for the handle (its death path signals that pid), stopped after."""
    child = subprocess.Popen(["sleep", "60"])
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait(timeout=10)


async def _worker_and_peer(pid: int) -> tuple[WorkerProcess, socket.socket, list[int]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    worker = WorkerProcess(pid, ours, Host(_never, _never, lambda _r, _m: None))
    await worker.start(lambda w: None)
    assert worker._transport is not None
    raw = worker._transport._transport  # the socket's own transport, under the coalescing one
    writes: list[int] = []
    real = raw.write

    def counting(data: Any) -> None:
        writes.append(len(data))
        real(data)

    raw.write = counting  # type: ignore[method-assign]
    theirs.setblocking(False)
    return worker, theirs, writes


async def _read_frames(sock: socket.socket, n: int) -> list[p.Message]:
    loop = asyncio.get_running_loop()
    buf = p.FrameBuffer()
    got: list[p.Message] = []
    async with asyncio.timeout(5):
        while len(got) < n:
            data = await loop.sock_recv(sock, 65536)
            assert data, "the peer closed before every frame arrived"
            got.extend(buf.feed(data))
    return got


def test_frames_of_one_turn_go_out_in_one_write_in_order(stand_in: int) -> None:
    async def main() -> None:
        worker, peer, writes = await _worker_and_peer(stand_in)
        for i in range(3):
            worker.send(p.Cancel(i + 1))
        assert writes == []  # queued, not yet written
        got = await _read_frames(peer, 3)
        assert got == [p.Cancel(1), p.Cancel(2), p.Cancel(3)]
        assert len(writes) == 1
        worker.send(p.Cancel(4))
        await asyncio.sleep(0)  # one loop turn, not a wait: the flush queued before us runs first
        assert len(writes) == 2  # a later turn: its own write
        worker.close()
        peer.close()

    asyncio.run(main())


def test_close_flushes_what_was_queued_before_it(stand_in: int) -> None:
    async def main() -> None:
        worker, peer, _ = await _worker_and_peer(stand_in)
        worker.send(p.Shutdown())
        worker.close()
        got = await _read_frames(peer, 1)
        assert isinstance(got[0], p.Shutdown)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(5):
            assert await loop.sock_recv(peer, 65536) == b""  # then the end of the stream
        worker.send(p.Cancel(9))  # after close: dropped, not an error
        peer.close()

    asyncio.run(main())
