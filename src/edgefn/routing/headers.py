"""Forwarding headers between locations, signed so that clients cannot forge them.

When a location forwards a request it adds four headers::

    x-edgefn-hop            number of forwards so far (1 after the first forward)
    x-edgefn-forwarded-by   the locations that forwarded it, oldest first, comma-separated
    x-edgefn-forwarded-at   the forwarding time in ms since the epoch (limits replay)
    x-edgefn-forward-sig    hex HMAC-SHA256 over the three above and x-edgefn-request-id

keyed with the planet's shared secret. An ingress location runs every incoming request through
:func:`inspect_forward`. Only a request whose headers are all present, well formed, consistent
(``hop == len(forwarded_by)``), fresh and correctly signed is treated as forwarded; anything else
is treated as a fresh request from outside and the driver must remove every header in
:data:`FORWARD_HEADERS` (:func:`strip_forward_headers`) before going on. A client therefore cannot
raise its hop count to dodge routing, nor claim to come from a location to exclude it.

All parsing is bounded: at most :data:`MAX_HOP_VALUE` hops, location ids of at most 64 characters,
request ids of at most 128, and duplicate copies of a forwarding header make the set malformed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from edgefn.routing._errors import RoutingConfigError

__all__ = [
    "FORWARDED_AT_HEADER",
    "FORWARDED_BY_HEADER",
    "FORWARD_HEADERS",
    "FORWARD_SIG_HEADER",
    "HOP_HEADER",
    "MAX_HOP_VALUE",
    "REQUEST_ID_HEADER",
    "ForwardCheck",
    "ForwardInfo",
    "check_secret",
    "inspect_forward",
    "next_forward",
    "planet_mac",
    "sign_forward",
    "strip_forward_headers",
    "verify_forward",
]

HOP_HEADER = "x-edgefn-hop"
FORWARDED_BY_HEADER = "x-edgefn-forwarded-by"
FORWARDED_AT_HEADER = "x-edgefn-forwarded-at"
FORWARD_SIG_HEADER = "x-edgefn-forward-sig"
REQUEST_ID_HEADER = "x-edgefn-request-id"
FORWARD_HEADERS = frozenset(
    {HOP_HEADER, FORWARDED_BY_HEADER, FORWARDED_AT_HEADER, FORWARD_SIG_HEADER}
)

MAX_HOP_VALUE = 8
MIN_SECRET_BYTES = 16
_LOCATION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_DIGITS_RE = re.compile(r"[0-9]{1,15}")
_SIG_RE = re.compile(r"[0-9a-f]{64}")
_DOMAIN = b"edgefn-forward-v1"


class ForwardCheck(StrEnum):
    """Outcome of :func:`inspect_forward`; every value but VALID means "strip and treat as
    outside"."""

    VALID = "valid"
    ABSENT = "absent"
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad-signature"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class ForwardInfo:
    """What a verified set of forwarding headers says."""

    hop: int
    forwarded_by: tuple[str, ...]
    request_id: str
    at_ms: int


def check_secret(secret: bytes) -> None:
    """Raise :class:`RoutingConfigError` when the planet secret is too short."""
    if len(secret) < MIN_SECRET_BYTES:
        raise RoutingConfigError(
            f"the forwarding secret has {len(secret)} bytes, needs at least {MIN_SECRET_BYTES}",
            key="planet secret",
            hint="generate one with `python -c 'import secrets; print(secrets.token_hex(32))'`",
        )


def planet_mac(secret: bytes, domain: bytes, parts: Iterable[str | bytes]) -> str:
    """Hex HMAC-SHA256 with the planet secret over ``domain`` and ``parts``, newline-joined.

    Every signature the planet makes (forwarding headers, internal requests, the entry's client
    address, session tokens) goes through here with its own ``domain``, so a MAC made for one
    purpose never verifies for another.
    """
    check_secret(secret)
    message = b"\n".join((domain, *(p if isinstance(p, bytes) else p.encode() for p in parts)))
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def _mac(secret: bytes, hop: int, path: str, request_id: str, at_ms: int) -> str:
    return planet_mac(secret, _DOMAIN, (str(hop), path, request_id, str(at_ms)))


def sign_forward(secret: bytes, fields: ForwardInfo) -> dict[str, str]:
    """The headers (lower-case names) to add to a forwarded request, request id included."""
    check_secret(secret)
    assert 1 <= fields.hop <= MAX_HOP_VALUE, fields
    assert fields.hop == len(fields.forwarded_by), fields
    assert all(_LOCATION_RE.fullmatch(loc) for loc in fields.forwarded_by), fields
    assert _REQUEST_ID_RE.fullmatch(fields.request_id), fields
    path = ",".join(fields.forwarded_by)
    return {
        HOP_HEADER: str(fields.hop),
        FORWARDED_BY_HEADER: path,
        FORWARDED_AT_HEADER: str(fields.at_ms),
        FORWARD_SIG_HEADER: _mac(secret, fields.hop, path, fields.request_id, fields.at_ms),
        REQUEST_ID_HEADER: fields.request_id,
    }


def next_forward(
    previous: ForwardInfo | None, *, location: str, request_id: str, now_ms: int
) -> ForwardInfo:
    """The forwarding fields ``location`` sends when it forwards a request that arrived with
    ``previous`` (None when it came from outside)."""
    path = (previous.forwarded_by if previous else ()) + (location,)
    return ForwardInfo(hop=len(path), forwarded_by=path, request_id=request_id, at_ms=now_ms)


def collect_once(
    headers: Mapping[str, str] | Iterable[tuple[str, str]], wanted: frozenset[str] | set[str]
) -> dict[str, str] | None:
    """The ``wanted`` headers by lower-case name; None if one of them appears twice (a signed
    header set with a duplicate is ambiguous, so it is treated as forged)."""
    found: dict[str, str] = {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        lname = name.lower()
        if lname in wanted:
            if lname in found:
                return None
            found[lname] = value.strip()
    return found


def inspect_forward(
    secret: bytes,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    *,
    now_ms: int,
    max_age_ms: int = 30_000,
    max_skew_ms: int = 5_000,
) -> tuple[ForwardInfo | None, ForwardCheck]:
    """Verify the forwarding headers; returns the info (when VALID) and why it was (not)
    accepted."""
    check_secret(secret)
    found = collect_once(headers, FORWARD_HEADERS | {REQUEST_ID_HEADER})
    if found is None:
        return None, ForwardCheck.MALFORMED
    if not any(name in found for name in FORWARD_HEADERS):
        return None, ForwardCheck.ABSENT
    hop_s = found.get(HOP_HEADER, "")
    path = found.get(FORWARDED_BY_HEADER, "")
    at_s = found.get(FORWARDED_AT_HEADER, "")
    sig = found.get(FORWARD_SIG_HEADER, "")
    request_id = found.get(REQUEST_ID_HEADER, "")
    if not (_DIGITS_RE.fullmatch(hop_s) and _DIGITS_RE.fullmatch(at_s) and _SIG_RE.fullmatch(sig)):
        return None, ForwardCheck.MALFORMED
    hop = int(hop_s)
    locations = tuple(path.split(",")) if path else ()
    if not (1 <= hop <= MAX_HOP_VALUE and hop == len(locations)):
        return None, ForwardCheck.MALFORMED
    if not all(_LOCATION_RE.fullmatch(loc) for loc in locations):
        return None, ForwardCheck.MALFORMED
    if not _REQUEST_ID_RE.fullmatch(request_id):
        return None, ForwardCheck.MALFORMED
    at_ms = int(at_s)
    if not hmac.compare_digest(sig, _mac(secret, hop, path, request_id, at_ms)):
        return None, ForwardCheck.BAD_SIGNATURE
    if at_ms > now_ms + max_skew_ms or now_ms - at_ms > max_age_ms:
        return None, ForwardCheck.EXPIRED
    info = ForwardInfo(hop=hop, forwarded_by=locations, request_id=request_id, at_ms=at_ms)
    return info, ForwardCheck.VALID


def verify_forward(
    secret: bytes,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    *,
    now_ms: int,
    max_age_ms: int = 30_000,
) -> ForwardInfo | None:
    """The verified forwarding info, or None when the request must be treated as from outside."""
    info, _ = inspect_forward(secret, headers, now_ms=now_ms, max_age_ms=max_age_ms)
    return info


def strip_forward_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
) -> list[tuple[str, str]]:
    """The header pairs without any forwarding header (names compared case-insensitively)."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return [(name, value) for name, value in pairs if name.lower() not in FORWARD_HEADERS]
