"""Durable objects between nodes: a request for an object goes to its home over the bus.

Request/reply on ``durable_subject(<home location>)`` (msgpack :class:`DurableRequest` →
:class:`DurableReply`), on the node agent's connection. Only nodes publish these subjects and
each node subscribes only to its own (bus/permissions.py), so a request reaches the named home or
nobody. No responder means the home is gone (dead, or cut off from its hub): the caller waits for
the object's lease to end and claims it (edgefn.edge.durable). A reply that does not come in
time is a timeout for the caller, not a reason to run the request elsewhere: it may still run at
the home. A reply is one bus message, so an object's response crossing locations is at most
``MAX_REPLY_BODY``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from edgefn.bus.errors import BusError
from edgefn.bus.subjects import durable_subject
from edgefn.edge.durable import DurableObjects, DurableReply, DurableRequest, Remote

__all__ = ["MAX_REPLY_BODY", "durable_remote", "serve_durable"]

MAX_REPLY_BODY = 768 * 1024
MAX_CONCURRENT = 256
_enc = msgspec.msgpack.Encoder()
_req = msgspec.msgpack.Decoder(DurableRequest)
_reply = msgspec.msgpack.Decoder(DurableReply)


def durable_remote(nc: Client) -> Remote:
    async def ask(location: str, req: DurableRequest) -> DurableReply | None:
        try:
            subject = durable_subject(location)
        except BusError:
            return DurableReply(error_kind="error", error_message=f"bad location {location!r}")
        try:
            msg = await nc.request(subject, _enc.encode(req), timeout=req.timeout_ms / 1000 + 2)
        except NoRespondersError:
            return None
        except NatsTimeoutError:
            return DurableReply(
                error_kind="timeout", error_message=f"the object's home {location} did not answer"
            )
        try:
            return _reply.decode(msg.data)
        except msgspec.DecodeError as err:
            return DurableReply(
                error_kind="error", error_message=f"bad reply from {location}: {err}"
            )

    return ask


async def serve_durable(nc: Client, location: str, durable: DurableObjects) -> Any:
    """Answer other nodes' requests for objects this node is (or becomes) the home of."""
    tasks: set[asyncio.Task[None]] = set()

    async def serve(msg: Msg) -> None:
        try:
            req = _req.decode(msg.data)
        except msgspec.DecodeError as err:
            reply = DurableReply(error_kind="error", error_message=f"bad request: {err}")
        else:
            reply = await durable.route(req)
            if len(reply.body) > MAX_REPLY_BODY:
                reply = DurableReply(
                    error_kind="too_large",
                    error_message=f"the object's response crosses locations only up to "
                    f"{MAX_REPLY_BODY} bytes",
                )
        if msg.reply:
            await nc.publish(msg.reply, _enc.encode(reply))

    async def on_request(msg: Msg) -> None:
        if len(tasks) >= MAX_CONCURRENT:
            busy = DurableReply(error_kind="error", error_message=f"{location} is overloaded")
            if msg.reply:
                await nc.publish(msg.reply, _enc.encode(busy))
            return
        task = asyncio.ensure_future(serve(msg))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return await nc.subscribe(durable_subject(location), cb=on_request)
