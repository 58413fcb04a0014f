"""Desired state signed by the core: nodes apply only what the core's Ed25519 key signed.

NATS permissions already keep nodes and tools from writing ``edgefn-desired``; the signature also
covers what they cannot: a leaked ``control`` password, a compromised hub, or anything else that
can put bytes into the bucket without the core's private key (``<state-dir>/core-key.pem``, which
only the core process reads). Nodes get the public key as a file (``edgefn node --core-key``).

Wire format of a value in ``edgefn-desired`` (the desired-state JSON stays readable after the
first line)::

    edgefn-sig-v1 <base64 Ed25519 signature>\\n<desired-state JSON>

The signature is over ``b"edgefn desired state v1\\0" + location + b"\\0" + JSON``: binding the
location means a state signed for one node cannot be replayed onto another's key; replaying an
older state for the same node does nothing, because a node applies only newer generations.
Verification is one Ed25519 check (≈ 50 µs) per desired-state change.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgefn.errors import ProtocolError

__all__ = ["DesiredSigner", "load_core_public_key", "sign_desired", "verify_desired"]

_MAGIC = b"edgefn-sig-v1 "
_CONTEXT = b"edgefn desired state v1\0"


def _message(location: str, payload: bytes) -> bytes:
    return _CONTEXT + location.encode() + b"\0" + payload


class DesiredSigner:
    """The core's desired-state key (private; the core process only)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def from_pem(cls, pem: bytes) -> DesiredSigner:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ProtocolError("the core key is not an Ed25519 private key")
        return cls(key)

    def sign(self, location: str, payload: bytes) -> bytes:
        return sign_desired(self._key, location, payload)


def sign_desired(key: Ed25519PrivateKey, location: str, payload: bytes) -> bytes:
    """Return the signed value to store under ``location`` in ``edgefn-desired``."""
    signature = base64.b64encode(key.sign(_message(location, payload)))
    return _MAGIC + signature + b"\n" + payload


def load_core_public_key(pem: str | bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ProtocolError("the core public key is not an Ed25519 key", hint="pass core-key.pub")
    return key


def verify_desired(keys: list[Ed25519PublicKey], location: str, value: bytes) -> bytes:
    """Return the desired-state JSON in ``value`` if one of ``keys`` signed it for ``location``.

    Raises :class:`ProtocolError` for an unsigned, malformed or forged value.
    """
    if not value.startswith(_MAGIC):
        raise ProtocolError(f"desired state for {location} is not signed by the core")
    head, sep, payload = value[len(_MAGIC) :].partition(b"\n")
    try:
        signature = base64.b64decode(head, validate=True)
    except (binascii.Error, ValueError):
        signature = b""
    if not sep or len(signature) != 64:
        raise ProtocolError(f"desired state for {location} has a malformed signature")
    for key in keys:
        try:
            key.verify(signature, _message(location, payload))
            return payload
        except InvalidSignature:
            continue
    raise ProtocolError(
        f"desired state for {location}: signature mismatch (not signed by the core's key)",
        hint="only the core (control service) may write desired state",
    )
