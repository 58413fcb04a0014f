"""Seeded random streams, one per component, so adding a component never shifts another's draws.

A stream is named by a path of strings and integers (``("location", 3, "service")``). Its seed is
the scenario seed plus a stable digest of the path (CRC-32, not ``hash()``, which is salted per
process), fed to numpy's ``SeedSequence``. The same (seed, path) gives the same draws in every
process, which is what lets replications and locations run in parallel and still be reproducible.
"""

from __future__ import annotations

import random
import zlib

import numpy as np

__all__ = ["numpy_stream", "python_stream", "stream_key"]


def stream_key(*path: str | int) -> list[int]:
    """Stable integer key words for a stream path."""
    return [zlib.crc32(str(part).encode()) for part in path]


def numpy_stream(seed: int, *path: str | int) -> np.random.Generator:
    """A numpy generator for component ``path`` under scenario ``seed``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *stream_key(*path)])))


def python_stream(seed: int, *path: str | int) -> random.Random:
    """A ``random.Random`` for component ``path`` (for pure machines that take one)."""
    words = np.random.SeedSequence([seed, *stream_key(*path)]).generate_state(2)
    return random.Random(int(words[0]) << 32 | int(words[1]))
