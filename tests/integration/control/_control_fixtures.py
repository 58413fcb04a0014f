"""Helpers for the control integration tests: the control service + API, simulated nodes.

Simulated nodes are plain nats-py clients: each writes its observed state (generation 0 at
start), watches its desired-state key, "applies" each desired state at once and reports the
generation back together with per-version stats chosen by the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from nats.aio.client import Client
from tests.waiting import until

from edgefn.bundle import SigningKey
from edgefn.bus import CoreConfig, NatsServer, connect, ensure_kv, free_port
from edgefn.bus.jetstream import jetstream
from edgefn.bus.subjects import DESIRED_BUCKET, OBSERVED_BUCKET
from edgefn.control import (
    DesiredState,
    GateThresholds,
    ObservedState,
    ReconcilerOptions,
    VersionStats,
    decode_desired,
    encode_observed,
)
from edgefn.control.api import create_app
from edgefn.control.incidents_driver import IncidentsDriver, IncidentStore
from edgefn.control.service import ControlService
from edgefn.observe.rollup import Accumulator
from edgefn.observe.span_store import SpanStore
from edgefn.observe.telemetry_store import TelemetryStore
from edgefn.secrets.crypto import KEY_BYTES, MasterKey, NodeKey, open_for_node

OPTIONS = ReconcilerOptions(
    gates=GateThresholds(min_requests=10, min_soak_ms=300, advance_requests=10),
    canary_weight=0.2,
)

StatsFor = Callable[[str, str], VersionStats | None]


async def eventually(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    """The shared poll (tests/waiting.py), with the control tests' default deadline."""
    await until(predicate, timeout_s=timeout_s, interval_s=0.05)


@dataclass
class Control:
    url: str
    http: httpx.AsyncClient  # sends the bootstrap admin token
    service: ControlService
    token: str  # the bootstrap admin token (account "default")
    incidents: IncidentsDriver  # holds incident 1, open (seeded_incidents)


def seeded_incidents() -> IncidentsDriver:
    """An in-memory incident driver (not started) holding one open incident, id 1: fra
    answering 5xx to every request of ``hello`` for two rollup periods."""
    driver = IncidentsDriver(IncidentStore(Path(":memory:")), routes=None, locations=list)
    now = time.time_ns() // 1_000_000
    acc = Accumulator(location="fra", epoch="e", start_ms=now - 10_000)
    for end_ms in (now - 5000, now):
        for _ in range(20):
            acc.record("hello", "v1", 500, "eu-west", 2.0)
        rollup = acc.cut(end_ms)
        assert rollup is not None
        driver.on_rollup(rollup)
    assert [i.id for i in driver.book.unresolved()] == [1]
    return driver


async def start_control(
    nc: Client,
    key: SigningKey,
    secrets_key: MasterKey | None = None,
    incidents: IncidentsDriver | None = None,
) -> tuple[ControlService, uvicorn.Server]:
    service = ControlService(
        nc,
        trusted_keys=[key.public_key_pem()],
        options=OPTIONS,
        tick_ms=50,
        secrets_key=secrets_key or MasterKey(os.urandom(KEY_BYTES)),
    )
    await service.start()
    port = free_port()
    config = uvicorn.Config(
        # An empty in-memory telemetry store: /v1/stats answers (nothing was served).
        # An in-memory incident store too (the control fixture's holds one open incident), and
        # an empty span store (/v1/traces answers: no trace was kept).
        create_app(
            service,
            telemetry=TelemetryStore(Path(":memory:")),
            incidents=incidents or seeded_incidents(),
            spans=SpanStore(Path(":memory:")),
        ),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    server.config.ws = "none"
    return service, server


class SimNode:
    """A stand-in edge node on the bus (no HTTP, no sandboxes)."""

    def __init__(self, nc: Client, location: str, region: str, stats_for: StatsFor) -> None:
        self.nc, self.location, self.region, self.stats_for = nc, location, region, stats_for
        self.node_key = NodeKey.generate()
        self.applied: DesiredState | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        js = jetstream(self.nc)
        self._desired = await ensure_kv(js, DESIRED_BUCKET)
        self._observed = await ensure_kv(js, OBSERVED_BUCKET)
        watcher = await self._desired.watch(self.location)
        await self.report()
        self._task = asyncio.create_task(self._run(watcher))

    async def _run(self, watcher: object) -> None:
        async for entry in watcher:  # type: ignore[attr-defined]
            if entry is None or entry.value is None:
                continue
            self.applied = decode_desired(entry.value)
            await self.report()

    async def report(self) -> None:
        functions: dict[str, dict[str, VersionStats]] = {}
        if self.applied is not None:
            for name, desired in self.applied.functions.items():
                for v in desired.versions:
                    stats = self.stats_for(name, v.version_id)
                    if stats is not None:
                        functions.setdefault(name, {})[v.version_id] = stats
        state = ObservedState(
            self.location,
            self.applied.generation if self.applied else 0,
            functions,
            {},
            0,
            self.region,
            f"http://{self.location}.test",
            self.node_key.public_b64(),
        )
        await self._observed.put(self.location, encode_observed(state))

    def weights(self, function: str) -> dict[str, float]:
        if self.applied is None or function not in self.applied.functions:
            return {}
        return {v.version_id: v.weight for v in self.applied.functions[function].versions}

    def secrets(self, function: str, key: NodeKey | None = None) -> dict[str, str]:
        """Open the secrets sealed for this node (with ``key``: try another node's key)."""
        assert self.applied is not None
        fd = self.applied.functions[function]
        plain = open_for_node(
            fd.secrets,
            key=key or self.node_key,
            location=self.location,
            function=function,
            generation=fd.secrets_generation,
        )
        out: dict[str, str] = json.loads(plain)
        return out

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# -- fixtures (imported by the conftests of tests/integration/control and tests/security) ----


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[NatsServer]:
    server = NatsServer(CoreConfig(name="core", store_dir=tmp_path / "js"), work_dir=tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        assert not server.running()


@pytest.fixture
async def nc(core: NatsServer) -> AsyncIterator[Client]:
    client = await connect(core.client_url, name="control-test")
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def signing_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
async def control(nc: Client, signing_key: SigningKey, tmp_path: Path) -> AsyncIterator[Control]:
    incidents = seeded_incidents()
    service, server = await start_control(nc, signing_key, incidents=incidents)
    assert await service.access.bootstrap_admin(tmp_path / "admin-token")
    token = (tmp_path / "admin-token").read_text().strip()
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            raise AssertionError(f"uvicorn exited: {task.exception()!r}")
        return bool(server.started)

    await eventually(started)
    url = f"http://127.0.0.1:{server.config.port}"
    try:
        headers = {"authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, timeout=10.0, headers=headers) as http:
            yield Control(url, http, service, token, incidents)
    finally:
        server.should_exit = True
        await task
        await service.stop()


async def new_token(
    control: Control, scopes: list[str], *, account: str = "default", name: str = "t"
) -> str:
    """A token created through the API with the bootstrap admin token."""
    resp = await control.http.post(
        "/v1/tokens", json={"name": name, "scopes": scopes, "account": account}
    )
    assert resp.status_code == 201, resp.text
    token: str = resp.json()["token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def bundle_dir(root: Path, name: str, body: str = "return 1", extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "edgefn.toml").write_text(f'name = "{name}"\n{extra}', encoding="utf-8")
    (root / "main.py").write_text(f"async def fetch(request, env, ctx):\n    {body}\n", "utf-8")
    return root


async def upload(
    control: Control, token: str, key: SigningKey, root: Path, *, send_key_id: bool = True
) -> httpx.Response:
    """POST a bundle of the function directory ``root`` signed by ``key`` with ``token``."""
    from edgefn.bundle import build_bundle
    from edgefn.control.api import KEY_ID_HEADER, SIGNATURE_HEADER

    bundle = build_bundle(root)
    headers: dict[str, Any] = {SIGNATURE_HEADER: key.sign(bundle.sha256), **bearer(token)}
    if send_key_id:
        headers[KEY_ID_HEADER] = key.key_id()
    return await control.http.post(
        f"/v1/functions/{bundle.manifest.name}/versions", content=bundle.data, headers=headers
    )
