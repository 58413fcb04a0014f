"""The function registry: which functions exist and which bundle versions each one has.

Pure: a ``Registry`` holds ``FunctionRecord``s in memory; the control service persists each one as
JSON under ``fn.<name>`` in the ``edgefn-registry`` KV bucket (``encode_record`` /
``decode_record``) and loads them back at start.

A version is a signed bundle: its id is the first 12 hex digits of the bundle's sha256, so
uploading the same bytes twice yields the same version (``add_version`` is idempotent). Each
function keeps its newest ``keep_versions`` (100) versions; older ones are pruned, except the
versions the reconciler pins (active, previous, being rolled out), which are never pruned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import msgspec

from edgefn.bundle.manifest import Manifest
from edgefn.errors import EdgefnError

__all__ = [
    "DEFAULT_KEEP_VERSIONS",
    "FunctionRecord",
    "ManifestSummary",
    "Registry",
    "RegistryStatistics",
    "VersionInfo",
    "decode_record",
    "encode_record",
    "record_key",
    "summarize_manifest",
]

DEFAULT_KEEP_VERSIONS: Final = 100
MAX_FUNCTIONS: Final = 10_000
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
    # Names of the manifest's [vars] (not their values): a secret may not reuse one.
    vars: tuple[str, ...] = ()


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
        routes=tuple(r.pattern for r in manifest.routes),
        kv_bindings=tuple(k.binding for k in manifest.kv_namespaces),
        cpu_ms=manifest.limits.cpu_ms,
        memory_mb=manifest.limits.memory_mb,
        timeout_ms=manifest.limits.timeout_ms,
        vars=tuple(sorted(manifest.vars)),
    )


def record_key(name: str) -> str:
    return f"fn.{name}"


_record_decoder = msgspec.json.Decoder(FunctionRecord)


def encode_record(record: FunctionRecord) -> bytes:
    return msgspec.json.encode(record)


def decode_record(data: bytes) -> FunctionRecord:
    try:
        return _record_decoder.decode(data)
    except msgspec.DecodeError as err:
        raise EdgefnError(
            f"malformed registry record: {err}", hint="inspect the edgefn-registry bucket"
        ) from None


class Registry:
    """Functions and their versions, newest last. Change it only through its methods."""

    def __init__(self, *, keep_versions: int = DEFAULT_KEEP_VERSIONS) -> None:
        assert keep_versions >= 3, "active, previous and a rollout must always fit"
        self._keep = keep_versions
        self._records: dict[str, FunctionRecord] = {}
        self._pruned_total = 0

    def load(self, record: FunctionRecord) -> None:
        """Adopt a persisted record (at start-up)."""
        self._records[record.name] = record

    def add_version(
        self, info: VersionInfo, *, now_ms: int, pinned: frozenset[str]
    ) -> tuple[FunctionRecord, list[VersionInfo]]:
        """Add ``info`` (idempotent); return the updated record and the versions pruned."""
        name = info.manifest.name
        record = self._records.get(name)
        if record is None:
            if len(self._records) >= MAX_FUNCTIONS:
                raise EdgefnError(
                    f"registry full: {MAX_FUNCTIONS} functions", hint="delete unused functions"
                )
            record = self._records[name] = FunctionRecord(name, now_ms)
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
        for name, record in self._records.items():
            assert record.name == name
            ids = [v.version_id for v in record.versions]
            assert len(ids) == len(set(ids)), name
            assert len(ids) <= self._keep + 3, name  # at most 3 pinned beyond the budget
            for version in record.versions:
                assert version.manifest.name == name
                assert version.sha256.startswith(version.version_id)
