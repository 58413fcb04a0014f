"""Purges on the bus: a round trip, and any bytes decode to a purge or a ValueError naming why."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefn.bus.cache_purge import Purge, decode_purge, encode_purge


def test_round_trip() -> None:
    purge = Purge("fn", ("a", "b"), ("https://x/y",), False)
    assert decode_purge(encode_purge(purge)) == purge
    assert decode_purge(encode_purge(Purge("fn", everything=True))).everything


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"[]", "JSON object"),
        (b'{"tags": ["a"]}', "function"),
        (b'{"function": "f"}', "names tags, urls or everything"),
        (b'{"function": "f", "tags": "a"}', "purge.tags"),
        (b'{"function": "f", "tags": [""]}', "non-empty"),
        (b'{"function": "f", "urls": [' + b'"u",' * 100 + b'"u"]}', "at most 100"),
        (b'{"function": "f", "everything": 1}', "boolean"),
        (b"[" * 100_000, "nested"),
        (b"\xff", "utf-8"),
    ],
)
def test_malformed_purges_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        decode_purge(data)


@given(st.binary(max_size=200) | st.from_regex(rb'\A\{"function": ?"f",.{0,60}\}\Z'))
def test_any_bytes_give_a_purge_or_a_value_error(data: bytes) -> None:
    try:
        purge = decode_purge(data)
    except ValueError:
        return
    assert purge.function
    assert purge.tags or purge.urls or purge.everything
