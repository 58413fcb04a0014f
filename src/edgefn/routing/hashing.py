"""Weighted rendezvous (highest-random-weight) hashing.

Every (key, member) pair gets a pseudo-random number ``u`` in (0, 1) by mixing (splitmix64) the
BLAKE2b digests of the two strings; the member's score is ``-weight / ln(u)`` (Schindelhauer &
Schomaker's logarithmic method), and the member with the highest score owns the key. With equal
weights this is plain HRW. The score of a pair never depends on the other members, which gives the
properties affinity routing needs:

* removing a member moves only the keys it owned (each to its own second choice);
* adding a member moves only the keys the new member now wins;
* a member with weight ``w`` owns a fraction ``w / sum(weights)`` of the keys in expectation.

BLAKE2b rather than ``hash()``: Python's string hash is salted per process, and every location must
agree on the owner of a key. Ties (equal scores, which needs a 64-bit collision) are broken by
member name. Members with a weight <= 0 (or not finite) never own a key.

The key of a request is what its function's ``[placement] affinity`` names
(:func:`affinity_key`): ``header:<name>`` (the first header of that name) or ``cookie:<name>``
(that cookie from the first ``cookie`` header that has it). No such header or cookie: no affinity.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from hashlib import blake2b

__all__ = ["affinity_key", "rendezvous_choose", "rendezvous_rank", "rendezvous_score"]

_TWO_64 = float(1 << 64)
_MASK = (1 << 64) - 1


def _digest(text: str, person: bytes) -> int:
    return int.from_bytes(blake2b(text.encode(), digest_size=8, person=person).digest(), "big")


@lru_cache(maxsize=8_192)
def _member_hash(member: str) -> int:
    # Members (location ids) repeat on every request; caching their digest halves the cost.
    return _digest(member, b"edgefn-member")


def _unit(key_hash: int, member: str) -> float:
    """A deterministic number in the open interval (0, 1) for the pair (splitmix64 finaliser over
    the two digests: a bijection, so distinct members never collide for one key)."""
    x = key_hash ^ _member_hash(member)
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    x ^= x >> 31
    return (x + 0.5) / _TWO_64


def _score(key_hash: int, member: str, weight: float) -> float:
    if not (weight > 0 and math.isfinite(weight)):
        return -math.inf
    return -weight / math.log(_unit(key_hash, member))


def rendezvous_score(key: str, member: str, weight: float = 1.0) -> float:
    """The pair's HRW score; higher wins. ``-inf`` when the member cannot own keys."""
    return _score(_digest(key, b"edgefn-key"), member, weight)


def _items(members: Mapping[str, float] | Iterable[str]) -> Iterable[tuple[str, float]]:
    if isinstance(members, Mapping):
        return members.items()
    return ((m, 1.0) for m in members)


def rendezvous_choose(key: str, members: Mapping[str, float] | Iterable[str]) -> str | None:
    """The member that owns ``key``, or None if no member has a positive weight.

    ``members`` is either an iterable of names (equal weights) or a mapping name -> weight.
    """
    key_hash = _digest(key, b"edgefn-key")
    best: str | None = None
    best_score = -math.inf
    for member, weight in _items(members):
        score = _score(key_hash, member, weight)
        if score == -math.inf:
            continue
        if best is None or score > best_score or (score == best_score and member < best):
            best, best_score = member, score
    return best


def rendezvous_rank(key: str, members: Mapping[str, float] | Iterable[str]) -> list[str]:
    """Members that can own ``key``, best first: the owner, then its failover order."""
    key_hash = _digest(key, b"edgefn-key")
    scored = [
        (-_score(key_hash, member, weight), member)
        for member, weight in _items(members)
        if weight > 0 and math.isfinite(weight)
    ]
    scored.sort()
    return [member for _, member in scored]


def affinity_key(spec: str | None, headers: Sequence[tuple[str, str]]) -> str | None:
    """The request's affinity key under ``spec`` (``header:<name>`` / ``cookie:<name>``).

    ``headers`` are (lower-case name, value) pairs; None when ``spec`` is empty or the request
    carries no such header or cookie.
    """
    if not spec:
        return None
    kind, _, name = spec.partition(":")
    name = name.strip().lower()
    if kind == "header":
        return next((v for k, v in headers if k == name), None)
    for k, v in headers:
        if k != "cookie":
            continue
        for part in v.split(";"):
            key, _, value = part.strip().partition("=")
            if key.lower() == name:
                return value
    return None
