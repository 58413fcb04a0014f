"""The region hub's edge-cache tier, and purges on the bus (docs/design/0026-edge-cache.md).

Each region process runs a :class:`RegionCacheTier` beside its bundle cache: the upper tier of
the edge cache, so one origin fetch serves every location of the region. A node whose location
tier misses asks it on ``cache_fetch_subject(region)`` (request/reply, msgpack
:class:`TierRequest` → :class:`TierReply`); the tier answers from its own store or fetches the
origin through its own :class:`~edgefn.edge.outbound.Outbound`, which runs the SSRF policy again
on its own DNS answer (the origin's host only, the function's ``allow_private``, never the hub's
own addresses). Concurrent misses for one URL share one origin fetch. Replies carry
``x-edgefn-cache`` (the tier's status) and ``Cache-Tag``, so the location stores the same tags.
A response too large for one bus message (``TIER_MAX_BODY``) is answered ``too_large``: the
node then fetches it itself and only its location keeps it.

Purges: the control plane publishes a :class:`~edgefn.bus.cache_purge.Purge` on
``CACHE_PURGE`` (only ``control`` may: bus/permissions.py); every node and every region tier
subscribes and drops what it names. A tier or node that was cut off from the bus may have missed
purges, so on reconnecting it empties its store (:func:`purge_subscriber`).

Who may reach what: only nodes of the region may publish the fetch subject (their NATS users),
only ``cache-<region>`` subscribes to it; the function never talks to the tier, its node does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from edgefn.bus.cache_purge import decode_purge
from edgefn.bus.subjects import CACHE_PURGE, cache_fetch_subject
from edgefn.edge.cache_policy import CACHE_HEADER, CacheStore, UpstreamResponse
from edgefn.edge.origin_fetch import REGION_HEADER, CachedFetch, OriginRequest
from edgefn.edge.outbound import MAX_REDIRECTS, Outbound, SubrequestRules
from edgefn.runtime import protocol as p

__all__ = [
    "TIER_MAX_BODY",
    "RegionCacheTier",
    "TierReply",
    "TierRequest",
    "purge_subscriber",
    "region_tier_client",
]

TIER_MAX_BODY = 768 * 1024  # a reply is one bus message (max_payload 1 MiB, headers included)
MAX_CONCURRENT = 64


class TierRequest(msgspec.Struct, frozen=True):
    function: str
    url: str
    method: str
    headers: list[tuple[str, str]]
    timeout_ms: int
    allow_private: list[str] = []


class TierReply(msgspec.Struct, frozen=True):
    status: int = 0
    headers: list[tuple[str, str]] = []
    body: bytes = b""
    error_kind: str = ""  # "too_large": fetch it yourself; others as FetchResult's
    error_message: str = ""


_enc = msgspec.msgpack.Encoder()
_req_dec = msgspec.msgpack.Decoder(TierRequest)
_reply_dec = msgspec.msgpack.Decoder(TierReply)


async def purge_subscriber(
    nc: Client, stores: Callable[[], list[CacheStore]], on_error: Callable[[str], None]
) -> Any:
    """Subscribe ``stores`` to the bus's purges; returns the subscription."""

    async def on_purge(msg: Msg) -> None:
        try:
            purge = decode_purge(msg.data)
        except (ValueError, UnicodeDecodeError) as err:
            on_error(f"ignored a malformed cache purge: {err}")
            return
        for store in stores():
            store.purge(purge)

    return await nc.subscribe(CACHE_PURGE, cb=on_purge)


def region_tier_client(nc: Client, region: str) -> Callable[[OriginRequest], Any]:
    """A node's client of its region's tier (``OriginFetch(region=...)``)."""
    subject = cache_fetch_subject(region)

    async def ask(req: OriginRequest) -> p.FetchResult | None:
        payload = _enc.encode(
            TierRequest(req.function, req.url, req.method, list(req.headers), req.timeout_ms,
                        list(req.allow_private))
        )  # fmt: skip
        try:
            msg = await nc.request(subject, payload, timeout=req.timeout_ms / 1000 + 0.5)
            reply = _reply_dec.decode(msg.data)
        except NoRespondersError:
            return None  # no tier in this region (or it is restarting): fetch from the node
        except NatsTimeoutError:
            return p.FetchResult(
                0, 0, 0, [], b"", "timeout", f"{req.url} did not answer within {req.timeout_ms} ms"
            )
        except msgspec.DecodeError:
            return None
        if reply.error_kind == "too_large":
            return None
        return p.FetchResult(
            0, 0, reply.status, reply.headers, reply.body, reply.error_kind, reply.error_message
        )

    return ask


class RegionCacheTier:
    """A region's upper cache tier, answering its nodes' location-tier misses."""

    def __init__(
        self, nc: Client, region: str, outbound: Outbound, *, store: CacheStore | None = None
    ) -> None:
        self.nc = nc
        self.region = region
        self.outbound = outbound
        self.cache = CachedFetch(store or CacheStore(max_bytes=256 * 1024 * 1024))
        self.origin_fetches = 0
        self._subs: list[Any] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = 0
        self.errors: list[str] = []

    async def start(self) -> None:
        self._subs.append(
            await self.nc.subscribe(
                cache_fetch_subject(self.region), queue="edgefn-cache-tier", cb=self._on_request
            )
        )
        self._subs.append(await purge_subscriber(self.nc, lambda: [self.cache.store], self._note))

    def on_reconnect(self) -> None:
        """Back on the bus after a cut: purges may have been missed, start cold."""
        self.cache.store.clear()

    async def stop(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _note(self, error: str) -> None:
        self.errors = [*self.errors[-9:], error]

    async def _on_request(self, msg: Msg) -> None:
        if len(self._tasks) >= MAX_CONCURRENT:
            await self._reply(msg, TierReply(error_kind="error", error_message="tier busy"))
            return
        task = asyncio.ensure_future(self._serve(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reply(self, msg: Msg, reply: TierReply) -> None:
        if msg.reply:
            await self.nc.publish(msg.reply, _enc.encode(reply))

    async def _serve(self, msg: Msg) -> None:
        try:
            req = _req_dec.decode(msg.data)
        except msgspec.DecodeError as err:
            await self._reply(
                msg, TierReply(error_kind="error", error_message=f"bad request: {err}")
            )
            return
        hostport = req.url.partition("://")[2].partition("/")[0].partition("?")[0]
        rules = SubrequestRules(MAX_REDIRECTS + 1, (hostport,), tuple(req.allow_private))
        failure: list[TierReply] = []

        async def upstream(headers: list[tuple[str, str]]) -> UpstreamResponse | None:
            self._ids += 1
            rid = f"tier-{self.region}-{self._ids}"
            call = p.FetchCall(0, 0, req.url, req.method, headers, b"", req.timeout_ms)
            self.origin_fetches += 1
            try:
                res = await self.outbound.fetch(rid, call, rules)
            finally:
                self.outbound.forget(rid)
            if res.error_kind:
                failure.append(
                    TierReply(error_kind=res.error_kind, error_message=res.error_message)
                )
                return None
            return UpstreamResponse(res.status, res.headers, res.body)

        hit = await self.cache.fetch(req.function, req.method, req.url, req.headers, upstream)
        if hit is None:
            await self._reply(msg, failure[0] if failure else TierReply(error_kind="error"))
            return
        if len(hit.body) > TIER_MAX_BODY:
            await self._reply(msg, TierReply(error_kind="too_large"))
            return
        headers = [(k, v) for k, v in hit.headers if k != CACHE_HEADER]
        headers.append((REGION_HEADER, hit.cache))
        await self._reply(msg, TierReply(hit.status, headers, hit.body))
