"""The function registry: which functions exist and which bundle versions each one has.

Pure: a ``Registry`` holds ``FunctionRecord``s in memory; the control service persists each one as
JSON under ``fn.<name>`` in the ``edgefn-registry`` KV bucket (``encode_record`` /
``decode_record``) and loads them back at start.

A version is a signed bundle: its id is the first 12 hex digits of the bundle's sha256, so
uploading the same bytes twice yields the same version (``add_version`` is idempotent). Each
function keeps its newest ``keep_versions`` (100) versions; older ones are pruned, except the
versions the reconciler pins (active, previous, being rolled out), which are never pruned.

Tenancy. Accounts own functions and KV namespaces. The first upload of a function claims it for
the uploader's account (``FunctionRecord.account``); the first upload whose manifest binds a KV
namespace claims the namespace (``NamespaceRecord``, persisted as ``ns.<namespace>``). Later
uploads, deploys and rollbacks by another account are refused with ``Forbidden`` naming the owner
(and, for a namespace, the binding), unless the owner shared the namespace with that account
(``share_namespace``). ``admin`` callers (the planet operator) pass every ownership check.

Queues are claimed the same way: the first upload whose manifest names a queue (a producer's or
consumer's ``queue``, or a ``dead_letter_queue``) claims it for the uploader's account
(``QueueRecord``, persisted as ``queue.<name>``); another account's manifest naming it is refused.
Queue names are planet-wide (one stream, ``EDGEFN_Q``), so without the claim one account could
read, fill or drain another's queue by naming it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

import msgspec

from edgefn.bundle.manifest import Manifest
from edgefn.control.auth import DEFAULT_ACCOUNT
from edgefn.control.errors import Forbidden, NotFound
from edgefn.errors import EdgefnError

__all__ = [
    "DEFAULT_KEEP_VERSIONS",
    "FunctionRecord",
    "ManifestSummary",
    "NamespaceRecord",
    "QueueRecord",
    "Registry",
    "RegistryStatistics",
    "VersionInfo",
    "decode_namespace",
    "decode_queue",
    "decode_record",
    "encode_namespace",
    "encode_queue",
    "encode_record",
    "namespace_key",
    "queue_key",
    "record_key",
    "summarize_manifest",
]

DEFAULT_KEEP_VERSIONS: Final = 100
MAX_FUNCTIONS: Final = 10_000
MAX_NAMESPACES: Final = 10_000
MAX_QUEUES: Final = 10_000
MAX_SHARES: Final = 100
_HEX_RE: Final = re.compile(r"^[0-9a-f]{6,64}$")


class ManifestSummary(msgspec.Struct, frozen=True):
    """What the registry remembers of a version's manifest."""

    name: str
    main: str
    placement_mode: str
    regions: tuple[str, ...]
    routes: tuple[str, ...]
    kv_bindings: tuple[str, ...]
    cpu_ms: int
    memory_mb: int
    timeout_ms: int
    kv_namespaces: tuple[str, ...] = ()
    # Names of the manifest's [vars] (not their values): a secret may not reuse one.
    vars: tuple[str, ...] = ()
    # Bindings of its [[origins]] (env names, like KV bindings).
    origins: tuple[str, ...] = ()
    durable_objects: tuple[str, ...] = ()  # their bindings
    # Every queue the manifest names (producers, consumers, dead-letter queues), sorted.
    queues: tuple[str, ...] = ()
    queue_producers: tuple[str, ...] = ()  # the queues its [[queues.producers]] send to
    # (queue, dead_letter_queue or "") of each queue it consumes.
    queue_consumers: tuple[tuple[str, str], ...] = ()
    # [placement] of mode "smart" (control/smart_placement.py).
    min_replicas: int = 2
    max_latency_ms: float | None = None


class VersionInfo(msgspec.Struct, frozen=True):
    version_id: str
    sha256: str
    signature: str
    key_id: str
    created_ms: int
    size_bytes: int
    manifest: ManifestSummary


class FunctionRecord(msgspec.Struct):
    name: str
    created_ms: int
    versions: list[VersionInfo] = msgspec.field(default_factory=list)
    account: str = DEFAULT_ACCOUNT  # records written before tenancy belong to "default"


class NamespaceRecord(msgspec.Struct, frozen=True):
    """A KV namespace's owner and the accounts it is shared with."""

    namespace: str
    owner: str
    created_ms: int
    shared_with: tuple[str, ...] = ()


class QueueRecord(msgspec.Struct, frozen=True):
    """A queue's owning account (the first to name it)."""

    queue: str
    owner: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class RegistryStatistics:
    functions: int
    versions: int
    pruned_total: int


def summarize_manifest(manifest: Manifest) -> ManifestSummary:
    return ManifestSummary(
        name=manifest.name,
        main=manifest.main,
        placement_mode=manifest.placement.mode,
        regions=manifest.placement.regions,
        min_replicas=manifest.placement.min_replicas,
        max_latency_ms=manifest.placement.max_latency_ms,
        routes=tuple(r.pattern for r in manifest.routes),
        kv_bindings=tuple(k.binding for k in manifest.kv_namespaces),
        cpu_ms=manifest.limits.cpu_ms,
        memory_mb=manifest.limits.memory_mb,
        timeout_ms=manifest.limits.timeout_ms,
        kv_namespaces=tuple(k.namespace for k in manifest.kv_namespaces),
        vars=tuple(sorted(manifest.vars)),
        origins=tuple(o.binding for o in manifest.origins),
        durable_objects=tuple(d.binding for d in manifest.durable_objects),
        queues=tuple(sorted(_queue_names(manifest))),
        queue_producers=tuple(q.queue for q in manifest.queues.producers),
        queue_consumers=tuple((c.queue, c.dead_letter_queue) for c in manifest.queues.consumers),
    )


def _queue_names(manifest: Manifest) -> set[str]:
    names = {q.queue for q in manifest.queues.producers}
    for consumer in manifest.queues.consumers:
        names.add(consumer.queue)
        if consumer.dead_letter_queue:
            names.add(consumer.dead_letter_queue)
    return names


def record_key(name: str) -> str:
    return f"fn.{name}"


def namespace_key(namespace: str) -> str:
    return f"ns.{namespace}"


def queue_key(queue: str) -> str:
    return f"queue.{queue}"


_record_decoder = msgspec.json.Decoder(FunctionRecord)
_namespace_decoder = msgspec.json.Decoder(NamespaceRecord)
_queue_decoder = msgspec.json.Decoder(QueueRecord)


def encode_queue(record: QueueRecord) -> bytes:
    return msgspec.json.encode(record)


def decode_queue(data: bytes) -> QueueRecord:
    try:
        return _queue_decoder.decode(data)
    except msgspec.DecodeError as err:
        raise EdgefnError(
            f"malformed queue record: {err}", hint="inspect the edgefn-registry bucket"
        ) from None


def encode_namespace(record: NamespaceRecord) -> bytes:
    return msgspec.json.encode(record)


def decode_namespace(data: bytes) -> NamespaceRecord:
    try:
        return _namespace_decoder.decode(data)
    except msgspec.DecodeError as err:
        raise EdgefnError(
            f"malformed namespace record: {err}", hint="inspect the edgefn-registry bucket"
        ) from None


def encode_record(record: FunctionRecord) -> bytes:
    return msgspec.json.encode(record)


def decode_record(data: bytes) -> FunctionRecord:
    try:
        return _record_decoder.decode(data)
    except msgspec.DecodeError as err:
        raise EdgefnError(
            f"malformed registry record: {err}", hint="inspect the edgefn-registry bucket"
        ) from None


_R = TypeVar("_R")


def _claim(
    table: dict[str, _R], names: tuple[str, ...], make: Callable[[str], _R], limit: int, what: str
) -> list[_R]:
    """Add a record made by ``make`` for each of ``names`` not in ``table``; the new ones."""
    claimed = []
    for name in names:
        if name in table:
            continue
        if len(table) >= limit:
            raise EdgefnError(f"registry full: {limit} {what}")
        record = table[name] = make(name)
        claimed.append(record)
    return claimed


class Registry:
    """Functions and their versions, newest last. Change it only through its methods."""

    def __init__(self, *, keep_versions: int = DEFAULT_KEEP_VERSIONS) -> None:
        assert keep_versions >= 3, "active, previous and a rollout must always fit"
        self._keep = keep_versions
        self._records: dict[str, FunctionRecord] = {}
        self._namespaces: dict[str, NamespaceRecord] = {}
        self._queues: dict[str, QueueRecord] = {}
        self._pruned_total = 0

    def load(self, record: FunctionRecord) -> None:
        """Adopt a persisted record (at start-up)."""
        self._records[record.name] = record

    def load_namespace(self, record: NamespaceRecord) -> None:
        self._namespaces[record.namespace] = record

    def load_queue(self, record: QueueRecord) -> None:
        self._queues[record.queue] = record

    # -- tenancy ----------------------------------------------------------------------------------

    def owner(self, name: str) -> str | None:
        record = self._records.get(name)
        return record.account if record else None

    def check_function(self, name: str, account: str, *, admin: bool) -> None:
        """Raise ``Forbidden`` naming the owner unless ``account`` may change function ``name``."""
        owner = self.owner(name)
        if owner is None or owner == account or admin:
            return
        raise Forbidden(
            f"function {name!r} belongs to account {owner!r}, not {account!r}",
            hint="deploy it with a token of its owner's account, or choose another name",
            extra={"owner": owner, "function": name},
        )

    def check_namespaces(self, summary: ManifestSummary, account: str, *, admin: bool) -> None:
        """Raise ``Forbidden`` naming the binding and owner of a namespace ``account`` may not use."""
        if admin:
            return
        for binding, namespace in zip(summary.kv_bindings, summary.kv_namespaces, strict=False):
            ns = self._namespaces.get(namespace)
            if ns is None or ns.owner == account or account in ns.shared_with:
                continue
            raise Forbidden(
                f"kv_namespaces binding {binding!r}: namespace {namespace!r} belongs to account "
                f"{ns.owner!r}",
                hint=f"ask {ns.owner!r} to run `edgefn kv share {namespace} --with {account}`, "
                "or bind a namespace of your own",
                extra={"owner": ns.owner, "namespace": namespace, "binding": binding},
            )

    def check_queues(self, summary: ManifestSummary, account: str, *, admin: bool) -> None:
        """Raise ``Forbidden`` naming a queue of another account that the manifest names."""
        if admin:
            return
        for queue in summary.queues:
            record = self._queues.get(queue)
            if record is None or record.owner == account:
                continue
            raise Forbidden(
                f"queue {queue!r} belongs to account {record.owner!r}",
                hint="queue names are planet-wide: name a queue of your own "
                f"(for example {account}-{queue})",
                extra={"owner": record.owner, "queue": queue},
            )

    def claim_queues(
        self, summary: ManifestSummary, account: str, *, now_ms: int
    ) -> list[QueueRecord]:
        """Claim every unowned queue the manifest names for ``account``; return new claims."""
        return _claim(
            self._queues,
            summary.queues,
            lambda q: QueueRecord(q, account, now_ms),
            MAX_QUEUES,
            "queues",
        )

    def queue(self, name: str) -> QueueRecord | None:
        return self._queues.get(name)

    def queues(self) -> tuple[QueueRecord, ...]:
        return tuple(self._queues[q] for q in sorted(self._queues))

    def claim_namespaces(
        self, summary: ManifestSummary, account: str, *, now_ms: int
    ) -> list[NamespaceRecord]:
        """Claim every unowned namespace the manifest binds for ``account``; return new claims."""
        return _claim(
            self._namespaces,
            summary.kv_namespaces,
            lambda ns: NamespaceRecord(ns, account, now_ms),
            MAX_NAMESPACES,
            "KV namespaces",
        )

    def share_namespace(
        self, namespace: str, with_account: str, *, account: str, admin: bool
    ) -> NamespaceRecord:
        """Let ``with_account`` bind ``namespace``; only its owner (or an admin) may share it."""
        ns = self._namespaces.get(namespace)
        if ns is None:
            raise NotFound(
                f"unknown KV namespace {namespace!r}",
                hint="a namespace is claimed by the first deploy that binds it",
            )
        if ns.owner != account and not admin:
            raise Forbidden(
                f"namespace {namespace!r} belongs to account {ns.owner!r}",
                hint="only its owner (or an admin) can share it",
                extra={"owner": ns.owner, "namespace": namespace},
            )
        if with_account in ns.shared_with or with_account == ns.owner:
            return ns
        if len(ns.shared_with) >= MAX_SHARES:
            raise EdgefnError(f"namespace {namespace!r} is shared with {MAX_SHARES} accounts")
        shared = tuple(sorted((*ns.shared_with, with_account)))
        record = self._namespaces[namespace] = NamespaceRecord(
            namespace, ns.owner, ns.created_ms, shared
        )
        return record

    def namespaces(self) -> tuple[NamespaceRecord, ...]:
        return tuple(self._namespaces[n] for n in sorted(self._namespaces))

    # -- versions ---------------------------------------------------------------------------------

    def add_version(
        self,
        info: VersionInfo,
        *,
        now_ms: int,
        pinned: frozenset[str],
        account: str = DEFAULT_ACCOUNT,
    ) -> tuple[FunctionRecord, list[VersionInfo]]:
        """Add ``info`` (idempotent); return the updated record and the versions pruned.

        The first version of a function claims it for ``account``.
        """
        name = info.manifest.name
        record = self._records.get(name)
        if record is None:
            if len(self._records) >= MAX_FUNCTIONS:
                raise EdgefnError(
                    f"registry full: {MAX_FUNCTIONS} functions", hint="delete unused functions"
                )
            record = self._records[name] = FunctionRecord(name, now_ms, account=account)
        if any(v.version_id == info.version_id for v in record.versions):
            return record, []
        record.versions.append(info)
        return record, self._prune(record, pinned)

    def _prune(self, record: FunctionRecord, pinned: frozenset[str]) -> list[VersionInfo]:
        pruned: list[VersionInfo] = []
        excess = len(record.versions) - self._keep
        for version in list(record.versions):
            if excess <= 0:
                break
            if version.version_id in pinned:
                continue
            record.versions.remove(version)
            pruned.append(version)
            excess -= 1
        self._pruned_total += len(pruned)
        return pruned

    def functions(self) -> tuple[FunctionRecord, ...]:
        return tuple(self._records[name] for name in sorted(self._records))

    def get_function(self, name: str) -> FunctionRecord | None:
        return self._records.get(name)

    def versions(self, name: str) -> tuple[VersionInfo, ...]:
        """Versions of ``name``, newest first."""
        record = self._records.get(name)
        return tuple(reversed(record.versions)) if record else ()

    def find_version(self, name: str, ref: str) -> VersionInfo | None:
        """Look a version up by id, or by a unique sha256 prefix of at least 6 hex digits."""
        record = self._records.get(name)
        if record is None or not _HEX_RE.match(ref):
            return None
        matches = [v for v in record.versions if v.version_id == ref or v.sha256.startswith(ref)]
        return matches[0] if len(matches) == 1 else None

    def has_sha256(self, sha256: str) -> bool:
        return any(v.sha256 == sha256 for r in self._records.values() for v in r.versions)

    def statistics(self) -> RegistryStatistics:
        return RegistryStatistics(
            len(self._records),
            sum(len(r.versions) for r in self._records.values()),
            self._pruned_total,
        )

    def check_invariants(self) -> None:
        assert len(self._records) <= MAX_FUNCTIONS
        assert len(self._namespaces) <= MAX_NAMESPACES
        for namespace, ns in self._namespaces.items():
            assert ns.namespace == namespace
            assert ns.owner not in ns.shared_with, namespace
        for name, record in self._records.items():
            assert record.name == name
            ids = [v.version_id for v in record.versions]
            assert len(ids) == len(set(ids)), name
            assert len(ids) <= self._keep + 3, name  # at most 3 pinned beyond the budget
            for version in record.versions:
                assert version.manifest.name == name
                assert version.sha256.startswith(version.version_id)
