"""A function's KV calls, carried out on a replica driver: the one KV call path.

:class:`KVCalls` turns a worker's ``KVCall`` (``env.<BINDING>.<op>(...)``) into an operation of
the namespace's driver and its outcome into a ``KVResult``. The node runs it
(``KVService.handle_call``, over :class:`~edgefn.state.driver.KVDriver`), so does its internal
HTTP API (``edge.kv_http``) and so does ``edgefn.testing`` (over the in-process
:class:`~edgefn.edge.kv_local.LocalKVDriver`): argument checks, encodings, limits and error kinds
cannot differ between them.

1. The binding names a namespace through the function's manifest (``[[kv_namespaces]]``); an
   unknown binding fails with error kind ``error``.
2. The session token is the newest one this request got back from an earlier call, else the
   request's ``x-edgefn-session`` header. A token that does not verify is **ignored**, like a
   Workers session: the call starts a fresh session (``sessions_rejected`` counts them).
3. :func:`run_op` checks and encodes the arguments (``edge.kv_codec``) and calls the driver.
4. The replica's new token goes back signed, as a response header of the request that replaces
   an earlier one of the same request.
5. A :class:`~edgefn.errors.KVError` becomes ``ok=False`` with its ``error_kind``; a conflict
   carries the key's current revision, so the function can retry with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from edgefn.bundle import Manifest
from edgefn.edge.kv_codec import (
    decode_metadata,
    decode_value,
    encode_metadata,
    encode_value,
    entry_fields,
    error_kind,
    open_session,
    parse_consistency,
    parse_int,
    parse_revision,
    sign_session,
)
from edgefn.errors import KVConflict, KVError
from edgefn.runtime import protocol as p
from edgefn.state import SESSION_HEADER, Consistency, GetDone, ListDone, WriteDone

__all__ = ["LIST_LIMIT_DEFAULT", "CallContext", "DriverFor", "KVCalls", "ReplicaOps", "run_op"]

LIST_LIMIT_DEFAULT = 1000


class ReplicaOps(Protocol):
    """The client operations of one namespace's replica driver (``KVDriver``, ``LocalKVDriver``)."""

    async def get(self, key: str, *, consistency: Consistency, session: str) -> GetDone: ...

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        consistency: Consistency,
        metadata: bytes,
        ttl_ms: int,
        if_revision: int | None,
        session: str,
    ) -> WriteDone: ...

    async def delete(
        self, key: str, *, consistency: Consistency, if_revision: int | None, session: str
    ) -> WriteDone: ...

    async def list_keys(
        self, *, prefix: str, limit: int, cursor: str, consistency: Consistency, session: str
    ) -> ListDone: ...


class CallContext(Protocol):
    """What a KV call needs of its request (``edge.node.RequestContext``)."""

    @property
    def function(self) -> str: ...

    @property
    def manifest(self) -> Manifest: ...

    @property
    def response_headers(self) -> list[tuple[str, str]]: ...

    def header(self, name: str) -> str | None: ...


# The running driver of a namespace (started on first use).
DriverFor = Callable[[str], Awaitable[ReplicaOps]]


class KVCalls:
    """Carries out function code's KV calls on the drivers ``driver_for`` gives.

    ``session_key`` signs session tokens (the planet secret on a planet, so every location
    accepts the others' tokens).
    """

    def __init__(self, *, driver_for: DriverFor, session_key: bytes) -> None:
        self._driver_for = driver_for
        self._session_key = session_key
        self.calls = 0
        self.call_errors = 0
        self.sessions_rejected = 0

    async def handle_call(self, ctx: CallContext, call: p.KVCall) -> p.KVResult:
        """Carry out one ``env.<BINDING>.<op>(...)`` from a worker."""
        self.calls += 1
        try:
            value = await self._call(ctx, call)
        except KVError as err:
            self.call_errors += 1
            detail = (
                {"key": err.key, "revision": err.revision} if isinstance(err, KVConflict) else None
            )
            return p.KVResult(call.id, call.call_id, False, detail, error_kind(err), str(err))
        return p.KVResult(call.id, call.call_id, True, value)

    async def _call(self, ctx: CallContext, call: p.KVCall) -> Any:
        namespace = next(
            (ns.namespace for ns in ctx.manifest.kv_namespaces if ns.binding == call.binding), None
        )
        if namespace is None:
            raise KVError(
                f"function {ctx.function}: no KV binding named {call.binding!r}",
                hint="declare it under [[kv_namespaces]] in edgefn.toml",
            )
        presented = _current_session(ctx)
        session = self.open_session(namespace, presented)
        if session is None:
            session = ""  # A token that does not verify is ignored: a fresh session.
        out, raw = await self.op(namespace, call.op, call.args, session)
        token = self.sign_session(namespace, raw)
        if token and token != presented:
            ctx.response_headers[:] = [h for h in ctx.response_headers if h[0] != SESSION_HEADER]
            ctx.response_headers.append((SESSION_HEADER, token))
        return out

    def open_session(self, namespace: str, token: str) -> str | None:
        """The replica's token inside a presented one ("" for none); None (counted) if forged."""
        session = open_session(self._session_key, namespace, token)
        if session is None:
            self.sessions_rejected += 1
        return session

    def sign_session(self, namespace: str, raw: str) -> str:
        return sign_session(self._session_key, namespace, raw)

    async def op(
        self, namespace: str, op: str, args: dict[str, Any], session: str
    ) -> tuple[Any, str]:
        """Run one operation: (result for the caller, the replica's new session token)."""
        result, token, _stamp = await self.op_stamped(namespace, op, args, session)
        return result, token

    async def op_stamped(
        self, namespace: str, op: str, args: dict[str, Any], session: str
    ) -> tuple[Any, str, Any]:
        """Run one operation: (result, new session token, write/read stamp)."""
        return await run_op(await self._driver_for(namespace), op, args, session)


async def run_op(
    driver: ReplicaOps, op: str, args: dict[str, Any], session: str
) -> tuple[Any, str, Any]:
    """Check and encode ``args``, run ``op`` on ``driver``: (result, new token, stamp)."""
    key = str(args.get("key", ""))
    level = parse_consistency(args.get("consistency"))
    if op in ("get", "get_entry"):
        got = await driver.get(key, consistency=level, session=session)
        stamp = list(got.item.stamp) if got.item.stamp else None
        if op == "get":
            kind = str(args.get("type") or "text")
            return decode_value(got.item.value, kind, key=key), got.session, stamp
        return entry_fields(got.item), got.session, stamp
    if op == "put":
        ttl_s = args.get("ttl_s")
        done = await driver.put(
            key,
            encode_value(args.get("value"), key=key),
            consistency=level,
            metadata=encode_metadata(args.get("metadata"), key=key),
            ttl_ms=int(float(ttl_s) * 1000) if ttl_s else 0,
            if_revision=parse_revision(args.get("if_revision")),
            session=session,
        )
        return done.revision, done.session, list(done.stamp) if done.stamp else None
    if op == "delete":
        done = await driver.delete(
            key,
            consistency=level,
            if_revision=parse_revision(args.get("if_revision")),
            session=session,
        )
        return done.revision, done.session, list(done.stamp) if done.stamp else None
    if op == "list":
        listed = await driver.list_keys(
            prefix=str(args.get("prefix") or ""),
            limit=parse_int(args.get("limit"), LIST_LIMIT_DEFAULT, "limit"),
            cursor=str(args.get("cursor") or ""),
            consistency=level,
            session=session,
        )
        keys = [
            {"name": i.key, "revision": i.revision, "metadata": decode_metadata(i.metadata)}
            for i in listed.items
        ]
        return {"keys": keys, "cursor": listed.cursor or None}, listed.session, None
    raise KVError(f"unknown KV operation {op!r}", hint="use get, get_entry, put, delete or list")


def _current_session(ctx: CallContext) -> str:
    for name, value in reversed(ctx.response_headers):
        if name == SESSION_HEADER:
            return value
    return ctx.header(SESSION_HEADER) or ""
