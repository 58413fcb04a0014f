"""The event a cron trigger hands to ``async def scheduled(event, env, ctx)``.

Shaped like Workers' ``ScheduledController``: ``event.cron`` is the manifest's expression that
fired and ``event.scheduled_time`` the tick it fired for, in milliseconds since the Unix epoch
(UTC), not the moment the handler started. ``event.attempt`` is 1 unless the location that
claimed the tick died before it finished and another one took the tick over (see
docs/design/0025-cron.md), so a handler whose effect must happen once per tick can key it by
``scheduled_time``.
"""

from __future__ import annotations

import datetime
import inspect
from dataclasses import dataclass
from types import ModuleType
from typing import Any

__all__ = ["ScheduledEvent", "handler_of"]


@dataclass(frozen=True, slots=True)
class ScheduledEvent:
    """One cron tick: ``cron``, ``scheduled_time`` (ms since the epoch, UTC), ``attempt``."""

    cron: str
    scheduled_time: int
    attempt: int = 1

    @property
    def scheduled_datetime(self) -> datetime.datetime:
        """``scheduled_time`` as an aware UTC datetime."""
        return datetime.datetime.fromtimestamp(self.scheduled_time / 1000, tz=datetime.UTC)


_SIGNATURES = {
    "fetch": "async def fetch(request, env, ctx)",
    "scheduled": "async def scheduled(event, env, ctx)",
    "queue": "async def queue(batch, env, ctx)",
}


def handler_of(module: ModuleType, name: str, *, main: str, required: bool) -> Any:
    """The module's ``fetch`` or ``scheduled`` handler, checked to be a coroutine function.

    Shared by the worker (a sandbox loading a bundle) and ``edgefn.testing`` so both refuse the
    same modules with the same words. ``None`` when the handler is absent and not ``required``.
    """
    fn = getattr(module, name, None)
    signature = _SIGNATURES[name]
    if fn is None:
        if not required:
            return None
        why = {"scheduled": " ([triggers] crons is set)", "queue": " ([[queues.consumers]] is set)"}
        why_text = why.get(name, "")
        raise RuntimeError(f"{main}: defines no `{name}`{why_text}; add `{signature}`")
    if not inspect.iscoroutinefunction(fn):
        raise RuntimeError(f"{main}: `{name}` must be declared `{signature}`")
    return fn
