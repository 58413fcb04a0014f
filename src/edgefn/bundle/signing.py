"""Ed25519 signatures over bundle hashes.

What is signed is not the archive but its content address: the ASCII bytes of
``edgefn-bundle-v1:<sha256 hex>``. The prefix separates bundle signatures from any other use of
the same key. Verifying a signature over the hash, plus checking the hash of the bytes
(``extract_bundle``), authenticates the bytes.

Keys are stored as PKCS#8 PEM files with mode 0600; public keys travel as SubjectPublicKeyInfo
PEM text. ``key_id`` gives a short, stable fingerprint of a public key for logs and the registry.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgefn.errors import BundleError

__all__ = [
    "SIGNATURE_CONTEXT",
    "SigningKey",
    "key_id",
    "load_or_create_signing_key",
    "load_public_key",
    "verify_signature",
]

SIGNATURE_CONTEXT: Final = b"edgefn-bundle-v1:"


def _message(sha256: str) -> bytes:
    return SIGNATURE_CONTEXT + sha256.encode("ascii")


class SigningKey:
    """An Ed25519 private key that signs bundle hashes."""

    __slots__ = ("_key",)

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: bytes, *, where: str = "signing key") -> SigningKey:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as err:
            raise BundleError(
                f"{where}: not a valid PEM private key ({err})",
                hint="delete the file to create a new key, or restore it from backup",
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise BundleError(f"{where}: not an Ed25519 key", hint="generate an Ed25519 key")
        return cls(key)

    def private_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_key_pem(self) -> str:
        return (
            self._key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )

    def key_id(self) -> str:
        return key_id(self.public_key_pem())

    def sign(self, sha256: str) -> str:
        """Sign a bundle's sha256 (hex); returns the signature as base64."""
        return base64.b64encode(self._key.sign(_message(sha256))).decode("ascii")


def load_public_key(public_key_pem: str | bytes) -> Ed25519PublicKey:
    pem = public_key_pem.encode("ascii") if isinstance(public_key_pem, str) else public_key_pem
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as err:
        raise BundleError(
            f"not a valid PEM public key ({err})", hint="pass the key's SubjectPublicKeyInfo PEM"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError("public key is not Ed25519", hint="use an Ed25519 key")
    return key


def key_id(public_key_pem: str | bytes) -> str:
    """A short fingerprint: the first 16 hex digits of sha256 over the raw public key."""
    raw = load_public_key(public_key_pem).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return hashlib.sha256(raw).hexdigest()[:16]


def verify_signature(public_key_pem: str | bytes, sha256: str, signature: str) -> None:
    """Raise ``BundleError`` unless ``signature`` (base64) signs ``sha256`` under the key."""
    key = load_public_key(public_key_pem)
    signer = key_id(_pem_of(key))
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, _message(sha256))
    except (InvalidSignature, binascii.Error, ValueError):
        raise BundleError(
            f"signature mismatch for bundle {sha256[:12]}: not signed by key {signer}",
            hint="the bundle was tampered with, or signed with a key the control plane does not "
            "trust; sign it again with a trusted key",
        ) from None


def _pem_of(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_or_create_signing_key(path: Path) -> SigningKey:
    """Load the PEM key at ``path``, or create one there with mode 0600."""
    try:
        return SigningKey.from_pem(path.read_bytes(), where=str(path))
    except FileNotFoundError:
        pass
    except OSError as err:
        raise BundleError(
            f"{path}: cannot read signing key: {err}", hint="check permissions"
        ) from None
    key = SigningKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process created it between our read and our create: use theirs.
        return SigningKey.from_pem(path.read_bytes(), where=str(path))
    with os.fdopen(fd, "wb") as out:
        out.write(key.private_pem())
    return key
