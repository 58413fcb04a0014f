"""The control service: the Reconciler and the Registry driven over JetStream.

How it works. ``ControlService.start()`` opens the buckets (``edgefn-desired``, ``edgefn-observed``,
``edgefn-registry``, object store ``edgefn-bundles``), loads every function's registry record and
its persisted stable state (``state.<name>``: active and previous version, placement regions), and
feeds the latter to the reconciler as ``FunctionRestored`` before any node is heard, so a restarted
control plane never tells nodes to drop what they serve. Then two tasks run:

- the watcher: every put to ``edgefn-observed`` becomes ``NodeObserved`` (a delete becomes
  ``LocationForgotten``); the first put of a location registers it;
- the ticker: every ``tick_ms`` (200) a ``Tick`` advances soaks and gates, and any desired state
  whose write failed (NATS unreachable) is written again.

Every ``handle()`` and the execution of its instructions happen under one lock, so writes to a
location's desired key keep the reconciler's order. ``WriteDesired`` puts the JSON to
``edgefn-desired``; the rest are logged, kept in a bounded recent-events list for ``/v1/status``,
and change the persisted stable state when a rollout completes or rolls back.

API operations (``upload``, ``deploy``, ``rollback``, ``share_namespace`` and the queries) are
methods here; the HTTP layer in ``edgefn.control.api`` only authenticates and translates. Each
mutating operation takes the caller's ``Principal``: the registry checks the account owns the
function and may bind the manifest's KV namespaces, the ``AccessService`` (``.access``) picks the
registered deployer keys the signature must verify under, and the action is audited.
``trusted_keys`` given at construction are registered as deployer keys of account ``default``.
Time comes from ``time.time_ns`` (a driver).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError, NoKeysError, NotFoundError, ObjectNotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from edgefn._loop import cancel_and_wait
from edgefn.bundle.build import read_bundle_manifest, sha256_hex, version_id
from edgefn.bundle.signing import verify_signature
from edgefn.bus.cache_purge import Purge, encode_purge
from edgefn.bus.jetstream import (
    ensure_atomic_batches,
    ensure_kv,
    ensure_object_store,
    ensure_queue_stream,
    jetstream,
)
from edgefn.bus.subjects import (
    BUNDLE_ANNOUNCE,
    BUNDLES_OBJECT_STORE,
    CACHE_PURGE,
    DESIRED_BUCKET,
    KV_HOME_BUCKET,
    KV_MEMBERS_BUCKET,
    OBSERVED_BUCKET,
    REGISTRY_BUCKET,
    SECRETS_BUCKET,
)
from edgefn.control.access import AccessService
from edgefn.control.auth import ADMIN, DEFAULT_ACCOUNT, DeployerKey, Principal
from edgefn.control.desired_signing import DesiredSigner
from edgefn.control.errors import (
    Conflict,
    ControlError,
    NotFound,
    SecretsUnavailable,
    StateUnavailable,
    Untrusted,
)
from edgefn.control.events import (
    DeploymentRecord,
    DeploymentStarted,
    DeployRequested,
    Event,
    FunctionRestored,
    FunctionStatus,
    Instruction,
    LocationForgotten,
    LocationStatus,
    NodeObserved,
    PlacementChosen,
    Rejected,
    RollbackRequested,
    RolledBack,
    Tick,
    WriteDesired,
)
from edgefn.control.model import (
    DesiredState,
    ObservedState,
    VersionRef,
    decode_observed,
    encode_desired,
)
from edgefn.control.placement_driver import SmartPlacement, spec_of
from edgefn.control.reconciler import Reconciler, ReconcilerOptions
from edgefn.control.registry import (
    DEFAULT_KEEP_VERSIONS,
    ManifestSummary,
    NamespaceRecord,
    Registry,
    VersionInfo,
    decode_namespace,
    decode_queue,
    decode_record,
    encode_namespace,
    encode_queue,
    encode_record,
    namespace_key,
    queue_key,
    record_key,
    summarize_manifest,
)
from edgefn.control.secrets import SecretInfo, SecretStore
from edgefn.control.smart_placement import PlacementChoice, SmartSite
from edgefn.errors import BundleError, EdgefnError, ProtocolError
from edgefn.secrets.crypto import MasterKey, SecretsError, seal_for_node
from edgefn.secrets.names import (
    MAX_SECRETS_PER_FUNCTION,
    validate_function_name,
    validate_secret_name,
    validate_secret_value,
)

__all__ = ["ControlService", "ControlStatistics", "StableState"]

log = logging.getLogger("edgefn.control")

_T = TypeVar("_T")

MAX_RECENT_EVENTS: Final = 200
# Bundles up to this size are pushed to region caches at upload (NATS max payload is 1 MiB).
MAX_ANNOUNCE_BYTES: Final = 900 * 1024
_STATE_PREFIX: Final = "state."
# Smart placement chooses among locations that reported this recently.
_SITE_FRESH_MS: Final = 60_000
# How long an API operation retries a JetStream write that got no answer: a clustered core
# electing a new leader after losing a server answers nothing for a few seconds.
BUS_RETRY_S: Final = 30.0
_BUS_RETRY_FIRST_S: Final = 0.25
_TRANSIENT: Final = (
    asyncio.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.js.errors.ServiceUnavailableError,
    # A publish the stream did not answer: its Raft group is electing a leader.
    nats.js.errors.NoStreamResponseError,
)
# The strong-KV buckets' limits: the KV driver (state/driver.py) opens them with the same ones,
# and the core, which always creates them first, makes them hold.
KV_HOME_VALUE_BYTES_MAX: Final = 2 * 1024 * 1024
KV_HOME_BYTES_MAX: Final = 32 * 1024 * 1024
KV_MEMBERS_VALUE_BYTES_MAX: Final = 1024
KV_MEMBERS_BYTES_MAX: Final = 1024 * 1024


class StableState(msgspec.Struct, frozen=True):
    """What survives a control-plane restart for one function."""

    active: VersionRef | None
    previous: VersionRef | None
    regions: tuple[str, ...] = ()
    # Smart placement: the locations the planner chose last (None: not a smart function).
    placed: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ControlStatistics:
    locations: int
    functions: int
    versions: int
    rollouts_in_progress: int
    generation: int
    unwritten_desired: int
    observed_total: int
    malformed_observed_total: int
    ticks_total: int


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _retrying(what: str, op: Any, *, budget_s: float = BUS_RETRY_S) -> Any:
    """Await ``op()`` (an idempotent JetStream write), retrying transient failures.

    Backs off from 0.25 s to 2 s; after ``budget_s`` raises :class:`StateUnavailable` (503),
    so the caller may retry the whole operation, which is idempotent too.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    wait_s = _BUS_RETRY_FIRST_S
    while True:
        try:
            return await op()
        except _TRANSIENT as err:
            if loop.time() + wait_s > deadline:
                raise StateUnavailable(
                    f"control state unavailable: {what} got no answer from JetStream "
                    f"within {budget_s:g}s ({type(err).__name__})",
                    hint="the core may be electing a leader or have lost a majority of its "
                    "servers; retry the request",
                ) from err
            log.warning("%s: %s, retrying in %.2fs", what, type(err).__name__, wait_s)
        await asyncio.sleep(wait_s)
        wait_s = min(wait_s * 2, 2.0)


class ControlService:
    """Reconciler + registry over JetStream. ``await start()``; ``await stop()``."""

    def __init__(
        self,
        nc: Client,
        *,
        trusted_keys: Sequence[str] = (),
        access: AccessService | None = None,
        options: ReconcilerOptions | None = None,
        tick_ms: int = 200,
        keep_versions: int = DEFAULT_KEEP_VERSIONS,
        desired_key: DesiredSigner | None = None,
        secrets_key: MasterKey | None = None,
        replicas: int = 1,
        setup_timeout_s: float = 5.0,
        placement: SmartPlacement | None = None,
    ) -> None:
        assert tick_ms > 0
        assert replicas in (1, 3, 5), replicas
        self._nc = nc
        self._bootstrap_keys = tuple(trusted_keys)
        # Every bucket of planet state gets one replica per core server (a clustered core keeps
        # them through the loss of a server); setup calls on a cluster that is still electing
        # its leaders take seconds, hence their own timeout.
        self._replicas = replicas
        self._setup_timeout_s = setup_timeout_s
        self.access = access or AccessService(
            nc, replicas=replicas, setup_timeout_s=setup_timeout_s
        )
        # Signs every desired state it writes (control/desired_signing.py); None only in tests
        # whose fake nodes read the JSON directly.
        self._desired_key = desired_key
        self._reconciler = Reconciler(options)
        self._registry = Registry(keep_versions=keep_versions)
        self._tick_s = tick_ms / 1000
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._observed: dict[str, ObservedState] = {}
        self._unwritten: dict[str, bytes] = {}
        self._stable: dict[str, StableState] = {}
        self._recent: deque[dict[str, Any]] = deque(maxlen=MAX_RECENT_EVENTS)
        self._observed_total = self._malformed_total = self._ticks_total = 0
        self._desired_kv: KeyValue | None = None
        self._observed_kv: KeyValue | None = None
        self._registry_kv: KeyValue | None = None
        self._bundles: ObjectStore | None = None
        self._secrets_key = secrets_key
        self._secrets: SecretStore | None = None
        # Serialises secret changes with the deploy each one starts (the reconciler lock is
        # taken inside, per event).
        self._secrets_lock = asyncio.Lock()
        # Where smart functions run (control/placement_driver.py): without telemetry, the
        # planet's cities stand in for demand.
        self._placement = placement or SmartPlacement()

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        js = jetstream(self._nc, timeout_s=self._setup_timeout_s)
        r = self._replicas
        # A cluster refuses replicated buckets until every server has joined it.
        wait = self._setup_timeout_s if r > 1 else 0.0
        self._desired_kv = await ensure_kv(js, DESIRED_BUCKET, replicas=r, placement_wait_s=wait)
        self._observed_kv = await ensure_kv(js, OBSERVED_BUCKET, replicas=r)
        self._registry_kv = await ensure_kv(js, REGISTRY_BUCKET, replicas=r)
        self._bundles = await ensure_object_store(
            js, BUNDLES_OBJECT_STORE, replicas=r, placement_wait_s=wait
        )
        # The strong-KV home and the KV members list are opened by nodes (state/driver.py),
        # which adopt the replica count the core gives them here, before any node starts.
        await ensure_kv(
            js,
            KV_HOME_BUCKET,
            replicas=r,
            max_value_bytes=KV_HOME_VALUE_BYTES_MAX,
            max_bytes=KV_HOME_BYTES_MAX,
        )
        # Queue commits write a partition record and the handler's strong writes in one
        # atomic batch on the home bucket (docs/design/0028-queues.md).
        await ensure_atomic_batches(js, f"KV_{KV_HOME_BUCKET}")
        await ensure_queue_stream(js, replicas=r)
        await ensure_kv(
            js,
            KV_MEMBERS_BUCKET,
            replicas=r,
            max_value_bytes=KV_MEMBERS_VALUE_BYTES_MAX,
            max_bytes=KV_MEMBERS_BYTES_MAX,
        )
        # Created under the setup timeout; operations reopen them under the normal one, so a
        # write during an election fails fast and is retried (_retrying) instead of hanging.
        ops = jetstream(self._nc)
        self._desired_kv = await ops.key_value(DESIRED_BUCKET)
        self._observed_kv = await ops.key_value(OBSERVED_BUCKET)
        self._registry_kv = await ops.key_value(REGISTRY_BUCKET)
        self._bundles = await ops.object_store(BUNDLES_OBJECT_STORE)
        await self.access.start()
        for pem in self._bootstrap_keys:
            try:
                await self.access.add_key(None, public_key_pem=pem, account=DEFAULT_ACCOUNT)
            except ControlError as err:  # e.g. registered for another account: keep that
                log.warning("not registering trusted key for %r: %s", DEFAULT_ACCOUNT, err)

        if self._secrets_key is not None:
            # Small max_bytes: JetStream reserves it against the core's file store (64 secrets
            # of 5 KiB per function fit ~100 functions).
            kv = await ensure_kv(
                js,
                SECRETS_BUCKET,
                replicas=r,
                max_value_bytes=64 * 1024,
                max_bytes=32 * 1024 * 1024,
            )
            kv = await ops.key_value(SECRETS_BUCKET)
            self._secrets = SecretStore(kv, self._secrets_key)
            await self._secrets.load()
        await self._load_registry()
        watcher = await self._observed_kv.watchall()
        self._tasks = [
            asyncio.create_task(self._watch(watcher), name="control-watch"),
            asyncio.create_task(self._tick_loop(), name="control-tick"),
            asyncio.create_task(self._replan_loop(), name="control-replan"),
        ]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []

    async def _load_registry(self) -> None:
        kv = self._registry_kv
        assert kv is not None
        try:
            keys = await kv.keys()
        except NoKeysError:  # an empty bucket
            keys = []
        now = _now_ms()
        for key in sorted(keys):
            entry = await kv.get(key)
            if entry.value is None:
                continue
            if key.startswith("fn."):
                self._registry.load(decode_record(entry.value))
            elif key.startswith("ns."):
                self._registry.load_namespace(decode_namespace(entry.value))
            elif key.startswith("queue."):
                self._registry.load_queue(decode_queue(entry.value))
            elif key.startswith(_STATE_PREFIX):
                name = key[len(_STATE_PREFIX) :]
                state = msgspec.json.decode(entry.value, type=StableState)
                self._stable[name] = state
                event = FunctionRestored(
                    name, state.active, state.previous, state.regions, now, state.placed
                )
                self._reconciler.handle(event)
        log.info("restored %d functions from the registry", len(self._stable))

    # -- the loop ---------------------------------------------------------------------------------

    async def _watch(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is None:
                continue  # end of the initial replay
            if entry.operation in ("DEL", "PURGE"):
                await self._handle(LocationForgotten(entry.key))
                self._observed.pop(entry.key, None)
                continue
            try:
                observed = decode_observed(entry.value or b"")
            except ProtocolError as err:
                self._malformed_total += 1
                log.warning("ignoring observed state of %s: %s", entry.key, err)
                continue
            if observed.location != entry.key:
                self._malformed_total += 1
                log.warning("observed key %s holds location %s", entry.key, observed.location)
                continue
            self._observed_total += 1
            self._observed[observed.location] = observed
            await self._handle(NodeObserved(observed, _now_ms()))

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            self._ticks_total += 1
            try:
                await self._handle(Tick(_now_ms()))
            except Exception:
                # A bug must not silently stop rollouts forever: log it loudly and keep ticking.
                log.exception("control tick failed")

    async def _handle(self, event: Event) -> list[Instruction]:
        async with self._lock:
            out = self._reconciler.handle(event)
            for ins in out:
                await self._execute(ins)
            await self._flush_desired()
            await self._persist_stable()
            return out

    async def _execute(self, ins: Instruction) -> None:
        if isinstance(ins, WriteDesired):
            self._unwritten[ins.location] = encode_desired(self._seal_secrets(ins.state))
            return
        record = {"at_ms": _now_ms(), "type": type(ins).__name__, **msgspec.to_builtins(ins)}
        self._recent.append(record)
        log.info("%s", record)

    def _seal_secrets(self, state: DesiredState) -> DesiredState:
        """Add each function's secrets to ``state``, sealed for that location's key only."""
        sealed = {}
        for name, fd in state.functions.items():
            if fd.secrets_generation == 0 or self._secrets is None:
                continue
            observed = self._observed.get(state.location)
            node_key = observed.secrets_key if observed else ""
            if not node_key:
                # The node then reports the version as not loadable (no secrets for it).
                log.warning(
                    "location %s reported no secrets key; %s gets none", state.location, name
                )
                continue
            try:
                plain = msgspec.json.encode(self._secrets.values(name))
                box = seal_for_node(
                    plain,
                    node_public_b64=node_key,
                    location=state.location,
                    function=name,
                    generation=fd.secrets_generation,
                )
            except SecretsError as err:
                log.warning("cannot seal the secrets of %s for %s: %s", name, state.location, err)
                continue
            sealed[name] = msgspec.structs.replace(fd, secrets=box)
        if not sealed:
            return state
        return msgspec.structs.replace(state, functions={**state.functions, **sealed})

    async def _flush_desired(self) -> None:
        kv = self._desired_kv
        assert kv is not None
        for location, data in list(self._unwritten.items()):
            value = data if self._desired_key is None else self._desired_key.sign(location, data)
            try:
                await kv.put(location, value)
            except Exception as err:
                log.warning("writing desired state of %s failed (will retry): %r", location, err)
                return
            if self._unwritten.get(location) is data:
                del self._unwritten[location]

    async def _persist_stable(self) -> None:
        kv = self._registry_kv
        assert kv is not None
        for name in self._reconciler.functions():
            status = self._reconciler.function_status(name)
            assert status is not None
            state = StableState(status.active, status.previous, status.regions, status.placed)
            if self._stable.get(name) == state:
                continue
            try:
                await kv.put(_STATE_PREFIX + name, msgspec.json.encode(state))
            except Exception as err:
                # Any NATS failure: _stable is unchanged, so the next event retries the write.
                log.warning("persisting state of %s failed (will retry): %r", name, err)
                return
            self._stable[name] = state

    # -- operations -------------------------------------------------------------------------------

    async def upload(
        self,
        name: str,
        data: bytes,
        signature: str,
        *,
        principal: Principal,
        key_id: str | None = None,
    ) -> VersionInfo:
        """Verify and store a signed bundle as a new version of ``name`` (idempotent)."""
        sha = sha256_hex(data)
        admin = ADMIN in principal.scopes
        # Authenticate before parsing: unsigned bytes never reach the gzip and tar readers.
        signer = self._verify(sha, signature, self.access.signing_candidates(principal, key_id))
        self._registry.check_function(name, principal.account, admin=admin)
        manifest = read_bundle_manifest(data)
        if manifest.name != name:
            raise BundleError(
                f"bundle {version_id(sha)} is function {manifest.name!r}, uploaded as {name!r}",
                hint=f"upload it to /v1/functions/{manifest.name}/versions",
            )
        info = VersionInfo(
            version_id(sha),
            sha,
            signature,
            signer,
            _now_ms(),
            len(data),
            summarize_manifest(manifest),
        )
        async with self._lock:
            bundles, kv = self._bundles, self._registry_kv
            assert bundles is not None
            assert kv is not None
            self._registry.check_namespaces(info.manifest, principal.account, admin=admin)
            self._registry.check_queues(info.manifest, principal.account, admin=admin)
            pinned = self._reconciler.pinned_versions(name)
            existing = self._registry.find_version(name, info.version_id)
            if existing is not None:
                return existing
            # Each write is idempotent, so retrying one that may have applied is safe.
            await _retrying(f"storing bundle {sha[:12]}", lambda: bundles.put(sha, data))
            await self._announce_bundle(sha, data)
            record, pruned = self._registry.add_version(
                info, now_ms=info.created_ms, pinned=pinned, account=principal.account
            )
            encoded = encode_record(record)
            await _retrying(f"registering {name}", lambda: kv.put(record_key(name), encoded))
            claimed = self._registry.claim_namespaces(
                info.manifest, record.account, now_ms=info.created_ms
            )
            claimed_queues = self._registry.claim_queues(
                info.manifest, record.account, now_ms=info.created_ms
            )
            claims = [(namespace_key(ns.namespace), encode_namespace(ns)) for ns in claimed]
            claims += [(queue_key(q.queue), encode_queue(q)) for q in claimed_queues]
            for key, value in claims:
                await _retrying(f"claiming {key}", lambda k=key, v=value: kv.put(k, v))
            for old in pruned:
                if not self._registry.has_sha256(old.sha256):
                    await bundles.delete(old.sha256)
        log.info("stored %s version %s (%d bytes)", name, info.version_id, len(data))
        detail = {"version": info.version_id, "sha256": sha, "key_id": signer}
        if claimed:
            detail["claimed_namespaces"] = " ".join(ns.namespace for ns in claimed)
        if claimed_queues:
            detail["claimed_queues"] = " ".join(q.queue for q in claimed_queues)
        await self.access.audit(principal, "upload", name, detail)
        return info

    async def share_namespace(
        self, namespace: str, with_account: str, *, principal: Principal
    ) -> NamespaceRecord:
        """Let ``with_account`` bind ``namespace`` (its owner or an admin only)."""
        async with self._lock:
            kv = self._registry_kv
            assert kv is not None
            record = self._registry.share_namespace(
                namespace,
                with_account,
                account=principal.account,
                admin=ADMIN in principal.scopes,
            )
            await kv.put(namespace_key(namespace), encode_namespace(record))
        await self.access.audit(principal, "kv.share", namespace, {"with": with_account})
        return record

    async def _announce_bundle(self, sha: str, data: bytes) -> None:
        """Push a new bundle to every region's cache (best effort: caches fetch on a miss)."""
        if len(data) > MAX_ANNOUNCE_BYTES:
            return
        try:
            await self._nc.publish(BUNDLE_ANNOUNCE, data, headers={"Edgefn-Sha256": sha})
        except Exception as err:  # the object store has it; a cache miss will fetch it
            log.warning("could not announce bundle %s: %s", sha[:12], err)

    @staticmethod
    def _verify(sha: str, signature: str, candidates: list[DeployerKey]) -> str:
        for deployer in candidates:
            try:
                verify_signature(deployer.public_key_pem, sha, signature)
            except BundleError:
                continue
            return deployer.key_id
        tried = ", ".join(k.key_id for k in candidates)
        raise Untrusted(
            f"signature mismatch for bundle {version_id(sha)}: not signed by a registered key "
            f"of the caller's account (tried: {tried})",
            hint="the bundle was tampered with, or signed with an unregistered key "
            "(`edgefn key list` shows the registered ones)",
        )

    def _version(self, name: str, ref: str) -> VersionInfo:
        if self._registry.get_function(name) is None:
            raise NotFound(f"unknown function {name!r}", hint="upload a version first")
        info = self._registry.find_version(name, ref)
        if info is None:
            raise NotFound(
                f"function {name!r} has no version {ref!r}",
                hint=f"list versions with GET /v1/functions/{name}/versions",
            )
        return info

    async def deploy(
        self,
        name: str,
        ref: str,
        strategy: str,
        *,
        principal: Principal,
        allow_no_traffic: bool = False,
    ) -> DeploymentStarted:
        admin = ADMIN in principal.scopes
        self._registry.check_function(name, principal.account, admin=admin)
        info = self._version(name, ref)
        self._registry.check_namespaces(info.manifest, principal.account, admin=admin)
        self._registry.check_queues(info.manifest, principal.account, admin=admin)
        self._check_env_names(name, info, [s.name for s in self.list_secrets(name, strict=False)])
        regions = info.manifest.regions if info.manifest.placement_mode == "regions" else ()
        placed = None
        if info.manifest.placement_mode == "smart":
            status = self._reconciler.function_status(name)
            current = status.placed if status is not None and status.placed else ()
            placed = (await self._choose(name, info.manifest, current)).locations
        else:
            self._placement.forget(name)
        gen = self._secrets.generation(name) if self._secrets else 0
        version = VersionRef(info.version_id, info.sha256, info.signature, gen)
        event = DeployRequested(
            name, version, strategy, _now_ms(), regions, allow_no_traffic, placed
        )
        out = await self._handle(event)
        started = self._expect(out, DeploymentStarted)
        detail = {"version": info.version_id, "strategy": strategy}
        await self.access.audit(principal, "deploy", name, detail)
        return started

    # -- smart placement --------------------------------------------------------------------------

    def _sites(self) -> list[SmartSite]:
        """Locations that reported within the last minute and said where they are."""
        now = _now_ms()
        out = []
        for loc in self._reconciler.location_status():
            observed = self._observed.get(loc.location)
            if observed is None or observed.lat is None or observed.lon is None:
                continue
            if now - loc.last_seen_ms <= _SITE_FRESH_MS:
                out.append(SmartSite(loc.location, loc.region, observed.lat, observed.lon))
        return out

    async def _choose(
        self, name: str, manifest: ManifestSummary, current: Sequence[str]
    ) -> PlacementChoice:
        sites = self._sites()
        spec = spec_of(name, manifest)
        if not [s for s in sites if not spec.regions or s.region in spec.regions]:
            where = f" in regions {list(spec.regions)}" if spec.regions else ""
            raise Conflict(
                f"{name}: smart placement has no location{where} to choose from (none reported "
                "its position within the last minute)",
                hint="wait for the locations to report (`edgefn status`), or check "
                "[placement] regions",
            )
        return await self._placement.choose(spec, sites, current)

    async def _replan_loop(self) -> None:
        while True:
            await asyncio.sleep(self._placement.interval_s)
            try:
                await self.replan()
            except Exception:
                log.exception("smart placement re-plan failed")

    async def replan(self) -> list[str]:
        """Re-plan every smart function from the demand observed; the ones that moved."""
        moved = []
        for name in self._reconciler.functions():
            try:
                out = await self._replan_one(name)
            except Conflict as err:
                log.warning("not re-planning %s: %s", name, err)
                continue
            if out is not None and out[1].changed:
                moved.append(name)
        return moved

    async def _replan_one(self, name: str) -> tuple[tuple[str, ...], PlacementChoice] | None:
        """Re-plan smart ``name`` now (a change goes to the reconciler): (placed before, the
        choice), or None when its active version is not smart. Conflict: no location to use."""
        status = self._reconciler.function_status(name)
        if status is None or status.placed is None or status.active is None:
            return None
        info = self._registry.find_version(name, status.active.version_id)
        if info is None or info.manifest.placement_mode != "smart":
            return None
        before = tuple(status.placed)
        choice = await self._choose(name, info.manifest, before)
        if choice.changed:
            await self._handle(PlacementChosen(name, choice.locations, _now_ms()))
            self._recent.append(
                {"at_ms": _now_ms(), "type": "PlacementChosen", "function": name,
                 "locations": list(choice.locations), "reason": choice.reason}
            )  # fmt: skip
            log.info("smart placement of %s: %s", name, choice.reason)
        return before, choice

    async def apply_placement(self, name: str, *, principal: Principal) -> dict[str, Any]:
        """``edgefn plan --apply NAME``: re-plan smart ``name`` now from the demand observed
        and deploy the change (make-before-break, as the periodic re-plan does)."""
        self.check_owner(name, principal)
        out = await self._replan_one(name)
        if out is None:
            raise Conflict(
                f"{name} is not placed by smart placement: its active version has no "
                '[placement] mode = "smart" (or it is not deployed)',
                hint='set [placement] mode = "smart" in edgefn.toml and deploy it',
            )
        before, choice = out
        detail = {"before": ",".join(before), "locations": ",".join(choice.locations)}
        await self.access.audit(principal, "placement_apply", name, detail)
        return {
            "function": name,
            "before": list(before),
            "locations": list(choice.locations),
            "moved": choice.changed,
            "reason": choice.reason,
            "mean_rtt_ms": round(choice.mean_rtt_ms, 2),
            "demand": [{"region": r, "share": round(x, 4)} for r, x in choice.demand],
            "observed": choice.observed,
        }

    # -- secrets ----------------------------------------------------------------------------------

    def _secret_store(self) -> SecretStore:
        if self._secrets is None:
            raise SecretsUnavailable(
                "this control plane has no secrets key, so it stores no secrets",
                hint="start the core with a secrets key (edgefn core --secrets-key FILE)",
            )
        return self._secrets

    @staticmethod
    def _check_env_names(name: str, info: VersionInfo, secrets: Sequence[str]) -> None:
        """Secrets, [vars], KV and origin bindings share ``env``: refuse a name used twice."""
        taken = (
            set(info.manifest.vars)
            | set(info.manifest.kv_bindings)
            | set(info.manifest.origins)
            | set(info.manifest.durable_objects)
        )
        clash = sorted(taken & set(secrets))
        if clash:
            raise Conflict(
                f"{name} version {info.version_id} defines {clash} in [vars] or as a binding, "
                "and the function has secrets of the same name",
                hint="rename the var or binding, or delete the secret "
                f"(edgefn secret delete {name} {clash[0]})",
            )

    def list_secrets(self, name: str, *, strict: bool = True) -> tuple[SecretInfo, ...]:
        """Names and update times of ``name``'s secrets (never values)."""
        validate_function_name(name)
        if self._secrets is None and not strict:
            return ()
        return self._secret_store().names(name)

    def check_owner(self, name: str, principal: Principal) -> None:
        """Refuse (403 naming the owner) when ``name`` belongs to another account (admin: any).

        A function nobody has uploaded yet has no owner, so its secrets cannot be set: otherwise
        another account could plant values for a name before its owner claims it.
        """
        if self._registry.owner(name) is None:
            raise NotFound(
                f"no function {name!r} has been uploaded",
                hint="deploy it first (edgefn deploy), then set its secrets",
            )
        self._registry.check_function(name, principal.account, admin=ADMIN in principal.scopes)

    async def put_secret(
        self, name: str, secret: str, value: str, *, principal: Principal
    ) -> dict[str, Any]:
        """Store a secret and roll it out (an immediate deploy of the active code)."""
        store = self._secret_store()
        validate_function_name(name)
        validate_secret_name(secret)
        data = validate_secret_value(value)
        self.check_owner(name, principal)
        async with self._secrets_lock:
            if not store.has(name, secret) and len(store.names(name)) >= MAX_SECRETS_PER_FUNCTION:
                raise Conflict(
                    f"{name} already has {MAX_SECRETS_PER_FUNCTION} secrets",
                    hint="delete unused ones (edgefn secret list)",
                )
            for info in self._deployed_versions(name):
                self._check_env_names(name, info, [secret])
            gen = await store.put(name, secret, data, now_ms=_now_ms())
            log.info("secret %s of %s stored (generation %d)", secret, name, gen)
            deployment = await self._roll_out_secrets(name, gen)
        await self.access.audit(principal, "secret.put", name, {"secret": secret})
        updated = next(s.updated_ms for s in store.names(name) if s.name == secret)
        return {
            "function": name,
            "name": secret,
            "updated_ms": updated,
            "generation": gen,
            "deployment": msgspec.to_builtins(deployment) if deployment else None,
        }

    async def delete_secret(
        self, name: str, secret: str, *, principal: Principal
    ) -> dict[str, Any]:
        store = self._secret_store()
        validate_function_name(name)
        validate_secret_name(secret)
        self.check_owner(name, principal)
        async with self._secrets_lock:
            if not store.has(name, secret):
                raise NotFound(
                    f"{name} has no secret {secret!r}",
                    hint=f"list them with edgefn secret list {name}",
                )
            gen = await store.delete(name, secret)
            log.info("secret %s of %s deleted (generation %d)", secret, name, gen)
            deployment = await self._roll_out_secrets(name, gen)
        await self.access.audit(principal, "secret.delete", name, {"secret": secret})
        return {
            "function": name,
            "name": secret,
            "deleted": True,
            "generation": gen,
            "deployment": msgspec.to_builtins(deployment) if deployment else None,
        }

    def _deployed_versions(self, name: str) -> list[VersionInfo]:
        status = self._reconciler.function_status(name)
        if status is None:
            return []
        ids = {status.active.version_id if status.active else ""}
        if status.deployment is not None and status.deployment.status == "in_progress":
            ids.add(status.deployment.version_id)
        found = (self._registry.find_version(name, i) for i in sorted(ids - {""}))
        return [info for info in found if info is not None]

    async def _roll_out_secrets(self, name: str, gen: int) -> DeploymentStarted | None:
        """Redeploy the active code with secrets generation ``gen``, immediately.

        Immediate rather than the usual strategy: a secret change is usually urgent (a leaked or
        rotated credential) and cannot be judged by a health gate against itself. A rollout in
        progress is superseded (deploy the new code again afterwards). A function that serves
        nothing yet gets the secrets with its first deploy.
        """
        status = self._reconciler.function_status(name)
        if status is None or status.active is None:
            return None
        ref = msgspec.structs.replace(status.active, secrets_generation=gen)
        event = DeployRequested(name, ref, "immediate", _now_ms(), status.regions)
        return self._expect(await self._handle(event), DeploymentStarted)

    async def rollback(self, name: str, to: str | None, *, principal: Principal) -> RolledBack:
        self._registry.check_function(name, principal.account, admin=ADMIN in principal.scopes)
        target = None
        if to is not None:
            info = self._version(name, to)
            target = VersionRef(info.version_id, info.sha256, info.signature)
        out = await self._handle(RollbackRequested(name, target, _now_ms()))
        rolled = self._expect(out, RolledBack)
        await self.access.audit(principal, "rollback", name, {"to": rolled.to_version_id or ""})
        return rolled

    async def purge_cache(
        self,
        name: str,
        *,
        tags: Sequence[str],
        urls: Sequence[str],
        everything: bool,
        principal: Principal,
    ) -> dict[str, Any]:
        """Publish a purge of ``name``'s edge cache to every node and region tier."""
        self._registry.check_function(name, principal.account, admin=ADMIN in principal.scopes)
        purge = Purge(name, tuple(tags), tuple(urls), everything)
        await self._nc.publish(CACHE_PURGE, encode_purge(purge))
        await self._nc.flush(timeout=5)
        detail = {
            "tags": ",".join(tags)[:500],
            "urls": str(len(urls)),
            "everything": str(everything),
        }
        await self.access.audit(principal, "cache_purge", name, detail)
        return {"function": name, "tags": list(tags), "urls": list(urls), "everything": everything}

    @staticmethod
    def _expect(out: list[Instruction], kind: type[_T]) -> _T:
        for ins in out:
            if isinstance(ins, Rejected):
                raise Conflict(ins.reason, hint=ins.hint)
            if isinstance(ins, kind):
                return ins
        raise EdgefnError(f"the reconciler produced no {kind.__name__}")  # a bug, not user error

    async def bundle(self, sha256: str, *, principal: Principal | None = None) -> bytes:
        """A bundle's bytes. With a non-admin ``principal``, only a bundle of a version of one
        of its account's functions: another account's code is "not found", as if absent."""
        bundles = self._bundles
        assert bundles is not None
        if principal is not None and ADMIN not in principal.scopes:
            owners = {
                record.account
                for record in self._registry.functions()
                if any(v.sha256 == sha256 for v in record.versions)
            }
            if principal.account not in owners:
                raise NotFound(f"no bundle {sha256}", hint="check the sha256")
        try:
            result = await bundles.get(sha256)
        except (ObjectNotFoundError, NotFoundError, KeyNotFoundError):
            raise NotFound(f"no bundle {sha256}", hint="check the sha256") from None
        return bytes(result.data or b"")

    # -- queries ----------------------------------------------------------------------------------

    def registry(self) -> Registry:
        return self._registry

    @property
    def nc(self) -> Client:
        """The core's NATS connection (the tail route subscribes with it)."""
        return self._nc

    def function_status(self, name: str) -> FunctionStatus | None:
        return self._reconciler.function_status(name)

    def deployments(self, name: str) -> tuple[DeploymentRecord, ...]:
        return self._reconciler.deployments(name)

    def location_status(self) -> tuple[LocationStatus, ...]:
        """Every known location: region, generations, when it last reported (core clock)."""
        return self._reconciler.location_status()

    def observed(self, location: str) -> ObservedState | None:
        """What ``location`` last reported (its resources among it), or None."""
        return self._observed.get(location)

    def status(self, principal: Principal | None = None) -> dict[str, Any]:
        """Per location: observed and desired generation; per function: versions, convergence.

        With a ``principal`` that is not an admin, only its account's functions appear: in the
        function list, in each location's observed figures and load errors, and in the recent
        events (the planet's locations are shared and shown to every reader).
        """
        mine: Callable[[str], bool] = lambda _name: True  # noqa: E731
        my_version: Callable[[str], bool] = lambda _version: True  # noqa: E731
        if principal is not None and ADMIN not in principal.scopes:
            account = principal.account
            mine = lambda name: self._registry.owner(name) == account  # noqa: E731
            # Load errors are keyed by version id: those of the account's functions' versions.
            versions = {
                v.version_id
                for record in self._registry.functions()
                if record.account == account
                for v in record.versions
            }
            my_version = versions.__contains__
        locations = []
        for loc in self._reconciler.location_status():
            observed = self._observed.get(loc.location)
            shown = None
            if observed is not None:
                shown = msgspec.to_builtins(observed)
                shown["functions"] = {k: v for k, v in shown["functions"].items() if mine(k)}
                shown["errors"] = {k: v for k, v in shown["errors"].items() if my_version(k)}
            entry = {**msgspec.to_builtins(loc), "converged": loc.converged, "observed": shown}
            entry["load_errors"] = [e for e in entry["load_errors"] if my_version(e[0])]
            locations.append(entry)
        functions = []
        for name in filter(mine, self._reconciler.functions()):
            status = self._reconciler.function_status(name)
            assert status is not None
            entry = msgspec.to_builtins(status)
            choice = self._placement.choices.get(name)
            if status.placed is not None:
                entry["placement"] = {
                    "mode": "smart",
                    "locations": list(status.placed),
                    "reason": choice.reason if choice else "restored from the last placement",
                    "mean_rtt_ms": choice.mean_rtt_ms if choice else None,
                    "demand": dict(choice.demand) if choice else {},
                    "observed": choice.observed if choice else False,
                }
            functions.append(entry)
        return {
            "locations": locations,
            "functions": functions,
            "recent_events": [e for e in self._recent if mine(str(e.get("function", "")))],
            "statistics": msgspec.to_builtins(self.statistics()),
        }

    def statistics(self) -> ControlStatistics:
        rec = self._reconciler.statistics()
        return ControlStatistics(
            rec.locations,
            rec.functions,
            self._registry.statistics().versions,
            rec.rollouts_in_progress,
            rec.generation,
            len(self._unwritten),
            self._observed_total,
            self._malformed_total,
            self._ticks_total,
        )
