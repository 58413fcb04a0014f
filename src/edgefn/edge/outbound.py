"""Outbound subrequests made by the node on a function's behalf (``edgefn.fetch``).

Function code has no sockets; its ``edgefn.fetch`` arrives here. The rules, checked before any
connection is made: at most ``[limits] subrequests`` per incoming request (Workers' default is 50),
the target host must match ``[egress] allow`` when that list is given (exact host, ``*.suffix``
wildcard, optional ``:port``), the timeout is the smaller of the call's ``timeout_ms`` and the node
cap, and the response body is read only up to ``max_response_bytes``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from edgefn.runtime import protocol as p

MAX_RESPONSE_BYTES = 8 * 1024 * 1024
MAX_TIMEOUT_MS = 60_000


def host_allowed(allow: Sequence[str] | None, url: str) -> bool:
    """Whether ``url``'s host (and port) matches the ``[egress] allow`` list."""
    if allow is None:
        return True
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for entry in allow:
        pattern, _, want_port = entry.lower().partition(":")
        if want_port and int(want_port) != port:
            continue
        if host == pattern or (pattern.startswith("*.") and fnmatch.fnmatch(host, pattern)):
            return True
    return False


@dataclass(frozen=True, slots=True)
class SubrequestRules:
    subrequests: int
    allow: tuple[str, ...] | None


class Outbound:
    """Carries out subrequests for every function on a node (one bounded connection pool)."""

    def __init__(self, *, max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self.max_response_bytes = max_response_bytes
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            follow_redirects=False,
            trust_env=False,
        )
        self._counts: dict[str, int] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    def forget(self, request_id: str) -> None:
        """Drop the subrequest count of a finished request."""
        self._counts.pop(request_id, None)

    def _result(self, call: p.FetchCall, kind: str, message: str) -> p.FetchResult:
        return p.FetchResult(call.id, call.fetch_id, 0, [], b"", kind, message)

    async def fetch(
        self, request_id: str, call: p.FetchCall, rules: SubrequestRules
    ) -> p.FetchResult:
        used = self._counts.get(request_id, 0) + 1
        self._counts[request_id] = used
        if used > rules.subrequests:
            return self._result(
                call,
                "subrequest_limit",
                f"request {request_id} made more than {rules.subrequests} subrequests "
                "(raise [limits] subrequests in edgefn.toml)",
            )
        if not host_allowed(rules.allow, call.url):
            host = urlsplit(call.url).netloc
            return self._result(
                call,
                "egress_denied",
                f"{host} is not in [egress] allow = {list(rules.allow or [])} (request {request_id})",
            )
        timeout_s = min(call.timeout_ms, MAX_TIMEOUT_MS) / 1000
        try:
            return await self._send(call, timeout_s)
        except httpx.TimeoutException:
            return self._result(
                call, "timeout", f"{call.url} did not answer within {call.timeout_ms} ms"
            )
        except httpx.HTTPError as err:
            return self._result(call, "error", f"{call.url}: {type(err).__name__}: {err}")

    async def _send(self, call: p.FetchCall, timeout_s: float) -> p.FetchResult:
        req = self._client.build_request(
            call.method,
            call.url,
            headers=call.headers,
            content=call.body or None,
            timeout=httpx.Timeout(timeout_s),
        )
        resp = await self._client.send(req, stream=True)
        try:
            body = bytearray()
            async for chunk in resp.aiter_raw():
                body += chunk
                if len(body) > self.max_response_bytes:
                    return self._result(
                        call,
                        "too_large",
                        f"{call.url}: response body exceeds {self.max_response_bytes} bytes",
                    )
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.headers.raw]
            return p.FetchResult(call.id, call.fetch_id, resp.status_code, headers, bytes(body))
        finally:
            await resp.aclose()
