"""``env`` and ``ctx``: the second and third arguments of ``fetch(request, env, ctx)``.

``env`` exposes manifest ``[vars]`` and bindings (KV namespaces) as attributes. ``ctx.wait_until``
keeps work running after the response has been sent; the runtime awaits it with a bounded timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import Any

MAX_WAIT_UNTIL = 64


class Env:
    """Manifest vars and bindings, by attribute: ``env.GREETING``, ``env.COUNTS``."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> Any:
        values: dict[str, Any] = object.__getattribute__(self, "_values")
        try:
            return values[name]
        except KeyError:
            known = ", ".join(sorted(values)) or "none"
            raise AttributeError(
                f"env has no {name!r}; defined: {known}. "
                "Add it under [vars] or as a binding in edgefn.toml"
            ) from None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("env is read-only")

    def __contains__(self, name: object) -> bool:
        return name in object.__getattribute__(self, "_values")

    def __dir__(self) -> list[str]:
        return sorted(object.__getattribute__(self, "_values"))

    def __repr__(self) -> str:
        return f"Env({sorted(object.__getattribute__(self, '_values'))})"


class Context:
    """Per-request context: ``ctx.wait_until(awaitable)``."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: list[asyncio.Future[Any]] = []

    def wait_until(self, awaitable: Awaitable[Any]) -> None:
        """Keep ``awaitable`` running after the response is sent (at most 64 per request)."""
        if len(self._pending) >= MAX_WAIT_UNTIL:
            raise RuntimeError(f"at most {MAX_WAIT_UNTIL} wait_until() tasks per request")
        self._pending.append(asyncio.ensure_future(awaitable))

    async def drain(self, *, timeout_s: float) -> list[BaseException]:
        """Wait for every ``wait_until`` task (bounded); return the exceptions they raised."""
        if not self._pending:
            return []
        done, pending = await asyncio.wait(self._pending, timeout=timeout_s)
        for task in pending:
            task.cancel()
        errors = [t.exception() for t in done if not t.cancelled() and t.exception() is not None]
        return [e for e in errors if e is not None]
