"""Function bundles: the ``edgefn.toml`` manifest, deterministic archives, and Ed25519 signing."""

from __future__ import annotations

from edgefn.bundle.build import (
    DEFAULT_MAX_BUNDLE_BYTES,
    Bundle,
    build_bundle,
    bundle_files,
    extract_bundle,
    read_bundle_manifest,
    sha256_hex,
    version_id,
)
from edgefn.bundle.manifest import (
    MANIFEST_FILENAME,
    Egress,
    KVNamespace,
    Limits,
    Manifest,
    Placement,
    Route,
    Runtime,
    load_manifest,
    parse_manifest,
)
from edgefn.bundle.signing import (
    SigningKey,
    key_id,
    load_or_create_signing_key,
    load_public_key,
    verify_signature,
)

__all__ = [
    "DEFAULT_MAX_BUNDLE_BYTES",
    "MANIFEST_FILENAME",
    "Bundle",
    "Egress",
    "KVNamespace",
    "Limits",
    "Manifest",
    "Placement",
    "Route",
    "Runtime",
    "SigningKey",
    "build_bundle",
    "bundle_files",
    "extract_bundle",
    "key_id",
    "load_manifest",
    "load_or_create_signing_key",
    "load_public_key",
    "parse_manifest",
    "read_bundle_manifest",
    "sha256_hex",
    "verify_signature",
    "version_id",
]
