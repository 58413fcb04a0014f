"""The typed surface of a KV binding (``env.<BINDING>``), as function code sees it.

``get_entry`` returns a :class:`KVEntry`: the value (text when it decodes as UTF-8, else bytes;
``None`` for a missing key), its revision (the fencing token for ``if_revision``; 0 when missing)
and its metadata. :class:`KVNamespace` types the binding's methods for annotations; the node's
binding (in the worker) and ``edgefn.testing.MemoryKV`` both provide it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

__all__ = ["KVEntry", "KVNamespace"]


@dataclass(frozen=True, slots=True)
class KVEntry:
    """One key's value with its revision and metadata."""

    value: str | bytes | None
    revision: int
    metadata: Any = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class KVNamespace(Protocol):
    """``env.<BINDING>``: per-operation consistency ``eventual`` | ``session`` | ``causal`` | ``strong``."""

    async def get(self, key: str, *, consistency: str = ..., type: str = ...) -> Any: ...

    async def get_entry(self, key: str, *, consistency: str = ...) -> KVEntry: ...

    async def put(
        self,
        key: str,
        value: Any,
        *,
        ttl_s: float | None = ...,
        metadata: Any = ...,
        if_revision: int | None = ...,
        consistency: str = ...,
    ) -> Any: ...

    async def delete(
        self, key: str, *, if_revision: int | None = ..., consistency: str = ...
    ) -> Any: ...

    async def list(self, prefix: str = ..., limit: int = ..., cursor: str | None = ...) -> Any: ...
