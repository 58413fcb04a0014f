"""What a KV call's arguments and answers look like on the node: checks, encodings, error kinds.

Pure: no I/O, no driver. Every function here is shared by the node's KV call path
(``edge.kv_calls``), its internal HTTP API (``edge.kv_http``) and ``edgefn.testing``, so a rule
changed here changes everywhere a function's KV call is served.

- Values: ``put`` stores ``str`` as UTF-8, ``bytes`` as is and anything else as JSON
  (:func:`encode_value`); ``get`` returns text, parsed JSON or bytes as ``type`` asks
  (:func:`decode_value`). Metadata is JSON (the replica refuses more than 1024 bytes);
  :func:`decode_metadata` gives it back parsed, or as bytes when it is not JSON.
- Arguments arrive untyped from function code or a query string: :func:`parse_consistency`,
  :func:`parse_revision` (``if_revision``: None, or an integer >= 0) and :func:`parse_int` turn
  them into values or raise :class:`~edgefn.errors.KVLimitError` (error kind ``limit``).
- :func:`error_kind` maps a :class:`~edgefn.errors.KVError` to the ``error_kind`` of a
  ``KVResult``: ``conflict``, ``unavailable`` (nothing was done), ``outcome_unknown`` (a strong
  write's answer was lost: it may have applied), ``limit`` and ``error``.
- Session tokens are signed: what leaves the node is ``<raw>.<mac>``, the replica's token (URL-safe
  base64 of msgpack ``[[origin, seq], ...]``) and 32 hex characters of HMAC-SHA256(planet secret,
  "edgefn-session-v1" ‖ namespace ‖ raw). :func:`open_session` gives ``None`` for a token that
  does not verify (forged, modified, or made for another namespace).
"""

from __future__ import annotations

import contextlib
import hmac
import json
from typing import Any

from edgefn.bus.errors import BusError
from edgefn.bus.subjects import subject_token
from edgefn.errors import KVConflict, KVError, KVLimitError, KVOutcomeUnknown, KVUnavailable
from edgefn.routing.headers import planet_mac
from edgefn.state import Consistency, Item

__all__ = [
    "check_namespace",
    "decode_metadata",
    "decode_value",
    "encode_metadata",
    "encode_value",
    "entry_fields",
    "error_kind",
    "open_session",
    "parse_consistency",
    "parse_int",
    "parse_revision",
    "sign_session",
]

_SESSION_DOMAIN = b"edgefn-session-v1"
_SESSION_MAC_CHARS = 32
_SESSION_MAX_CHARS = 16_384


def sign_session(key: bytes, namespace: str, raw: str) -> str:
    """The token handed out for the replica's token ``raw`` of ``namespace`` (empty stays empty)."""
    if not raw:
        return ""
    mac = planet_mac(key, _SESSION_DOMAIN, (namespace, raw))[:_SESSION_MAC_CHARS]
    return f"{raw}.{mac}"


def open_session(key: bytes, namespace: str, token: str) -> str | None:
    """The replica's token inside ``token``; "" for no token; None if it does not verify."""
    if not token:
        return ""
    raw, dot, mac = token.rpartition(".")
    if not dot or not raw or len(token) > _SESSION_MAX_CHARS:
        return None
    expected = planet_mac(key, _SESSION_DOMAIN, (namespace, raw))[:_SESSION_MAC_CHARS]
    return raw if hmac.compare_digest(mac.encode(), expected.encode()) else None


def encode_value(value: Any, *, key: str) -> bytes:
    """``str`` → UTF-8, ``bytes`` → as is, anything else → JSON."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    try:
        return json.dumps(value, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise KVLimitError(
            f"key {key!r}: value of type {type(value).__name__} cannot be stored ({err})",
            hint="put a str, bytes, or a JSON-serialisable dict/list/number",
        ) from None


def decode_value(data: bytes | None, kind: str, *, key: str) -> Any:
    """Bytes from the store as ``kind``: ``text`` (default), ``json`` or ``bytes``."""
    if data is None:
        return None
    if kind == "bytes":
        return data
    try:
        text = data.decode("utf-8")
        return json.loads(text) if kind == "json" else text
    except (UnicodeDecodeError, ValueError) as err:
        raise KVError(
            f"key {key!r}: the stored value is not valid {kind} ({err})",
            hint='read it with type="bytes"',
        ) from None


def encode_metadata(value: Any, *, key: str) -> bytes:
    """``None`` → no metadata, ``bytes`` → as is, anything else → JSON."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    try:
        return json.dumps(value, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise KVLimitError(
            f"key {key!r}: metadata must be JSON-serialisable ({err})",
            hint="pass a dict of strings and numbers",
        ) from None


def decode_metadata(data: bytes) -> Any:
    """Stored metadata as the caller gave it: parsed JSON, or the bytes; None for none."""
    if not data:
        return None
    with contextlib.suppress(UnicodeDecodeError, ValueError):
        return json.loads(data)
    return data


def entry_fields(item: Item) -> dict[str, Any]:
    """``get_entry``'s answer: the value (text when it is UTF-8, else bytes), revision, metadata."""
    value: Any = item.value
    if value is not None:
        with contextlib.suppress(UnicodeDecodeError):
            value = value.decode("utf-8")
    return {"value": value, "revision": item.revision, "metadata": decode_metadata(item.metadata)}


def error_kind(err: KVError) -> str:
    """The ``error_kind`` of a ``KVResult`` that failed with ``err``."""
    if isinstance(err, KVConflict):
        return "conflict"
    if isinstance(err, KVOutcomeUnknown):
        return "outcome_unknown"
    if isinstance(err, KVUnavailable):
        return "unavailable"
    if isinstance(err, KVLimitError):
        return "limit"
    return "error"


def parse_consistency(name: Any) -> Consistency:
    """The consistency level named ``name`` (none: eventual)."""
    try:
        return Consistency(name or "eventual")
    except ValueError:
        raise KVLimitError(
            f"unknown consistency {name!r}",
            hint="use one of: " + ", ".join(c.value for c in Consistency),
        ) from None


def parse_revision(value: Any) -> int | None:
    """``if_revision``: None (or "") for no condition, else an integer >= 0 (0: absent)."""
    if value is None or value == "":
        return None
    try:
        revision = int(value)
    except (TypeError, ValueError):
        raise KVLimitError(
            f"if_revision must be an integer, got {value!r}", hint="pass the revision you read"
        ) from None
    if revision < 0:
        raise KVLimitError(f"if_revision must be >= 0, got {revision}", hint="0 means 'absent'")
    return revision


def parse_int(value: Any, default: int, name: str) -> int:
    """An integer argument ``name``; ``default`` when it is missing (None or "")."""
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise KVLimitError(f"{name} must be an integer, got {value!r}") from None


def check_namespace(namespace: str) -> None:
    """Refuse a namespace name that cannot be a NATS subject token (it names the replica's
    stream and subjects)."""
    try:
        subject_token(namespace, what="KV namespace")
    except BusError as err:
        raise KVLimitError(
            f"KV namespace {namespace!r} is not a valid name: {err}",
            hint="use 1-64 letters, digits, '-' or '_'",
        ) from None
