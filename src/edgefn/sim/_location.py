"""The exact event path: one location as a pure machine, driven by the kernel. The reference.

A location has ``servers`` workers shared by all functions in one FIFO queue, and one logical
instance per function (the model of Shahrad et al.'s simulator): an invocation is warm when the
function's instance is loaded or already running an invocation, and cold otherwise. A cold
invocation occupies its worker for the cold-start duration plus its service time. When the last
in-flight invocation of a function ends, the keep-alive policy decides: keep the instance loaded
for ``keep_alive_ms``, or unload it and pre-warm it ``prewarm_after_ms`` later. Loaded instances
use memory; when loading would exceed the location's budget, idle instances are evicted in
least-recently-used order (an eviction makes the next invocation cold).

Events in: :class:`Arrive`, :class:`Finish`, :class:`Prewarm`, :class:`Expire`. Instructions out:
:class:`Schedule` (an event at a time) and :class:`Started` (a request got a worker). Stale
instance timers are recognised by a per-function generation counter instead of being removed.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgefn.runtime.keepalive import KeepAlivePolicy
from edgefn.sim._kernel import Kernel
from edgefn.sim._requests import LocationOutcome, RequestArrays

__all__ = ["Arrive", "Expire", "Finish", "LocationMachine", "Prewarm", "run_exact"]


@dataclass(frozen=True, slots=True)
class Arrive:
    index: int


@dataclass(frozen=True, slots=True)
class Finish:
    index: int


@dataclass(frozen=True, slots=True)
class Prewarm:
    function: int
    generation: int


@dataclass(frozen=True, slots=True)
class Expire:
    function: int
    generation: int


Event = Arrive | Finish | Prewarm | Expire


@dataclass(frozen=True, slots=True)
class Schedule:
    time_ms: float
    event: Event


@dataclass(frozen=True, slots=True)
class Started:
    index: int
    start_ms: float
    cold: bool


Instruction = Schedule | Started


@dataclass(frozen=True, slots=True)
class LocationStatistics:
    """Workers busy, queue length and instance memory of one location."""

    busy: int
    servers: int
    queued: int
    queue_max: int
    memory_used_mb: float
    memory_budget_mb: float
    evictions: int
    prewarms: int


class _Instance:
    __slots__ = ("generation", "in_flight", "loaded")

    def __init__(self) -> None:
        self.in_flight = 0
        self.loaded = False
        self.generation = 0


class LocationMachine:
    """One location's workers, FIFO queue and function instances. Change it only via handle()."""

    def __init__(
        self,
        requests: RequestArrays,
        *,
        servers: int,
        keep_alive: KeepAlivePolicy | None,
        function_names: Sequence[str],
        memory_mb: Sequence[float] = (),
        memory_budget_mb: float = math.inf,
        max_queue: int = 50_000_000,
    ) -> None:
        assert servers >= 1
        self._r = requests
        self._servers = servers
        self._busy = 0
        self._queue: deque[tuple[int, float, bool]] = deque()
        self._queue_max = 0
        self._max_queue = max_queue
        self._policy = keep_alive
        self._names = function_names
        self._mem = list(memory_mb) or [0.0] * len(function_names)
        self._budget = memory_budget_mb
        self._used = 0.0
        self._instances = [_Instance() for _ in function_names]
        self._idle: OrderedDict[int, None] = OrderedDict()  # loaded, not running: LRU first
        self._evictions = 0
        self._prewarms = 0

    def handle(self, now_ms: float, event: Event) -> list[Instruction]:
        """Apply one event at ``now_ms``; return what the driver must do."""
        if isinstance(event, Arrive):
            return self._arrive(now_ms, event.index)
        if isinstance(event, Finish):
            return self._finish(now_ms, event.index)
        inst = self._instances[event.function]
        if event.generation != inst.generation:
            return []
        if isinstance(event, Prewarm):
            if not inst.loaded and self._make_room(event.function):
                self._load(event.function)
                self._idle[event.function] = None
                self._prewarms += 1
        elif inst.loaded and inst.in_flight == 0:
            self._unload(event.function)
        return []

    def statistics(self) -> LocationStatistics:
        """Current occupancy."""
        return LocationStatistics(
            busy=self._busy,
            servers=self._servers,
            queued=len(self._queue),
            queue_max=self._queue_max,
            memory_used_mb=self._used,
            memory_budget_mb=self._budget,
            evictions=self._evictions,
            prewarms=self._prewarms,
        )

    def check_invariants(self) -> None:
        """Workers, queue and memory stay within their bounds and agree with each other."""
        assert 0 <= self._busy <= self._servers
        assert not self._queue or self._busy == self._servers
        assert len(self._queue) <= self._max_queue
        used = sum(self._mem[f] for f, i in enumerate(self._instances) if i.loaded)
        assert abs(used - self._used) < 1e-6 * max(1.0, used)
        for f in self._idle:
            assert self._instances[f].loaded
            assert self._instances[f].in_flight == 0

    def _arrive(self, now_ms: float, i: int) -> list[Instruction]:
        f = int(self._r.function[i])
        inst = self._instances[f]
        cold = False
        if self._policy is not None:
            cold = inst.in_flight == 0 and not inst.loaded
            if cold:
                self._make_room(f)
                self._load(f)
            self._idle.pop(f, None)
            inst.generation += 1  # cancels pending pre-warm/expiry timers
            self._policy.on_invocation_start(self._names[f], int(now_ms))
        inst.in_flight += 1
        busy_ms = float(self._r.service_ms[i]) + (float(self._r.cold_ms[i]) if cold else 0.0)
        if self._busy < self._servers:
            self._busy += 1
            return [Started(i, now_ms, cold), Schedule(now_ms + busy_ms, Finish(i))]
        if len(self._queue) >= self._max_queue:
            raise OverflowError(f"location queue exceeded {self._max_queue} requests")
        self._queue.append((i, busy_ms, cold))
        self._queue_max = max(self._queue_max, len(self._queue))
        return []

    def _finish(self, now_ms: float, i: int) -> list[Instruction]:
        out: list[Instruction] = []
        f = int(self._r.function[i])
        inst = self._instances[f]
        inst.in_flight -= 1
        if self._policy is not None:
            self._policy.on_invocation_end(self._names[f], int(now_ms))
            if inst.in_flight == 0:
                out.extend(self._idle_timers(now_ms, f))
        if self._queue:
            j, busy_ms, cold = self._queue.popleft()
            out.append(Started(j, now_ms, cold))
            out.append(Schedule(now_ms + busy_ms, Finish(j)))
        else:
            self._busy -= 1
        return out

    def _idle_timers(self, now_ms: float, f: int) -> list[Instruction]:
        assert self._policy is not None
        d = self._policy.decision(self._names[f], int(now_ms))
        inst = self._instances[f]
        inst.generation += 1
        g = inst.generation
        if d.prewarm_after_ms > 0:
            self._unload(f)
            pre = now_ms + d.prewarm_after_ms
            return [Schedule(pre, Prewarm(f, g)), Schedule(pre + d.keep_alive_ms, Expire(f, g))]
        self._idle[f] = None
        return [Schedule(now_ms + d.keep_alive_ms, Expire(f, g))]

    def _make_room(self, f: int) -> bool:
        """Evict idle instances (LRU) until ``f`` fits; False if it still does not fit."""
        while self._used + self._mem[f] > self._budget and self._idle:
            victim, _ = self._idle.popitem(last=False)
            self._unload(victim)
            self._evictions += 1
        return self._used + self._mem[f] <= self._budget

    def _load(self, f: int) -> None:
        inst = self._instances[f]
        if not inst.loaded:
            inst.loaded = True
            self._used += self._mem[f]

    def _unload(self, f: int) -> None:
        inst = self._instances[f]
        self._idle.pop(f, None)
        if inst.loaded:
            inst.loaded = False
            self._used -= self._mem[f]


def run_exact(
    requests: RequestArrays,
    *,
    servers: int,
    keep_alive: KeepAlivePolicy | None,
    function_names: Sequence[str],
    memory_mb: Sequence[float] = (),
    memory_budget_mb: float = math.inf,
    check_every: int = 0,
) -> LocationOutcome:
    """Drive a :class:`LocationMachine` through all requests with the event kernel.

    Arrivals are fed one at a time (the next is scheduled when the previous is handled), so the
    heap holds O(servers + functions) events, not O(requests). ``check_every`` > 0 runs the
    invariant checks every that many events (tests use 1).
    """
    n = len(requests)
    machine = LocationMachine(
        requests,
        servers=servers,
        keep_alive=keep_alive,
        function_names=function_names,
        memory_mb=memory_mb,
        memory_budget_mb=memory_budget_mb,
    )
    kernel: Kernel[Event] = Kernel()
    start = np.full(n, np.nan)
    cold = np.zeros(n, dtype=bool)
    arrivals = requests.arrival_ms
    if n:
        kernel.schedule(float(arrivals[0]), Arrive(0))
    steps = 0
    while (item := kernel.pop()) is not None:
        now_ms, event = item
        if isinstance(event, Arrive) and event.index + 1 < n:
            kernel.schedule(float(arrivals[event.index + 1]), Arrive(event.index + 1))
        for ins in machine.handle(now_ms, event):
            if isinstance(ins, Started):
                start[ins.index] = ins.start_ms
                cold[ins.index] = ins.cold
            else:
                kernel.schedule(ins.time_ms, ins.event)
        steps += 1
        if check_every and steps % check_every == 0:
            machine.check_invariants()
            kernel.check_invariants()
    stats = machine.statistics()
    return LocationOutcome(start, cold, evictions=stats.evictions, prewarms=stats.prewarms)
