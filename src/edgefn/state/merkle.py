"""Merkle digests over key-hash buckets, for anti-entropy.

Keys fall into ``FANOUT ** 2`` leaf buckets by a hash of the key. A leaf's hash is the XOR of the
64-bit digests of its entries, so a write updates its leaf in O(1) (remove the old entry's digest,
add the new one) and the leaf does not depend on insertion order. The tree has one inner level of
``FANOUT`` nodes, each hashing its ``FANOUT`` leaves, and a root hashing the inner nodes.

Anti-entropy sends the leaf vector (``FANOUT ** 2`` integers, 2 KiB at the default) in a digest;
the receiver rebuilds the peer's tree, and :func:`diff` walks both trees from the root and returns
only the leaf buckets whose hashes differ, skipping every subtree whose hash agrees. Only the
entries of those buckets are then exchanged.
"""

from __future__ import annotations

import hashlib
import struct

__all__ = ["FANOUT", "LEAVES", "MerkleTree", "bucket_of", "diff"]

FANOUT = 16
LEAVES = FANOUT * FANOUT


def bucket_of(key: str) -> int:
    """The leaf bucket of ``key`` (stable across processes and versions)."""
    raw = hashlib.blake2b(key.encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(raw, "big") % LEAVES


def _hash_ints(values: list[int]) -> int:
    raw = struct.pack(f">{len(values)}Q", *values)
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


class MerkleTree:
    """Leaf hashes maintained incrementally; inner hashes computed on demand and cached."""

    __slots__ = ("_inner", "leaves")

    def __init__(self, leaves: list[int] | None = None) -> None:
        assert leaves is None or len(leaves) == LEAVES, "wrong leaf count"
        self.leaves = list(leaves) if leaves is not None else [0] * LEAVES
        self._inner: list[int] | None = None

    def toggle(self, key: str, digest: int) -> None:
        """Add or remove (XOR is its own inverse) one entry's digest in ``key``'s bucket."""
        self.leaves[bucket_of(key)] ^= digest
        self._inner = None

    def inner(self) -> list[int]:
        """The ``FANOUT`` inner-node hashes."""
        if self._inner is None:
            self._inner = [
                _hash_ints(self.leaves[i * FANOUT : (i + 1) * FANOUT]) for i in range(FANOUT)
            ]
        return self._inner

    def root(self) -> int:
        return _hash_ints(self.inner())


def diff(a: MerkleTree, b: MerkleTree) -> list[int]:
    """Leaf buckets whose hashes differ, descending only into differing subtrees."""
    if a.root() == b.root():
        return []
    out: list[int] = []
    for i, (ha, hb) in enumerate(zip(a.inner(), b.inner(), strict=True)):
        if ha == hb:
            continue
        base = i * FANOUT
        out.extend(base + j for j in range(FANOUT) if a.leaves[base + j] != b.leaves[base + j])
    return out
