"""Hybrid logical clocks (Kulkarni et al., 2014), packed into one comparable integer.

A timestamp is ``physical_ms << 16 | logical``: the high bits are wall-clock milliseconds, the low
16 bits a counter that orders events within one millisecond. Plain integer comparison orders
timestamps, so they sort, hash and travel as ``int``.

Rules, with ``pt`` the caller's physical time (time arrives as data, never read here):

- ``now(pt)``: if ``pt`` is ahead of the last timestamp's physical part, restart the counter at
  ``pt``; otherwise keep the physical part and increment the counter. The result is always greater
  than every timestamp this clock issued or observed.
- ``update(remote, pt)``: as ``now`` but also above ``remote``. A remote timestamp more than
  ``max_drift_ms`` ahead of ``pt`` is refused with :class:`ClockDriftError`: accepting it would drag
  this clock (and every later write) into the future of a peer whose clock is wrong.

When the 16-bit counter would overflow, the physical part advances by one millisecond instead; the
clock then runs at most a few milliseconds ahead of real time under extreme write rates.
"""

from __future__ import annotations

from edgefn.errors import ProtocolError

__all__ = ["HLC", "LOGICAL_BITS", "ClockDriftError", "logical_of", "pack", "physical_ms_of"]

LOGICAL_BITS = 16
_LOGICAL_MASK = (1 << LOGICAL_BITS) - 1


class ClockDriftError(ProtocolError):
    """A peer's timestamp is further ahead of our clock than ``max_drift_ms`` allows."""


def pack(physical_ms: int, logical: int) -> int:
    """Pack a physical time and a counter into one comparable timestamp."""
    assert physical_ms >= 0, physical_ms
    assert 0 <= logical <= _LOGICAL_MASK, logical
    return (physical_ms << LOGICAL_BITS) | logical


def physical_ms_of(ts: int) -> int:
    """The wall-clock milliseconds of a packed timestamp."""
    return ts >> LOGICAL_BITS


def logical_of(ts: int) -> int:
    """The logical counter of a packed timestamp."""
    return ts & _LOGICAL_MASK


class HLC:
    """A hybrid logical clock. ``last`` is the greatest timestamp issued or observed."""

    __slots__ = ("last", "max_drift_ms")

    def __init__(self, *, max_drift_ms: int = 60_000, last: int = 0) -> None:
        assert max_drift_ms > 0, max_drift_ms
        self.max_drift_ms = max_drift_ms
        self.last = last

    def now(self, physical_ms: int) -> int:
        """A new timestamp for a local event at wall-clock ``physical_ms``."""
        self.last = self._after(self.last, physical_ms)
        return self.last

    def update(self, remote: int, physical_ms: int) -> int:
        """Observe a remote timestamp; return a new local timestamp above both."""
        ahead_ms = physical_ms_of(remote) - physical_ms
        if ahead_ms > self.max_drift_ms:
            raise ClockDriftError(
                f"peer timestamp is {ahead_ms} ms ahead of the local clock "
                f"(limit {self.max_drift_ms} ms)",
                hint="check NTP on both hosts; the message is refused and will be retried",
            )
        self.last = self._after(max(self.last, remote), physical_ms)
        return self.last

    def observe(self, remote: int) -> None:
        """Raise ``last`` to ``remote`` without issuing a timestamp (recovery, trusted data)."""
        self.last = max(self.last, remote)

    @staticmethod
    def _after(floor: int, physical_ms: int) -> int:
        if physical_ms > physical_ms_of(floor):
            return pack(physical_ms, 0)
        if logical_of(floor) < _LOGICAL_MASK:
            return floor + 1
        # Counter exhausted within one millisecond: borrow the next millisecond.
        return pack(physical_ms_of(floor) + 1, 0)
