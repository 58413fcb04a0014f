"""Replace known secret values in log text with ``[REDACTED]`` (pure).

The node knows the values it decrypted, so its log path can redact them wherever they appear:
function console output, error messages and tracebacks. A log line is JSON, so each value is
also matched in its JSON-escaped form (quotes, backslashes, control and non-ASCII characters
become escapes). Values shorter than ``MIN_REDACT_CHARS`` are not redacted: a one-letter secret
would turn every log line into noise and protects nothing.

The redactor keeps the current values of every function plus the previous set of each (workers
of the old generation drain after a change), bounded by ``MAX_VALUES``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Final

__all__ = ["MAX_VALUES", "MIN_REDACT_CHARS", "REDACTED", "Redactor"]

REDACTED: Final = "[REDACTED]"
MIN_REDACT_CHARS: Final = 4
MAX_VALUES: Final = 4096


def _forms(value: str) -> set[str]:
    escaped = json.dumps(value)[1:-1]
    return {value, escaped, json.dumps(value, ensure_ascii=False)[1:-1]}


class Redactor:
    """Known secret values per function; :meth:`redact` hides them in text."""

    def __init__(self) -> None:
        self._current: dict[str, frozenset[str]] = {}
        self._previous: dict[str, frozenset[str]] = {}
        self._pattern: re.Pattern[str] | None = None

    def set_values(self, function: str, values: Iterable[str]) -> None:
        new = frozenset(v for v in values if len(v) >= MIN_REDACT_CHARS)
        old = self._current.get(function, frozenset())
        if new == old:
            return
        self._previous[function] = old
        self._current[function] = new
        self._rebuild()

    def _rebuild(self) -> None:
        values: set[str] = set()
        for group in (*self._current.values(), *self._previous.values()):
            for value in group:
                values |= _forms(value)
        # Longest first, so a value that contains another is replaced whole.
        ordered = sorted(values, key=lambda v: (-len(v), v))[:MAX_VALUES]
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def redact(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)

    def known(self) -> int:
        return sum(len(v) for v in self._current.values())
