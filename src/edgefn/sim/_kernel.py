"""The deterministic discrete-event kernel: a heap of ``(time_ms, seq, event)``.

``seq`` is a counter that breaks ties between events at the same time in the order they were
scheduled (SimPy orders its heap the same way), so a run is a pure function of its inputs and
seed: no dict ordering, no object identity, no wall clock takes part. The kernel knows nothing
about queues or functions; a driver pops an event, hands it to a machine's ``handle()``, and
schedules the events the machine asks for. The heap is bounded (``max_pending``), so a runaway
model fails loudly instead of eating the machine's memory.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Kernel", "KernelStatistics"]

E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class KernelStatistics:
    """Events scheduled and processed, the pending high-water mark and the clock."""

    now_ms: float
    scheduled: int
    processed: int
    pending: int
    pending_max: int
    pending_limit: int


class Kernel(Generic[E]):
    """A future-event list with a simulated clock that only moves forward."""

    def __init__(self, *, max_pending: int = 10_000_000) -> None:
        self._heap: list[tuple[float, int, E]] = []
        self._seq = 0
        self._processed = 0
        self._pending_max = 0
        self._max_pending = max_pending
        self.now_ms = 0.0

    def schedule(self, time_ms: float, event: E) -> None:
        """Schedule ``event`` at ``time_ms`` (not in the past)."""
        assert time_ms >= self.now_ms, (time_ms, self.now_ms)
        if len(self._heap) >= self._max_pending:
            raise OverflowError(f"more than {self._max_pending} pending events")
        heapq.heappush(self._heap, (time_ms, self._seq, event))
        self._seq += 1
        self._pending_max = max(self._pending_max, len(self._heap))

    def pop(self) -> tuple[float, E] | None:
        """The next event and its time (advancing the clock), or None when none is left."""
        if not self._heap:
            return None
        time_ms, _, event = heapq.heappop(self._heap)
        self.now_ms = time_ms
        self._processed += 1
        return time_ms, event

    def peek_time_ms(self) -> float | None:
        """Time of the next event without removing it."""
        return self._heap[0][0] if self._heap else None

    def statistics(self) -> KernelStatistics:
        """Counters for reports and tests."""
        return KernelStatistics(
            now_ms=self.now_ms,
            scheduled=self._seq,
            processed=self._processed,
            pending=len(self._heap),
            pending_max=self._pending_max,
            pending_limit=self._max_pending,
        )

    def check_invariants(self) -> None:
        """The heap is a heap, no event is in the past, counts add up."""
        assert len(self._heap) <= self._max_pending
        assert self._processed + len(self._heap) == self._seq
        if self._heap:
            assert self._heap[0][0] >= self.now_ms
            assert self._heap[0] == min(self._heap)
