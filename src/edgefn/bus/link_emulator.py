"""One emulated network link: an asyncio TCP proxy that adds delay and can be cut and healed.

A :class:`Link` listens on ``listen_host:listen_port`` and forwards each accepted connection to
``target_host:target_port``. Each direction of a connection is a delay line: the reader stamps
every chunk it reads with ``arrival + rtt_ms/2`` and appends it to a FIFO; the writer takes chunks
from the head, waits until their stamp and writes them. So a chunk is delayed by the one-way time
while later chunks are already in flight behind it (throughput is kept, order is kept), unlike a
sleep per read which would serialise the stream. Lowering the RTT never reorders: a chunk waits for
the one ahead of it.

Buffers are bounded: when a direction holds more than ``max_queue_bytes`` the reader stops reading,
so the kernel's TCP window closes and the sender is slowed down (backpressure), instead of the proxy
growing without limit.

``cut()`` resets every open connection (SO_LINGER 0: the peers see a reset at once, as they would
see an unreachable network fail their next write) and makes the link reset every new connection
until ``heal()``. The listening socket stays bound throughout, so the address never changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import deque
from dataclasses import dataclass

__all__ = ["Link", "LinkStatistics"]

_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class LinkStatistics:
    """A snapshot of one link. ``forward`` is listener → target, ``backward`` the reply way."""

    name: str
    listen_address: str
    target_address: str
    rtt_ms: float
    cut: bool
    connections_open: int
    connections_total: int
    connections_refused: int
    connect_failures_total: int
    bytes_forward: int
    bytes_backward: int
    bytes_queued: int


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset, so the peer learns at once and no TIME_WAIT is left behind."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _DelayLine:
    """One direction of one connection: read, stamp, queue, wait, write."""

    def __init__(
        self,
        link: Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        forward: bool,
    ) -> None:
        self._link = link
        self._reader = reader
        self._writer = writer
        self._forward = forward
        self._queue: deque[tuple[float, bytes]] = deque()  # b"" marks end of stream
        self.queued_bytes = 0
        self._has_data = asyncio.Event()
        self._has_space = asyncio.Event()
        self._has_space.set()

    async def pump_in(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self.queued_bytes >= self._link.max_queue_bytes:
                self._has_space.clear()
                await self._has_space.wait()
                continue
            data = await self._reader.read(_CHUNK_BYTES)
            self._queue.append((loop.time() + self._link.one_way_s, data))
            self.queued_bytes += len(data)
            self._has_data.set()
            if not data:
                return

    async def pump_out(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._has_data.clear()
                await self._has_data.wait()
            due, data = self._queue[0]
            while (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            self._queue.popleft()
            if not data:
                if self._writer.can_write_eof():
                    self._writer.write_eof()
                return
            self._writer.write(data)
            await self._writer.drain()
            self.queued_bytes -= len(data)
            self._link._count(len(data), forward=self._forward)
            self._has_space.set()


class _Connection:
    def __init__(
        self,
        link: Link,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self._writers = (client[1], upstream[1])
        self.lines = (
            _DelayLine(link, client[0], upstream[1], forward=True),
            _DelayLine(link, upstream[0], client[1], forward=False),
        )
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        """Pump both directions until both have delivered end-of-stream, or anything fails."""
        ins = [asyncio.create_task(line.pump_in()) for line in self.lines]
        outs = [asyncio.create_task(line.pump_out()) for line in self.lines]
        self._tasks = ins + outs
        pending: set[asyncio.Task[None]] = set(self._tasks)
        clean = False
        try:
            while not all(task.done() for task in outs):
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                # A reset from either peer, or cut(), ends the whole connection, as it ends TCP.
                if any(task.cancelled() or task.exception() is not None for task in done):
                    break
            else:
                clean = not any(t.cancelled() or t.exception() is not None for t in outs)
        finally:
            if clean:
                # Both ends said goodbye: close normally so data still in the kernel's send
                # buffers is delivered (a reset would discard it).
                for writer in self._writers:
                    writer.close()
            else:
                self.abort()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def abort(self) -> None:
        for task in self._tasks:
            task.cancel()
        for writer in self._writers:
            _reset(writer)


class Link:
    """A TCP proxy with per-direction delay, cut and heal. ``await start()`` before use."""

    def __init__(
        self,
        name: str,
        *,
        target_host: str,
        target_port: int,
        rtt_ms: float = 0.0,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        max_queue_bytes: int = 1024 * 1024,
        max_connections: int = 1024,
        connect_timeout_s: float = 5.0,
    ) -> None:
        assert rtt_ms >= 0.0
        assert max_queue_bytes > 0
        assert max_connections > 0
        self.name = name
        self.target_host = target_host
        self.target_port = target_port
        self.max_queue_bytes = max_queue_bytes
        self._rtt_ms = rtt_ms
        self._listen = (listen_host, listen_port)
        self._max_connections = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._cut = False
        self._totals = {"connections": 0, "refused": 0, "connect_failures": 0}
        self._bytes = [0, 0]  # forward, backward

    # -- control ---------------------------------------------------------------------------------

    @property
    def one_way_s(self) -> float:
        return self._rtt_ms / 2000.0

    @property
    def rtt_ms(self) -> float:
        return self._rtt_ms

    @property
    def is_cut(self) -> bool:
        return self._cut

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the link first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def host(self) -> str:
        return self._listen[0]

    def set_rtt(self, rtt_ms: float) -> None:
        """Change the RTT for data read from now on."""
        assert rtt_ms >= 0.0
        self._rtt_ms = rtt_ms

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until :meth:`heal`."""
        self._cut = True
        for conn in list(self._connections):
            conn.abort()

    def heal(self) -> None:
        self._cut = False

    def statistics(self) -> LinkStatistics:
        listen = f"{self.host}:{self.port}" if self._server is not None else "(not started)"
        return LinkStatistics(
            name=self.name,
            listen_address=listen,
            target_address=f"{self.target_host}:{self.target_port}",
            rtt_ms=self._rtt_ms,
            cut=self._cut,
            connections_open=len(self._connections),
            connections_total=self._totals["connections"],
            connections_refused=self._totals["refused"],
            connect_failures_total=self._totals["connect_failures"],
            bytes_forward=self._bytes[0],
            bytes_backward=self._bytes[1],
            bytes_queued=sum(line.queued_bytes for c in self._connections for line in c.lines),
        )

    def _count(self, n: int, *, forward: bool) -> None:
        self._bytes[0 if forward else 1] += n

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        assert self._server is None, f"link {self.name} already started"
        host, port = self._listen
        self._server = await asyncio.start_server(self._on_accept, host, port)

    async def close(self) -> None:
        """Stop listening, reset every connection and wait for their handlers to finish."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.abort()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Link:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut or len(self._connections) >= self._max_connections:
            self._totals["refused"] += 1
            _reset(writer)
            return
        try:
            upstream = await asyncio.wait_for(
                asyncio.open_connection(self.target_host, self.target_port),
                timeout=self._connect_timeout_s,
            )
        except (OSError, TimeoutError):
            # The target is down: the client sees what it would see from the target itself.
            self._totals["connect_failures"] += 1
            _reset(writer)
            return
        if self.is_cut:  # cut() ran while we were connecting.
            self._totals["refused"] += 1
            _reset(writer)
            _reset(upstream[1])
            return
        conn = _Connection(self, (reader, writer), upstream)
        self._connections.add(conn)
        self._totals["connections"] += 1
        try:
            await conn.run()
        finally:
            self._connections.discard(conn)
