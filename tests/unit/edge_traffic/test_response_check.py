"""The node's check of what a worker answers (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefn.edge.response_check import BadResponse, check_response


def test_a_good_response_passes_with_names_lowered() -> None:
    assert check_response(200, [("Content-Type", "text/plain")]) == [
        (b"content-type", b"text/plain")
    ]


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (99, []),
        (600, []),
        (True, []),
        ("200", []),
        (200, [("a b", "x")]),
        (200, [("x", "a\nb")]),
        (200, [("x", "\u65e5")]),
        (200, [("x",)]),
        (200, "x: y"),
        (200, [("x", "y")] * 101),
    ],
)
def test_bad_responses_are_refused(status: object, headers: object) -> None:
    with pytest.raises(BadResponse):
        check_response(status, headers)


def test_framing_and_platform_headers_are_dropped() -> None:
    out = check_response(200, [("Content-Length", "9"), ("X-Edgefn-Version", "v"), ("a", "b")])
    assert out == [(b"a", b"b")]


@given(st.integers(), st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=5))
def test_never_raises_anything_but_bad_response(
    status: int, headers: list[tuple[str, str]]
) -> None:
    try:
        out = check_response(status, headers)
    except BadResponse:
        return
    for name, value in out:
        assert b"\r" not in value
        assert b"\n" not in value
        assert b" " not in name
