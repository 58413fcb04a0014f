"""API tokens, scopes and the records of who may do what on the control plane. Pure: no I/O.

Rules.

- A token reads ``edgefn_<id>_<secret>``: ``id`` is 12 lowercase hex digits (public; it names the
  token in lists and the audit log), ``secret`` is 64 lowercase hex digits (32 random bytes that
  the caller draws and passes in: this module never touches a random source).
- The store keeps only ``sha256("edgefn-token-v1:" + id + ":" + secret)``. A slow password hash
  (argon2, scrypt) protects *guessable* secrets; 256 random bits cannot be guessed, so one sha256
  is as strong and keeps every authenticated request cheap. Hashes are compared with
  ``hmac.compare_digest`` so the comparison time does not depend on where they differ.
- Scopes: ``read``; ``deploy:<function>`` or ``deploy:*`` (upload, deploy, rollback, and the
  function's secrets); ``admin`` (tokens, keys, audit, sharing — and implies every scope). Any
  ``deploy:`` scope implies ``read``. A route needs exactly one scope, or is ``PUBLIC``.
- Tenancy: every token belongs to an account. Non-admin tokens act only on what their account
  owns; ``admin`` tokens (the planet operator) may act on any account's function.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Final

import msgspec

from edgefn.control.errors import ControlError

__all__ = [
    "ADMIN",
    "DEFAULT_ACCOUNT",
    "MAX_TOKENS",
    "PUBLIC",
    "READ",
    "TOKEN_PREFIX",
    "AuditRecord",
    "DeployerKey",
    "ParsedToken",
    "Principal",
    "TokenRecord",
    "bearer_token",
    "check_account",
    "check_scope",
    "deploy_scope",
    "format_token",
    "grants",
    "hash_secret",
    "parse_token",
    "token_matches",
]

TOKEN_PREFIX: Final = "edgefn"
READ: Final = "read"
ADMIN: Final = "admin"
PUBLIC: Final = "public"  # a route declared open to anyone (only /openapi.json)
DEFAULT_ACCOUNT: Final = "default"
MAX_TOKENS: Final = 10_000
MAX_SCOPES: Final = 32
_HASH_CONTEXT: Final = b"edgefn-token-v1:"
_ID_RE: Final = re.compile(r"^[0-9a-f]{12}$")
_SECRET_RE: Final = re.compile(r"^[0-9a-f]{64}$")
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FUNCTION_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class ParsedToken(msgspec.Struct, frozen=True):
    token_id: str
    secret: str


class TokenRecord(msgspec.Struct, frozen=True):
    """A stored token: never the secret, only its hash."""

    token_id: str
    name: str
    scopes: tuple[str, ...]
    account: str
    secret_sha256: str
    created_ms: int
    last_used_ms: int | None = None
    revoked_ms: int | None = None

    def public(self) -> dict[str, object]:
        """What a list shows: everything but the hash."""
        return {
            "id": self.token_id,
            "name": self.name,
            "scopes": list(self.scopes),
            "account": self.account,
            "created_ms": self.created_ms,
            "last_used_ms": self.last_used_ms,
            "revoked": self.revoked_ms is not None,
        }


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: the authenticated token's id, name, account and scopes."""

    token_id: str
    name: str
    account: str
    scopes: tuple[str, ...]


class DeployerKey(msgspec.Struct, frozen=True):
    """A registered public key that may sign bundles for ``account``."""

    key_id: str
    account: str
    public_key_pem: str
    name: str
    created_ms: int


class AuditRecord(msgspec.Struct, frozen=True):
    """One audited action: who (token id/name/account), what, on what, when, and the outcome."""

    at_ms: int
    action: str
    token_id: str
    token_name: str
    account: str
    target: str
    detail: dict[str, str] = msgspec.field(default_factory=dict)


def _bad(message: str, hint: str) -> ControlError:
    return ControlError(message, hint=hint)


def format_token(token_id: str, secret: str) -> str:
    assert _ID_RE.match(token_id), token_id
    assert _SECRET_RE.match(secret)
    return f"{TOKEN_PREFIX}_{token_id}_{secret}"


def parse_token(text: str) -> ParsedToken | None:
    """``edgefn_<id>_<secret>`` → its parts; ``None`` for anything else (no detail: it is a guess)."""
    parts = text.strip().split("_")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        return None
    token_id, secret = parts[1], parts[2]
    if not _ID_RE.match(token_id) or not _SECRET_RE.match(secret):
        return None
    return ParsedToken(token_id, secret)


def bearer_token(authorization: str | None) -> ParsedToken | None:
    """The token in an ``Authorization: Bearer …`` header value, if well formed."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return parse_token(value)


def hash_secret(token_id: str, secret: str) -> str:
    return hashlib.sha256(_HASH_CONTEXT + f"{token_id}:{secret}".encode("ascii")).hexdigest()


def token_matches(record: TokenRecord, parsed: ParsedToken) -> bool:
    """Constant-time check of ``parsed`` against a stored record (revoked never matches)."""
    same = hmac.compare_digest(
        record.secret_sha256.encode("ascii"),
        hash_secret(parsed.token_id, parsed.secret).encode("ascii"),
    )
    return same and record.revoked_ms is None and record.token_id == parsed.token_id


def deploy_scope(function: str) -> str:
    return f"deploy:{function}"


def check_scope(scope: str) -> str:
    """Validate one scope as a user wrote it; return it or raise with what is allowed."""
    if scope in (READ, ADMIN, "deploy:*"):
        return scope
    if scope.startswith("deploy:") and _FUNCTION_RE.match(scope[len("deploy:") :]):
        return scope
    raise _bad(
        f"unknown scope {scope!r}",
        "use read, deploy:<function>, deploy:* or admin",
    )


def check_account(account: str) -> str:
    if not _NAME_RE.match(account):
        raise _bad(f"invalid account name {account!r}", "1-64 letters, digits, '.', '_' or '-'")
    return account


def grants(held: tuple[str, ...] | frozenset[str], needed: str) -> bool:
    """Whether a token holding ``held`` may use a route that needs ``needed``."""
    if needed == PUBLIC or ADMIN in held or needed in held:
        return True
    if needed == READ:
        return any(s.startswith("deploy:") for s in held)
    if needed.startswith("deploy:") and needed != "deploy:*":
        return "deploy:*" in held
    return False
