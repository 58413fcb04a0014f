"""Driver side of planet-internal authentication (see :mod:`edgefn.routing.internal_auth`).

* :func:`read_secret` / :func:`planet_secret` read the planet secret (``<state-dir>/planet-secret``,
  0600, written by ``edgefn up``).
* :class:`InternalAuth` is an ``httpx.Auth`` that signs every request it sends: the CLI, the
  planet client, the bench and the tests call internal listeners with
  ``httpx.Client(auth=InternalAuth(secret))``.
* :class:`InternalGuard` is ASGI middleware that reads the body (bounded), verifies
  ``x-edgefn-internal-auth`` with one :class:`~edgefn.routing.internal_auth.InternalVerifier` per
  listener and only then passes the request, body replayed, to the wrapped app. Refusals are JSON:
  401 ``unauthorized`` (no or malformed header), 403 ``forbidden`` (bad MAC, stale, replayed),
  503 ``busy`` (nonce memory full), 413 ``body_too_large``.

It lives at the package root (like ``_loop.py``) because the node, the supervisor and the link
emulator all serve internal APIs, and importing it must not pull in any of them.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable, Generator, MutableMapping
from pathlib import Path
from typing import Any

import httpx

from edgefn.errors import ConfigError
from edgefn.routing.internal_auth import (
    INTERNAL_AUTH_HEADER,
    AuthCheck,
    InternalVerifier,
    sign_internal,
)

__all__ = [
    "SECRET_FILE",
    "InternalAuth",
    "InternalGuard",
    "planet_secret",
    "read_secret",
    "request_target",
    "wall_ms",
]

SECRET_FILE = "planet-secret"
MAX_SIGNED_BODY_BYTES = 4 * 1024 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def read_secret(path: Path) -> bytes:
    """The planet secret in ``path``; ConfigError names the file."""
    try:
        secret = path.read_text().strip().encode()
    except OSError as err:
        raise ConfigError(
            f"cannot read the planet secret: {err.strerror}",
            path=str(path),
            hint="edgefn up writes it to <state-dir>/planet-secret; is the planet running here?",
        ) from None
    if len(secret) < 16:
        raise ConfigError(
            f"the planet secret has {len(secret)} bytes, needs at least 16",
            path=str(path),
            hint="write 64 hex characters, e.g. `python -c 'import secrets; "
            "print(secrets.token_hex(32))'`",
        )
    return secret


def planet_secret(state_dir: Path) -> bytes:
    return read_secret(state_dir / SECRET_FILE)


class InternalAuth(httpx.Auth):
    """Signs each request with the planet secret (method, path + query, time, nonce, body)."""

    requires_request_body = True

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[INTERNAL_AUTH_HEADER] = sign_internal(
            self._secret,
            method=request.method,
            target=request.url.raw_path.decode("ascii"),
            body=request.content,
            at_ms=wall_ms(),
            nonce=secrets.token_hex(16),
        )
        yield request


class InternalGuard:
    """ASGI middleware: only correctly signed, fresh, never-seen requests reach ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        secret: bytes,
        *,
        max_body_bytes: int = MAX_SIGNED_BODY_BYTES,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.app = app
        self.verifier = InternalVerifier(secret)
        self._max_body_bytes = max_body_bytes
        self._clock_ms = clock_ms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive, self._max_body_bytes)
        if body is None:
            await _refuse(send, 413, "body_too_large", "the signed body is too large")
            return
        name = INTERNAL_AUTH_HEADER.encode()
        header = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == name), None)
        check = self.verifier.verify(
            header,
            method=str(scope["method"]),
            target=request_target(scope),
            body=body,
            now_ms=self._clock_ms(),
        )
        if check is not AuthCheck.VALID:
            error = {401: "unauthorized", 403: "forbidden", 503: "busy"}[check.status]
            await _refuse(send, check.status, error, check.value)
            return
        await self.app(scope, _replay(body, receive), send)


def request_target(scope: Scope) -> str:
    """Path and query exactly as the client sent them (what the signature covers)."""
    raw = scope.get("raw_path") or scope["path"].encode()
    target = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
    query = scope.get("query_string", b"")
    return f"{target}?{query.decode('latin-1')}" if query else target


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return bytes(body)
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return bytes(body)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


async def _refuse(send: Send, status: int, error: str, reason: str) -> None:
    hint = (
        f"sign the request with the planet secret ({INTERNAL_AUTH_HEADER}, "
        "see docs/architecture.md#listeners)"
    )
    data = json.dumps({"error": error, "reason": reason, "hint": hint}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
