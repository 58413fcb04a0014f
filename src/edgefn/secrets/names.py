"""What a secret may be called and hold (pure).

Names follow environment-variable rules so that ``env.NAME`` works in function code: a letter or
``_`` then letters, digits or ``_``, at most 64 characters (case is kept: ``API_KEY`` and
``api_key`` are different secrets). Values are text of at most ``MAX_VALUE_BYTES`` UTF-8 bytes
(5 KiB, as Cloudflare Workers), and a function has at most ``MAX_SECRETS_PER_FUNCTION``.

Errors never quote the value: only its size.
"""

from __future__ import annotations

import re
from typing import Final

from edgefn.errors import UsageError

__all__ = [
    "MAX_NAME_CHARS",
    "MAX_SECRETS_PER_FUNCTION",
    "MAX_VALUE_BYTES",
    "validate_function_name",
    "validate_secret_name",
    "validate_secret_value",
]

MAX_NAME_CHARS: Final = 64
MAX_VALUE_BYTES: Final = 5 * 1024
MAX_SECRETS_PER_FUNCTION: Final = 64
_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# The same rule as ``name`` in edgefn.toml (edgefn.bundle.manifest).
_FUNCTION_RE: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def validate_function_name(name: str) -> str:
    """Return ``name`` if it can be a function's name, else raise ``UsageError``."""
    if _FUNCTION_RE.fullmatch(name) is None:
        raise UsageError(
            f"invalid function name {name[:80]!r}",
            hint="use 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'",
        )
    return name


def validate_secret_name(name: str) -> str:
    """Return ``name`` if it can be a secret's name, else raise ``UsageError``."""
    if _NAME_RE.fullmatch(name) is None:
        raise UsageError(
            f"invalid secret name {name[:80]!r}",
            hint=f"use a letter or _ then letters, digits or _ (at most {MAX_NAME_CHARS}), "
            "like an environment variable: API_KEY",
        )
    return name


def validate_secret_value(value: str) -> bytes:
    """The UTF-8 bytes of ``value`` if it is a valid secret value, else raise ``UsageError``."""
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("the secret value is not valid Unicode text", hint="send UTF-8") from None
    if not data:
        raise UsageError("the secret value is empty", hint="send a non-empty value")
    if len(data) > MAX_VALUE_BYTES:
        raise UsageError(
            f"the secret value is {len(data)} bytes, over the {MAX_VALUE_BYTES}-byte limit",
            hint="store large data in KV and keep only a key in the secret",
        )
    return data
