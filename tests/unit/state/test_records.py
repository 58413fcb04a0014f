"""Entries, merge, limits and session tokens."""

from __future__ import annotations

import itertools

import pytest

from edgefn.errors import KVLimitError
from edgefn.state import Entry, VClock, decode_session, encode_session
from edgefn.state.records import check_key, check_value, merge


def _entry(hlc: int, origin: str, seq: int, value: bytes | None = b"v") -> Entry:
    return Entry("k", value, hlc, origin, seq, ((origin, seq),))


def test_merge_is_commutative_associative_idempotent() -> None:
    writes = [_entry(5, "a", 1), _entry(5, "b", 3), _entry(7, "a", 2, None), _entry(6, "c", 9)]
    results = set()
    for order in itertools.permutations(writes):
        state = None
        for w in order:
            state = merge(state, w)
            state = merge(state, w)
        results.add(state)
    assert len(results) == 1
    (final,) = results
    assert final.stamp == (7, "a")
    assert final.is_tombstone
    assert dict(final.kvec) == {"a": 2, "b": 3, "c": 9}
    assert final.revision == 14


def test_revision_grows_whenever_the_winner_changes() -> None:
    old = _entry(9, "a", 8)
    newer = _entry(10, "b", 1)
    merged = merge(old, newer)
    assert merged.value == newer.value
    assert merged.revision > old.revision


def test_key_and_value_limits_name_the_key_and_the_limit() -> None:
    with pytest.raises(KVLimitError, match="over the 512-byte limit"):
        check_key("x" * 513)
    with pytest.raises(KVLimitError, match="key is empty"):
        check_key("")
    check_key("é" * 256)  # 512 bytes of UTF-8 is allowed
    with pytest.raises(KVLimitError, match=r"value for key 'big' is 11 bytes"):
        check_value("big", b"x" * 11, b"", 10)
    with pytest.raises(KVLimitError, match="metadata for key 'm'"):
        check_value("m", b"", b"x" * 1025, 10)


def test_session_token_round_trips_and_is_compact() -> None:
    token = VClock({"fra": 12, "sin": 3, "iad": 900})
    text = encode_session(token)
    assert decode_session(text) == token
    assert len(text) < 40
    assert text.isascii()
    assert encode_session(VClock()) == ""
    assert decode_session("") == VClock()


@pytest.mark.parametrize("bad", ["%%%", "AAAA", "kWE"])
def test_malformed_session_token_is_refused_with_the_header_name(bad: str) -> None:
    with pytest.raises(KVLimitError, match="x-edgefn-session"):
        decode_session(bad)
