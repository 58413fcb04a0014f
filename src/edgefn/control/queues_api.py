"""``/v1/queues``: what waits in a queue, sending to it, its dead letters (``edgefn queues``).

    GET  /v1/queues                        read      the caller's queues (admin: every queue),
                                                     50 a page: ?after=<the last page's "next">
    GET  /v1/queues/{queue}/messages       read      ?limit=20: unfinished messages, oldest first
    POST /v1/queues/{queue}/messages       deploy:*  {"messages": [{"body", "key"?,
                                                     "idempotency_key"?, "delay_s"?}, ...]}
    GET  /v1/queues/{queue}/dlq            read      ?limit=20: the dead-letter queue's messages
    POST /v1/queues/{queue}/dlq/replay     deploy:*  {"limit"?: n}: move them back to the queue

Tenancy: a queue belongs to the account whose upload first named it (edgefn.control.registry);
every route refuses (403 naming the owner) a queue of another account, and an unknown queue is
404, so nothing here reads or writes a queue its caller's manifests could not name. Messages are
read and written in the format the nodes use (edgefn.bus.queue_format): a send here is a send
from a function, with the same checks and ids (an ``idempotency_key`` dedupes against the
functions' sends too). Replaying a dead letter publishes it to the queue again with its id, body
and key (``Nats-Msg-Id`` ``replay.<dlq>.<seq>``: a repeated replay is dropped) and then deletes it
from the dead-letter queue. Sends and replays are audited.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final

import msgspec
import nats.errors
import nats.js.errors
from nats.js.api import ConsumerConfig, DeliverPolicy
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from edgefn.bus.jetstream import direct_get_batch, jetstream
from edgefn.bus.queue_format import (
    PARTITIONS,
    PartitionRecord,
    QueueMessage,
    decode_message,
    decode_record,
    encode_message,
    outgoing,
    partition_of,
    record_key,
    stream_subject,
    unfinished,
)
from edgefn.bus.subjects import KV_HOME_BUCKET, QUEUE_STREAM
from edgefn.control.auth import ADMIN, Principal
from edgefn.control.errors import ControlError, Forbidden, NotFound, TooLarge
from edgefn.control.registry import QueueRecord
from edgefn.control.service import ControlService

__all__ = ["QueueAdmin", "queue_endpoints"]

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
LIMIT_MAX: Final = 100
LIST_PAGE: Final = 50
SEND_MAX: Final = 100
BODY_MAX: Final = 16 * 1024 * 1024  # 100 messages of at most 128 KiB each, as JSON
_TIMEOUT_S: Final = 3.0
_BUS_ERRORS: Final = (nats.errors.Error, nats.js.errors.Error, OSError, asyncio.TimeoutError)


class QueuesUnavailable(ControlError):
    status = 503
    code = "queues_unavailable"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _builtin(value: object) -> object:
    """A decoded message body as JSON can show it: bytes as text when they are UTF-8, else
    ``{"hex": ...}`` (msgspec's own conversion would make every bytes value base64)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"hex": value.hex()}
    if isinstance(value, dict):
        return {str(_builtin(k)): _builtin(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_builtin(v) for v in value]
    return value


def _show(message: QueueMessage, record: PartitionRecord | None) -> dict[str, Any]:
    try:
        body = _builtin(msgspec.msgpack.decode(message.body))
    except msgspec.DecodeError:
        body = {"hex": message.body.hex()}
    attempts = record.attempts.get(message.seq, 0) if record else 0
    waits = max(message.not_before_ms, record.not_before.get(message.seq, 0) if record else 0)
    return {
        "id": message.id,
        "seq": message.seq,
        "key": message.key,
        "body": body,
        "sent_ms": message.sent_ms,
        "attempts": attempts,
        "not_before_ms": waits,
    }


class QueueAdmin:
    """The control plane's reads and writes of queues, on the core's connection."""

    def __init__(self, service: ControlService) -> None:
        self.service = service

    # -- who may see what ----------------------------------------------------------------------
    def visible(self, principal: Principal) -> list[QueueRecord]:
        admin = ADMIN in principal.scopes
        return [
            q for q in self.service.registry().queues() if admin or q.owner == principal.account
        ]

    def owned(self, queue: str, principal: Principal) -> QueueRecord:
        record = self.service.registry().queue(queue)
        if record is None:
            raise NotFound(
                f"no queue {queue!r}",
                hint="a queue exists once a deployed manifest names it (edgefn queues list)",
            )
        if record.owner != principal.account and ADMIN not in principal.scopes:
            raise Forbidden(
                f"queue {queue!r} belongs to account {record.owner!r}",
                hint="use a token of its owner's account",
                extra={"owner": record.owner, "queue": queue},
            )
        return record

    def users(self, queue: str) -> tuple[list[str], list[str], str]:
        """(producers, consumers, dead-letter queue) among the functions' active versions."""
        registry = self.service.registry()
        producers, consumers, dlq = [], [], ""
        for fn in registry.functions():
            status = self.service.function_status(fn.name)
            if status is None or status.active is None:
                continue
            info = registry.find_version(fn.name, status.active.version_id)
            if info is None:
                continue
            summary = info.manifest
            consumed = {q: d for q, d in summary.queue_consumers}
            if queue in consumed:
                consumers.append(fn.name)
                dlq = dlq or consumed[queue]
            if queue in summary.queue_producers:
                producers.append(fn.name)
        return producers, consumers, dlq

    # -- the bus ---------------------------------------------------------------------------------
    def _js(self) -> Any:
        return jetstream(self.service.nc, timeout_s=_TIMEOUT_S)

    async def _bus(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except _BUS_ERRORS as err:
            raise QueuesUnavailable(
                f"{what}: the queue stream did not answer ({type(err).__name__}: {err})",
                hint="check the core's bus (edgefn status); then retry",
            ) from None

    async def _record(self, queue: str, partition: int) -> PartitionRecord | None:
        try:
            msg = await self._js().get_msg(
                f"KV_{KV_HOME_BUCKET}",
                subject=f"$KV.{KV_HOME_BUCKET}.{record_key(queue, partition)}",
            )
        except nats.js.errors.NotFoundError:
            return None
        if (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
            return None
        return decode_record(msg.data)

    async def records(self, queue: str) -> list[PartitionRecord | None]:
        records: list[PartitionRecord | None] = await self._bus(
            f"reading queue {queue!r}",
            asyncio.gather(*(self._record(queue, p) for p in range(PARTITIONS))),
        )
        return records

    async def _pending(self, queue: str, partition: int, cursor: int) -> int:
        """Messages of the partition at or above ``cursor`` (an ephemeral consumer's count)."""
        js = self._js()
        config = ConsumerConfig(
            filter_subject=stream_subject(queue, partition),
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(1, cursor),
            inactive_threshold=5.0,
            mem_storage=True,
        )
        info = await js.add_consumer(QUEUE_STREAM, config)
        try:
            return int(info.num_pending or 0)
        finally:
            await js.delete_consumer(QUEUE_STREAM, info.name)

    async def summary(self, record: QueueRecord) -> dict[str, Any]:
        queue = record.queue
        parts = await self.records(queue)
        pending = await self._bus(
            f"counting queue {queue!r}",
            asyncio.gather(
                *(self._pending(queue, p, r.cursor if r else 1) for p, r in enumerate(parts))
            ),
        )
        now = _now_ms()
        holders: dict[str, list[int]] = {}
        for p, r in enumerate(parts):
            if r is not None and r.holder and r.lease_until_ms > now:
                holders.setdefault(r.holder, []).append(p)
        producers, consumers, dlq = self.users(queue)
        backlog = sum(
            max(0, n - len(r.done if r else ())) for n, r in zip(pending, parts, strict=True)
        )
        return {
            "queue": queue,
            "owner": record.owner,
            "producers": producers,
            "consumers": consumers,
            "dead_letter_queue": dlq,
            "backlog": backlog,
            "processed": sum(r.processed for r in parts if r),
            "dead": sum(r.dead for r in parts if r),
            "retrying": sum(len(r.attempts) for r in parts if r),
            "holders": holders,
        }

    async def peek(self, queue: str, limit: int) -> list[dict[str, Any]]:
        """The oldest ``limit`` unfinished messages of ``queue`` (by stream sequence), shown."""
        return [_show(m, r) for m, r in await self.oldest(queue, limit)]

    async def oldest(
        self, queue: str, limit: int
    ) -> list[tuple[QueueMessage, PartitionRecord | None]]:
        """The oldest ``limit`` unfinished messages of ``queue``, each with its partition's record."""
        parts = await self.records(queue)

        async def one(p: int, r: PartitionRecord | None) -> list[tuple[QueueMessage, Any]]:
            # Read past finished messages above the cursor so ``limit`` unfinished ones show.
            want = limit + (len(r.done) if r else 0)
            raw = await direct_get_batch(
                self.service.nc,
                QUEUE_STREAM,
                stream_subject(queue, p),
                r.cursor if r else 1,
                min(want, 1024),
                timeout_s=_TIMEOUT_S,
            )
            messages = []
            for seq, data in raw:
                try:
                    messages.append(decode_message(data, seq))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
            return [(m, r) for m in unfinished(r, messages)]

        found = await self._bus(
            f"reading queue {queue!r}",
            asyncio.gather(*(one(p, r) for p, r in enumerate(parts))),
        )
        rows = sorted((pair for part in found for pair in part), key=lambda pair: pair[0].seq)
        return rows[:limit]

    async def send(self, queue: str, items: list[dict[str, Any]]) -> list[str]:
        now = _now_ms()
        try:
            out = [
                outgoing(queue, item, now_ms=now, fresh_id=os.urandom(16).hex()) for item in items
            ]
        except (ValueError, TypeError) as err:
            raise ControlError(f"queue {queue!r}: {err}") from None
        js = self._js()
        for message in out:
            await self._bus(
                f"sending to queue {queue!r}",
                js.publish(
                    message.subject, message.payload, headers={"Nats-Msg-Id": message.dedupe}
                ),
            )
        return [m.id for m in out]

    async def replay(self, queue: str, dlq: str, limit: int) -> list[str]:
        """Move up to ``limit`` unfinished messages of ``dlq`` back to ``queue``."""
        js = self._js()
        moved = []
        for message, _record in await self.oldest(dlq, limit):
            again = msgspec.structs.replace(message, not_before_ms=0, seq=0)
            subject = stream_subject(queue, partition_of(message.key, message.id))
            await self._bus(
                f"replaying to {queue!r}",
                js.publish(
                    subject,
                    encode_message(again),
                    headers={"Nats-Msg-Id": f"replay.{dlq}.{message.seq}"},
                ),
            )
            await self._bus(f"removing from {dlq!r}", js.delete_msg(QUEUE_STREAM, message.seq))
            moved.append(message.id)
        return moved


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= LIMIT_MAX:
        raise ControlError(
            f"limit={raw!r} is not a number from 1 to {LIMIT_MAX}", hint="e.g. ?limit=20"
        )
    return int(raw)


async def _body(request: Request) -> dict[str, Any]:
    chunks, size = [], 0
    async for chunk in request.stream():  # read at most BODY_MAX: never the whole of a flood
        size += len(chunk)
        if size > BODY_MAX:
            raise TooLarge(
                f"request body over {BODY_MAX // (1024 * 1024)} MiB",
                hint=f"send at most {SEND_MAX} messages a request",
            )
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        body = msgspec.json.decode(raw or b"{}")
    except msgspec.DecodeError:
        raise ControlError("request body is not JSON", hint='send {"messages": [...]}') from None
    if not isinstance(body, dict):
        raise ControlError("request body must be a JSON object", hint='send {"messages": [...]}')
    return body


def queue_endpoints(
    admin: QueueAdmin, principal: Callable[[Request], Principal]
) -> tuple[Handler, Handler, Handler, Handler, Handler]:
    """(list, peek, send, dlq, replay) route handlers."""
    service = admin.service

    async def listing(request: Request) -> Response:
        # Each queue costs 16 record reads and 16 counts at the core: a page at a time.
        after = request.query_params.get("after", "")
        rest = [q for q in admin.visible(principal(request)) if q.queue > after]
        page = rest[:LIST_PAGE]
        rows = [await admin.summary(q) for q in page]
        more = len(rest) > len(page)
        return JSONResponse({"queues": rows, "next": page[-1].queue if more else None})

    async def peek(request: Request) -> Response:
        queue = request.path_params["queue"]
        admin.owned(queue, principal(request))
        messages = await admin.peek(queue, _limit(request))
        return JSONResponse({"queue": queue, "messages": messages})

    async def send(request: Request) -> Response:
        queue = request.path_params["queue"]
        who = principal(request)
        admin.owned(queue, who)
        body = await _body(request)
        items = body.get("messages")
        if set(body) - {"messages"} or not isinstance(items, list) or not items:
            raise ControlError(
                'the body is {"messages": [...]}, each {"body": ...} with optional key, '
                "idempotency_key and delay_s",
                hint='e.g. {"messages": [{"body": {"n": 1}, "key": "a"}]}',
            )
        if len(items) > SEND_MAX or not all(isinstance(i, dict) for i in items):
            raise ControlError(
                f"messages is a list of at most {SEND_MAX} objects", hint="send in smaller batches"
            )
        unknown = {k for i in items for k in i} - {"body", "key", "idempotency_key", "delay_s"}
        if unknown:
            raise ControlError(
                f"unknown message field(s) {sorted(unknown)}",
                hint="a message has body, key, idempotency_key and delay_s",
            )
        ids = await admin.send(queue, items)
        await service.access.audit(who, "queue.send", queue, {"messages": str(len(ids))})
        return JSONResponse({"queue": queue, "ids": ids}, status_code=202)

    def _dlq(queue: str) -> str:
        dlq = admin.users(queue)[2]
        if not dlq:
            raise NotFound(
                f"queue {queue!r} has no dead-letter queue",
                hint="set dead_letter_queue in its [[queues.consumers]] entry and deploy",
            )
        return dlq

    async def dead_letters(request: Request) -> Response:
        queue = request.path_params["queue"]
        admin.owned(queue, principal(request))
        dlq = _dlq(queue)
        messages = await admin.peek(dlq, _limit(request))
        return JSONResponse({"queue": queue, "dead_letter_queue": dlq, "messages": messages})

    async def replay(request: Request) -> Response:
        queue = request.path_params["queue"]
        who = principal(request)
        admin.owned(queue, who)
        dlq = _dlq(queue)
        body = await _body(request)
        limit = body.get("limit", LIMIT_MAX)
        if (
            set(body) - {"limit"}
            or isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= LIMIT_MAX
        ):
            raise ControlError(
                f'the body is {{"limit": 1..{LIMIT_MAX}}} (optional)', hint='e.g. {"limit": 10}'
            )
        ids = await admin.replay(queue, dlq, limit)
        await service.access.audit(
            who, "queue.replay", queue, {"from": dlq, "messages": str(len(ids))}
        )
        return JSONResponse({"queue": queue, "dead_letter_queue": dlq, "replayed": ids})

    return listing, peek, send, dead_letters, replay
