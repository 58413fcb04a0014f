"""The node's internal KV HTTP API, for ``edgefn kv`` and the tests (127.0.0.1 only).

- ``/_edgefn/kv/<ns>`` GET lists keys (``prefix``, ``limit``, ``cursor``);
  ``/_edgefn/kv/<ns>/<key>`` GET reads, PUT writes the request body (``ttl_s``,
  ``if_revision``), DELETE deletes (``if_revision``). Every one takes ``consistency`` and
  ``session`` (or the ``x-edgefn-session`` header) and answers JSON with the signed new
  ``session``, the entry's ``stamp`` and the ``location``.
- ``/_edgefn/kvstate/<ns>``: the namespace's content digest and the replica's and driver's
  statistics (whole items too, for namespaces of at most 1000 keys), for checkers.

Operations run through the node's KV call path (``edge.kv_calls``), so arguments, limits and
errors are those of function code. Errors answer ``{"error": kind, "message", "hint"}`` with 409
(conflict, with the current ``revision``), 503 (``consistency_unavailable`` or
``outcome_unknown``) or 400. A session token that does not verify is refused with 400
``bad_session`` (on the function path it is ignored instead: here a caller asked for that token
explicitly). The node mounts this on its internal listener only, behind the planet-internal
signature check; it also refuses callers that are not on 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict
from typing import Any

from edgefn.edge.kv_calls import KVCalls
from edgefn.edge.kv_codec import error_kind
from edgefn.errors import KVConflict, KVError, KVLimitError
from edgefn.state import SESSION_HEADER
from edgefn.state.driver import KVDriver

__all__ = ["KVHttp"]

_STATE_ITEMS_MAX = 1000
_BODY_BYTES_MAX = 2 * 1024 * 1024
_LOCAL_CALLERS = ("127.0.0.1", "::1")
_KIND_STATUS = {
    "conflict": 409,
    "unavailable": 503,
    "outcome_unknown": 503,
    "limit": 400,
    "error": 400,
}

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class KVHttp:
    """The ASGI app of ``/_edgefn/kv*`` at ``location`` over ``calls`` and the node's drivers."""

    def __init__(
        self, *, location: str, calls: KVCalls, driver_for: Callable[[str], Awaitable[KVDriver]]
    ) -> None:
        self.location = location
        self._calls = calls
        self._driver_for = driver_for
        self.requests = 0

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``/_edgefn/kv/<ns>[/<key>]`` and ``/_edgefn/kvstate/<ns>``, for 127.0.0.1 only."""
        self.requests += 1
        client = scope.get("client") or ("", 0)
        if client[0] not in _LOCAL_CALLERS:
            await _reply(send, 403, {"error": "forbidden", "hint": "call from 127.0.0.1"})
            return
        try:
            status, body = await self._http(scope, receive)
        except KVError as err:
            kind = error_kind(err)
            error = "consistency_unavailable" if kind == "unavailable" else kind
            body = {"error": error, "message": err.message, "hint": err.hint}
            if isinstance(err, KVConflict):
                body["revision"] = err.revision  # the current one: retry with it
            status = _KIND_STATUS[kind]
        body["location"] = self.location
        await _reply(send, status, body)

    async def _http(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        path: str = scope["path"]
        query = dict(urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        presented = query.get("session") or headers.get(SESSION_HEADER, "")
        if path.startswith("/_edgefn/kvstate/"):
            return 200, await self.state(path.removeprefix("/_edgefn/kvstate/"))
        rest = path.removeprefix("/_edgefn/kv/")
        namespace, _, key = rest.partition("/")
        session = self._calls.open_session(namespace, presented)
        if session is None:
            return 400, {
                "error": "bad_session",
                "message": f"the session token is not valid for namespace {namespace!r}",
                "hint": "pass a token this planet issued for this namespace, or none",
            }
        status, body = await self._http_op(scope, receive, namespace, key, query, session)
        if body.get("session"):
            body["session"] = self._calls.sign_session(namespace, body["session"])
        return status, body

    async def _http_op(
        self,
        scope: Scope,
        receive: Receive,
        namespace: str,
        key: str,
        query: dict[str, str],
        session: str,
    ) -> tuple[int, dict[str, Any]]:
        method = scope["method"]
        calls = self._calls
        args: dict[str, Any] = {"key": key, "consistency": query.get("consistency")}
        if not key:
            if method != "GET":
                return 405, {"error": "method_not_allowed", "hint": "GET lists keys"}
            args |= {k: query.get(k) for k in ("prefix", "limit", "cursor")}
            listed, token = await calls.op(namespace, "list", args, session)
            return 200, {"namespace": namespace, **listed, "session": token}
        found = {"namespace": namespace, "key": key}
        if method == "GET":
            item, token, stamp = await calls.op_stamped(namespace, "get_entry", args, session)
            return 200, {**found, **item, "stamp": stamp, "session": token}
        if method == "PUT":
            args |= {"value": await _read_body(receive, key), "ttl_s": query.get("ttl_s")}
            args["if_revision"] = query.get("if_revision")
            revision, token, stamp = await calls.op_stamped(namespace, "put", args, session)
            return 200, {**found, "revision": revision, "stamp": stamp, "session": token}
        if method == "DELETE":
            args["if_revision"] = query.get("if_revision")
            revision, token, stamp = await calls.op_stamped(namespace, "delete", args, session)
            return 200, {**found, "revision": revision, "stamp": stamp, "session": token}
        return 405, {"error": "method_not_allowed", "hint": "use GET, PUT or DELETE"}

    async def state(self, namespace: str) -> dict[str, Any]:
        """The ``/_edgefn/kvstate/<ns>`` answer: content digest, items, statistics."""
        driver = await self._driver_for(namespace)
        content = driver.replica.content()
        digest = hashlib.sha256()
        for key in sorted(content):
            item = content[key]
            digest.update(json.dumps([key, item.revision]).encode())
            digest.update(hashlib.sha256(item.value or b"").digest())
        return {
            "namespace": namespace,
            "keys": len(content),
            "digest": digest.hexdigest(),
            # Whole items for checkers (tests), only for small namespaces.
            "items": {
                k: {
                    "value_b64": base64.b64encode(v.value or b"").decode(),
                    "revision": v.revision,
                    "stamp": list(v.stamp) if v.stamp else None,
                }
                for k, v in sorted(content.items())
            }
            if len(content) <= _STATE_ITEMS_MAX
            else None,
            "replica": asdict(driver.replica.statistics()),
            "driver": asdict(driver.statistics()),
        }


async def _read_body(receive: Receive, key: str, limit: int = _BODY_BYTES_MAX) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise KVLimitError(f"key {key!r}: request body over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _reply(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body, default=str).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
