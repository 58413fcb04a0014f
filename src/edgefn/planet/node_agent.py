"""The node agent: keeps an edge node's functions equal to its desired state, and reports back.

How it works. At start the agent restores the last desired state and its bundles from the node's
state directory and activates them, so a node that restarts while cut off from its hub serves at
once (edge autonomy). Then, connected to its regional hub, it watches its key in ``edgefn-desired``
(and re-reads it every ``resync_s`` as a backstop for a watch lost across a partition). For a newer
generation it fetches each missing bundle through the region's cache, verifies the sha256 and the
Ed25519 signature against the trusted public keys (``--trusted-key`` files, plus the deployer keys
registered at the core, read from ``edgefn-deployer-keys`` when a signature verifies under none
of the known ones), unpacks and test-loads it, then swaps the
function's versions (with their traffic weights) atomically. A version that fails any step is
reported in ``errors`` and the previous versions keep serving. The applied desired state and the
bundles are persisted before the generation is reported as applied.

With ``core_keys`` (``edgefn node --core-key``), a desired state read from the bus is applied only if
the core signed it for this location (control/desired_signing.py); an unsigned or forged value is
logged (``desired_refused``) and ignored, and the node keeps serving what it has.

Secrets. The agent owns the node's X25519 secrets key (``secrets-node.key`` in the state
directory, 0600, created at first start) and reports its public half in observed state. A
function's secrets arrive sealed for this location in its desired-state entry; the agent opens
them only to put them in that function's ``LoadSpec`` (and into the log redactor), so they exist
in clear only in memory: ``desired.json`` keeps the sealed form. A box that does not open fails
that function's versions (reported in ``errors``) and the previous ones keep serving.

Every ``report_s`` the agent writes its ``ObservedState`` (applied generation, per-version request
counts and latency, errors, region, URL) to ``edgefn-observed``; the control plane's reconciler
computes convergence from these.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, Final

import msgspec
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError

from edgefn.bundle import Manifest
from edgefn.bundle.signing import verify_signature
from edgefn.bus.jetstream import connect, jetstream
from edgefn.bus.subjects import DEPLOYER_KEYS_BUCKET, DESIRED_BUCKET, OBSERVED_BUCKET
from edgefn.control.desired_signing import load_core_public_key, verify_desired
from edgefn.control.model import (
    DesiredState,
    FunctionDesired,
    NodeResources,
    ObservedState,
    VersionStats,
    decode_desired,
    encode_observed,
)
from edgefn.edge.kv_binding import KVService
from edgefn.edge.node import EdgeNode
from edgefn.errors import BundleError, EdgefnError
from edgefn.planet.bundles import fetch_bundle
from edgefn.planet.cache_tier import purge_subscriber, region_tier_client
from edgefn.planet.durable_bus import durable_remote, serve_durable
from edgefn.planet.resources import ResourceSampler
from edgefn.runtime.sandbox import LoadSpec
from edgefn.secrets.crypto import NodeKey, SecretsError, load_or_create_node_key, open_for_node
from edgefn.secrets.redact import Redactor

NODE_KEY_FILE: Final = "secrets-node.key"
# A node with nothing on disk that cannot read desired state within this long reports ready
# anyway (it serves nothing, so 404 is then the truth).
READY_FALLBACK_S: Final = 10.0
# How long applying a desired state waits for the KV namespaces of its functions to connect
# before reporting the versions deployed anyway (they then serve locally; strong operations wait).
KV_READY_S: Final = 10.0
# How long a node re-reads the deployer-key registry for a bundle whose signature no key it knows
# verifies (the core accepted it, so the key is registered; the read may fail or lag on a busy hub).
KEY_LEARN_DEADLINE_S: Final = 15.0

log = logging.getLogger("edgefn.agent")


class NodeAgent:
    """Desired state in, observed state out, for one :class:`EdgeNode`."""

    def __init__(
        self,
        node: EdgeNode,
        *,
        nats_urls: list[str],
        region: str,
        trusted_keys: list[str],
        state_dir: Path,
        report_s: float = 1.0,
        resync_s: float = 3.0,
        core_keys: list[str] | None = None,
        secrets_key: NodeKey | None = None,
        redactor: Redactor | None = None,
        kv: KVService | None = None,
        kv_ready_s: float = KV_READY_S,
    ) -> None:
        self.node = node
        self.kv = kv
        self.kv_ready_s = kv_ready_s
        self.nats_urls = nats_urls
        self.region = region
        self.trusted_keys = trusted_keys
        self.state_dir = state_dir
        self.report_s = report_s
        self.resync_s = resync_s
        self.core_keys = (
            None if core_keys is None else [load_core_public_key(pem) for pem in core_keys]
        )
        self.refused_total = 0
        self.applied: DesiredState = DesiredState(generation=0, functions={})
        self.errors: dict[str, str] = {}
        self.nc: Client | None = None
        self._installed: dict[str, tuple[LoadSpec, Manifest]] = {}
        self._apply_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._kick = asyncio.Event()
        self._report_event = asyncio.Event()
        (state_dir / "bundles").mkdir(parents=True, exist_ok=True)
        self.secrets_key = secrets_key or load_or_create_node_key(state_dir / NODE_KEY_FILE)
        self.redactor = redactor or Redactor()
        # The location's CPU, memory, disk, sockets, temperature and power, in observed state.
        self.resources = ResourceSampler(
            disk_path=state_dir, pids=lambda: [os.getpid(), *node.pool.pids()]
        )

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        # Readiness (EdgeNode.mark_ready): a node that restored its functions from disk serves
        # them at once; a node with nothing on disk is ready after its first look at desired
        # state (or READY_FALLBACK_S without a bus: it then has nothing to serve anyway).
        if await self._restore():
            self.node.mark_ready()
        self._tasks = [
            asyncio.create_task(self._run(), name="agent-run"),
            asyncio.create_task(self._ready_fallback(), name="agent-ready"),
        ]

    async def _ready_fallback(self) -> None:
        await asyncio.sleep(READY_FALLBACK_S)
        self.node.mark_ready()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.close()

    async def _restore(self) -> bool:
        """Apply the desired state saved on disk; whether there was one."""
        path = self.state_dir / "desired.json"
        if not path.exists():
            return False
        try:
            desired = decode_desired(path.read_bytes())
        except EdgefnError as err:
            self.node.log.emit("agent", event="restore_failed", error=str(err))
            return False
        await self.apply(desired, offline=True)
        self.node.log.emit("agent", event="restored", generation=desired.generation)
        return True

    async def _run(self) -> None:
        while True:
            try:
                self.nc = await connect(
                    self.nats_urls,
                    name=f"node-{self.node.location}",
                    connect_deadline_s=3600,
                    reconnected_cb=self._on_reconnect,
                )
                break
            except Exception as err:  # keep serving from disk and keep trying
                self.node.log.emit("agent", event="connect_failed", error=str(err))
                await asyncio.sleep(1.0)
        await self._join_cache(self.nc)
        self._tasks += [
            asyncio.create_task(self._report_loop(), name="agent-report"),
            asyncio.create_task(self._watch_loop(), name="agent-watch"),
        ]
        await self._resync_loop()

    async def _on_reconnect(self) -> None:
        # Purges published while this node was cut off were lost: its edge cache starts cold.
        self.node.origins.store.clear()
        self._kick.set()

    async def _join_cache(self, nc: Client) -> None:
        """The edge cache's and durable objects' bus side: the region hub as the cache's upper
        tier, purges, and requests between the homes of durable objects."""
        self.node.origins.region = region_tier_client(nc, self.region)

        def bad_purge(error: str) -> None:
            self.node.log.emit("agent", event="cache_purge_ignored", error=error)

        await purge_subscriber(nc, lambda: [self.node.origins.store], bad_purge)
        # Durable objects: this node answers for the objects it is the home of, and sends other
        # objects' requests to their homes.
        self.node.durable.remote = durable_remote(nc)
        await serve_durable(nc, self.node.location, self.node.durable)

    # -- desired state ---------------------------------------------------------------------
    async def _resync_loop(self) -> None:
        while True:
            try:
                await self._resync_once()
                self.node.mark_ready()
            except KeyNotFoundError:  # nothing is desired here yet: ready with no functions
                self.node.mark_ready()
            except Exception as err:
                self.node.log.emit("agent", event="resync_failed", error=str(err))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), timeout=self.resync_s)
            self._kick.clear()

    async def _resync_once(self) -> None:
        assert self.nc is not None
        kv = await jetstream(self.nc).key_value(DESIRED_BUCKET)
        entry = await kv.get(self.node.location)
        if entry.value:
            await self._apply_from_bus(entry.value)

    async def _watch_loop(self) -> None:
        assert self.nc is not None
        while True:
            try:
                kv = await jetstream(self.nc).key_value(DESIRED_BUCKET)
                watcher = await kv.watch(self.node.location)
                async for entry in watcher:
                    if entry is not None and entry.value:
                        await self._apply_from_bus(entry.value)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(1.0)

    async def _apply_from_bus(self, value: bytes) -> None:
        try:
            payload = value
            if self.core_keys is not None:
                payload = verify_desired(self.core_keys, self.node.location, value)
            desired = decode_desired(payload)
        except EdgefnError as err:
            self.refused_total += 1
            self.node.log.emit("agent", event="desired_refused", error=err.message)
            log.error("desired state refused at %s: %s", self.node.location, err.message)
            return
        await self.apply(desired)

    async def apply(self, desired: DesiredState, *, offline: bool = False) -> None:
        """Make the node serve ``desired`` (if newer than what it serves)."""
        async with self._apply_lock:
            if desired.generation <= self.applied.generation and not offline:
                return
            errors: dict[str, str] = {}
            for name, fd in desired.functions.items():
                try:
                    secrets = self._open_secrets(name, fd)
                except SecretsError as err:
                    errors.update({vw.version_id: err.message for vw in fd.versions})
                    self.node.log.emit(
                        "agent", event="secrets_refused", function=name, error=err.message
                    )
                    continue
                self.redactor.set_values(name, secrets.values())
                versions: list[tuple[str, float, LoadSpec, Manifest]] = []
                for vw in fd.versions:
                    try:
                        spec, manifest = await self._ensure(
                            name, vw.version_id, vw.sha256, desired.signatures, offline=offline
                        )
                    except EdgefnError as err:
                        errors[vw.version_id] = err.message
                        self.node.log.emit(
                            "agent",
                            event="version_refused",
                            function=name,
                            version=vw.version_id,
                            error=err.message,
                        )
                        continue
                    if fd.secrets_generation:
                        spec = dataclasses.replace(
                            spec, secrets=secrets, secrets_generation=fd.secrets_generation
                        )
                    versions.append((vw.version_id, vw.weight, spec, manifest))
                total = sum(v[1] for v in versions)
                if versions and total > 0:
                    self.node.activate(name, [(v, w / total, s, m) for v, w, s, m in versions])
            for name in set(self.node.table.functions) - set(desired.functions):
                self.node.deactivate(name)
                self.redactor.set_values(name, ())
            if not offline:  # a node restoring from disk serves at once, and connects later
                await self._prepare_kv()
            self._persist(desired)
            self.applied, self.errors = desired, errors
            self.node.log.emit(
                "agent", event="applied", generation=desired.generation, errors=len(errors)
            )
        self._kick_report()

    async def _prepare_kv(self) -> None:
        """Connect the KV namespaces the active functions bind before reporting them deployed."""
        if self.kv is None:
            return
        namespaces = {
            ns.namespace
            for fn in self.node.table.functions.values()
            for version in fn.versions
            for ns in version.manifest.kv_namespaces
        }
        problems = await self.kv.prepare(namespaces, timeout_s=self.kv_ready_s)
        for namespace, error in problems.items():
            self.node.log.emit("agent", event="kv_not_ready", namespace=namespace, error=error)

    def _open_secrets(self, name: str, fd: FunctionDesired) -> dict[str, str]:
        """The function's secrets, opened with this node's key (empty if it has none)."""
        if fd.secrets_generation == 0:
            return {}
        if not fd.secrets:
            raise SecretsError(
                f"the desired state carries no secrets sealed for {self.node.location}",
                hint="the control plane has not heard this node's secrets key yet",
            )
        plain = open_for_node(
            fd.secrets,
            key=self.secrets_key,
            location=self.node.location,
            function=name,
            generation=fd.secrets_generation,
        )
        try:
            return msgspec.json.decode(plain, type=dict[str, str])
        except msgspec.DecodeError:
            raise SecretsError(f"the sealed secrets of {name} are malformed") from None

    async def _ensure(
        self, name: str, version: str, sha256: str, signatures: dict[str, str], *, offline: bool
    ) -> tuple[LoadSpec, Manifest]:
        if version in self._installed:
            return self._installed[version]
        path = self.state_dir / "bundles" / f"{sha256}.bundle"
        if path.exists():
            data = path.read_bytes()
        elif offline or self.nc is None:
            raise BundleError(f"bundle {version} is not on local disk and the hub is unreachable")
        else:
            data = await fetch_bundle(self.nc, self.region, sha256)
        if not self._verifies(sha256, signatures.get(sha256, "")) and not offline:
            await self._learn_deployer_keys(sha256, signatures.get(sha256, ""))
        self._verify(version, sha256, signatures.get(sha256, ""))
        manifest, spec = await self.node.install_bundle(data, sha256, version)
        if manifest.name != name:
            raise BundleError(f"bundle {version} is function {manifest.name!r}, not {name!r}")
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        self._installed[version] = (spec, manifest)
        return spec, manifest

    def _verifies(self, sha256: str, signature: str) -> bool:
        for pem in self.trusted_keys:
            try:
                verify_signature(pem, sha256, signature)
                return True
            except BundleError:
                continue
        return False

    async def _learn_deployer_keys(self, sha256: str, signature: str) -> None:
        """Add the deployer public keys registered at the core (a key added after we started).

        The core accepted this bundle only because a registered key verifies it, so a node that
        knows no such key has a stale view: it re-reads the registry (a read through the hub can
        fail on a loaded machine) until the signature verifies or ``KEY_LEARN_DEADLINE_S`` ends.
        """
        if self.nc is None:
            return
        deadline = time.monotonic() + KEY_LEARN_DEADLINE_S
        delay = 0.2
        while True:
            try:
                kv = await jetstream(self.nc).key_value(DEPLOYER_KEYS_BUCKET)
                for key in (await kv.keys())[:1000]:
                    entry = await kv.get(key)
                    pem = msgspec.json.decode(entry.value or b"{}").get("public_key_pem")
                    if isinstance(pem, str) and pem not in self.trusted_keys:
                        self.trusted_keys.append(pem)
            except (
                Exception
            ) as err:  # unreachable core or no bucket: retry, then verify with what we have
                self.node.log.emit("agent", event="deployer_keys_unavailable", error=repr(err))
            if self._verifies(sha256, signature) or time.monotonic() + delay > deadline:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _verify(self, version: str, sha256: str, signature: str) -> None:
        if not signature:
            raise BundleError(f"bundle {version} has no signature in the desired state")
        reasons = []
        for pem in self.trusted_keys:
            try:
                verify_signature(pem, sha256, signature)
                return
            except BundleError as err:
                reasons.append(err.message)
        raise BundleError(
            f"bundle {version}: signature mismatch (no trusted key verifies it)",
            hint="deploy with the planet's signing key",
        )

    def _persist(self, desired: DesiredState) -> None:
        # ``desired`` is the form received: secrets in it are sealed, never clear.
        path = self.state_dir / "desired.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.encode(desired))
        os.replace(tmp, path)

    # -- observed state --------------------------------------------------------------------
    def observed(self) -> ObservedState:
        # Only the versions being served: a request that started on a retired version may finish
        # (and be counted) after the swap, but the location no longer serves that version.
        snapshot = self.node.version_stats.snapshot()
        functions: dict[str, dict[str, VersionStats]] = {}
        for fn, versions_list in self.node.active_versions().items():
            stats = snapshot.get(fn, {})
            functions[fn] = {
                v: VersionStats(*stats[v]) if v in stats else VersionStats() for v in versions_list
            }
        return ObservedState(
            location=self.node.location,
            generation=self.applied.generation,
            functions=functions,
            errors=dict(self.errors),
            at_ms=time.time_ns() // 1_000_000,
            region=self.region,
            url=self.node.url,
            secrets_key=self.secrets_key.public_b64(),
            resources=self._resources(),
            **self._position(),
        )

    def _position(self) -> dict[str, float]:
        """This location's ``lat`` and ``lon`` from the planet's locations file, if it has one."""
        traffic = self.node.traffic
        peers = traffic.config.locations if traffic is not None else ()
        mine = [p for p in peers if p.id == self.node.location]
        return {"lat": mine[0].lat, "lon": mine[0].lon} if mine else {}

    def _resources(self) -> NodeResources:
        sample = self.resources.sample()
        traffic = self.node.traffic
        if traffic is None:
            return sample
        state = traffic.thermal.state
        budget = traffic.config.thermal
        return msgspec.structs.replace(
            sample,
            throttle_c=state.celsius,
            hot=state.hot,
            capacity=state.capacity,
            soft_c=budget.soft_c,
            hard_c=budget.hard_c,
        )

    def _kick_report(self) -> None:
        self._report_event.set()

    async def _report_loop(self) -> None:
        assert self.nc is not None
        kv: Any = None
        while True:
            try:
                if kv is None:
                    kv = await jetstream(self.nc).key_value(OBSERVED_BUCKET)
                await kv.put(self.node.location, encode_observed(self.observed()))
            except asyncio.CancelledError:
                raise
            except Exception:
                kv = None
            # Report at once after a change (the reconciler waits on it), else every report_s.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._report_event.wait(), timeout=self.report_s)
            self._report_event.clear()

    def status(self) -> dict[str, Any]:
        return {
            "generation": self.applied.generation,
            "errors": self.errors,
            "connected": bool(self.nc is not None and self.nc.is_connected),
            "desired_refused": self.refused_total,
        }
