"""Many emulated links in one process, driven by a :class:`LinkTable`, with an HTTP control API.

:class:`LinkEmulatorGroup` owns a pure :class:`LinkTable` and one :class:`Link` proxy per table
entry. Operations are events handed to the table; the instructions it returns (cut, heal, set RTT)
are carried out on the proxies, so the table is the single truth and the proxies follow it.

The control API, for ``edgefn net partition|heal|delay`` against a running planet, is served by
uvicorn on a socket bound here (port 0 allowed) on 127.0.0.1. Started with the planet secret, it
answers only requests signed with it (``x-edgefn-internal-auth``, :mod:`edgefn._internal_auth`):
401 without a signature, 403 with a bad, stale or replayed one. It speaks JSON:

    GET  /links                                  -> {"links": [...]}   (table state + statistics)
    POST /partition {"endpoints": ["hub-eu"]}    -> {"cut": [...], "separating": [...]}
    POST /heal                                   -> {"healed": [...]}
    POST /delay {"a": "core", "b": "hub-eu", "rtt_ms": 80} -> {"link": "...", "rtt_ms": 80}

Bad requests answer 400 ``{"error": "bad_request", "detail": ...}``; unknown endpoints or links
answer 404 ``{"error": "unknown_endpoint", "detail": ..., "hint": ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from edgefn._internal_auth import InternalGuard
from edgefn.bus.errors import LinkTableError
from edgefn.bus.link_emulator import Link, LinkStatistics
from edgefn.bus.links import (
    CutLink,
    Heal,
    HealLink,
    LinkEvent,
    LinkInstruction,
    LinkTable,
    Partition,
    SetDelay,
)

__all__ = ["LinkEmulatorGroup", "LinkGroupStatistics"]

_MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class LinkGroupStatistics:
    links: tuple[LinkStatistics, ...]
    links_cut: int
    partitions_total: int
    heals_total: int
    control_url: str | None


class LinkEmulatorGroup:
    """Runs many :class:`Link` proxies and applies :class:`LinkTable` decisions to them."""

    def __init__(self, *, max_queue_bytes: int = 1024 * 1024) -> None:
        self.table = LinkTable()
        self._links: dict[str, Link] = {}
        self._max_queue_bytes = max_queue_bytes
        self._server: uvicorn.Server | None = None
        self._server_task: asyncio.Task[None] | None = None
        self._control_url: str | None = None

    # -- links -----------------------------------------------------------------------------------

    async def add_link(
        self,
        name: str,
        a: str,
        b: str,
        *,
        target_host: str,
        target_port: int,
        rtt_ms: float,
        listen_port: int = 0,
    ) -> Link:
        """Add the link ``a``↔``b`` (``a`` connects, ``b`` listens at the target); start it."""
        self.table.add(name, a, b, rtt_ms=rtt_ms)
        link = Link(
            name,
            target_host=target_host,
            target_port=target_port,
            rtt_ms=rtt_ms,
            listen_port=listen_port,
            max_queue_bytes=self._max_queue_bytes,
        )
        await link.start()
        self._links[name] = link
        return link

    def link(self, name: str) -> Link:
        self.table.link(name)  # Raises LinkTableError naming the known links.
        return self._links[name]

    def partition(self, endpoints: Iterable[str]) -> tuple[list[str], list[str]]:
        """Cut every link leaving ``endpoints``; return (newly cut, all separating) link names."""
        chosen = frozenset(endpoints)
        cut = self._run(Partition(chosen))
        separating = [s.name for s in self.table.links() if (s.a in chosen) != (s.b in chosen)]
        return cut, separating

    def heal(self) -> list[str]:
        """Heal every cut link; return the names of the links healed."""
        return self._run(Heal())

    def delay(self, a: str, b: str, rtt_ms: float) -> str:
        """Set the RTT of the link joining ``a`` and ``b``; return its name."""
        self._run(SetDelay(a=a, b=b, rtt_ms=rtt_ms))
        return self.table.link_between(a, b).name

    def _run(self, event: LinkEvent) -> list[str]:
        instructions = self.table.handle(event)
        self.table.check_invariants()
        for instruction in instructions:
            self._apply(instruction)
        return [i.name for i in instructions]

    def _apply(self, instruction: LinkInstruction) -> None:
        link = self._links[instruction.name]
        if isinstance(instruction, CutLink):
            link.cut()
        elif isinstance(instruction, HealLink):
            link.heal()
        else:
            link.set_rtt(instruction.rtt_ms)

    def statistics(self) -> LinkGroupStatistics:
        table = self.table.statistics()
        return LinkGroupStatistics(
            links=tuple(self._links[s.name].statistics() for s in self.table.links()),
            links_cut=table.links_cut,
            partitions_total=table.partitions_total,
            heals_total=table.heals_total,
            control_url=self._control_url,
        )

    def describe(self) -> list[dict[str, Any]]:
        """The table joined with each proxy's statistics, as JSON-ready dicts."""
        out = []
        for state in self.table.links():
            row = asdict(self._links[state.name].statistics())
            row.update(a=state.a, b=state.b)
            out.append(row)
        return out

    # -- control API -----------------------------------------------------------------------------

    @property
    def control_url(self) -> str:
        assert self._control_url is not None, "start_control() first"
        return self._control_url

    async def start_control(
        self, *, host: str = "127.0.0.1", port: int = 0, secret: bytes | None = None
    ) -> str:
        """Serve the JSON control API (signed requests only when ``secret``); return its URL."""
        assert self._server is None, "control API already started"
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        app: Any = self._app() if secret is None else InternalGuard(self._app(), secret)
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", ws="none", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._server_task = asyncio.create_task(self._server.serve(sockets=[sock]))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while not self._server.started:
            if self._server_task.done() or loop.time() > deadline:
                await self._server_task  # Raises the server's own error if it died.
                raise LinkTableError("link control API did not start", hint="see the log above")
            await asyncio.sleep(0.01)
        self._control_url = f"http://{host}:{sock.getsockname()[1]}"
        return self._control_url

    async def close(self) -> None:
        """Stop the control API and every link."""
        if self._server is not None and self._server_task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._server_task
        await asyncio.gather(*(link.close() for link in self._links.values()))

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/links", self._get_links, methods=["GET"]),
                Route("/partition", self._post_partition, methods=["POST"]),
                Route("/heal", self._post_heal, methods=["POST"]),
                Route("/delay", self._post_delay, methods=["POST"]),
            ]
        )

    async def _get_links(self, _request: Request) -> JSONResponse:
        return JSONResponse({"links": self.describe()})

    async def _post_partition(self, request: Request) -> JSONResponse:
        body = await _json_body(request)
        endpoints = body.get("endpoints") if isinstance(body, dict) else None
        if not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints):
            return _bad('body must be {"endpoints": ["name", ...]}')
        try:
            cut, separating = self.partition(endpoints)
        except LinkTableError as err:
            return _error(err)
        return JSONResponse({"cut": cut, "separating": separating})

    async def _post_heal(self, _request: Request) -> JSONResponse:
        return JSONResponse({"healed": self.heal()})

    async def _post_delay(self, request: Request) -> JSONResponse:
        body = await _json_body(request)
        if not isinstance(body, dict):
            return _bad('body must be {"a": "...", "b": "...", "rtt_ms": number}')
        a, b, rtt = body.get("a"), body.get("b"), body.get("rtt_ms")
        if not isinstance(a, str) or not isinstance(b, str):
            return _bad('"a" and "b" must be endpoint names')
        if isinstance(rtt, bool) or not isinstance(rtt, int | float):
            return _bad('"rtt_ms" must be a number of milliseconds')
        try:
            name = self.delay(a, b, float(rtt))
        except LinkTableError as err:
            return _error(err)
        return JSONResponse({"link": name, "rtt_ms": float(rtt)})


async def _json_body(request: Request) -> object:
    raw = await request.body()
    if len(raw) > _MAX_BODY_BYTES:
        return None
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return None


def _bad(detail: str) -> JSONResponse:
    return JSONResponse({"error": "bad_request", "detail": detail}, status_code=400)


def _error(err: LinkTableError) -> JSONResponse:
    unknown = "unknown" in err.message or "no link joins" in err.message
    return JSONResponse(
        {
            "error": "unknown_endpoint" if unknown else "bad_request",
            "detail": err.message,
            "hint": err.hint,
        },
        status_code=404 if unknown else 400,
    )
