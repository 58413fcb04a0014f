"""The link emulator against real TCP peers on loopback: delay, order, backpressure, cut, heal.

Every test runs on the standard event loop, and again on uvloop (``test_on_uvloop``: the planet's
supervisor runs the links on it, and its transports are not ``asyncio.Transport`` subclasses).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from tests.waiting import until

from edgefn.bus import Link

pytestmark = pytest.mark.integration

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_round_trip_takes_at_least_the_configured_rtt() -> None:
    """Each direction adds rtt/2: a ping-pong through the link takes >= rtt, and not much more."""
    async with (
        serving(_echo) as port,
        Link("l", target_host="127.0.0.1", target_port=port, rtt_ms=120) as link,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        loop = asyncio.get_running_loop()
        for _ in range(3):
            start = loop.time()
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            elapsed_ms = (loop.time() - start) * 1000
            # uvloop's clock counts whole milliseconds, cached per loop iteration (CI measured
            # 119.99999999534 ms: 120 ms in float arithmetic): allow it one millisecond.
            assert elapsed_ms >= 120 - 1
            assert elapsed_ms < 120 + 1500  # Generous: the machine is shared.
        link.set_rtt(0)
        start = loop.time()
        writer.write(b"pong")
        assert await reader.readexactly(4) == b"pong"
        assert (loop.time() - start) * 1000 < 120
        writer.close()
        stats = link.statistics()
        assert (stats.bytes_forward, stats.bytes_backward) == (16, 16)
        assert (stats.connections_total, stats.rtt_ms) == (1, 0)


async def test_chunks_are_pipelined_not_serialised() -> None:
    """20 paced writes through a 400 ms link arrive in about 400 ms plus pacing, not 20 x 200 ms."""
    async with (
        serving(_echo) as port,
        Link("l", target_host="127.0.0.1", target_port=port, rtt_ms=400) as link,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(20):
            writer.write(i.to_bytes(4, "big") * 256)
            await writer.drain()
            await asyncio.sleep(0.02)  # Pacing, so each write is its own chunk in the link.
        data = await reader.readexactly(20 * 1024)
        elapsed = loop.time() - start
        assert data == b"".join(i.to_bytes(4, "big") * 256 for i in range(20))
        assert elapsed >= 0.4
        assert elapsed < 3.0  # A per-chunk sleep would need >= 20 x 0.2 s = 4 s.
        writer.close()


async def test_order_is_kept_under_load_and_rtt_changes() -> None:
    """4 MiB of numbered data crosses intact while the RTT is changed up and down."""
    payload = b"".join(i.to_bytes(4, "big") for i in range(1 << 20))
    async with (
        serving(_echo) as port,
        Link(
            "l", target_host="127.0.0.1", target_port=port, rtt_ms=30, max_queue_bytes=256 * 1024
        ) as link,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)

        async def send() -> None:
            for offset in range(0, len(payload), 100_000):
                writer.write(payload[offset : offset + 100_000])
                await writer.drain()
                link.set_rtt(30 if (offset // 100_000) % 2 else 2)

        sender = asyncio.create_task(send())
        got = await asyncio.wait_for(reader.readexactly(len(payload)), timeout=60)
        await sender
        assert got == payload
        writer.close()


async def test_queue_is_bounded_and_the_sender_is_slowed() -> None:
    """A target that does not read: the link holds <= max_queue_bytes and the sender blocks."""
    release = asyncio.Event()
    received = bytearray()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        while data := await reader.read(65536):
            received.extend(data)
        writer.close()

    limit = 128 * 1024
    blob = os.urandom(24 * 1024 * 1024)  # Far more than kernel buffers plus the queue.
    async with (
        serving(slow) as port,
        Link(
            "l", target_host="127.0.0.1", target_port=port, rtt_ms=2, max_queue_bytes=limit
        ) as link,
    ):
        _reader, writer = await asyncio.open_connection("127.0.0.1", link.port)

        async def send() -> None:
            writer.write(blob)
            await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        await until(lambda: link.statistics().bytes_queued >= limit, timeout_s=10)
        for _ in range(20):
            assert link.statistics().bytes_queued <= limit + 65536
            await asyncio.sleep(0.01)
        assert not sender.done()
        release.set()
        await asyncio.wait_for(sender, timeout=60)
        await until(lambda: len(received) == len(blob), timeout_s=60)
        assert bytes(received) == blob
        writer.close()


async def _closed_by_peer(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), timeout=5) == b""
    except ConnectionResetError:
        return True


async def test_cut_resets_connections_and_refuses_new_ones_until_heal() -> None:
    async with (
        serving(_echo) as port,
        Link("l", target_host="127.0.0.1", target_port=port, rtt_ms=10) as link,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        writer.write(b"x")
        assert await reader.readexactly(1) == b"x"
        link.cut()
        assert await _closed_by_peer(reader)
        await until(lambda: link.statistics().connections_open == 0, timeout_s=10)

        reader2, _writer2 = await asyncio.open_connection("127.0.0.1", link.port)
        assert await _closed_by_peer(reader2)
        stats = link.statistics()
        assert stats.cut
        assert stats.connections_refused == 1

        link.heal()
        reader3, writer3 = await asyncio.open_connection("127.0.0.1", link.port)
        writer3.write(b"back")
        assert await reader3.readexactly(4) == b"back"
        assert link.statistics().connections_total == 2
        writer3.close()


async def test_a_dead_target_resets_the_client() -> None:
    async with serving(_echo) as port:
        pass  # The server is closed again: nothing listens on ``port`` now.
    async with Link("l", target_host="127.0.0.1", target_port=port, rtt_ms=0) as link:
        reader, _writer = await asyncio.open_connection("127.0.0.1", link.port)
        assert await _closed_by_peer(reader)
        assert link.statistics().connect_failures_total == 1


async def test_a_graceful_close_delivers_everything_still_buffered() -> None:
    """Client half-closes, server answers 1 MiB and closes: the client still reads all of it.

    The client reads only after the link has written the whole answer, so most of it sits in the
    kernel's buffers when the link closes; a reset (instead of a close) would throw it away.
    """
    answer = os.urandom(1024 * 1024)

    async def answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.write(answer)
        await writer.drain()
        writer.close()

    async with (
        serving(answer_then_close) as port,
        Link("l", target_host="127.0.0.1", target_port=port, rtt_ms=10) as link,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        writer.write(b"request")
        writer.write_eof()
        await until(lambda: link.statistics().bytes_backward == len(answer), timeout_s=10)
        await until(lambda: link.statistics().connections_open == 0, timeout_s=10)
        got = await asyncio.wait_for(reader.read(), timeout=30)
        assert len(got) == len(answer)
        assert got == answer
        writer.close()


@pytest.mark.parametrize(
    "test",
    [
        test_round_trip_takes_at_least_the_configured_rtt,
        test_chunks_are_pipelined_not_serialised,
        test_order_is_kept_under_load_and_rtt_changes,
        test_queue_is_bounded_and_the_sender_is_slowed,
        test_cut_resets_connections_and_refuses_new_ones_until_heal,
        test_a_dead_target_resets_the_client,
        test_a_graceful_close_delivers_everything_still_buffered,
    ],
    ids=lambda t: t.__name__.removeprefix("test_"),
)
def test_on_uvloop(test: Callable[[], Awaitable[None]]) -> None:
    import uvloop  # lazy: only this test picks the loop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(test(), timeout=120))
