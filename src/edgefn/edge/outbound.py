"""Outbound subrequests made by the node on a function's behalf (``edgefn.fetch``).

Function code has no sockets; its ``edgefn.fetch`` arrives here. The rules, checked before any
connection is made: at most ``[limits] subrequests`` per incoming request (Workers' default is 50;
every redirect hop counts, as in Workers), then the SSRF policy of ``edgefn.edge._egress_policy``:
the URL must be plain http(s) without credentials, the host must match ``[egress] allow`` when that
list is given, and every address the host resolves to must be public, or named by ``[egress]
allow_private``, and never one of the node's ``deny_addresses`` (the planet's own services).

Pinning (no DNS rebinding): the host is resolved once, through the injectable ``resolver``; the
request is then sent to the checked IP itself (the URL's host is replaced by the address) with the
``Host`` header and the TLS SNI / certificate check kept on the original hostname (httpcore's
``sni_hostname`` extension). A second DNS answer is never asked for, so it cannot be used.

Connection reuse: plain-http connections are pooled by (address, port), which is safe because the
pool is only reached after the check. HTTPS uses one short-lived connection per hop, because a pool
keyed by address could hand a connection verified for one hostname to another hostname on the
same address. (A pool keyed by (hostname, address) is a later optimisation.)

Redirects are followed like Workers' ``fetch`` (``redirect: "follow"``): at most
``max_redirects`` hops, each one re-checked from step one; 303 (and 301/302 after a POST) become
a GET without a body, and ``Authorization``/``Cookie`` are dropped when the origin changes.

The timeout is the smaller of the call's ``timeout_ms`` and the node cap, for all hops together,
and the response body is read only up to ``max_response_bytes``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

from edgefn.bundle import Manifest
from edgefn.bundle.manifest import Origin
from edgefn.edge import _egress_policy as policy
from edgefn.runtime import protocol as p

__all__ = [
    "MAX_REDIRECTS",
    "MAX_RESPONSE_BYTES",
    "MAX_TIMEOUT_MS",
    "Outbound",
    "Resolver",
    "SubrequestRules",
    "host_allowed",
    "system_resolver",
]

MAX_RESPONSE_BYTES = 8 * 1024 * 1024
MAX_TIMEOUT_MS = 60_000
MAX_REDIRECTS = 5
MAX_ADDRESSES = 32

# (host, port) -> addresses as strings. Tests inject one to simulate DNS without DNS.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CROSS_ORIGIN_DROP = frozenset({"authorization", "cookie", "proxy-authorization"})


async def system_resolver(host: str, port: int) -> list[str]:
    """All addresses ``host`` resolves to (the OS resolver, without blocking the loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for info in infos:
        seen[str(info[4][0])] = None
    return list(seen)


def host_allowed(allow: Sequence[str] | None, url: str) -> bool:
    """Whether ``url``'s host (and port) matches the ``[egress] allow`` list (names only)."""
    target = policy.parse_target(url)
    if isinstance(target, policy.Refusal):
        return False
    return allow is None or policy.matches_allow(allow, target.host, target.port)


@dataclass(frozen=True, slots=True)
class SubrequestRules:
    subrequests: int
    allow: tuple[str, ...] | None
    allow_private: tuple[str, ...] = ()
    origins: tuple[Origin, ...] = ()

    @classmethod
    def of(cls, manifest: Manifest) -> SubrequestRules:
        """The rules of a function: its ``[limits] subrequests``, ``[egress]`` and origins."""
        egress = manifest.egress
        return cls(
            manifest.limits.subrequests, egress.allow, egress.allow_private, manifest.origins
        )


class _Denied(Exception):
    """Internal: a hop was refused; carries the error kind and message for the FetchResult."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class _Hop:
    url: str
    method: str
    headers: list[tuple[str, str]]
    body: bytes


class Outbound:
    """Carries out subrequests for every function on a node (one bounded connection pool).

    ``resolver`` resolves names (default: the OS resolver); ``deny_addresses`` are the planet's own
    addresses, ip strings (every port) or (ip, port) pairs, refused whatever a manifest says;
    ``transport`` replaces the network for tests (it receives requests already pinned to an IP).
    """

    def __init__(
        self,
        *,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        resolver: Resolver | None = None,
        deny_addresses: Iterable[str | tuple[str, int]] = (),
        max_redirects: int = MAX_REDIRECTS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        assert 0 <= max_redirects <= 20
        self.max_response_bytes = max_response_bytes
        self.max_redirects = max_redirects
        self._resolver = resolver or system_resolver
        self._deny = policy.parse_deny(deny_addresses)
        self._transport = transport
        self._client = httpx.AsyncClient(
            transport=transport
            or httpx.AsyncHTTPTransport(
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64)
            ),
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

    def _count(self, request_id: str, rules: SubrequestRules) -> None:
        used = self._counts.get(request_id, 0) + 1
        self._counts[request_id] = used
        if used > rules.subrequests:
            raise _Denied(
                "subrequest_limit",
                f"request {request_id} made more than {rules.subrequests} subrequests "
                "(raise [limits] subrequests in edgefn.toml; each redirect counts)",
            )

    def count(
        self, request_id: str, call: p.FetchCall, rules: SubrequestRules
    ) -> p.FetchResult | None:
        """Count a call that makes no connection (the Cache API) against the limit; None if it
        may go on, else the refusal."""
        try:
            self._count(request_id, rules)
        except _Denied as denied:
            return self._result(call, denied.kind, f"{denied.message} (request {request_id})")
        return None

    def precheck(
        self, request_id: str, call: p.FetchCall, rules: SubrequestRules
    ) -> p.FetchResult | None:
        """Count ``call`` against the limit and run every check that needs no DNS.

        None if it may go on, else the refusal. For a backend that replaces the network
        (``edgefn.testing``'s ``fetch=`` fakes): their hosts need not resolve, and redirects are
        theirs to fake.
        """
        egress = policy.EgressRules(rules.allow, rules.allow_private, self._deny)
        try:
            self._count(request_id, rules)
            refusal = policy.precheck(egress, call.url)
        except _Denied as denied:
            return self._result(call, denied.kind, f"{denied.message} (request {request_id})")
        if refusal is not None:
            return self._result(call, "egress_denied", f"{refusal.message} (request {request_id})")
        return None

    async def fetch(
        self, request_id: str, call: p.FetchCall, rules: SubrequestRules
    ) -> p.FetchResult:
        timeout_s = min(call.timeout_ms, MAX_TIMEOUT_MS) / 1000
        egress = policy.EgressRules(rules.allow, rules.allow_private, self._deny)
        try:
            async with asyncio.timeout(timeout_s):
                return await self._follow(request_id, call, rules, egress)
        except _Denied as denied:
            return self._result(call, denied.kind, f"{denied.message} (request {request_id})")
        except (TimeoutError, httpx.TimeoutException):
            return self._result(
                call, "timeout", f"{call.url} did not answer within {call.timeout_ms} ms"
            )
        except (httpx.HTTPError, httpx.StreamError, httpx.InvalidURL, OSError, ValueError) as err:
            # Anything else escaping here would leave the function waiting for an answer to its
            # FetchCall until its own timeout; every failure must become a FetchResult.
            return self._result(call, "error", f"{call.url}: {type(err).__name__}: {err}")

    async def _follow(
        self,
        request_id: str,
        call: p.FetchCall,
        rules: SubrequestRules,
        egress: policy.EgressRules,
    ) -> p.FetchResult:
        hop = _Hop(call.url, call.method, list(call.headers), call.body)
        for number in range(self.max_redirects + 1):
            self._count(request_id, rules)
            target, ip = await self._check(hop.url, egress)
            client = self._client_for(target)
            try:
                resp = await self._send(client, target, ip, hop)
                try:
                    location = resp.headers.get("location")
                    if resp.status_code not in _REDIRECTS or location is None:
                        return await self._read(call, resp)
                finally:
                    await resp.aclose()
            finally:
                if client is not self._client:
                    await client.aclose()
            if number == self.max_redirects:
                break
            hop = _next_hop(hop, target, resp.status_code, location)
        raise _Denied("error", f"{call.url}: more than {self.max_redirects} redirects")

    async def _check(
        self, url: str, egress: policy.EgressRules
    ) -> tuple[policy.Target, policy.IPAddress]:
        """Run the policy on ``url``; returns the target and the one address to connect to."""
        target = policy.parse_target(url)
        if isinstance(target, policy.Refusal):
            raise _Denied("egress_denied", target.message)
        refusal = policy.check_name(egress, target)
        if refusal is not None:
            raise _Denied("egress_denied", refusal.message)
        addresses = [target.literal] if target.literal else await self._resolve(target)
        refusal = policy.check_addresses(egress, target, addresses)
        if refusal is not None:
            raise _Denied("egress_denied", refusal.message)
        return target, addresses[0]

    async def _resolve(self, target: policy.Target) -> list[policy.IPAddress]:
        try:
            answers = await self._resolver(target.host, target.port)
        except OSError as err:
            raise _Denied("error", f"cannot resolve {target.host}: {err}") from None
        out: list[policy.IPAddress] = []
        for text in list(answers)[:MAX_ADDRESSES]:
            try:
                out.append(ipaddress.ip_address(text.partition("%")[0]))
            except ValueError:
                raise _Denied(
                    "error", f"{target.host} resolved to {text!r}, not an IP address"
                ) from None
        return out

    def _client_for(self, target: policy.Target) -> httpx.AsyncClient:
        if target.scheme == "https" and self._transport is None:
            # One connection per hop: see the module docstring (pooling by address is unsafe).
            return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(retries=0), trust_env=False)
        return self._client

    async def _send(
        self, client: httpx.AsyncClient, target: policy.Target, ip: policy.IPAddress, hop: _Hop
    ) -> httpx.Response:
        """Send ``hop`` to ``ip`` (the checked address) with Host and SNI kept on the hostname."""
        url = httpx.URL(hop.url).copy_with(host=str(ip))
        default_port = 443 if target.scheme == "https" else 80
        host_header = _bracket(target.host) + (
            "" if target.port == default_port else f":{target.port}"
        )
        headers = [(k, v) for k, v in hop.headers if k.lower() != "host"]
        headers.append(("host", host_header))
        req = client.build_request(
            hop.method,
            url,
            headers=headers,
            content=hop.body or None,
            extensions={"sni_hostname": target.host},
        )
        return await client.send(req, stream=True)

    async def _read(self, call: p.FetchCall, resp: httpx.Response) -> p.FetchResult:
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


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _next_hop(hop: _Hop, target: policy.Target, status: int, location: str) -> _Hop:
    """The request a redirect asks for (Fetch standard, 'HTTP-redirect fetch')."""
    url = urljoin(hop.url, location)
    method, body, headers = hop.method, hop.body, hop.headers
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, body = "GET", b""
        headers = [(k, v) for k, v in headers if not k.lower().startswith("content-")]
    new = policy.parse_target(url)
    same_origin = isinstance(new, policy.Target) and (new.scheme, new.host, new.port) == (
        target.scheme,
        target.host,
        target.port,
    )
    if not same_origin:
        headers = [(k, v) for k, v in headers if k.lower() not in _CROSS_ORIGIN_DROP]
    return _Hop(url, method, headers, body)
