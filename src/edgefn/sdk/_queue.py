"""Queues: producers send messages, a consumer function gets them in batches.

    [[queues.producers]]
    binding = "JOBS"
    queue = "jobs"

    [[queues.consumers]]
    queue = "jobs"
    max_retries = 3
    dead_letter_queue = "jobs-dlq"

    async def fetch(request, env, ctx):
        await env.JOBS.send({"order": 7}, key="customer-42")
        return Response("queued", status=202)

    async def queue(batch, env, ctx):
        for message in batch.messages:
            try:
                await handle(message.body)
                message.ack()
            except Exception:
                message.retry(delay_s=5)

Messages with the same ``key`` are handed over in send order, one at a time; strong KV writes the
handler makes are committed together with the batch's acknowledgements, so a message whose effect
was stored is never handed over again (docs/design/0028-queues.md). A message that is neither
acknowledged nor retried is acknowledged when the handler returns; if the handler raises, nothing
it wrote strongly is kept and every message of the batch is delivered again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

__all__ = [
    "MAX_SEND_BATCH",
    "QUEUE_BINDING",
    "Message",
    "MessageBatch",
    "Queue",
    "decisions_of",
    "decode_batch",
    "encode_batch",
]

# The KVCall binding of producers' sends (not an identifier, so never a KV binding).
QUEUE_BINDING: Final = "=q"
MAX_SEND_BATCH: Final = 100

QueueCall = Callable[[str, dict[str, Any]], Awaitable[Any]]


class Queue:
    """``env.<BINDING>`` of a ``[[queues.producers]]`` entry."""

    __slots__ = ("_binding", "_call")

    def __init__(self, binding: str, call: QueueCall) -> None:
        self._binding = binding
        self._call = call

    async def send(
        self,
        body: Any,
        *,
        key: str | None = None,
        idempotency_key: str | None = None,
        delay_s: float = 0,
    ) -> str:
        """Send one message; returns its id. ``key``: messages with one key are processed in send
        order, one at a time. ``idempotency_key``: a second send with the same one (within two
        hours) is dropped. ``delay_s``: not delivered before then (at most 12 h)."""
        ids = await self.send_batch(
            [{"body": body, "key": key, "idempotency_key": idempotency_key, "delay_s": delay_s}]
        )
        return str(ids[0])

    async def send_batch(self, messages: Iterable[Any]) -> list[str]:
        """Send up to 100 messages, each a dict with ``body`` and optional ``key``,
        ``idempotency_key`` and ``delay_s``; returns their ids in order."""
        items = [m if isinstance(m, dict) else {"body": m} for m in messages]
        if not items or len(items) > MAX_SEND_BATCH:
            raise ValueError(f"send_batch takes 1..{MAX_SEND_BATCH} messages, not {len(items)}")
        out = await self._call("send", {"binding": self._binding, "messages": items})
        return [str(i) for i in out]

    def __repr__(self) -> str:
        return f"Queue({self._binding!r})"


@dataclass(slots=True)
class Message:
    """One message of a batch: ``id``, ``body``, ``key``, ``attempts`` (1 at the first delivery),
    ``timestamp_ms`` (when it was sent)."""

    id: str
    body: Any
    key: str | None
    attempts: int
    timestamp_ms: int
    _decision: tuple[str, float | None] | None = field(default=None, repr=False)

    def ack(self) -> None:
        """Done: never delivered again (once the handler returns)."""
        self._decision = ("ack", None)

    def retry(self, *, delay_s: float | None = None) -> None:
        """Deliver again later: after ``delay_s``, or the consumer's back-off when not given."""
        if delay_s is not None and not 0 <= delay_s <= 43_200:
            raise ValueError(f"retry delay_s must be 0..43200, not {delay_s}")
        self._decision = ("retry", delay_s)


@dataclass(slots=True)
class MessageBatch:
    """What ``queue(batch, env, ctx)`` gets: ``queue`` (its name) and ``messages``."""

    queue: str
    messages: list[Message]

    def ack_all(self) -> None:
        for m in self.messages:
            m.ack()

    def retry_all(self, *, delay_s: float | None = None) -> None:
        for m in self.messages:
            m.retry(delay_s=delay_s)


# The batch crosses the IPC boundary as msgpack: [[id, body msgpack, key, attempts, sent_ms], ...].
_BatchWire = list[tuple[str, bytes, str | None, int, int]]
_DECODE_BATCH = msgspec.msgpack.Decoder(_BatchWire)


def encode_batch(items: Sequence[tuple[str, bytes, str | None, int, int]]) -> bytes:
    return msgspec.msgpack.encode(list(items))


def decode_batch(queue: str, data: bytes) -> MessageBatch:
    messages = [
        Message(mid, msgspec.msgpack.decode(body), key, attempts, sent)
        for mid, body, key, attempts, sent in _DECODE_BATCH.decode(data)
    ]
    return MessageBatch(queue, messages)


def decisions_of(batch: MessageBatch) -> bytes:
    """Each message's outcome as [action, delay_ms | None]; undecided ones are acknowledged."""
    out: list[tuple[str, int | None]] = []
    for m in batch.messages:
        action, delay = m._decision or ("ack", None)
        out.append((action, None if delay is None else int(delay * 1000)))
    return msgspec.msgpack.encode(out)
