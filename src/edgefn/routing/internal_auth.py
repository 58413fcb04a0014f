"""Planet-internal signatures: authenticated internal requests and the entry's client identity.

Both use :func:`~edgefn.routing.headers.planet_mac` (HMAC-SHA256 with the planet secret), each
with its own domain, so a MAC made for one purpose never verifies for another.

**Internal requests** (a node's internal listener, the supervisor API, the link emulator's control
API). The caller adds one header::

    x-edgefn-internal-auth: v1 <at_ms> <nonce> <sig>

``at_ms`` is the caller's wall clock in ms since the epoch, ``nonce`` 32 lower-case hex
characters chosen at random per request, and ``sig`` the hex HMAC over the domain, the method, the
request target (path and query, exactly as sent), ``at_ms``, the nonce and the hex SHA-256 of the
body. :class:`InternalVerifier` accepts a request only if the header is well formed, the MAC
matches, ``at_ms`` is at most ``max_age_ms`` old and at most ``max_skew_ms`` in the future, and the
nonce was not seen before. Nonces are remembered (bounded by ``max_entries``) exactly as long as a
request carrying them could still be fresh; when the memory is full of live nonces the verifier
refuses (``BUSY``) rather than forget one, so a replay is never accepted.

**Client identity.** The anycast entry signs the client address it saw (the socket peer) together
with the client location it normalised::

    x-edgefn-client-addr  the client's IP address as the entry saw it
    x-edgefn-client-at    the entry's wall clock, ms since the epoch
    x-edgefn-client-sig   hex HMAC over the address, the x-edgefn-client-location value and at

A node trusts the address (for per-client rate limits) only when :func:`verify_client` says so;
otherwise it strips :data:`CLIENT_HEADERS` and keys the client by its own socket peer.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from edgefn.routing.headers import collect_once, planet_mac

__all__ = [
    "CLIENT_ADDR_HEADER",
    "CLIENT_AT_HEADER",
    "CLIENT_HEADERS",
    "CLIENT_LOCATION_HEADER",
    "CLIENT_SIG_HEADER",
    "INTERNAL_AUTH_HEADER",
    "AuthCheck",
    "InternalVerifier",
    "VerifierStatistics",
    "body_sha256",
    "sign_client",
    "sign_internal",
    "verify_client",
]

INTERNAL_AUTH_HEADER = "x-edgefn-internal-auth"
CLIENT_ADDR_HEADER = "x-edgefn-client-addr"
CLIENT_AT_HEADER = "x-edgefn-client-at"
CLIENT_SIG_HEADER = "x-edgefn-client-sig"
CLIENT_LOCATION_HEADER = "x-edgefn-client-location"
CLIENT_HEADERS = frozenset({CLIENT_ADDR_HEADER, CLIENT_AT_HEADER, CLIENT_SIG_HEADER})

_INTERNAL_DOMAIN = b"edgefn-internal-v1"
_CLIENT_DOMAIN = b"edgefn-client-v1"
_HEADER_RE = re.compile(r"v1 ([0-9]{1,15}) ([0-9a-f]{32}) ([0-9a-f]{64})")
_DIGITS_RE = re.compile(r"[0-9]{1,15}")
_SIG_RE = re.compile(r"[0-9a-f]{64}")
_ADDR_RE = re.compile(r"[0-9A-Fa-f.:]{1,64}")
_METHOD_RE = re.compile(r"[A-Z]{1,16}")
_TARGET_MAX = 8192
_LOCATION_MAX = 256


class AuthCheck(StrEnum):
    """Outcome of :meth:`InternalVerifier.verify`; only VALID lets the request in."""

    VALID = "valid"
    ABSENT = "absent"
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad-signature"
    EXPIRED = "expired"
    REPLAYED = "replayed"
    BUSY = "busy"

    @property
    def status(self) -> int:
        """The HTTP status to refuse with: 401 without credentials, 403 with bad ones, 503 busy."""
        if self is AuthCheck.ABSENT or self is AuthCheck.MALFORMED:
            return 401
        return 503 if self is AuthCheck.BUSY else 403


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _internal_mac(
    secret: bytes, method: str, target: str, at_ms: int, nonce: str, body_hex: str
) -> str:
    parts = (method.upper(), target, str(at_ms), nonce, body_hex)
    return planet_mac(secret, _INTERNAL_DOMAIN, parts)


def sign_internal(
    secret: bytes, *, method: str, target: str, body: bytes, at_ms: int, nonce: str
) -> str:
    """The ``x-edgefn-internal-auth`` value for one request (``target`` = path + ``?query``)."""
    assert re.fullmatch(r"[0-9a-f]{32}", nonce), nonce
    assert at_ms >= 0, at_ms
    sig = _internal_mac(secret, method, target, at_ms, nonce, body_sha256(body))
    return f"v1 {at_ms} {nonce} {sig}"


@dataclass(frozen=True, slots=True)
class VerifierStatistics:
    accepted: int
    refused: dict[str, int]
    nonces_remembered: int


class InternalVerifier:
    """Checks ``x-edgefn-internal-auth`` values and remembers nonces (bounded). Time is data."""

    def __init__(
        self,
        secret: bytes,
        *,
        max_age_ms: int = 30_000,
        max_skew_ms: int = 5_000,
        max_entries: int = 65_536,
    ) -> None:
        assert max_age_ms > 0
        assert max_skew_ms >= 0
        assert max_entries > 0
        planet_mac(secret, _INTERNAL_DOMAIN, ())  # Raises RoutingConfigError for a short secret.
        self._secret = secret
        self._max_age_ms = max_age_ms
        self._max_skew_ms = max_skew_ms
        self._max_entries = max_entries
        # nonce -> time until which it must be remembered; insertion order = arrival order.
        self._seen: dict[str, int] = {}
        self._accepted = 0
        self._refused: dict[str, int] = {}

    def verify(
        self, header: str | None, *, method: str, target: str, body: bytes, now_ms: int
    ) -> AuthCheck:
        """Whether a request with this header, method, target and body is let in at ``now_ms``."""
        check = self._check(header, method, target, body, now_ms)
        if check is AuthCheck.VALID:
            self._accepted += 1
        else:
            self._refused[check.value] = self._refused.get(check.value, 0) + 1
        return check

    def _check(
        self, header: str | None, method: str, target: str, body: bytes, now_ms: int
    ) -> AuthCheck:
        if header is None or not header.strip():
            return AuthCheck.ABSENT
        match = _HEADER_RE.fullmatch(header.strip())
        if match is None or not _METHOD_RE.fullmatch(method) or len(target) > _TARGET_MAX:
            return AuthCheck.MALFORMED
        at_ms, nonce, sig = int(match[1]), match[2], match[3]
        expected = _internal_mac(self._secret, method, target, at_ms, nonce, body_sha256(body))
        if not hmac.compare_digest(sig, expected):
            return AuthCheck.BAD_SIGNATURE
        if at_ms > now_ms + self._max_skew_ms or now_ms - at_ms > self._max_age_ms:
            return AuthCheck.EXPIRED
        self._forget_expired(now_ms)
        if nonce in self._seen:
            return AuthCheck.REPLAYED
        if len(self._seen) >= self._max_entries:
            return AuthCheck.BUSY
        # A request with this nonce is fresh until at_ms + max_age_ms <= now + skew + max_age.
        self._seen[nonce] = max(now_ms, at_ms) + self._max_age_ms + self._max_skew_ms
        return AuthCheck.VALID

    def _forget_expired(self, now_ms: int) -> None:
        for _ in range(len(self._seen)):
            nonce, until = next(iter(self._seen.items()))
            if until >= now_ms:
                return
            del self._seen[nonce]

    def check_invariants(self) -> None:
        assert len(self._seen) <= self._max_entries, len(self._seen)

    def statistics(self) -> VerifierStatistics:
        return VerifierStatistics(self._accepted, dict(self._refused), len(self._seen))


def _client_mac(secret: bytes, addr: str, location: str, at_ms: int) -> str:
    return planet_mac(secret, _CLIENT_DOMAIN, (addr, location, str(at_ms)))


def sign_client(secret: bytes, *, addr: str, location: str, at_ms: int) -> dict[str, str]:
    """The entry's client-identity headers (lower-case names) for one request."""
    assert _ADDR_RE.fullmatch(addr), addr
    assert len(location) <= _LOCATION_MAX, location
    return {
        CLIENT_ADDR_HEADER: addr,
        CLIENT_AT_HEADER: str(at_ms),
        CLIENT_SIG_HEADER: _client_mac(secret, addr, location, at_ms),
    }


def verify_client(
    secret: bytes,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    *,
    now_ms: int,
    max_age_ms: int = 30_000,
    max_skew_ms: int = 5_000,
) -> str | None:
    """The client address the entry signed, or None (absent, duplicated, forged or stale)."""
    found = collect_once(headers, CLIENT_HEADERS | {CLIENT_LOCATION_HEADER})
    if found is None:
        return None
    addr = found.get(CLIENT_ADDR_HEADER, "")
    at_s = found.get(CLIENT_AT_HEADER, "")
    sig = found.get(CLIENT_SIG_HEADER, "")
    location = found.get(CLIENT_LOCATION_HEADER, "")
    if not (_ADDR_RE.fullmatch(addr) and _DIGITS_RE.fullmatch(at_s) and _SIG_RE.fullmatch(sig)):
        return None
    if len(location) > _LOCATION_MAX:
        return None
    at_ms = int(at_s)
    if not hmac.compare_digest(sig, _client_mac(secret, addr, location, at_ms)):
        return None
    if at_ms > now_ms + max_skew_ms or now_ms - at_ms > max_age_ms:
        return None
    return addr
