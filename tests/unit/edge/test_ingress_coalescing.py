"""Writes to a connection made in one event-loop turn go out as one write (`CoalescingTransport`).

uvicorn writes a response's head and body separately; joined, a small answer is one ``send``
syscall instead of two (design 0017). What waits is bounded (``FLUSH_BYTES`` goes out at
once), order is kept, ``close()`` writes what waits first and ``abort()`` drops it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from edgefn._loop import FLUSH_BYTES, CoalescingTransport


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


async def _turn() -> None:
    """Let one turn of the loop pass (deterministic, not a wait): the queued flush runs."""
    await asyncio.sleep(0)


def test_one_turn_is_one_write_in_order() -> None:
    async def main() -> None:
        raw = _Transport()
        t = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.write(b"")
        t.write(b"hello")
        assert raw.writes == []
        assert t.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\n\r\nhello")
        await _turn()
        assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\nhello"]
        t.writelines([b"a", b"b"])
        await _turn()
        assert raw.writes[1:] == [b"ab"]
        assert t.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest is the transport's

    asyncio.run(main())


def test_a_full_buffer_goes_out_at_once() -> None:
    async def main() -> None:
        raw = _Transport()
        t = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"x" * 10)
        t.write(b"y" * FLUSH_BYTES)
        assert raw.writes == [b"x" * 10 + b"y" * FLUSH_BYTES]  # without waiting for the turn
        await _turn()
        assert len(raw.writes) == 1

    asyncio.run(main())


def test_close_writes_first_and_abort_drops() -> None:
    async def main() -> None:
        raw = _Transport()
        t = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"last answer")
        t.close()
        assert raw.writes == [b"last answer"]
        assert t.is_closing()
        await _turn()  # the scheduled flush finds nothing left and writes nothing
        assert raw.writes == [b"last answer"]
        raw2 = _Transport()
        t2 = CoalescingTransport(raw2, asyncio.get_running_loop())  # type: ignore[arg-type]
        t2.write(b"dropped")
        t2.abort()
        await _turn()
        assert raw2.writes == []
        assert raw2.aborted

    asyncio.run(main())
