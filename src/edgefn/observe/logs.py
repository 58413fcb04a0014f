"""Structured JSON logs: one object per line, with a timestamp, a kind and the request id.

Access logs (``kind: "access"``), function console output (``kind: "function"``, from ``print`` and
``logging`` inside the sandbox) and node events share one stream so that ``grep <request id>`` shows
a request's whole story.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Protocol


class TextSink(Protocol):
    """Where JSON lines go: a text file, stderr, a :class:`~edgefn.observe.log_limits.RotatingFile`."""

    def write(self, text: str, /) -> int: ...


class JsonLog:
    """Writes JSON lines to a text stream (stderr by default)."""

    def __init__(self, stream: TextSink | None = None, *, location: str = "") -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.location = location

    def emit(self, kind: str, **fields: Any) -> None:
        record = {"ts": round(time.time_ns() / 1e9, 3), "kind": kind, "location": self.location}
        record.update(fields)
        try:
            self.stream.write(json.dumps(record, default=str, separators=(",", ":")) + "\n")
        except ValueError:  # stream closed at shutdown
            return
