"""The two clocks of the traffic driver, in milliseconds.

``wall_ms`` is Unix time: it stamps and checks signed headers, which other hosts verify.
``mono_ms`` is monotonic: every local interval (heartbeat arrival, report freshness, admission
deadlines, suspicion holds) uses it, so a wall-clock step cannot expire or revive anything.
The pure machines of :mod:`edgefn.routing` never read either; the drivers pass the values in.
"""

from __future__ import annotations

import time

__all__ = ["mono_ms", "wall_ms"]


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def mono_ms() -> int:
    return time.monotonic_ns() // 1_000_000
