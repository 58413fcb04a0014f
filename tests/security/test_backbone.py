"""The backbone's security against real nats-servers and role processes (docs/design/0007).

Users and permissions: anonymous clients are refused at the core and at a hub; a node's
credentials cannot publish desired state, another node's observed state or beacons, or KV
messages under another origin. TLS: a plaintext client to a TLS listener fails; a server bound off
loopback without TLS refuses to start (checked without binding). Signed desired state: a forged
value (from node credentials, or with a wrong signature from a holder of the control password) is
not applied, seen from outside: the node keeps serving the old version.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError

from edgefn.bundle import build_bundle, load_or_create_signing_key
from edgefn.bus import BusConnectError, BusError, CoreConfig, HubConfig, NatsServer
from edgefn.bus.credentials import Credentials, load_credentials, load_users
from edgefn.bus.jetstream import connect, ensure_kv, ensure_object_store, jetstream
from edgefn.bus.nats_config import check_exposure
from edgefn.bus.subjects import (
    BUNDLES_OBJECT_STORE,
    CACHE_PURGE,
    DESIRED_BUCKET,
    DURABLE_ALL,
    OBSERVED_BUCKET,
    QUEUE_ALL,
    TAIL_SESSIONS,
    cache_fetch_subject,
    durable_subject,
    health_subject,
    kv_control_subject,
    kv_replication_subject,
    load_report_subject,
    tail_event_subject,
    telemetry_subject,
    traces_subject,
)
from edgefn.control.desired_signing import sign_desired
from edgefn.control.telemetry_ingest import TelemetryIngest
from edgefn.control.trace_ingest import TraceIngest
from edgefn.observe.rollup import Accumulator, encode_rollup
from edgefn.observe.span_store import SpanStore
from edgefn.observe.spans import SpanRecord, TraceBatch, encode_batch
from edgefn.observe.telemetry_store import TelemetryStore
from edgefn.planet.bundles import BundleCache
from tests.bus_creds import BusFiles, bus_files
from tests.planet_helpers import REPO, Roles, running_roles, wait_for
from tests.waiting import until

pytestmark = pytest.mark.integration

_DENIED = (NatsError, TimeoutError)
REGION = "eu-west"
NODES = [("fra", REGION), ("ams", REGION)]


@dataclass
class Secured:
    core: NatsServer
    hub: NatsServer
    bus: BusFiles

    def creds(self, name: str, *, tls: bool = True) -> Credentials:
        c = load_credentials(self.bus[name])
        return c if tls else Credentials(c.user, c.password, None)


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Secured]:
    bus = bus_files(tmp_path, regions=[REGION], locations=NODES)
    core = NatsServer(
        CoreConfig(
            name="core",
            store_dir=tmp_path / "js",
            users=load_users(bus["core.users"]),
            tls=bus.tls["core"],
        ),
        work_dir=tmp_path / "core",
    )
    await core.start()
    leaf = load_credentials(bus[f"leaf-{REGION}"])
    hub = NatsServer(
        HubConfig(
            name=f"hub-{REGION}",
            core_leafnode_urls=(core.leafnode_url,),
            users=load_users(bus[f"hub-{REGION}.users"]),
            leaf_user=leaf.user,
            leaf_password=leaf.password,
            tls=bus.tls[f"hub-{REGION}"],
        ),
        work_dir=tmp_path / "hub",
    )
    await hub.start()
    try:
        yield Secured(core, hub, bus)
    finally:
        await hub.stop()
        await core.stop()


class _Errors:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def record(self, err: Exception) -> None:
        self.seen.append(str(err))

    def violations(self) -> list[str]:
        return [e for e in self.seen if "ermissions" in e]


async def _open(url: str, creds: Credentials, errors: _Errors | None = None) -> Client:
    return await connect(
        url, name=f"test-{creds.user}", creds=creds, error_cb=errors.record if errors else None
    )


async def _collect(nc: Client, subject: str) -> list[str]:
    got: list[str] = []

    async def cb(msg: Any) -> None:
        got.append(msg.subject)

    await nc.subscribe(subject, cb=cb)
    await nc.flush()
    return got


async def _wait_hub_linked(s: Secured) -> None:
    """Until a message published at the hub reaches a subscriber at the core (leafnode up)."""
    control = await _open(s.core.client_url, s.creds("control"))
    fra = await _open(s.hub.client_url, s.creds("node-fra"))
    try:
        got = await _collect(control, health_subject("fra"))

        async def heard() -> bool:
            await fra.publish(health_subject("fra"), b"{}")
            await fra.flush()
            return bool(got)

        await until(heard, timeout_s=15, what="the hub's leafnode to the core", interval_s=0.05)
    finally:
        await fra.close()
        await control.close()


# -- users ---------------------------------------------------------------------------------------


async def test_anonymous_and_wrong_password_refused_at_core_and_hub(secured: Secured) -> None:
    ca = secured.creds("control").ca_file
    for url in (secured.core.client_url, secured.hub.client_url):
        with pytest.raises(BusConnectError):
            # Anonymous (TLS fine, no user): refused, there is no no_auth_user.
            await connect(url, name="anon", creds=Credentials("", "", ca), connect_deadline_s=1.5)
        with pytest.raises(BusConnectError):
            await connect(
                url, name="bad", creds=Credentials("admin", "x" * 32, ca), connect_deadline_s=1.5
            )
    # A hub does not know core identities and the core does not know nodes.
    with pytest.raises(BusConnectError):
        await connect(
            secured.core.client_url,
            name="n",
            creds=secured.creds("node-fra"),
            connect_deadline_s=1.5,
        )
    with pytest.raises(BusConnectError):
        await connect(
            secured.hub.client_url, name="c", creds=secured.creds("control"), connect_deadline_s=1.5
        )


async def test_node_publishes_only_its_own_subjects(secured: Secured) -> None:
    await _wait_hub_linked(secured)
    control = await _open(secured.core.client_url, secured.creds("control"))
    errors = _Errors()
    fra = await _open(secured.hub.client_url, secured.creds("node-fra"), errors)
    try:
        watched = [
            health_subject("ams"),
            load_report_subject("ams"),
            kv_replication_subject("ns", "ams"),
            kv_control_subject("ns", "ams", "ams"),
            kv_control_subject("ns", "_all", "ams"),
            health_subject("fra"),
            kv_replication_subject("ns", "fra"),
            kv_control_subject("ns", "ams", "fra"),
        ]
        got = {subject: await _collect(control, subject) for subject in watched}
        allowed = {
            health_subject("fra"),
            kv_replication_subject("ns", "fra"),
            kv_control_subject("ns", "ams", "fra"),
        }
        refused = [subject for subject in watched if subject not in allowed]

        async def delivered() -> bool:
            # The hub learns of the core's new subscriptions over the leafnode asynchronously,
            # and drops what nobody there wants yet: publish every subject again until the
            # allowed ones arrived (a refused one is refused each time).
            for subject in watched:
                await fra.publish(subject, b"{}")
            await fra.flush()
            await asyncio.sleep(0.2)
            return all(got[subject] for subject in allowed)

        await until(
            delivered, timeout_s=20, interval_s=0.3, what="the allowed messages at the core"
        )

        # The hub's error names the subject: one for each refused subject, none for an allowed one.
        def named(subject: str) -> bool:
            return any(f'"{subject}"' in v for v in errors.violations())

        await until(
            lambda: all(named(subject) for subject in refused),
            timeout_s=15,
            what="a permissions error for each refused subject",
        )
        for subject in watched:
            assert bool(got[subject]) == (subject in allowed), subject
        assert not any(named(subject) for subject in allowed), errors.seen
    finally:
        await fra.close()
        await control.close()


def _rollup_bytes(location: str, claimed: str, seq: int) -> tuple[bytes, str]:
    acc = Accumulator(location=claimed, epoch="e1", start_ms=time.time_ns() // 1_000_000)
    acc._seq = seq
    acc.record("fn", "v1", 200, "eu-west", 5.0)
    rollup = acc.cut(time.time_ns() // 1_000_000)
    assert rollup is not None
    return encode_rollup(rollup), f"{location}-{claimed}-{seq}"


async def test_node_cannot_publish_or_forge_another_locations_telemetry(
    secured: Secured, tmp_path: Path
) -> None:
    """fra's node publishes rollups: on ams's subject (refused by the hub), on its own subject
    but naming ams (refused by the core's ingest), and one of its own. Seen from outside, in the
    core's store: only fra's own request counts. Tooling (admin) cannot publish telemetry."""
    await _wait_hub_linked(secured)
    control = await _open(secured.core.client_url, secured.creds("control"))
    store = TelemetryStore(tmp_path / "telemetry.sqlite")
    ingest = TelemetryIngest(control, store)
    await ingest.start()
    errors = _Errors()
    fra = await _open(secured.hub.client_url, secured.creds("node-fra"), errors)
    admin = await _open(secured.core.client_url, secured.creds("admin"), errors)
    try:
        js = jetstream(fra, timeout_s=2.0)
        data, msg_id = _rollup_bytes("fra", "ams", 1)
        with pytest.raises(_DENIED):
            await js.publish(telemetry_subject("ams"), data, headers={"Nats-Msg-Id": msg_id})
        with pytest.raises(_DENIED):
            await jetstream(admin, timeout_s=2.0).publish(telemetry_subject("ams"), data)
        # Accepted by the stream (the subject is fra's), then refused by the ingest.
        await js.publish(telemetry_subject("fra"), data, headers={"Nats-Msg-Id": msg_id})
        own, own_id = _rollup_bytes("fra", "fra", 2)
        await js.publish(telemetry_subject("fra"), own, headers={"Nats-Msg-Id": own_id})
        await until(
            lambda: ingest.statistics().received_total >= 2,
            timeout_s=15,
            what="both rollups on fra's subject at the ingest",
        )
        assert [(r.location, r.requests) for r in store.stats("fn", since_ms=0)] == [("fra", 1)]
        assert ingest.statistics().rejected_total == 1
        assert len(errors.violations()) == 2, errors.seen
    finally:
        await fra.close()
        await admin.close()
        await ingest.stop()
        await control.close()
        store.close()


def _batch_bytes(location: str, span_location: str, span_id: str) -> tuple[bytes, str]:
    span = SpanRecord("ab" * 16, span_id, "", False, "GET", 1, 1, 2, 0, span_location, "fn",
                      1.0, "error")  # fmt: skip
    batch_id = f"{location}-{span_id}"
    return encode_batch(TraceBatch(location, batch_id, [span])), batch_id


async def test_node_cannot_publish_or_forge_another_locations_spans(
    secured: Secured, tmp_path: Path
) -> None:
    """fra's node ships spans: on ams's subject (refused by the hub), on its own subject but with
    a batch or a span naming ams (both refused by the core's ingest), and one of its own. In the
    core's span store only fra's own span is found. Tooling (admin) cannot publish traces."""
    await _wait_hub_linked(secured)
    control = await _open(secured.core.client_url, secured.creds("control"))
    store = SpanStore(tmp_path / "spans.sqlite")
    ingest = TraceIngest(control, store)
    await ingest.start()
    errors = _Errors()
    fra = await _open(secured.hub.client_url, secured.creds("node-fra"), errors)
    admin = await _open(secured.core.client_url, secured.creds("admin"), errors)
    try:
        js = jetstream(fra, timeout_s=2.0)
        data, msg_id = _batch_bytes("ams", "ams", "1" * 16)
        with pytest.raises(_DENIED):
            await js.publish(traces_subject("ams"), data, headers={"Nats-Msg-Id": msg_id})
        with pytest.raises(_DENIED):
            await jetstream(admin, timeout_s=2.0).publish(traces_subject("ams"), data)
        # Accepted by the stream (the subject is fra's), then refused by the ingest.
        await js.publish(traces_subject("fra"), data, headers={"Nats-Msg-Id": msg_id})
        forged, forged_id = _batch_bytes("fra", "ams", "2" * 16)
        await js.publish(traces_subject("fra"), forged, headers={"Nats-Msg-Id": forged_id})
        own, own_id = _batch_bytes("fra", "fra", "3" * 16)
        await js.publish(traces_subject("fra"), own, headers={"Nats-Msg-Id": own_id})
        await until(
            lambda: ingest.statistics().received_total >= 3,
            timeout_s=15,
            what="the three batches on fra's subject at the ingest",
        )
        assert [(s.location, s.span_id) for s in store.trace("ab" * 16)] == [("fra", "3" * 16)]
        assert ingest.statistics().rejected_total == 2
        assert len(errors.violations()) == 2, errors.seen
    finally:
        await fra.close()
        await admin.close()
        await ingest.stop()
        await control.close()
        store.close()


async def test_node_cannot_write_desired_or_other_observed_state(secured: Secured) -> None:
    await _wait_hub_linked(secured)
    control = await _open(secured.core.client_url, secured.creds("control"))
    fra = await _open(secured.hub.client_url, secured.creds("node-fra"))
    try:
        desired = await ensure_kv(jetstream(control), DESIRED_BUCKET)
        observed = await ensure_kv(jetstream(control), OBSERVED_BUCKET)
        await desired.put("fra", b"from-control")
        js = jetstream(fra, timeout_s=1.0)
        kv_desired = await js.key_value(DESIRED_BUCKET)
        kv_observed = await js.key_value(OBSERVED_BUCKET)
        # Reading its own desired state and writing its own observed state work...
        assert (await kv_desired.get("fra")).value == b"from-control"
        await kv_observed.put("fra", b"mine")
        # ...writing desired state or another node's observed state does not.
        for kv, key in ((kv_desired, "fra"), (kv_desired, "ams"), (kv_observed, "ams")):
            with pytest.raises(_DENIED):  # A timeout: the server drops the publish.
                await kv.put(key, b"forged")
        assert (await desired.get("fra")).value == b"from-control"
        assert (await observed.get("fra")).value == b"mine"
        with pytest.raises(KeyNotFoundError):
            await observed.get("ams")
        # Nor can tooling (admin) write desired state.
        admin = await _open(secured.core.client_url, secured.creds("admin"))
        try:
            kv_admin = await jetstream(admin, timeout_s=1.0).key_value(DESIRED_BUCKET)
            with pytest.raises(_DENIED):
                await kv_admin.put("fra", b"forged")
        finally:
            await admin.close()
        assert (await desired.get("fra")).value == b"from-control"
    finally:
        await fra.close()
        await control.close()


async def test_node_cannot_read_other_inboxes(secured: Secured) -> None:
    errors = _Errors()
    fra = await _open(secured.hub.client_url, secured.creds("node-fra"), errors)
    try:
        await fra.subscribe("_INBOX.node-ams.>")
        await fra.subscribe("_INBOX.>")
        await fra.flush()
        # The server reports each refused subscription asynchronously: wait for both.
        await until(
            lambda: len(errors.violations()) >= 2,
            timeout_s=10,
            what="both refused subscriptions reported",
        )
        assert len(errors.violations()) == 2, errors.seen
    finally:
        await fra.close()


# -- TLS -----------------------------------------------------------------------------------------


async def test_plaintext_client_to_tls_listener_fails(secured: Secured) -> None:
    for url, name in ((secured.core.client_url, "control"), (secured.hub.client_url, "node-fra")):
        with pytest.raises(BusConnectError):
            await connect(
                url, name="plain", creds=secured.creds(name, tls=False), connect_deadline_s=1.5
            )


async def test_client_refuses_a_server_outside_the_planet_ca(
    secured: Secured, tmp_path: Path
) -> None:
    other = bus_files(tmp_path / "other", regions=[REGION], locations=NODES)
    c = secured.creds("control")
    with pytest.raises(BusConnectError):
        await connect(
            secured.core.client_url,
            name="wrong-ca",
            creds=Credentials(c.user, c.password, other.tls["core"].ca_file),
            connect_deadline_s=1.5,
        )


def test_non_loopback_bind_without_tls_is_refused(tmp_path: Path) -> None:
    bus = bus_files(tmp_path, regions=[REGION], locations=NODES)
    users = load_users(bus["core.users"])
    for host in ("0.0.0.0", "192.0.2.10", "::"):
        with pytest.raises(BusError, match="not loopback"):
            check_exposure(CoreConfig(name="core", store_dir=tmp_path, host=host, users=users))
        with pytest.raises(BusError, match="without TLS and users"):
            check_exposure(
                HubConfig(name="hub", core_leafnode_urls=("nats-leaf://x:1",), host=host)
            )
    check_exposure(
        CoreConfig(name="c", store_dir=tmp_path, host="0.0.0.0", users=users, tls=bus.tls["core"])
    )
    check_exposure(CoreConfig(name="c", store_dir=tmp_path, host="127.0.0.1"))
    # The role process refuses before it binds anything (no nats-server, no state directory).
    state = tmp_path / "core-state"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgefn.cli.main",
            "core",
            "--host",
            "0.0.0.0",
            "--state-dir",
            str(state),
            "--trusted-key",
            str(bus.core_pub),
            "--creds",
            str(bus["control"]),
            "--users",
            str(bus["core.users"]),
            "--core-signing-key",
            str(bus.core_key),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "not loopback" in out.stderr, out.stderr
    assert "without TLS" in out.stderr, out.stderr
    assert not state.exists()


def test_node_refuses_a_remote_hub_without_tls(tmp_path: Path) -> None:
    from edgefn.planet.roles import _check_node_bus

    creds = Credentials("node-fra", "p" * 32)
    with pytest.raises(BusError, match="without TLS"):
        _check_node_bus(["nats://192.0.2.10:4222"], creds)
    _check_node_bus(["nats://127.0.0.1:4222"], creds)
    _check_node_bus(["nats://192.0.2.10:4222"], Credentials("node-fra", "p" * 32, tmp_path))


# -- signed desired state ------------------------------------------------------------------------


@pytest.fixture
def roles(tmp_path: Path) -> Iterator[Roles]:
    """A core, a region hub and a node started by hand (``running_roles``), not ``edgefn up``:
    the test holds the bus credentials those roles were given (control, node-fra) and uses
    them to forge desired state on the bus itself, then checks the node from outside."""
    with running_roles(tmp_path, region=REGION, location="fra") as r:
        yield r


def test_forged_desired_state_is_not_applied(roles: Roles) -> None:
    core, region, node, bus, tmp = roles
    api, url = core.info["api_url"], node.info["url"]
    fn = tmp / "hello"
    shutil.copytree(REPO / "examples" / "hello", fn)
    bundle = build_bundle(fn)
    key = load_or_create_signing_key(tmp / "key.pem")
    auth = {"authorization": f"Bearer {(tmp / 'admin-token').read_text().strip()}"}
    up = httpx.post(
        f"{api}/v1/functions/hello/versions",
        content=bundle.data,
        headers={**auth, "x-edgefn-signature": key.sign(bundle.sha256)},
        timeout=10,
    )
    assert up.status_code == 201, up.text
    version = up.json()["version_id"]
    dep = httpx.post(
        f"{api}/v1/functions/hello/deployments",
        json={"version": version, "strategy": "immediate"},
        headers=auth,
        timeout=10,
    )
    assert dep.status_code == 202, dep.text

    def serving() -> str:
        r = httpx.get(f"{url}/", headers={"host": "hello.localhost"}, timeout=5)
        return r.headers.get("x-edgefn-version", "") if r.status_code == 200 else ""

    wait_for(lambda: serving() == version, timeout_s=30, what="v1 served")
    forged = json.dumps({"generation": 10_000, "functions": {}, "signatures": {}}).encode()

    async def forge() -> None:
        # 1. With node credentials: the server drops the write (permissions).
        fra = await connect(
            region.info["client_url"], name="x", creds=load_credentials(bus["node-fra"])
        )
        try:
            kv = await jetstream(fra, timeout_s=1.0).key_value(DESIRED_BUCKET)
            with pytest.raises(_DENIED):
                await kv.put("fra", sign_desired(Ed25519PrivateKey.generate(), "fra", forged))
        finally:
            await fra.close()
        # 2. With the control password but not the core's key: written, then refused by the node.
        ctl = await connect(
            core.info["client_url"], name="y", creds=load_credentials(bus["control"])
        )
        try:
            kv = await jetstream(ctl).key_value(DESIRED_BUCKET)
            await kv.put("fra", sign_desired(Ed25519PrivateKey.generate(), "fra", forged))
            await kv.put("fra", forged)  # unsigned
        finally:
            await ctl.close()

    asyncio.run(forge())
    log = tmp / "node" / "node.log"
    wait_for(
        lambda: log.read_text().count("desired_refused") >= 2,
        timeout_s=15,
        what="the node logging both refusals",
    )
    assert "signature mismatch" in log.read_text()
    assert "not signed" in log.read_text()
    for _ in range(5):
        assert serving() == version  # Still the old version: nothing forged was applied.


async def test_region_cache_reads_a_missed_bundle_from_the_core_with_its_own_user(
    secured: Secured, tmp_path: Path
) -> None:
    """A cache that missed a bundle's push reads it from the object store as ``cache-<region>``
    (its user may look the store's stream up by subject, which nats-py's object store needs)."""
    await _wait_hub_linked(secured)
    control = await _open(secured.core.client_url, secured.creds("control"))
    errors = _Errors()
    cache_nc = await _open(secured.hub.client_url, secured.creds(f"cache-{REGION}"), errors)
    try:
        store = await ensure_object_store(jetstream(control), BUNDLES_OBJECT_STORE)
        data = b"a bundle nobody pushed" * 50
        sha = hashlib.sha256(data).hexdigest()
        await store.put(sha, data)
        cache = BundleCache(cache_nc, REGION, tmp_path / "cache")
        assert await asyncio.wait_for(cache.get(sha), timeout=30) == data
        assert cache.statistics().misses == 1
        assert errors.violations() == []
    finally:
        await cache_nc.close()
        await control.close()


# -- live tail -----------------------------------------------------------------------------------


async def test_node_sends_tail_events_only_as_itself_and_cannot_announce_sessions(
    secured: Secured,
) -> None:
    """fra may send tail events as fra only; neither a node nor admin may announce a session
    (that would make every node send request data); control may, and nodes hear it."""
    await _wait_hub_linked(secured)
    session = "0123456789abcdef"
    control = await _open(secured.core.client_url, secured.creds("control"))
    errors = _Errors()
    fra = await _open(secured.hub.client_url, secured.creds("node-fra"), errors)
    ams = await _open(secured.hub.client_url, secured.creds("node-ams"))
    admin_errors = _Errors()
    admin = await _open(secured.core.client_url, secured.creds("admin"), admin_errors)
    try:
        events = await _collect(control, tail_event_subject("*", session))
        heard: list[bytes] = []

        async def on_announce(msg: Any) -> None:
            heard.append(msg.data)

        await ams.subscribe(TAIL_SESSIONS, cb=on_announce)
        await ams.flush()
        await fra.publish(tail_event_subject("ams", session), b"{}")  # refused
        await fra.publish(TAIL_SESSIONS, b"fra")  # refused
        await admin.publish(TAIL_SESSIONS, b"admin")  # refused
        await fra.flush()
        await admin.flush()

        async def delivered() -> bool:
            # The allowed ones, again until each subscriber's interest crossed the leafnode.
            await fra.publish(tail_event_subject("fra", session), b"{}")
            await fra.flush()
            await control.publish(TAIL_SESSIONS, b"control")
            await control.flush()
            return (
                bool(events)
                and bool(heard)
                and len(errors.violations()) >= 2
                and len(admin_errors.violations()) >= 1
            )

        await until(
            delivered,
            timeout_s=15,
            what="the allowed messages delivered and an error for each refused one",
            interval_s=0.05,
        )
        assert set(events) == {tail_event_subject("fra", session)}
        assert set(heard) == {b"control"}
        assert len(errors.violations()) == 2, errors.seen
        assert len(admin_errors.violations()) == 1, admin_errors.seen
    finally:
        for nc in (admin, ams, fra, control):
            await nc.close()


async def test_only_control_purges_edge_caches_and_nodes_ask_only_their_regions_tier(
    secured: Secured,
) -> None:
    """A purge drops a function's cached responses at every location: neither a node nor admin
    may send one (control may, and nodes and region tiers hear it). A node asks only its own
    region's cache tier."""
    await _wait_hub_linked(secured)
    control = await _open(secured.core.client_url, secured.creds("control"))
    errors = _Errors()
    fra = await _open(secured.hub.client_url, secured.creds("node-fra"), errors)
    ams = await _open(secured.hub.client_url, secured.creds("node-ams"))
    admin_errors = _Errors()
    admin = await _open(secured.core.client_url, secured.creds("admin"), admin_errors)
    try:
        heard: list[bytes] = []
        tier_asked = await _collect(control, cache_fetch_subject("us-east"))

        async def on_purge(msg: Any) -> None:
            heard.append(msg.data)

        await ams.subscribe(CACHE_PURGE, cb=on_purge)
        await ams.flush()
        await fra.publish(CACHE_PURGE, b"fra")  # refused
        await fra.publish(cache_fetch_subject("us-east"), b"x")  # refused: not fra's region
        await admin.publish(CACHE_PURGE, b"admin")  # refused
        await fra.flush()
        await admin.flush()

        async def delivered() -> bool:
            await control.publish(CACHE_PURGE, b"control")
            await control.flush()
            return bool(heard) and len(errors.violations()) >= 2 and admin_errors.violations()

        await until(
            delivered,
            timeout_s=15,
            what="the control's purge heard and an error for each refused publish",
            interval_s=0.05,
        )
        assert set(heard) == {b"control"}
        assert tier_asked == []
        assert len(errors.violations()) == 2, errors.seen
        assert len(admin_errors.violations()) == 1, admin_errors.seen
    finally:
        for nc in (admin, ams, fra, control):
            await nc.close()


async def test_node_answers_only_its_own_durable_objects(secured: Secured) -> None:
    """A node may send any location's node a durable object's request, but may receive only its
    own: no node can take over, or read, requests meant for another object's home."""
    errors = _Errors()
    fra = await _open(secured.hub.client_url, secured.creds("node-fra"), errors)
    ams = await _open(secured.hub.client_url, secured.creds("node-ams"))
    try:
        heard: list[bytes] = []

        async def on_request(msg: Any) -> None:
            heard.append(msg.data)
            await msg.respond(b"ams")

        await ams.subscribe(durable_subject("ams"), cb=on_request)
        await ams.flush()
        await fra.subscribe(durable_subject("ams"))  # refused
        await fra.subscribe(DURABLE_ALL)  # refused
        await fra.flush()
        reply = await fra.request(durable_subject("ams"), b"req", timeout=5)
        assert reply.data == b"ams"
        await until(
            lambda: len(errors.violations()) >= 2,
            timeout_s=10,
            what="both refused subscriptions reported",
        )
        assert len(errors.violations()) == 2, errors.seen
        assert heard == [b"req"]
    finally:
        await fra.close()
        await ams.close()


async def test_only_nodes_and_control_publish_queue_messages_and_nodes_cannot_tap_them(
    secured: Secured,
) -> None:
    """A node sends producers' messages for any queue (``edgefn.q.<queue>.<p>``); it may not
    subscribe to the queue subjects (consumers read the stream through JetStream), and a region's
    cache tier may not publish them at all."""
    await _wait_hub_linked(secured)
    control = await _open(secured.core.client_url, secured.creds("control"))
    errors = _Errors()
    fra = await _open(secured.hub.client_url, secured.creds("node-fra"), errors)
    cache_errors = _Errors()
    cache = await _open(secured.hub.client_url, secured.creds(f"cache-{REGION}"), cache_errors)
    try:
        heard = await _collect(control, QUEUE_ALL)
        await fra.subscribe(QUEUE_ALL)  # refused
        await cache.publish("edgefn.q.jobs.4", b"cache")  # refused
        await cache.flush()

        async def delivered() -> bool:
            await fra.publish("edgefn.q.jobs.3", b"fra")
            await fra.flush()
            return bool(heard) and bool(errors.violations()) and bool(cache_errors.violations())

        await until(
            delivered,
            timeout_s=15,
            what="the node's message heard and both refusals reported",
            interval_s=0.05,
        )
        assert set(heard) == {"edgefn.q.jobs.3"}
        assert len(errors.violations()) == 1, errors.seen
        assert len(cache_errors.violations()) == 1, cache_errors.seen
    finally:
        for nc in (cache, fra, control):
            await nc.close()
