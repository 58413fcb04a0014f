"""Secret encryption: AES-256-GCM at rest under the core's master key, and sealed per node.

At rest (core). ``MasterKey`` is 32 random bytes in a 0600 file (``secrets.key`` in the core's
state directory, or ``edgefn core --secrets-key FILE``). Each value is encrypted with AES-256-GCM
under a fresh random 96-bit nonce; the associated data binds the ciphertext to
``function``, ``name`` and the record's ``revision``, so a blob copied to another function, name
or revision fails to decrypt instead of leaking into the wrong ``env``.

In transit (core → one node). Every node has its own X25519 key pair (``secrets-node.key``,
0600, in the node's state directory, created at first start); it reports the public key in its
observed state. The core seals a function's secrets for one location as an ECIES-style box:
an ephemeral X25519 key, HKDF-SHA256 over the shared secret (salt = ephemeral public key ‖ node
public key) → an AES-256-GCM key, a random nonce, associated data = location ‖ function ‖
secrets generation. Only the holder of that node's private key can open it, and a box for one
location, function or generation does not open as another. Box layout, base64 (standard)::

    version byte 0x01 | ephemeral public key (32) | nonce (12) | ciphertext + tag

Wrong keys, wrong associated data and tampering all raise ``SecretsError``; its message never
contains key or plaintext bytes.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edgefn.errors import EdgefnError

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "MasterKey",
    "NodeKey",
    "SecretsError",
    "load_or_create_master_key",
    "load_or_create_node_key",
    "open_for_node",
    "seal_for_node",
]

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
_BOX_VERSION: Final = 1
_AT_REST_CONTEXT: Final = b"edgefn-secret-at-rest-v1"
_TRANSIT_CONTEXT: Final = b"edgefn-secrets-transit-v1"


class SecretsError(EdgefnError):
    """A secret could not be decrypted or a key file is unusable."""


def _ad(context: bytes, *parts: str) -> bytes:
    # Length-prefixed parts: ("ab", "c") and ("a", "bc") give different associated data.
    out = bytearray(context)
    for part in parts:
        raw = part.encode("utf-8")
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise SecretsError(f"{what} is not base64") from None


class MasterKey:
    """The core's AES-256-GCM key for secrets at rest."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        assert len(key) == KEY_BYTES
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "MasterKey(<hidden>)"

    def encrypt(self, plaintext: bytes, *, function: str, name: str, revision: int) -> bytes:
        """``nonce ‖ ciphertext ‖ tag`` with a fresh random nonce."""
        nonce = os.urandom(NONCE_BYTES)
        ad = _ad(_AT_REST_CONTEXT, function, name, str(revision))
        return nonce + self._aead.encrypt(nonce, plaintext, ad)

    def decrypt(self, blob: bytes, *, function: str, name: str, revision: int) -> bytes:
        if len(blob) < NONCE_BYTES + 16:
            raise SecretsError(f"stored secret {function}/{name} is truncated")
        ad = _ad(_AT_REST_CONTEXT, function, name, str(revision))
        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], ad)
        except InvalidTag:
            raise SecretsError(
                f"stored secret {function}/{name} (revision {revision}) does not decrypt",
                hint="the core's secrets key differs from the one that stored it "
                "(--secrets-key), or the record was altered",
            ) from None


class NodeKey:
    """One node's X25519 key pair for opening the secrets sealed for it."""

    __slots__ = ("_private",)

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private

    def __repr__(self) -> str:
        return f"NodeKey(public={self.public_b64()})"

    @classmethod
    def generate(cls) -> NodeKey:
        return cls(X25519PrivateKey.generate())

    def private_bytes(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def public_bytes(self) -> bytes:
        return self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def public_b64(self) -> str:
        return base64.b64encode(self.public_bytes()).decode("ascii")

    def exchange(self, peer: bytes) -> bytes:
        return self._private.exchange(X25519PublicKey.from_public_bytes(peer))


def _box_key(shared: bytes, ephemeral_pub: bytes, node_pub: bytes) -> AESGCM:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=ephemeral_pub + node_pub,
        info=_TRANSIT_CONTEXT,
    )
    return AESGCM(hkdf.derive(shared))


def seal_for_node(
    plaintext: bytes, *, node_public_b64: str, location: str, function: str, generation: int
) -> str:
    """Encrypt ``plaintext`` so only the node holding ``node_public_b64``'s private key opens it."""
    node_pub = _b64decode(node_public_b64, f"secrets key of location {location}")
    if len(node_pub) != KEY_BYTES:
        raise SecretsError(f"secrets key of location {location} is not an X25519 public key")
    ephemeral = X25519PrivateKey.generate()
    ephemeral_pub = ephemeral.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    aead = _box_key(
        ephemeral.exchange(X25519PublicKey.from_public_bytes(node_pub)), ephemeral_pub, node_pub
    )
    nonce = os.urandom(NONCE_BYTES)
    ad = _ad(_TRANSIT_CONTEXT, location, function, str(generation))
    box = bytes([_BOX_VERSION]) + ephemeral_pub + nonce + aead.encrypt(nonce, plaintext, ad)
    return base64.b64encode(box).decode("ascii")


def open_for_node(
    box_b64: str, *, key: NodeKey, location: str, function: str, generation: int
) -> bytes:
    """Open a box from :func:`seal_for_node`; raises ``SecretsError`` if it is not for us."""
    box = _b64decode(box_b64, f"sealed secrets of {function}")
    if len(box) < 1 + KEY_BYTES + NONCE_BYTES + 16 or box[0] != _BOX_VERSION:
        raise SecretsError(f"sealed secrets of {function} are malformed")
    ephemeral_pub = box[1 : 1 + KEY_BYTES]
    nonce = box[1 + KEY_BYTES : 1 + KEY_BYTES + NONCE_BYTES]
    aead = _box_key(key.exchange(ephemeral_pub), ephemeral_pub, key.public_bytes())
    ad = _ad(_TRANSIT_CONTEXT, location, function, str(generation))
    try:
        return aead.decrypt(nonce, box[1 + KEY_BYTES + NONCE_BYTES :], ad)
    except InvalidTag:
        raise SecretsError(
            f"the secrets of {function} (generation {generation}) were not sealed for "
            f"location {location}'s key",
            hint="the node's secrets key changed; the control plane reseals on its next report",
        ) from None


def _read_key_file(path: Path) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SecretsError(
            f"key file {path} is readable by others (mode {mode:o})",
            hint=f"chmod 600 {path}",
        )
    data = path.read_bytes()
    if len(data) != KEY_BYTES:
        raise SecretsError(f"key file {path} holds {len(data)} bytes, not {KEY_BYTES}")
    return data


def _load_or_create(path: Path, make: bytes) -> bytes:
    if path.exists():
        return _read_key_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # created by another process meanwhile: use theirs
        return _read_key_file(path)
    with os.fdopen(fd, "wb") as out:
        out.write(make)
    return make


def load_or_create_master_key(path: Path) -> MasterKey:
    """The master key in ``path`` (32 raw bytes, 0600), created on first use."""
    return MasterKey(_load_or_create(path, os.urandom(KEY_BYTES)))


def load_or_create_node_key(path: Path) -> NodeKey:
    """The node's X25519 private key in ``path`` (32 raw bytes, 0600), created on first use."""
    raw = _load_or_create(path, NodeKey.generate().private_bytes())
    return NodeKey(X25519PrivateKey.from_private_bytes(raw))
