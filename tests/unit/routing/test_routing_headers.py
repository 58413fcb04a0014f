"""Forwarding headers: only correctly signed, fresh, well-formed sets are trusted."""

from __future__ import annotations

import pytest

from edgefn.routing import (
    FORWARD_HEADERS,
    ForwardCheck,
    ForwardInfo,
    RoutingConfigError,
    inspect_forward,
    next_forward,
    sign_forward,
    strip_forward_headers,
    verify_forward,
)
from edgefn.routing.headers import FORWARD_SIG_HEADER, HOP_HEADER, MAX_HOP_VALUE

SECRET = b"0123456789abcdef0123456789abcdef"
NOW = 1_700_000_000_000


def signed(hop: int = 1, path: tuple[str, ...] = ("fra",), at_ms: int = NOW) -> dict[str, str]:
    info = ForwardInfo(hop=hop, forwarded_by=path, request_id="req-1", at_ms=at_ms)
    return sign_forward(SECRET, info)


def test_round_trip() -> None:
    headers = signed(2, ("fra", "lhr"))
    info = verify_forward(SECRET, headers, now_ms=NOW + 10)
    assert info == ForwardInfo(2, ("fra", "lhr"), "req-1", NOW)


def test_header_names_are_case_insensitive_and_pairs_are_accepted() -> None:
    headers = {k.upper(): v for k, v in signed().items()}
    assert verify_forward(SECRET, headers, now_ms=NOW) is not None
    assert verify_forward(SECRET, list(signed().items()), now_ms=NOW) is not None


def test_no_forwarding_headers_is_absent() -> None:
    assert inspect_forward(SECRET, {"host": "x"}, now_ms=NOW) == (None, ForwardCheck.ABSENT)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (HOP_HEADER, "2"),  # hop raised by a client
        ("x-edgefn-forwarded-by", "lhr"),  # claims another forwarder
        ("x-edgefn-request-id", "req-2"),  # replayed on another request
        ("x-edgefn-forwarded-at", str(NOW + 1)),
    ],
)
def test_tampering_breaks_the_signature_or_the_form(field: str, value: str) -> None:
    headers = {**signed(), field: value}
    info, check = inspect_forward(SECRET, headers, now_ms=NOW)
    assert info is None
    assert check in (ForwardCheck.BAD_SIGNATURE, ForwardCheck.MALFORMED)


def test_other_secret_is_a_bad_signature() -> None:
    other = b"another-secret-of-enough-bytes!!"
    assert inspect_forward(other, signed(), now_ms=NOW) == (None, ForwardCheck.BAD_SIGNATURE)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h: h.pop(FORWARD_SIG_HEADER),
        lambda h: h.update({HOP_HEADER: "-1"}),
        lambda h: h.update({HOP_HEADER: "0"}),
        lambda h: h.update({HOP_HEADER: str(MAX_HOP_VALUE + 1)}),
        lambda h: h.update({HOP_HEADER: "1e3"}),
        lambda h: h.update({"x-edgefn-forwarded-by": "fra,lhr"}),  # hop != len(path)
        lambda h: h.update({"x-edgefn-forwarded-by": "fr a"}),
        lambda h: h.update({"x-edgefn-forwarded-by": "x" * 65}),
        lambda h: h.update({"x-edgefn-request-id": "a b"}),
        lambda h: h.update({FORWARD_SIG_HEADER: "zz"}),
        lambda h: h.pop("x-edgefn-request-id"),
    ],
)
def test_malformed_sets_are_rejected(mutate: object) -> None:
    headers = signed()
    mutate(headers)  # type: ignore[operator]
    info, check = inspect_forward(SECRET, headers, now_ms=NOW)
    assert info is None
    assert check is ForwardCheck.MALFORMED


def test_duplicate_forwarding_header_is_malformed() -> None:
    pairs = [*signed().items(), (HOP_HEADER, "1")]
    assert inspect_forward(SECRET, pairs, now_ms=NOW) == (None, ForwardCheck.MALFORMED)


def test_old_and_future_headers_expire() -> None:
    assert inspect_forward(SECRET, signed(), now_ms=NOW + 30_001)[1] is ForwardCheck.EXPIRED
    assert (
        inspect_forward(SECRET, signed(at_ms=NOW + 60_000), now_ms=NOW)[1] is ForwardCheck.EXPIRED
    )
    assert inspect_forward(SECRET, signed(), now_ms=NOW + 30_000)[1] is ForwardCheck.VALID


def test_short_secret_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(RoutingConfigError, match="planet secret") as err:
        sign_forward(b"short", ForwardInfo(1, ("fra",), "r", NOW))
    assert "secrets.token_hex" in err.value.hint
    with pytest.raises(RoutingConfigError):
        verify_forward(b"short", {}, now_ms=NOW)


def test_strip_removes_every_forwarding_header_whatever_its_case() -> None:
    headers = [("X-EdgeFn-Hop", "5"), ("host", "a"), ("x-edgefn-forward-sig", "0" * 64)]
    assert strip_forward_headers(headers) == [("host", "a")]
    stripped = strip_forward_headers(signed())
    assert not {name for name, _ in stripped} & FORWARD_HEADERS


def test_next_forward_extends_the_path() -> None:
    first = next_forward(None, location="fra", request_id="r1", now_ms=NOW)
    assert first == ForwardInfo(1, ("fra",), "r1", NOW)
    second = next_forward(first, location="lhr", request_id="r1", now_ms=NOW + 5)
    assert second.hop == 2
    assert second.forwarded_by == ("fra", "lhr")
    assert verify_forward(SECRET, sign_forward(SECRET, second), now_ms=NOW + 5) == second
