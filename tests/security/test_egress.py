"""SSRF attacks through ``edgefn.fetch`` on a real node, each checked from outside the node.

Every test runs a real EdgeNode (uvicorn, zygote, forked workers) whose ``Outbound`` gets a fake
resolver (no real DNS) and a guard transport: requests to loopback go to the real network, any
other address is recorded and answered with a canned response, so no packet ever leaves
127.0.0.0/8 even if the policy were broken. The "victim" is a listener on 127.0.0.1 standing in
for the control API, the supervisor or the metadata service: it must receive nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import shutil
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from edgefn.edge import EdgeNode, Outbound
from edgefn.observe import JsonLog

pytestmark = pytest.mark.integration

FETCHER = Path(__file__).parent.parent / "integration" / "node" / "functions" / "fetcher"


@dataclass
class Listener:
    """A raw HTTP/1.1 server on 127.0.0.1 that records every connection and request head."""

    respond: Callable[[bytes], bytes] = lambda head: _http(200, b"listener")
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            writer.write(self.respond(head))
            await writer.drain()
        writer.close()


def _http(status: int, body: bytes, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\ncontent-length: {len(body)}\r\nconnection: close\r\n{extra}\r\n"
    ).encode() + body


@contextlib.asynccontextmanager
async def _listen(listener: Listener) -> AsyncIterator[Listener]:
    server = await asyncio.start_server(listener.handle, "127.0.0.1", 0)
    listener.port = server.sockets[0].getsockname()[1]
    try:
        yield listener
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def victim() -> AsyncIterator[Listener]:
    async with _listen(Listener()) as listener:
        yield listener


class GuardTransport(httpx.AsyncBaseTransport):
    """The node's network: loopback is real, anything else is recorded and never contacted."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport(retries=0)
        self.elsewhere: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            loopback = ipaddress.ip_address(request.url.host).is_loopback
        except ValueError:  # not pinned to an address: record it, the test will fail on it
            loopback = False
        if loopback:
            return await self.inner.handle_async_request(request)
        self.elsewhere.append(request)
        return httpx.Response(200, stream=httpx.ByteStream(b"public stand-in"))

    async def aclose(self) -> None:
        await self.inner.aclose()


class FakeDNS:
    """Answers from a table; a list of answers is used in turn (the last one repeats)."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.lookups.append(host)
        answers = self.table.get(host)
        if answers is None:
            raise OSError(f"fake DNS has no record for {host}")
        return answers[min(self.lookups.count(host), len(answers)) - 1]


@dataclass
class Planet:
    node: EdgeNode
    dns: FakeDNS
    guard: GuardTransport

    async def fetch(self, url: str) -> dict[str, object]:
        async with httpx.AsyncClient(base_url=self.node.url, timeout=20) as c:
            resp = await c.get("/", params={"url": url}, headers={"host": "fetcher.localhost"})
        body = resp.json()
        assert isinstance(body, dict)
        return body


@contextlib.asynccontextmanager
async def _planet(
    tmp_path: Path,
    egress: str,
    *,
    dns: dict[str, list[list[str]]] | None = None,
    deny: Sequence[str | tuple[str, int]] = (),
) -> AsyncIterator[Planet]:
    fn = tmp_path / "fetcher"
    shutil.copytree(FETCHER, fn)
    (fn / "edgefn.toml").write_text(
        f'name = "fetcher"\n[limits]\nsubrequests = 10\n[egress]\n{egress}\n'
    )
    fake = FakeDNS(dns or {})
    guard = GuardTransport()
    outbound = Outbound(resolver=fake, deny_addresses=deny, transport=guard)
    node = EdgeNode(
        "test", state_dir=tmp_path / "node", log=JsonLog(io.StringIO()), outbound=outbound
    )
    await node.start()
    try:
        await node.deploy_dir(fn)
        yield Planet(node, fake, guard)
    finally:
        await node.stop()


def _denied(body: dict[str, object], *needles: str) -> None:
    assert body.get("error") == "EgressDeniedError", body
    message = str(body["message"])
    for needle in needles:
        assert needle in message, message


async def test_loopback_is_refused_by_default(tmp_path: Path, victim: Listener) -> None:
    async with _planet(tmp_path, "", dns={"localhost": [["127.0.0.1", "::1"]]}) as planet:
        literal = await planet.fetch(f"http://127.0.0.1:{victim.port}/admin")
        by_name = await planet.fetch(f"http://localhost:{victim.port}/admin")
        mapped = await planet.fetch(f"http://[::ffff:127.0.0.1]:{victim.port}/admin")
    _denied(literal, "127.0.0.1 is loopback", "allow_private", "local development")
    _denied(by_name, "localhost (resolved to 127.0.0.1)", "loopback")
    _denied(mapped, "loopback")
    assert victim.connections == 0
    assert planet.guard.elsewhere == []


async def test_cloud_metadata_is_refused_before_connecting(tmp_path: Path) -> None:
    dns = {"metadata.test": [["169.254.169.254"]]}
    async with _planet(tmp_path, "", dns=dns) as planet:
        literal = await planet.fetch("http://169.254.169.254/latest/meta-data/")
        by_name = await planet.fetch("http://metadata.test/latest/meta-data/")
    _denied(literal, "169.254.169.254", "cloud metadata")
    _denied(by_name, "metadata.test (resolved to 169.254.169.254)", "cloud metadata")
    assert planet.guard.elsewhere == []  # nothing was sent anywhere


async def test_name_resolving_to_a_private_address_is_refused(
    tmp_path: Path, victim: Listener
) -> None:
    dns = {"internal.test": [["8.8.8.8", "127.0.0.1"]], "corp.test": [["10.0.0.7"]]}
    async with _planet(tmp_path, 'allow = ["internal.test", "corp.test"]', dns=dns) as planet:
        mixed = await planet.fetch(f"http://internal.test:{victim.port}/")
        private = await planet.fetch("http://corp.test/")
    _denied(mixed, "internal.test (resolved to 127.0.0.1)", "loopback")
    _denied(private, "10.0.0.7 is private (RFC 1918)")
    assert victim.connections == 0
    assert planet.guard.elsewhere == []


async def test_dns_rebinding_cannot_reach_loopback(tmp_path: Path, victim: Listener) -> None:
    """The name first resolves to a public-looking TEST-NET address, then to 127.0.0.1. The node
    resolves once and connects to the checked address, so the second answer is never used."""
    dns = {"rebind.test": [["192.0.2.1"], ["127.0.0.1"]]}
    async with _planet(tmp_path, "", dns=dns) as planet:
        body = await planet.fetch(f"http://rebind.test:{victim.port}/steal")
    assert body == {"status": 200, "bodies": ["public stand-in"]}
    assert planet.dns.lookups == ["rebind.test"]
    [sent] = planet.guard.elsewhere
    assert sent.url.host == "192.0.2.1"  # pinned to the address that was checked
    assert sent.headers["host"] == f"rebind.test:{victim.port}"
    assert sent.extensions["sni_hostname"] == "rebind.test"
    assert victim.connections == 0


async def test_redirect_to_a_refused_address_is_refused(tmp_path: Path, victim: Listener) -> None:
    targets = {
        b"/to-victim": f"http://127.0.0.1:{victim.port}/admin",
        b"/to-metadata": "http://169.254.169.254/latest/meta-data/",
        b"/to-file": "file:///etc/passwd",
    }

    def respond(head: bytes) -> bytes:
        path = head.split(b" ")[1]
        return _http(302, b"", f"location: {targets[path]}\r\n")

    async with _listen(Listener(respond)) as upstream:
        egress = f'allow_private = ["127.0.0.1:{upstream.port}"]'
        async with _planet(tmp_path, egress) as planet:
            base = f"http://127.0.0.1:{upstream.port}"
            to_victim = await planet.fetch(base + "/to-victim")
            to_metadata = await planet.fetch(base + "/to-metadata")
            to_file = await planet.fetch(base + "/to-file")
    _denied(to_victim, f"127.0.0.1 is loopback; add '127.0.0.1:{victim.port}'")
    _denied(to_metadata, "cloud metadata")
    _denied(to_file, "only http:// and https://")
    assert len(upstream.heads) == 3
    assert victim.connections == 0
    assert planet.guard.elsewhere == []


async def test_allow_private_opens_exactly_the_named_port(tmp_path: Path, victim: Listener) -> None:
    def respond(head: bytes) -> bytes:
        if head.startswith(b"GET /start "):
            return _http(302, b"", "location: /hello\r\n")
        return _http(200, b"hello from upstream")

    async with _listen(Listener(respond)) as upstream:
        egress = f'allow_private = ["127.0.0.1:{upstream.port}"]'
        async with _planet(tmp_path, egress) as planet:
            ok = await planet.fetch(f"http://127.0.0.1:{upstream.port}/start")
            other_port = await planet.fetch(f"http://127.0.0.1:{victim.port}/")
    assert ok == {"status": 200, "bodies": ["hello from upstream"]}
    assert [h.split(b"\r\n")[0] for h in upstream.heads] == [
        b"GET /start HTTP/1.1",
        b"GET /hello HTTP/1.1",
    ]
    assert f"host: 127.0.0.1:{upstream.port}".encode() in upstream.heads[0].lower()
    _denied(other_port, "loopback")
    assert victim.connections == 0


async def test_deny_addresses_stay_refused_even_with_allow_private(
    tmp_path: Path, victim: Listener
) -> None:
    dns = {"localhost": [["127.0.0.1"]]}
    egress = 'allow_private = ["127.0.0.1", "localhost"]'
    deny = [("127.0.0.1", victim.port)]
    async with _planet(tmp_path, egress, dns=dns, deny=deny) as planet:
        literal = await planet.fetch(f"http://127.0.0.1:{victim.port}/v1/functions")
        by_name = await planet.fetch(f"http://localhost:{victim.port}/v1/functions")
    _denied(literal, "address of the platform itself")
    _denied(by_name, "address of the platform itself")
    assert victim.connections == 0


async def test_credentials_and_bad_urls_are_refused_at_once(
    tmp_path: Path, victim: Listener
) -> None:
    async with _planet(tmp_path, 'allow_private = ["127.0.0.1"]') as planet:
        creds = await planet.fetch(f"http://admin:secret@127.0.0.1:{victim.port}/")
        bad_port = await planet.fetch("http://127.0.0.1:99999/")
        unresolvable = await planet.fetch("http://nowhere.test/")
    _denied(creds, "credentials")
    assert "secret" not in str(creds["message"])
    # A URL that cannot be fetched at all fails in the function, before it reaches the node.
    assert bad_port["error"] == "InvalidURLError", bad_port
    assert "not a valid URL" in str(bad_port["message"])
    assert unresolvable["error"] == "FetchError"
    assert "cannot resolve nowhere.test" in str(unresolvable["message"])
    assert victim.connections == 0
