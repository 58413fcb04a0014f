"""Structured JSON logs: one object per line, with a timestamp, a kind and the request id.

Access logs (``kind: "access"``), function console output (``kind: "function"``, from ``print`` and
``logging`` inside the sandbox) and node events share one stream so that ``grep <request id>`` shows
a request's whole story.

A node passes ``redact`` (``edgefn.secrets.Redactor.redact``): every finished line goes through it,
so secret values are replaced by ``[REDACTED]`` in function output, errors and tracebacks alike.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol


class TextSink(Protocol):
    """Where JSON lines go: a text file, stderr, a :class:`~edgefn.observe.log_limits.RotatingFile`."""

    def write(self, text: str, /) -> int: ...


class JsonLog:
    """Writes JSON lines to a text stream (stderr by default)."""

    def __init__(
        self,
        stream: TextSink | None = None,
        *,
        location: str = "",
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.location = location
        self._redact = redact

    def emit(self, kind: str, **fields: Any) -> None:
        record = {"ts": round(time.time_ns() / 1e9, 3), "kind": kind, "location": self.location}
        record.update(fields)
        line = json.dumps(record, default=str, separators=(",", ":"))
        if self._redact is not None:
            line = self._redact(line)
        try:
            self.stream.write(line + "\n")
        except ValueError:  # stream closed at shutdown
            return
