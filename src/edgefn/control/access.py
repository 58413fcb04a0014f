"""Who may use the control plane: API tokens, deployer keys and the audit log, over JetStream.

How it works. ``AccessService.start()`` opens three KV buckets and loads them into memory (the
core is their only writer, so memory is authoritative and every request is answered without a
round trip to JetStream):

- ``edgefn-tokens``: ``t.<id>`` → ``TokenRecord`` (the secret's sha256, never the secret; see
  ``edgefn.control.auth`` for why one sha256 suffices). ``last_used_ms`` is written back at most
  once a minute per token, so a busy client does not turn every request into a KV write.
- ``edgefn-deployer-keys``: ``<key id>`` → ``DeployerKey`` (public key PEM + account). Edge nodes
  read this bucket too, to verify bundles signed by keys registered after they started.
- ``edgefn-audit``: ``a.<sequence>`` → ``AuditRecord``; the newest ``MAX_AUDIT_IN_MEMORY`` are
  kept in memory for ``GET /v1/audit``; the bucket's byte limit bounds what is kept on disk.

``bootstrap_admin(path)`` creates the first token (``admin``, account ``default``) when the
tokens bucket is empty and writes it, mode 0600, to ``path``; it never logs the token.
Randomness comes from ``secrets`` and time from ``time.time_ns`` (this is a driver).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import msgspec
from nats.aio.client import Client
from nats.js.errors import NoKeysError
from nats.js.kv import KeyValue

from edgefn._private_file import write_private_file
from edgefn.bundle.signing import key_id, load_public_key
from edgefn.bus.jetstream import ensure_kv, jetstream
from edgefn.bus.subjects import AUDIT_BUCKET, DEPLOYER_KEYS_BUCKET, TOKENS_BUCKET
from edgefn.control.auth import (
    ADMIN,
    DEFAULT_ACCOUNT,
    MAX_TOKENS,
    AuditRecord,
    DeployerKey,
    Principal,
    TokenRecord,
    bearer_token,
    check_account,
    check_scope,
    format_token,
    hash_secret,
    token_matches,
)
from edgefn.control.errors import ControlError, Forbidden, NotFound, Unauthorized, Untrusted

__all__ = ["AccessService"]

log = logging.getLogger("edgefn.control.access")

MAX_AUDIT_IN_MEMORY: Final = 1000
MAX_KEYS: Final = 1000
LAST_USED_WRITE_MS: Final = 60_000
_AUDIT_BYTES: Final = 64 * 1024 * 1024
_UNAUTHORIZED_HINT: Final = (
    "send `Authorization: Bearer edgefn_<id>_<secret>`; the edgefn CLI reads "
    "<state-dir>/credentials.json or $EDGEFN_TOKEN"
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class AccessService:
    """Tokens, deployer keys and audit records of one control plane. ``await start()`` first."""

    def __init__(self, nc: Client, *, replicas: int = 1, setup_timeout_s: float = 5.0) -> None:
        self._nc = nc
        self._replicas = replicas
        self._setup_timeout_s = setup_timeout_s
        self._tokens: dict[str, TokenRecord] = {}
        self._keys: dict[str, DeployerKey] = {}
        self._audit: deque[AuditRecord] = deque(maxlen=MAX_AUDIT_IN_MEMORY)
        self._audit_seq = 0
        self._last_written: dict[str, int] = {}
        self._tokens_kv: KeyValue | None = None
        self._keys_kv: KeyValue | None = None
        self._audit_kv: KeyValue | None = None

    async def start(self) -> None:
        js = jetstream(self._nc, timeout_s=self._setup_timeout_s)
        r = self._replicas
        # Small byte limits: JetStream reserves each bucket's max_bytes against the core's file
        # store (2 GiB), which the bundles and state buckets already mostly take.
        self._tokens_kv = await ensure_kv(js, TOKENS_BUCKET, replicas=r, max_bytes=16 * 1024 * 1024)
        self._keys_kv = await ensure_kv(
            js, DEPLOYER_KEYS_BUCKET, replicas=r, max_bytes=4 * 1024 * 1024
        )
        self._audit_kv = await ensure_kv(js, AUDIT_BUCKET, replicas=r, max_bytes=_AUDIT_BYTES)
        # Created under the setup timeout; operations use the normal one (see ControlService).
        ops = jetstream(self._nc)
        self._tokens_kv = await ops.key_value(TOKENS_BUCKET)
        self._keys_kv = await ops.key_value(DEPLOYER_KEYS_BUCKET)
        self._audit_kv = await ops.key_value(AUDIT_BUCKET)
        for _key, value in await _entries(self._tokens_kv):
            token = msgspec.json.decode(value, type=TokenRecord)
            self._tokens[token.token_id] = token
        for _key, value in await _entries(self._keys_kv):
            deployer = msgspec.json.decode(value, type=DeployerKey)
            self._keys[deployer.key_id] = deployer
        audit = await _entries(self._audit_kv)
        for _key, value in audit[-MAX_AUDIT_IN_MEMORY:]:
            self._audit.append(msgspec.json.decode(value, type=AuditRecord))
        if audit:
            self._audit_seq = int(audit[-1][0].split(".", 1)[1])

    # -- tokens -----------------------------------------------------------------------------------

    async def bootstrap_admin(self, path: Path | None) -> bool:
        """On first start (no tokens at all), create an admin token and write it to ``path``."""
        if self._tokens:
            return False
        if path is None:
            log.warning(
                "no API tokens exist and no --admin-token-file was given: nobody can use the API"
            )
            return False
        token, record = await self._new_token("bootstrap-admin", (ADMIN,), DEFAULT_ACCOUNT)
        write_private_file(path, (token + "\n").encode("ascii"))
        await self.audit(None, "token.create", record.token_id, {"name": record.name})
        log.info("created bootstrap admin token %s in %s", record.token_id, path)
        return True

    async def _new_token(
        self, name: str, scopes: tuple[str, ...], account: str
    ) -> tuple[str, TokenRecord]:
        if len(self._tokens) >= MAX_TOKENS:
            raise ControlError(f"{MAX_TOKENS} tokens exist", hint="revoke unused tokens")
        token_id = secrets.token_hex(6)
        while token_id in self._tokens:
            token_id = secrets.token_hex(6)
        secret = secrets.token_hex(32)
        record = TokenRecord(
            token_id, name, scopes, account, hash_secret(token_id, secret), _now_ms()
        )
        await self._put_token(record)
        return format_token(token_id, secret), record

    async def _put_token(self, record: TokenRecord) -> None:
        kv = self._tokens_kv
        assert kv is not None
        await kv.put(f"t.{record.token_id}", msgspec.json.encode(record))
        self._tokens[record.token_id] = record

    async def create_token(
        self, by: Principal, *, name: str, scopes: Sequence[str], account: str
    ) -> tuple[str, TokenRecord]:
        """A new token (returned once, in full) and its stored record."""
        if not name or len(name) > 64:
            raise ControlError("field 'name' must be 1-64 characters")
        if not scopes or len(scopes) > 32:
            raise ControlError("give 1-32 scopes", hint="e.g. read, deploy:hello, admin")
        checked = tuple(sorted({check_scope(s) for s in scopes}))
        account = check_account(account)
        token, record = await self._new_token(name, checked, account)
        await self.audit(
            by,
            "token.create",
            record.token_id,
            {"name": name, "scopes": " ".join(checked), "account": account},
        )
        return token, record

    def tokens(self) -> tuple[TokenRecord, ...]:
        return tuple(sorted(self._tokens.values(), key=lambda t: (t.created_ms, t.token_id)))

    async def revoke(self, by: Principal, token_id: str) -> TokenRecord:
        record = self._tokens.get(token_id)
        if record is None:
            raise NotFound(f"no token {token_id!r}", hint="`edgefn token list` shows the ids")
        if record.revoked_ms is None:
            record = msgspec.structs.replace(record, revoked_ms=_now_ms())
            await self._put_token(record)
        await self.audit(by, "token.revoke", token_id, {"name": record.name})
        return record

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization`` header, or ``Unauthorized`` (no detail given)."""
        parsed = bearer_token(authorization)
        if parsed is None:
            raise Unauthorized(
                "missing or malformed API token" if authorization else "no API token",
                hint=_UNAUTHORIZED_HINT,
            )
        record = self._tokens.get(parsed.token_id)
        # An unknown id still costs one hash and compare, like a known one.
        probe = record or TokenRecord(parsed.token_id, "", (), "", "0" * 64, 0, None, 0)
        if not token_matches(probe, parsed) or record is None:
            raise Unauthorized("invalid or revoked API token", hint=_UNAUTHORIZED_HINT)
        await self._touch(record)
        return Principal(record.token_id, record.name, record.account, record.scopes)

    async def _touch(self, record: TokenRecord) -> None:
        now = _now_ms()
        if now - self._last_written.get(record.token_id, 0) < LAST_USED_WRITE_MS:
            self._tokens[record.token_id] = msgspec.structs.replace(record, last_used_ms=now)
            return
        self._last_written[record.token_id] = now
        try:
            await self._put_token(msgspec.structs.replace(record, last_used_ms=now))
        except Exception as err:  # last-used is informative; never fail a request for it
            log.warning("could not record last use of token %s: %r", record.token_id, err)

    # -- deployer keys ----------------------------------------------------------------------------

    async def add_key(
        self, by: Principal | None, *, public_key_pem: str, account: str, name: str = ""
    ) -> DeployerKey:
        """Register a deployer's public key for ``account`` (idempotent for the same account)."""
        account = check_account(account)
        try:
            load_public_key(public_key_pem)
            kid = key_id(public_key_pem)
        except Exception as err:
            raise ControlError(
                f"not an Ed25519 public key PEM: {getattr(err, 'message', err)}",
                hint="pass the .pub file `edgefn key add` names",
            ) from None
        existing = self._keys.get(kid)
        if existing is not None:
            if existing.account != account:
                raise Forbidden(
                    f"key {kid} is already registered for account {existing.account!r}",
                    hint="a key signs for one account; generate another key",
                    extra={"key_id": kid, "owner": existing.account},
                )
            return existing
        if len(self._keys) >= MAX_KEYS:
            raise ControlError(f"{MAX_KEYS} deployer keys are registered")
        deployer = DeployerKey(kid, account, public_key_pem, name or kid, _now_ms())
        kv = self._keys_kv
        assert kv is not None
        await kv.put(kid, msgspec.json.encode(deployer))
        self._keys[kid] = deployer
        await self.audit(by, "key.add", kid, {"account": account, "name": deployer.name})
        return deployer

    def keys(self) -> tuple[DeployerKey, ...]:
        return tuple(self._keys[k] for k in sorted(self._keys))

    def signing_candidates(self, principal: Principal, kid: str | None) -> list[DeployerKey]:
        """The registered keys an upload by ``principal`` may be signed with.

        With a key id (header ``x-edgefn-key-id``) exactly that key, which must be registered and
        belong to the caller's account (admins may use any registered key); without one, every key
        of the caller's account.
        """
        admin = ADMIN in principal.scopes
        if kid is not None:
            deployer = self._keys.get(kid)
            if deployer is None:
                raise Untrusted(
                    f"bundle signed by unregistered key {kid}",
                    hint="register it: `edgefn key add PUBFILE --account "
                    f"{principal.account}` (admin)",
                    extra={"key_id": kid},
                )
            if deployer.account != principal.account and not admin:
                raise Untrusted(
                    f"key {kid} belongs to account {deployer.account!r}, not {principal.account!r}",
                    hint="sign with a key registered for your account",
                    extra={"key_id": kid, "owner": deployer.account},
                )
            return [deployer]
        mine = [k for k in self.keys() if k.account == principal.account or admin]
        if not mine:
            raise Untrusted(
                f"account {principal.account!r} has no registered deployer keys",
                hint="register one: `edgefn key add PUBFILE` (admin)",
            )
        return mine

    # -- audit ------------------------------------------------------------------------------------

    async def audit(
        self, by: Principal | None, action: str, target: str, detail: dict[str, str]
    ) -> None:
        """Record ``action`` on ``target`` by ``by`` (``None``: the control plane itself)."""
        record = AuditRecord(
            _now_ms(),
            action,
            by.token_id if by else "",
            by.name if by else "control-plane",
            by.account if by else "",
            target,
            detail,
        )
        self._audit_seq += 1
        self._audit.append(record)
        kv = self._audit_kv
        assert kv is not None
        try:
            await kv.put(f"a.{self._audit_seq:012d}", msgspec.json.encode(record))
        except Exception as err:
            # The action already happened; losing its durable record must be loud, not fatal.
            log.error("could not persist audit record %s: %r", record, err)
        log.info("audit %s %s by %s", action, target, record.token_id or "control-plane")

    def audit_log(self, limit: int = MAX_AUDIT_IN_MEMORY) -> list[AuditRecord]:
        """The newest ``limit`` records, oldest first."""
        return list(self._audit)[-limit:] if limit > 0 else []


async def _entries(kv: KeyValue) -> list[tuple[str, bytes]]:
    try:
        keys = await kv.keys()
    except NoKeysError:
        return []
    out = []
    for key in sorted(keys):
        entry = await kv.get(key)
        if entry.value:
            out.append((key, entry.value))
    return out
