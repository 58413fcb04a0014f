"""Planet-internal signatures: every way a request can be wrong is refused, and only that way."""

from __future__ import annotations

import pytest

from edgefn.routing import RoutingConfigError
from edgefn.routing.internal_auth import (
    CLIENT_ADDR_HEADER,
    CLIENT_LOCATION_HEADER,
    CLIENT_SIG_HEADER,
    AuthCheck,
    InternalVerifier,
    sign_client,
    sign_internal,
    verify_client,
)

SECRET = b"0123456789abcdef0123456789abcdef"
NOW = 1_700_000_000_000
NONCE = "a" * 32


def _sign(
    *, method: str = "PUT", target: str = "/_edgefn/kv/ns/k?consistency=strong", body: bytes = b"v"
) -> str:
    return sign_internal(SECRET, method=method, target=target, body=body, at_ms=NOW, nonce=NONCE)


def _verify(verifier: InternalVerifier, header: str | None, **overrides: object) -> AuthCheck:
    request: dict[str, object] = {
        "method": "PUT",
        "target": "/_edgefn/kv/ns/k?consistency=strong",
        "body": b"v",
        "now_ms": NOW,
    }
    request.update(overrides)
    return verifier.verify(header, **request)  # type: ignore[arg-type]


def test_a_signed_request_is_valid_once_and_a_replay_is_refused() -> None:
    verifier = InternalVerifier(SECRET)
    header = _sign()
    assert _verify(verifier, header) is AuthCheck.VALID
    assert _verify(verifier, header, now_ms=NOW + 10) is AuthCheck.REPLAYED
    assert AuthCheck.REPLAYED.status == 403
    stats = verifier.statistics()
    assert stats.accepted == 1
    assert stats.refused == {"replayed": 1}
    verifier.check_invariants()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"method": "DELETE"}, AuthCheck.BAD_SIGNATURE),
        ({"target": "/_edgefn/kv/ns/k?consistency=eventual"}, AuthCheck.BAD_SIGNATURE),
        ({"target": "/_edgefn/kv/other/k?consistency=strong"}, AuthCheck.BAD_SIGNATURE),
        ({"body": b"w"}, AuthCheck.BAD_SIGNATURE),
        ({"now_ms": NOW + 30_001}, AuthCheck.EXPIRED),
        ({"now_ms": NOW - 5_001}, AuthCheck.EXPIRED),
        ({"method": "get"}, AuthCheck.MALFORMED),
    ],
)
def test_any_change_to_method_target_body_or_time_is_refused(
    overrides: dict[str, object], expected: AuthCheck
) -> None:
    assert _verify(InternalVerifier(SECRET), _sign(), **overrides) is expected


def test_absent_malformed_and_wrong_key_headers() -> None:
    verifier = InternalVerifier(SECRET)
    assert _verify(verifier, None) is AuthCheck.ABSENT
    assert _verify(verifier, "  ") is AuthCheck.ABSENT
    assert AuthCheck.ABSENT.status == 401
    assert _verify(verifier, "v1 1 2 3") is AuthCheck.MALFORMED
    assert _verify(verifier, _sign().replace("v1", "v2")) is AuthCheck.MALFORMED
    other = sign_internal(
        b"another-secret-of-32-bytes-long!",
        method="PUT",
        target="/_edgefn/kv/ns/k?consistency=strong",
        body=b"v",
        at_ms=NOW,
        nonce=NONCE,
    )
    assert _verify(verifier, other) is AuthCheck.BAD_SIGNATURE


def test_nonce_memory_is_bounded_and_refuses_rather_than_forgets() -> None:
    """Full of live nonces the verifier answers BUSY; once they expire it accepts again."""
    verifier = InternalVerifier(SECRET, max_entries=2)
    nonces = ["1" * 32, "2" * 32, "3" * 32]
    headers = [
        sign_internal(SECRET, method="GET", target="/x", body=b"", at_ms=NOW, nonce=n)
        for n in nonces
    ]
    ok = {"method": "GET", "target": "/x", "body": b""}
    assert _verify(verifier, headers[0], **ok) is AuthCheck.VALID
    assert _verify(verifier, headers[1], **ok) is AuthCheck.VALID
    assert _verify(verifier, headers[2], **ok) is AuthCheck.BUSY
    assert AuthCheck.BUSY.status == 503
    verifier.check_invariants()
    # Past the window the old nonces are forgotten: their requests would be EXPIRED anyway.
    later = NOW + 40_000
    fresh = sign_internal(SECRET, method="GET", target="/x", body=b"", at_ms=later, nonce="4" * 32)
    assert _verify(verifier, fresh, now_ms=later, **ok) is AuthCheck.VALID
    assert _verify(verifier, headers[0], now_ms=later, **ok) is AuthCheck.EXPIRED
    assert verifier.statistics().nonces_remembered == 1


def test_short_secret_is_a_config_error() -> None:
    with pytest.raises(RoutingConfigError, match="needs at least 16"):
        InternalVerifier(b"short")


def test_client_identity_verifies_only_as_signed() -> None:
    location = "50.1,8.7"
    signed = sign_client(SECRET, addr="203.0.113.9", location=location, at_ms=NOW)
    headers = [*signed.items(), (CLIENT_LOCATION_HEADER, location)]
    assert verify_client(SECRET, headers, now_ms=NOW) == "203.0.113.9"
    # A different address, location, key or age: not trusted.
    forged = [(k, "198.51.100.1" if k == CLIENT_ADDR_HEADER else v) for k, v in headers]
    assert verify_client(SECRET, forged, now_ms=NOW) is None
    moved = [(k, "0,0" if k == CLIENT_LOCATION_HEADER else v) for k, v in headers]
    assert verify_client(SECRET, moved, now_ms=NOW) is None
    assert verify_client(b"x" * 32, headers, now_ms=NOW) is None
    assert verify_client(SECRET, headers, now_ms=NOW + 30_001) is None
    # Unsigned, or a duplicated header: not trusted.
    assert verify_client(SECRET, [(CLIENT_ADDR_HEADER, "10.0.0.1")], now_ms=NOW) is None
    twice = [*headers, (CLIENT_SIG_HEADER, signed[CLIENT_SIG_HEADER])]
    assert verify_client(SECRET, twice, now_ms=NOW) is None
