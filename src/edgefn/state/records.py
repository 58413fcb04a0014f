"""What the KV stores: entries, their merge rule, size limits, and session tokens.

An :class:`Entry` is the latest known write of one key at one replica: a value, or a tombstone
(``value is None``) left by a delete. Each write is identified by its *stamp* ``(hlc, origin)``
(hybrid-logical timestamp, then originating replica as a tie-break) and by ``(origin, seq)``, the
origin's own write counter, which replication uses for in-order delivery and session tokens.

Merge (:func:`merge`) is last-writer-wins on the stamp, joined with the entry-wise maximum of the
per-key version vectors ``kvec`` (origin -> how many writes that origin made to the key). Both parts
are semilattice joins, so merge is commutative, associative and idempotent and replicas that saw the
same writes hold the same entry, whatever the order.

Revision of an eventual/session/causal entry is ``sum(kvec)``: the number of writes merged into the
key. It only grows, it is the same on replicas that saw the same writes, and it grows whenever the
winning value changes (a new winner is a write the replica had not seen, which raises its origin's
kvec counter). Strong operations use the home's compare-and-set revision instead (see ``home.py``).

A session token is the URL-safe base64 (no padding) of a msgpack list of ``[origin, seq]`` pairs:
the writes a session has made or read. A replica serves the session once its applied frontier
covers the token.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib

import msgspec

from edgefn.errors import KVLimitError
from edgefn.state.vclock import VClock

__all__ = [
    "KEY_BYTES_MAX",
    "METADATA_BYTES_MAX",
    "SESSION_HEADER",
    "VALUE_BYTES_MAX",
    "Consistency",
    "Entry",
    "Stamp",
    "decode_session",
    "encode_session",
    "entry_digest",
    "merge",
]

KEY_BYTES_MAX = 512
# A write replicates as one bus message (NATS max_payload 1 MiB); the value limit leaves room for
# the key, metadata, vector clock and envelope, so an accepted write always fits.
VALUE_BYTES_MAX = 1024 * 1024 - 16 * 1024
METADATA_BYTES_MAX = 1024
SESSION_HEADER = "x-edgefn-session"
_SESSION_ORIGINS_MAX = 1024

Stamp = tuple[int, str]


class Consistency(enum.Enum):
    """Consistency level chosen per operation."""

    EVENTUAL = "eventual"
    SESSION = "session"
    CAUSAL = "causal"
    STRONG = "strong"


class Entry(msgspec.Struct, frozen=True, array_like=True):
    """The winning write of one key, or its tombstone. ``expires_at_ms == 0``: no expiry."""

    key: str
    value: bytes | None
    hlc: int
    origin: str
    seq: int
    kvec: tuple[tuple[str, int], ...]
    metadata: bytes = b""
    expires_at_ms: int = 0

    @property
    def stamp(self) -> Stamp:
        """Last-writer-wins order: hybrid-logical time, then origin."""
        return (self.hlc, self.origin)

    @property
    def revision(self) -> int:
        """Number of writes merged into this key (monotone, convergent)."""
        return sum(c for _, c in self.kvec)

    @property
    def is_tombstone(self) -> bool:
        return self.value is None

    def expired(self, now_ms: int) -> bool:
        return self.expires_at_ms != 0 and self.expires_at_ms <= now_ms

    def live(self, now_ms: int) -> bool:
        """True if a read at ``now_ms`` sees a value."""
        return self.value is not None and not self.expired(now_ms)


def merge(a: Entry | None, b: Entry) -> Entry:
    """Join two versions of the same key (see the module docstring)."""
    if a is None:
        return b
    assert a.key == b.key, (a.key, b.key)
    winner = b if b.stamp > a.stamp else a
    kvec = VClock(a.kvec).merge(VClock(b.kvec)).pairs()
    if kvec == winner.kvec:
        return winner
    return msgspec.structs.replace(winner, kvec=kvec)


_ENCODER = msgspec.msgpack.Encoder()


def entry_digest(entry: Entry) -> int:
    """A 64-bit hash of every field of ``entry`` (Merkle leaves XOR these)."""
    raw = hashlib.blake2b(_ENCODER.encode(entry), digest_size=8).digest()
    return int.from_bytes(raw, "big")


def check_key(key: str) -> None:
    """Refuse keys that are empty or longer than :data:`KEY_BYTES_MAX` bytes of UTF-8."""
    size = len(key.encode("utf-8"))
    if size == 0:
        raise KVLimitError("key is empty", hint="use a non-empty key")
    if size > KEY_BYTES_MAX:
        raise KVLimitError(
            f"key {key[:40]!r}... is {size} bytes, over the {KEY_BYTES_MAX}-byte limit",
            hint="use a shorter key, for example a hash of the long one",
        )


def check_value(key: str, value: bytes, metadata: bytes, value_bytes_max: int) -> None:
    """Refuse values and metadata over their limits, naming the key."""
    if len(value) > value_bytes_max:
        raise KVLimitError(
            f"value for key {key[:80]!r} is {len(value)} bytes, "
            f"over the {value_bytes_max}-byte limit",
            hint="store large objects elsewhere and keep a reference in KV",
        )
    if len(metadata) > METADATA_BYTES_MAX:
        raise KVLimitError(
            f"metadata for key {key[:80]!r} is {len(metadata)} bytes, "
            f"over the {METADATA_BYTES_MAX}-byte limit",
            hint="keep metadata small; put the rest in the value",
        )


def encode_session(token: VClock) -> str:
    """The compact text form of a session token (empty string for an empty token)."""
    if not token:
        return ""
    raw = _ENCODER.encode([list(p) for p in token.pairs()])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


_SESSION_DECODER = msgspec.msgpack.Decoder(list[tuple[str, int]])


def decode_session(text: str) -> VClock:
    """Parse a session token; a malformed one raises :class:`KVLimitError` naming the header."""
    if not text:
        return VClock()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        pairs = _SESSION_DECODER.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError) as err:
        raise KVLimitError(
            f"session token {text[:40]!r} ({SESSION_HEADER}) is malformed: {err}",
            hint=f"send back the {SESSION_HEADER} value exactly as a response returned it, "
            "or omit it to start a new session",
        ) from None
    if len(pairs) > _SESSION_ORIGINS_MAX or any(seq < 0 for _, seq in pairs):
        raise KVLimitError(
            f"session token ({SESSION_HEADER}) has invalid entries",
            hint=f"send back the {SESSION_HEADER} value exactly as a response returned it",
        )
    return VClock(pairs)
