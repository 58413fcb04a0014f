"""Internal endpoints stay internal, seen from the attacker's side.

Everything here is checked from outside: what an HTTP client gets back, and whether the KV store
(read back through the authenticated internal listener), the victim node and its process are
unchanged afterwards. One real 2-location planet for the module (``examples/counter`` binds KV
namespace ``counts``; ``rl`` is an echo function for the per-client rate limit, 2/s, burst 20),
plus one in-process EdgeNode + KVService for the listener split where no planet is needed.
"""

from __future__ import annotations

import io
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefn._internal_auth import InternalAuth
from edgefn.edge import EdgeNode
from edgefn.edge.kv_binding import KVService, open_session
from edgefn.observe import JsonLog
from edgefn.routing.internal_auth import INTERNAL_AUTH_HEADER, sign_internal
from edgefn.state import VClock, encode_session
from tests.planet_helpers import (
    REPO,
    Planet,
    PlanetFactory,
    PlanetSpec,
    edgefn,
    internal_client,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COUNTER = {"host": "counter.localhost"}
ECHO = """
from edgefn import Response

async def fetch(request, env, ctx):
    return Response.json({"headers": dict(request.headers.items())})
"""
# A function that makes whatever subrequests its caller asks for (SSRF from inside the planet).
SSRF = """
import edgefn
from edgefn import Response

async def fetch(request, env, ctx):
    statuses = []
    for probe in await request.json():
        try:
            resp = await edgefn.fetch(probe["url"], method=probe["method"], body=probe["body"])
        except edgefn.EgressDeniedError:
            statuses.append("egress_denied")
        else:
            statuses.append(resp.status)
    return Response.json(statuses)
"""
# Paths an attacker tries on a public listener: KV reads, writes, deletes, dumps, metrics and
# anything else under /_edgefn/, also percent-encoded.
PROBES = [
    ("GET", "/_edgefn/kv/counts/canary"),
    ("PUT", "/_edgefn/kv/counts/canary"),
    ("DELETE", "/_edgefn/kv/counts/canary"),
    ("GET", "/_edgefn/kv/counts"),
    ("GET", "/_edgefn/kvstate/counts"),
    ("PUT", "/%5Fedgefn/kv/counts/canary"),
    ("GET", "/_edgefn/metrics"),
    ("POST", "/_edgefn/kill"),
    ("POST", "/_edgefn/thermal"),
    ("GET", "/_edgefn/anything"),
]


class Target(Planet):
    """The attacked planet, with its KV canary (``counts/canary``) at hand."""

    __slots__ = ()

    def canary(self, location: str | None = None) -> dict[str, Any]:
        """The canary key as the replica holds it, read through the signed internal path."""
        url = self.internal_urls[location or self.names[0]]
        with self.internal_client(timeout=10) as c:
            r = c.get(f"{url}/_edgefn/kv/counts/canary")
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    def put_canary(self, value: str, location: str | None = None) -> int:
        url = self.internal_urls[location or self.names[0]]
        with self.internal_client(timeout=10) as c:
            r = c.put(f"{url}/_edgefn/kv/counts/canary", content=value.encode())
        assert r.status_code == 200, r.text
        return int(r.json()["revision"])


@pytest.fixture(scope="module")
def planet(planet_factory: PlanetFactory, tmp_path_factory: pytest.TempPathFactory) -> Target:
    fns = tmp_path_factory.mktemp("fns")
    # ssrfpriv is a tenant that opened loopback for itself ([egress] allow_private): then only
    # the internal services' own authentication stands between it and them.
    for name, code, egress in (
        ("rl", ECHO, ""),
        ("ssrf", SSRF, ""),
        ("ssrfpriv", SSRF, '[egress]\nallow_private = ["127.0.0.1"]\n'),
    ):
        (fns / name).mkdir()
        (fns / name / "edgefn.toml").write_text(f'name = "{name}"\nmain = "main.py"\n{egress}')
        (fns / name / "main.py").write_text(code)
    # EDGEFN_CLIENT_RPS is inherited by every node of the planet.
    spec = PlanetSpec(locations=2, env={"EDGEFN_CLIENT_RPS": "2"})
    p = Target._make(planet_factory("security", spec))
    for fn in (REPO / "examples/counter", fns / "rl", fns / "ssrf", fns / "ssrfpriv"):
        p.deploy(fn)
    p.put_canary("original")
    return p


def _unchanged(planet: Target, before: dict[str, Any]) -> None:
    after = planet.canary()
    assert (after["value"], after["revision"]) == (before["value"], before["revision"])


# --------------------------------------------------------------------------- public listeners


def test_anycast_entry_answers_404_for_internal_paths_and_forwards_none(planet: Target) -> None:
    before = planet.canary()
    with httpx.Client(base_url=planet.entry_url, timeout=10, trust_env=False) as c:
        for method, path in PROBES:
            r = c.request(method, path, headers=COUNTER, content=b"evil")
            assert r.status_code == 404, (method, path, r.text)
            assert r.json() == {"error": "not_found"}, (method, path)
            # Answered by the entry itself: no location was chosen for it.
            assert "x-edgefn-entry" not in r.headers, (method, path)
        assert c.get("/_edgefn/health").json()["role"] == "entry"
    _unchanged(planet, before)


def test_node_public_port_answers_404_for_internal_paths(planet: Target) -> None:
    before = planet.canary()
    token = (planet.state / "metrics-token").read_text().strip()
    for name, url in planet.public_urls.items():
        with httpx.Client(base_url=url, timeout=10, trust_env=False) as c:
            for method, path in PROBES:
                r = c.request(method, path, headers=COUNTER, content=b"evil")
                assert r.status_code == 404, (name, method, path, r.text)
                assert r.json() == {"error": "not_found"}
            assert c.get("/_edgefn/health").status_code == 200
            bearer = {"authorization": f"Bearer {token}"}
            assert c.get("/_edgefn/metrics", headers=bearer).status_code == 200
            wrong = {"authorization": "Bearer " + "0" * len(token)}
            assert c.get("/_edgefn/metrics", headers=wrong).status_code == 404
    assert (planet.state / "metrics-token").stat().st_mode & 0o777 == 0o600
    assert (planet.state / "planet-secret").stat().st_mode & 0o777 == 0o600
    _unchanged(planet, before)


# --------------------------------------------------------------------------- internal listener


def _signed(
    secret: bytes, method: str, target: str, body: bytes, *, at_ms: int | None = None
) -> dict[str, str]:
    at = time.time_ns() // 1_000_000 if at_ms is None else at_ms
    value = sign_internal(
        secret, method=method, target=target, body=body, at_ms=at, nonce=secrets.token_hex(16)
    )
    return {INTERNAL_AUTH_HEADER: value}


def test_internal_listener_refuses_unsigned_wrong_stale_and_replayed(planet: Target) -> None:
    url = planet.internal_urls[planet.names[0]]
    target = "/_edgefn/kv/counts/canary"
    planet.put_canary("original")
    before = planet.canary()
    with httpx.Client(base_url=url, timeout=10, trust_env=False) as c:
        unsigned = c.put(target, content=b"evil")
        assert unsigned.status_code == 401, unsigned.text
        assert c.get("/_edgefn/kvstate/counts").status_code == 401
        wrong_key = _signed(b"not-the-planet-secret-0123456789", "PUT", target, b"evil")
        assert c.put(target, content=b"evil", headers=wrong_key).status_code == 403
        stale = _signed(
            planet.secret, "PUT", target, b"evil", at_ms=time.time_ns() // 10**6 - 60_000
        )
        assert c.put(target, content=b"evil", headers=stale).status_code == 403
        # Signed for another body or another path: refused.
        other_body = _signed(planet.secret, "PUT", target, b"good")
        assert c.put(target, content=b"evil", headers=other_body).status_code == 403
        other_path = _signed(planet.secret, "PUT", "/_edgefn/kv/counts/other", b"evil")
        assert c.put(target, content=b"evil", headers=other_path).status_code == 403
        _unchanged(planet, before)
        # A genuine request, captured and replayed after a later write: refused, no rollback.
        genuine = _signed(planet.secret, "PUT", target, b"first")
        assert c.put(target, content=b"first", headers=genuine).status_code == 200
        planet.put_canary("second")
        replayed = c.put(target, content=b"first", headers=genuine)
        assert replayed.status_code == 403, replayed.text
        assert replayed.json()["reason"] == "replayed"
    assert planet.canary()["value"] == "second"


# --------------------------------------------------------------------------- planet control APIs


def test_supervisor_and_link_control_refuse_unauthenticated_callers(planet: Target) -> None:
    victim = planet.names[1]
    pid = next(loc["pid"] for loc in planet.info["locations"] if loc["name"] == victim)
    sup, links = planet.info["supervisor_url"], planet.info["links_url"]
    forged = _signed(b"not-the-planet-secret-0123456789", "POST", "/kill", b"")
    with httpx.Client(timeout=10, trust_env=False) as c:
        for method, url, body in [
            ("POST", f"{sup}/kill", {"location": victim}),
            ("POST", f"{sup}/revive", {"location": victim}),
            ("GET", f"{sup}/state", None),
            ("POST", f"{links}/partition", {"endpoints": [f"loc-{victim}"]}),
            ("POST", f"{links}/delay", {"a": f"loc-{victim}", "b": "hub-x", "rtt_ms": 9999}),
            ("POST", f"{links}/heal", None),
            ("GET", f"{links}/links", None),
        ]:
            r = c.request(method, url, json=body)
            assert r.status_code == 401, (url, r.text)
            r = c.request(method, url, json=body, headers=forged)
            assert r.status_code == 403, (url, r.text)
    # The victim process lives, serves, and none of its links was cut.
    os.kill(pid, 0)
    health = httpx.get(f"{planet.public_urls[victim]}/_edgefn/health", timeout=10)
    assert health.status_code == 200
    served = httpx.get(f"{planet.public_urls[victim]}/get?key=canary", headers=COUNTER, timeout=10)
    assert served.status_code == 200, served.text
    listed = edgefn("net", "links", "--json", state_dir=planet.state)  # the signed CLI path
    assert listed, listed
    assert not any(link.get("cut") for link in listed), listed


def test_function_subrequests_cannot_use_internal_apis(planet: Target) -> None:
    """Deployed code is inside the planet's network, but holds no secret: its subrequests to the
    internal listener, the supervisor and the link API are refused, the public port hides KV."""
    victim = planet.names[1]
    before = planet.canary()
    sup, links = planet.info["supervisor_url"], planet.info["links_url"]
    internal, public = planet.internal_urls[planet.names[0]], planet.public_urls[planet.names[0]]
    probes = [
        ("PUT", f"{internal}/_edgefn/kv/counts/canary", "evil", 401),
        ("GET", f"{internal}/_edgefn/kvstate/counts", "", 401),
        ("POST", f"{internal}/_edgefn/thermal", '{"celsius": 150}', 401),
        ("PUT", f"{public}/_edgefn/kv/counts/canary", "evil", 404),
        ("POST", f"{sup}/kill", f'{{"location": "{victim}"}}', 401),
        ("POST", f"{links}/partition", f'{{"endpoints": ["loc-{victim}"]}}', 401),
    ]
    body = [{"method": m, "url": u, "body": b} for m, u, b, _ in probes]
    # By default the egress policy refuses every one of them before connecting.
    r = httpx.post(
        f"{planet.entry_url}/", json=body, headers={"host": "ssrf.localhost"}, timeout=20
    )
    assert r.status_code == 200, r.text
    assert r.json() == ["egress_denied"] * len(probes)
    # With loopback allowed by the tenant, each service refuses the unauthenticated call.
    r = httpx.post(
        f"{planet.entry_url}/", json=body, headers={"host": "ssrfpriv.localhost"}, timeout=20
    )
    assert r.status_code == 200, r.text
    assert r.json() == [want for *_, want in probes]
    _unchanged(planet, before)
    assert httpx.get(f"{planet.public_urls[victim]}/_edgefn/health", timeout=10).status_code == 200
    assert not any(
        link.get("cut") for link in edgefn("net", "links", "--json", state_dir=planet.state)
    )


# --------------------------------------------------------------------------- session tokens


def test_forged_session_token_is_ignored_through_the_entry(planet: Target) -> None:
    """A token claiming a write nobody made would hold a session read until it fails (503);
    unsigned, it is ignored: the read is served and a fresh, valid token comes back."""
    forged = encode_session(VClock({planet.names[0]: 10**9}))
    with httpx.Client(base_url=planet.entry_url, timeout=15, trust_env=False) as c:
        r = c.get(
            "/get",
            params={"key": "canary", "consistency": "session"},
            headers={**COUNTER, "x-edgefn-session": forged},
        )
    assert r.status_code == 200, r.text
    fresh = r.headers.get("x-edgefn-session", "")
    assert fresh != forged
    assert open_session(planet.secret, "counts", fresh)
    # Modifying a genuine token breaks it, and the internal endpoint says so plainly.
    url = planet.internal_urls[planet.names[0]]
    with internal_client(planet.state, timeout=15) as c:
        tampered = forged + "." + fresh.rpartition(".")[2]
        bad = c.get(f"{url}/_edgefn/kv/counts/canary", params={"session": tampered})
        assert (bad.status_code, bad.json()["error"]) == (400, "bad_session")
        good = c.get(f"{url}/_edgefn/kv/counts/canary", params={"session": fresh})
        assert good.status_code == 200, good.text


# --------------------------------------------------------------------------- rate-limit key


def test_rotating_fake_client_identity_does_not_escape_the_rate_limit(planet: Target) -> None:
    """Every request claims to be a new client (the old x-edgefn-client-key, a forged entry
    signature, X-Forwarded-For); the limit (2/s, burst 20) still applies to the one real client."""

    def statuses(base: str) -> list[int]:
        out = []
        with httpx.Client(base_url=base, timeout=10, trust_env=False) as c:
            for i in range(40):
                fake = f"198.51.100.{i}"
                headers = {
                    "host": "rl.localhost",
                    "x-edgefn-client-key": f"client-{i}",
                    "x-edgefn-client-addr": fake,
                    "x-edgefn-client-at": str(time.time_ns() // 10**6),
                    "x-edgefn-client-sig": secrets.token_hex(32),
                    "x-forwarded-for": fake,
                }
                r = c.get("/", headers=headers)
                out.append(r.status_code)
                if r.status_code == 200:
                    seen = r.json()["headers"]
                    assert seen.get("x-edgefn-client-addr") == "127.0.0.1", seen
                    assert "x-edgefn-client-sig" not in seen, seen
        return out

    through_entry = statuses(planet.entry_url)
    assert 429 in through_entry, through_entry
    assert through_entry.count(200) <= 30, through_entry
    direct = statuses(planet.public_urls[planet.names[1]])
    assert 429 in direct, direct


# --------------------------------------------------------------------------- no planet needed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def lone_node(tmp_path: Path) -> AsyncIterator[tuple[EdgeNode, bytes]]:
    secret = secrets.token_hex(32).encode()
    kv = KVService(
        location="solo",
        state_dir=tmp_path,
        nats_urls=[f"nats://127.0.0.1:{_free_port()}"],  # nobody listens: a cut-off node
        session_secret=secret,
    )
    node = EdgeNode(
        "solo",
        state_dir=tmp_path / "node",
        log=JsonLog(io.StringIO(), location="solo"),
        internal_secret=secret,
        kv_http=kv.asgi,
    )
    await node.start()
    try:
        yield node, secret
    finally:
        await node.stop()
        await kv.stop()


async def test_lone_node_serves_kv_only_on_its_signed_internal_listener(
    lone_node: tuple[EdgeNode, bytes],
) -> None:
    node, secret = lone_node
    assert node.internal_url
    assert node.internal_url != node.url
    path = "/_edgefn/kv/counts/k"
    async with httpx.AsyncClient(base_url=node.url, trust_env=False) as public:
        r = await public.put(path, content=b"evil", auth=InternalAuth(secret))
        assert r.status_code == 404  # not here even when signed: the public port has no KV
    async with httpx.AsyncClient(base_url=node.internal_url, trust_env=False) as c:
        assert (await c.put(path, content=b"evil")).status_code == 401
        assert (await c.get("/_edgefn/health")).status_code == 401
        signed = InternalAuth(secret)
        assert (await c.get(path, auth=signed)).json()["value"] is None
        ok = await c.put(path, content=b"good", auth=signed)
        assert ok.status_code == 200, ok.text
        assert (await c.get(path, auth=signed)).json()["value"] == "good"
        metrics = await c.get("/_edgefn/metrics", auth=signed)
        assert metrics.status_code == 200
    # The HMAC also opens the public metrics (there is no token on this node).
    async with httpx.AsyncClient(base_url=node.url, trust_env=False) as public:
        assert (await public.get("/_edgefn/metrics")).status_code == 404
        assert (await public.get("/_edgefn/metrics", auth=InternalAuth(secret))).status_code == 200
