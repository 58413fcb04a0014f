"""Durable objects: one instance per id, planet-wide, with strongly consistent storage.

    [[durable_objects]]
    binding = "COUNTER"
    class_name = "Counter"

    from edgefn import DurableObject, Response

    class Counter(DurableObject):
        async def fetch(self, request):
            async with self.storage.transaction() as txn:
                n = (await txn.get("n") or 0) + 1
                await txn.put("n", n)
            return Response.json({"n": n})

    async def fetch(request, env, ctx):
        stub = env.COUNTER.get(env.COUNTER.id_from_name("global"))
        return await stub.fetch("/increment", method="POST")

An object lives at one location at a time, its **home**: the first location that needs it (or
``location_hint``), which holds a lease on it in the strong KV; requests from anywhere are routed
there and run one at a time. When the home dies or is cut off, the next request after its lease
ends (within ~10 s) makes another location the home, with every write that was acknowledged:
each ``put``/``delete``/transaction returns only once the write is stored in the replicated
strong KV, and a stale home's writes are refused (fencing). An instance is made for each request,
so keep state in ``self.storage``, not in attributes. ``self.storage.set_alarm(ms)`` makes the
home call ``async def alarm(self)`` at that time (docs/design/0027-durable-objects.md).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any

from edgefn.errors import FetchError, InvalidURLError
from edgefn.sdk._fetch import DEFAULT_TIMEOUT_MS, send
from edgefn.sdk._headers import Headers, HeadersInit
from edgefn.sdk._origin import passed_on
from edgefn.sdk._request import Request
from edgefn.sdk._response import Response

__all__ = [
    "DURABLE_BINDING",
    "DurableObject",
    "DurableObjectId",
    "DurableObjectNamespace",
    "DurableObjectState",
    "DurableObjectStorage",
    "DurableObjectStub",
    "StorageCall",
    "durable_classes",
]

# The KVCall binding of a durable object's storage calls (not an identifier, so no KV binding).
DURABLE_BINDING = "=do"

# The worker's way to the node for storage: (op, args) -> result.
StorageCall = Callable[[str, dict[str, Any]], Awaitable[Any]]
_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_HINT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_BASE = "http://durable-object"


class DurableObjectId:
    """An object's id: 32 hex digits (``str(id)``), from a name or random."""

    __slots__ = ("hex", "name")

    def __init__(self, hex: str, name: str | None = None) -> None:
        if not _ID_RE.match(hex):
            raise ValueError(f"a durable object id is 32 lowercase hex digits, not {hex[:40]!r}")
        self.hex = hex
        self.name = name

    def __str__(self) -> str:
        return self.hex

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DurableObjectId) and other.hex == self.hex

    def __hash__(self) -> int:
        return hash(self.hex)

    def __repr__(self) -> str:
        return f"DurableObjectId({self.hex!r})"


class DurableObjectStub:
    """``env.ROOM.get(id)``: send the object requests (from any location)."""

    __slots__ = ("binding", "hint", "id")

    def __init__(self, binding: str, oid: DurableObjectId, hint: str) -> None:
        self.binding, self.id, self.hint = binding, oid, hint

    async def fetch(
        self,
        target: str | Request = "/",
        *,
        method: str | None = None,
        headers: HeadersInit = None,
        body: bytes | str | None = None,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
    ) -> Response:
        """The object's ``fetch(request)`` answer. ``target`` is a path, an absolute URL or a
        request (its method, headers and body unless given)."""
        if isinstance(target, Request):
            url = target.url
            method, headers, body = await passed_on(target, method, headers, body)
        elif isinstance(target, str) and target.startswith("/") and not target.startswith("//"):
            url = _BASE + target
        elif isinstance(target, str) and target.startswith(("http://", "https://")):
            url = target
        else:
            raise InvalidURLError(
                f"env.{self.binding}.get(...).fetch({str(target)[:100]!r}): give a path, an "
                "http(s) URL or a Request",
                hint='e.g. stub.fetch("/increment", method="POST")',
            )
        return await send(
            url,
            method=(method or "GET").upper(),
            headers=Headers(headers).items(),
            body=body,
            timeout_ms=timeout_ms,
            durable=f"{self.binding}\n{self.id.hex}\n{self.hint}",
        )


class DurableObjectNamespace:
    """``env.<BINDING>`` of a ``[[durable_objects]]`` entry."""

    __slots__ = ("binding", "class_name")

    def __init__(self, binding: str, class_name: str) -> None:
        self.binding, self.class_name = binding, class_name

    def id_from_name(self, name: str) -> DurableObjectId:
        """The same id for the same name, at every location."""
        if not isinstance(name, str):
            raise TypeError(f"id_from_name takes a str, not {type(name).__name__}")
        digest = hashlib.sha256(f"{self.class_name}\0{name}".encode()).hexdigest()[:32]
        return DurableObjectId(digest, name)

    def id_from_string(self, hex: str) -> DurableObjectId:
        return DurableObjectId(hex)

    def new_unique_id(self) -> DurableObjectId:
        return DurableObjectId(os.urandom(16).hex())

    def get(self, oid: DurableObjectId, *, location_hint: str | None = None) -> DurableObjectStub:
        """A stub of the object; ``location_hint`` (a location name) is where to make its home
        if it has none yet."""
        if not isinstance(oid, DurableObjectId):
            raise TypeError("get() takes a DurableObjectId (id_from_name, id_from_string)")
        if location_hint is not None and not _HINT_RE.match(location_hint):
            raise ValueError(f"location_hint {location_hint!r} is not a location name")
        return DurableObjectStub(self.binding, oid, location_hint or "")

    def __repr__(self) -> str:
        return f"DurableObjectNamespace({self.binding}={self.class_name})"


class _Transaction:
    """Reads see the transaction's own writes; the writes are stored together at the end."""

    def __init__(self, storage: DurableObjectStorage) -> None:
        self._storage = storage
        self._ops: list[list[Any]] = []
        self._written: dict[str, Any] = {}
        self._deleted: set[str] = set()

    async def get(self, key: str) -> Any:
        if key in self._written:
            return self._written[key]
        if key in self._deleted:
            return None
        return await self._storage.get(key)

    async def put(self, key: str, value: Any) -> None:
        self._ops.append(["put", {"entries": {key: value}}])
        self._written[key] = value
        self._deleted.discard(key)

    async def delete(self, key: str) -> None:
        self._ops.append(["delete", {"keys": [key]}])
        self._written.pop(key, None)
        self._deleted.add(key)

    def rollback(self) -> None:
        self._ops.clear()

    async def __aenter__(self) -> _Transaction:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None and self._ops:
            await self._storage._call("txn", {"ops": self._ops})


class DurableObjectStorage:
    """``self.storage``: the object's keys and values; each call is one round trip to the home."""

    __slots__ = ("_call",)

    def __init__(self, call: StorageCall) -> None:
        self._call = call

    async def get(self, key: str | list[str]) -> Any:
        """A value (None if absent), or for a list of keys a dict of those present."""
        if isinstance(key, list):
            out: dict[str, Any] = await self._call("get", {"keys": key})
            return out
        got = await self._call("get", {"keys": [key]})
        return got.get(key)

    async def put(self, key: str | dict[str, Any], value: Any = None) -> None:
        """Store ``value`` under ``key`` (or every entry of a dict); returns once it is durable."""
        entries = key if isinstance(key, dict) else {key: value}
        await self._call("put", {"entries": entries})

    async def delete(self, key: str | list[str]) -> int:
        """Delete a key or keys; returns how many existed."""
        n: int = await self._call("delete", {"keys": key if isinstance(key, list) else [key]})
        return n

    async def list(
        self, *, prefix: str = "", start: str = "", limit: int = 1000, reverse: bool = False
    ) -> dict[str, Any]:
        """Keys (from ``start``, with ``prefix``) in order, with their values."""
        args = {"prefix": prefix, "start": start, "limit": limit, "reverse": reverse}
        pairs = await self._call("list", args)
        return {k: v for k, v in pairs}

    def transaction(self) -> _Transaction:
        """``async with storage.transaction() as txn:`` — writes stored all at once at the end
        (not at all if the block raises)."""
        return _Transaction(self)

    async def get_alarm(self) -> int | None:
        out: int | None = await self._call("get_alarm", {})
        return out

    async def set_alarm(self, ms: int) -> None:
        """Call the object's ``alarm()`` at ``ms`` (since the epoch); replaces an earlier one."""
        if not isinstance(ms, int) or isinstance(ms, bool) or ms <= 0:
            raise ValueError("set_alarm takes a time in milliseconds since the epoch")
        await self._call("set_alarm", {"ms": ms})

    async def delete_alarm(self) -> None:
        await self._call("delete_alarm", {})


class DurableObjectState:
    """What an instance is given: its ``id`` and ``storage``."""

    __slots__ = ("id", "storage")

    def __init__(self, oid: DurableObjectId, storage: DurableObjectStorage) -> None:
        self.id, self.storage = oid, storage


class DurableObject:
    """Subclass it; define ``async def fetch(self, request)`` and optionally ``async def
    alarm(self)``. ``self.state``, ``self.storage`` and ``self.env`` are set."""

    def __init__(self, state: DurableObjectState, env: Any) -> None:
        self.state = state
        self.storage = state.storage
        self.env = env

    async def fetch(self, request: Request) -> Response:
        raise FetchError(f"{type(self).__name__} defines no `async def fetch(self, request)`")


def durable_classes(module: Any, names: list[str], *, main: str) -> dict[str, type[DurableObject]]:
    """The classes ``[[durable_objects]]`` names, each checked to be a DurableObject subclass
    with an ``async def fetch`` (the worker and ``edgefn.testing`` share this check)."""
    import inspect  # lazy: only a function with durable objects needs it

    out: dict[str, type[DurableObject]] = {}
    for name in names:
        cls = getattr(module, name, None)
        if not (isinstance(cls, type) and issubclass(cls, DurableObject)):
            raise RuntimeError(
                f"{main}: [[durable_objects]] class_name = {name!r}, but it defines no "
                f"`class {name}(edgefn.DurableObject)`"
            )
        if cls.fetch is DurableObject.fetch or not inspect.iscoroutinefunction(cls.fetch):
            raise RuntimeError(f"{main}: `{name}` must define `async def fetch(self, request)`")
        alarm = getattr(cls, "alarm", None)
        if alarm is not None and not inspect.iscoroutinefunction(alarm):
            raise RuntimeError(f"{main}: `{name}.alarm` must be declared `async def alarm(self)`")
        out[name] = cls
    return out
