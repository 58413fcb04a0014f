"""Per-function bounds on console output, and a size-rotated log file.

Function code decides how much it prints; the node decides how much of it is kept. Each function
gets a token bucket of lines and one of bytes (:class:`LogLimiter`, pure: time arrives as data).
A line over either budget is dropped and counted; the node reports the count once per
``report_ms`` window as a ``log_dropped`` record, so a function that floods its log cannot drown
the node's own records, fill the disk or slow other tenants. :class:`RotatingFile` is the text
stream the node writes its JSON lines to: past ``max_bytes`` it is renamed to ``.1`` (the older
ones shift up to ``backups``) and a new file is started, so the log's disk use is bounded too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LogLimiter", "LogLimits", "RotatingFile"]


@dataclass(frozen=True, slots=True)
class LogLimits:
    """Budgets per function: a steady rate and a burst, for lines and for bytes."""

    lines_per_s: float = 100.0
    lines_burst: int = 500
    bytes_per_s: float = 64 * 1024
    bytes_burst: int = 512 * 1024
    report_ms: int = 5000


@dataclass(slots=True)
class _Bucket:
    lines: float
    bytes: float
    at_ms: int
    dropped: int = 0
    reported_ms: int = 0


@dataclass(slots=True)
class LogLimiter:
    """Token buckets of lines and bytes per function. ``admit`` says whether to keep a line."""

    limits: LogLimits = field(default_factory=LogLimits)
    max_functions: int = 10_000
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def admit(self, function: str, size: int, now_ms: int) -> bool:
        b = self._bucket(function, now_ms)
        lim = self.limits
        elapsed_s = max(0, now_ms - b.at_ms) / 1000
        b.lines = min(float(lim.lines_burst), b.lines + elapsed_s * lim.lines_per_s)
        b.bytes = min(float(lim.bytes_burst), b.bytes + elapsed_s * lim.bytes_per_s)
        b.at_ms = now_ms
        if b.lines < 1 or b.bytes < size:
            b.dropped += 1
            return False
        b.lines -= 1
        b.bytes -= size
        return True

    def take_dropped(self, function: str, now_ms: int) -> int:
        """Lines dropped since the last report, once per ``report_ms`` (else 0)."""
        b = self._buckets.get(function)
        if b is None or not b.dropped or now_ms - b.reported_ms < self.limits.report_ms:
            return 0
        n, b.dropped, b.reported_ms = b.dropped, 0, now_ms
        return n

    def _bucket(self, function: str, now_ms: int) -> _Bucket:
        b = self._buckets.get(function)
        if b is None:
            if len(self._buckets) >= self.max_functions:
                self._buckets.pop(next(iter(self._buckets)))
            lim = self.limits
            b = _Bucket(float(lim.lines_burst), float(lim.bytes_burst), now_ms)
            self._buckets[function] = b
        return b


class RotatingFile:
    """A line-buffered text file that rotates past ``max_bytes``, keeping ``backups`` old files."""

    def __init__(self, path: Path, *, max_bytes: int = 32 * 1024 * 1024, backups: int = 3) -> None:
        assert max_bytes > 0
        assert backups >= 1
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._file = path.open("a", buffering=1)
        self._size = path.stat().st_size

    def write(self, text: str) -> int:
        if self._size + len(text) > self.max_bytes and self._size > 0:
            self._rotate()
        n = self._file.write(text)
        self._size += len(text.encode("utf-8", "replace")) if not text.isascii() else len(text)
        return n

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def _rotate(self) -> None:
        self._file.close()
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._file = self.path.open("a", buffering=1)
        self._size = 0
