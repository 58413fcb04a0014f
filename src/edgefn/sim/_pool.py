"""Instance pools: the serverless scale-per-request model (SimFaaS, AWS Lambda), as a pure machine.

Used for a queue scenario whose ``[cold_start]`` table sets ``instance_concurrency``. Each
function at a location has its own pool of instances; there is no shared worker queue.

* An arrival that finds an *available* instance of its function (fewer than
  ``instance_concurrency`` requests in flight) uses it. Which one: the **newest** available
  instance, i.e. the one created last (SimFaaS's ``schedule_warm_instance`` picks
  ``argmax(creation_time)``; reusing the newest lets the older ones age out, so the pool shrinks
  after a burst).
* An arrival that finds none starts a new instance — a cold start: it is busy for the cold-start
  time plus the service time — unless the function already has ``max_instances`` instances, in
  which case the request is rejected (counted, not served).
* With ``instance_concurrency`` > 1 an arrival may pick an instance that is still starting; it
  waits for the start to finish (its wait is the rest of the cold start) and counts as cold.
* When an instance's last in-flight request ends, the scenario's keep-alive policy (the
  platform's own :mod:`edgefn.runtime.keepalive` objects) decides for that instance:
  ``prewarm_after_ms == 0`` keeps it loaded for ``keep_alive_ms`` (then it expires, unless a
  request came first); otherwise the instance is unloaded at once and a fresh one is loaded,
  idle, ``prewarm_after_ms`` later for ``keep_alive_ms`` (the window :func:`is_warm` describes).

The machine also meters what the report needs: time-integrated counts of live and busy
instances over the measured window (and per batch, for batch-means intervals), the peak count,
instance lifetimes (from creation to expiry) and rejections.

Memory is bounded by the live instances: at most one pending expiry timer per instance (a timer
that fires early is re-armed), the available-instance heaps are compacted when stale entries
outnumber live ones, and lifetimes go into a fixed-size histogram.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edgefn.runtime.keepalive import KeepAlivePolicy
from edgefn.sim._kernel import Kernel
from edgefn.sim._requests import RequestArrays
from edgefn.sim._stats import LatencyHistogram, mean_ci

__all__ = [
    "PoolMachine",
    "PoolOutcome",
    "PoolSpec",
    "PoolStatistics",
    "PoolTally",
    "run_pool",
]


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """Requests in flight per instance; instances per function (0: unlimited)."""

    instance_concurrency: int = 1
    max_instances: int = 0

    def __post_init__(self) -> None:
        assert self.instance_concurrency >= 1
        assert self.max_instances >= 0


# Events ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arrive:
    index: int


@dataclass(frozen=True, slots=True)
class Finish:
    instance: int
    index: int


@dataclass(frozen=True, slots=True)
class Expire:
    instance: int
    at_ms: float  # a timer is current only while it equals the instance's ``timer_ms``


@dataclass(frozen=True, slots=True)
class Prewarm:
    function: int


Event = Arrive | Finish | Expire | Prewarm

# Instructions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Schedule:
    time_ms: float
    event: Event


@dataclass(frozen=True, slots=True)
class Started:
    """Request ``index`` starts service at ``start_ms``, busy for ``busy_ms``."""

    index: int
    start_ms: float
    busy_ms: float
    cold: bool


@dataclass(frozen=True, slots=True)
class Rejected:
    index: int


Instruction = Schedule | Started | Rejected


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """Instances now and counters so far."""

    live: int
    busy: int
    started: int
    prewarmed: int
    expired: int
    rejected: int
    heap_entries: int


class _Instance:
    __slots__ = (
        "created_ms",
        "expires_ms",
        "function",
        "id",
        "in_avail",
        "in_flight",
        "ready_ms",
        "timer_ms",
    )

    def __init__(self, iid: int, function: int, now_ms: float, ready_ms: float) -> None:
        self.id = iid
        self.function = function
        self.created_ms = now_ms
        self.ready_ms = ready_ms
        self.in_flight = 0
        self.expires_ms = math.inf
        self.timer_ms = -1.0  # time of the pending expiry timer, -1 when none
        self.in_avail = False  # has an entry in its function's available heap


@dataclass(slots=True)
class _Meter:
    """Time integrals of live and busy instances over [warmup, duration], per batch."""

    start_ms: float
    end_ms: float
    batches: int
    area: np.ndarray = field(init=False)  # batches x (live, busy) instance-ms
    rejected: np.ndarray = field(init=False)  # batches: rejected arrivals
    peak: int = 0
    last_ms: float = 0.0
    _span: float = field(init=False, default=0.0)
    _live: list[float] = field(init=False, default_factory=list)
    _busy: list[float] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.area = np.zeros((self.batches, 2))
        self.rejected = np.zeros(self.batches)
        self._span = (self.end_ms - self.start_ms) / self.batches
        self._live = [0.0] * self.batches  # plain floats: numpy item access is slow per event
        self._busy = [0.0] * self.batches

    def advance(self, now_ms: float, live: int, busy: int) -> None:
        last = self.last_ms
        if now_ms <= last:
            return
        self.last_ms = now_ms
        a = last if last > self.start_ms else self.start_ms
        b = now_ms if now_ms < self.end_ms else self.end_ms
        if b <= a:
            return
        if live > self.peak:
            self.peak = live
        if not live:
            return
        span, nb = self._span, self.batches
        k = int((a - self.start_ms) // span)
        if k >= nb:
            k = nb - 1
        while a < b:
            edge = b if k == nb - 1 else min(b, self.start_ms + (k + 1) * span)
            self._live[k] += (edge - a) * live
            self._busy[k] += (edge - a) * busy
            a = edge
            k += 1

    def flush(self) -> None:
        self.area[:, 0] = self._live
        self.area[:, 1] = self._busy

    def batch_of(self, t_ms: float) -> int:
        span = (self.end_ms - self.start_ms) / self.batches
        return min(int((t_ms - self.start_ms) // span), self.batches - 1)


class PoolMachine:
    """One location's instance pools, one per function. Change it only through handle()."""

    def __init__(
        self,
        requests: RequestArrays,
        *,
        spec: PoolSpec,
        keep_alive: KeepAlivePolicy,
        function_names: Sequence[str],
        window_ms: tuple[float, float],
        batches: int = 30,
    ) -> None:
        self._function = requests.function.tolist()
        self._service_ms = requests.service_ms.tolist()
        self._cold_ms = requests.cold_ms.tolist()
        self._n = spec.instance_concurrency
        self._cap = spec.max_instances or math.inf
        self._policy = keep_alive
        self._names = function_names
        self._instances: dict[int, _Instance] = {}
        self._avail: list[list[int]] = [[] for _ in function_names]  # heaps of -instance id
        self._live = [0] * len(function_names)
        self._live_total = 0
        self._busy = 0
        self._next_id = 0
        self._started = 0
        self._prewarmed = 0
        self._expired = 0
        self._rejected = 0
        self.meter = _Meter(window_ms[0], window_ms[1], batches)
        self.lifetimes = LatencyHistogram.empty()
        self._lifetime_buf: list[float] = []

    # -- public ---------------------------------------------------------------------------
    def handle(self, now_ms: float, event: Event) -> list[Instruction]:
        """Apply one event at ``now_ms``; return what the driver must do."""
        self.meter.advance(now_ms, self._live_total, self._busy)
        if isinstance(event, Arrive):
            return self._arrive(now_ms, event.index)
        if isinstance(event, Finish):
            return self._finish(now_ms, self._instances[event.instance])
        if isinstance(event, Expire):
            return self._expire(now_ms, event)
        return self._prewarm(now_ms, event.function)

    def close(self, end_ms: float) -> None:
        """Integrate up to ``end_ms`` and flush the lifetime buffer (call once, at the end)."""
        self.meter.advance(end_ms, self._live_total, self._busy)
        self.meter.flush()
        self._flush_lifetimes()

    def statistics(self) -> PoolStatistics:
        """Current instances and counters."""
        return PoolStatistics(
            live=self._live_total,
            busy=self._busy,
            started=self._started,
            prewarmed=self._prewarmed,
            expired=self._expired,
            rejected=self._rejected,
            heap_entries=sum(len(h) for h in self._avail),
        )

    def check_invariants(self) -> None:
        """Counts agree with the instances; heaps hold at most one entry per instance."""
        assert self._live_total == len(self._instances) == sum(self._live)
        assert self._busy == sum(1 for i in self._instances.values() if i.in_flight > 0)
        for f, heap in enumerate(self._avail):
            assert self._live[f] <= self._cap
            ids = [-x for x in heap]
            assert len(ids) == len(set(ids))
            for iid in ids:
                inst = self._instances.get(iid)
                assert inst is None or inst.in_avail
            # Every available instance is findable: it has an entry in the heap.
            for inst in self._instances.values():
                if inst.function == f and inst.in_flight < self._n:
                    assert inst.in_avail
                    assert -inst.id in heap
        for inst in self._instances.values():
            assert 0 <= inst.in_flight <= self._n
            if inst.in_flight == 0:
                assert inst.timer_ms >= 0.0  # an idle instance always has an expiry pending
                assert inst.timer_ms <= inst.expires_ms

    # -- transitions ----------------------------------------------------------------------
    def _arrive(self, now_ms: float, i: int) -> list[Instruction]:
        f = self._function[i]
        service = self._service_ms[i]
        inst = self._pick(f)
        if inst is None:
            if self._live[f] >= self._cap:
                self._rejected += 1
                if self.meter.start_ms <= now_ms < self.meter.end_ms:
                    self.meter.rejected[self.meter.batch_of(now_ms)] += 1
                return [Rejected(i)]
            cold_ms = self._cold_ms[i]
            inst = self._create(f, now_ms, now_ms + cold_ms)
            self._started += 1
            start, busy, cold = now_ms, cold_ms + service, True
        else:
            start = max(now_ms, inst.ready_ms)
            busy, cold = service, inst.ready_ms > now_ms
        self._policy.on_invocation_start(self._names[f], int(now_ms))
        if inst.in_flight == 0:
            self._busy += 1
        inst.in_flight += 1
        return [Started(i, start, busy, cold), Schedule(start + busy, Finish(inst.id, i))]

    def _finish(self, now_ms: float, inst: _Instance) -> list[Instruction]:
        f = inst.function
        inst.in_flight -= 1
        self._policy.on_invocation_end(self._names[f], int(now_ms))
        if not inst.in_avail:
            self._push_avail(inst)
        if inst.in_flight > 0:
            return []
        self._busy -= 1
        d = self._policy.decision(self._names[f], int(now_ms))
        if d.prewarm_after_ms > 0:
            self._terminate(now_ms, inst)
            return [Schedule(now_ms + d.prewarm_after_ms, Prewarm(f))]
        inst.expires_ms = now_ms + d.keep_alive_ms
        return self._arm(inst)

    def _expire(self, now_ms: float, event: Expire) -> list[Instruction]:
        inst = self._instances.get(event.instance)
        if inst is None or inst.timer_ms != event.at_ms:
            return []  # instance gone, or a newer timer replaced this one
        inst.timer_ms = -1.0
        if inst.in_flight > 0:
            return []  # busy again: the next idle period arms a new timer
        if now_ms < inst.expires_ms:
            return self._arm(inst)  # reused and idle again since the timer was set
        self._expired += 1
        self._terminate(now_ms, inst)
        return []

    def _prewarm(self, now_ms: float, f: int) -> list[Instruction]:
        if self._live[f] >= self._cap:
            return []
        inst = self._create(f, now_ms, now_ms)
        self._prewarmed += 1
        d = self._policy.decision(self._names[f], int(now_ms))
        inst.expires_ms = now_ms + d.keep_alive_ms
        return self._arm(inst)

    # -- helpers --------------------------------------------------------------------------
    def _arm(self, inst: _Instance) -> list[Instruction]:
        """Make sure a timer is pending no later than the instance's expiry."""
        if 0.0 <= inst.timer_ms <= inst.expires_ms:
            return []  # the pending timer fires first and re-arms
        inst.timer_ms = inst.expires_ms
        return [Schedule(inst.expires_ms, Expire(inst.id, inst.expires_ms))]

    def _create(self, f: int, now_ms: float, ready_ms: float) -> _Instance:
        inst = _Instance(self._next_id, f, now_ms, ready_ms)
        self._next_id += 1
        self._instances[inst.id] = inst
        self._live[f] += 1
        self._live_total += 1
        self._push_avail(inst)
        return inst

    def _terminate(self, now_ms: float, inst: _Instance) -> None:
        del self._instances[inst.id]
        self._live[inst.function] -= 1
        self._live_total -= 1
        if self.meter.start_ms <= now_ms <= self.meter.end_ms:
            self._lifetime_buf.append(now_ms - inst.created_ms)
            if len(self._lifetime_buf) >= 4096:
                self._flush_lifetimes()

    def _push_avail(self, inst: _Instance) -> None:
        heap = self._avail[inst.function]
        heapq.heappush(heap, -inst.id)
        inst.in_avail = True
        if len(heap) > 2 * self._live[inst.function] + 16:
            self._compact(inst.function)

    def _pick(self, f: int) -> _Instance | None:
        """The newest instance of ``f`` with a free slot, dropping stale heap entries."""
        heap = self._avail[f]
        while heap:
            inst = self._instances.get(-heap[0])
            if inst is not None and inst.in_flight < self._n:
                if inst.in_flight + 1 == self._n:
                    heapq.heappop(heap)  # full once this request is on it
                    inst.in_avail = False
                return inst
            heapq.heappop(heap)
            if inst is not None:
                inst.in_avail = False
        return None

    def _compact(self, f: int) -> None:
        keep = [i for i in self._instances.values() if i.function == f and i.in_flight < self._n]
        for inst in self._instances.values():
            if inst.function == f:
                inst.in_avail = False
        heap = [-i.id for i in keep]
        heapq.heapify(heap)
        for inst in keep:
            inst.in_avail = True
        self._avail[f] = heap

    def _flush_lifetimes(self) -> None:
        if self._lifetime_buf:
            self.lifetimes.add(np.array(self._lifetime_buf))
            self._lifetime_buf.clear()


@dataclass(frozen=True, slots=True)
class PoolOutcome:
    """Per request: served or rejected, start, busy time, cold flag; and the pool's meters."""

    served: np.ndarray
    start_ms: np.ndarray
    busy_ms: np.ndarray
    cold: np.ndarray
    tally: PoolTally
    events_pending_max: int = 0  # the kernel's high-water mark: O(instances), not O(requests)


def run_pool(
    requests: RequestArrays,
    *,
    spec: PoolSpec,
    keep_alive: KeepAlivePolicy,
    function_names: Sequence[str],
    location: str,
    window_ms: tuple[float, float],
    batches: int = 30,
    check_every: int = 0,
) -> PoolOutcome:
    """Drive a :class:`PoolMachine` through all requests with the event kernel.

    Arrivals are fed one at a time, so the heap holds O(instances) events. ``check_every`` > 0
    runs the invariant checks every that many events (tests use 1).
    """
    n = len(requests)
    machine = PoolMachine(
        requests,
        spec=spec,
        keep_alive=keep_alive,
        function_names=function_names,
        window_ms=window_ms,
        batches=batches,
    )
    kernel: Kernel[Event] = Kernel()
    served = [False] * n
    start = [0.0] * n
    busy = [0.0] * n
    cold = [False] * n
    arrivals = requests.arrival_ms.tolist()
    if n:
        kernel.schedule(arrivals[0], Arrive(0))
    steps = 0
    while (item := kernel.pop()) is not None:
        now_ms, event = item
        if isinstance(event, Arrive) and event.index + 1 < n:
            kernel.schedule(arrivals[event.index + 1], Arrive(event.index + 1))
        for ins in machine.handle(now_ms, event):
            if isinstance(ins, Schedule):
                kernel.schedule(ins.time_ms, ins.event)
            elif isinstance(ins, Started):
                served[ins.index] = True
                start[ins.index] = ins.start_ms
                busy[ins.index] = ins.busy_ms
                cold[ins.index] = ins.cold
        steps += 1
        if check_every and steps % check_every == 0:
            machine.check_invariants()
            kernel.check_invariants()
    machine.close(window_ms[1])
    st = machine.statistics()
    assert st.live == 0  # every instance expires once the requests are done
    m = machine.meter
    tally = PoolTally(
        area=m.area.copy(),
        rejected_by_batch=m.rejected.copy(),
        time_ms=window_ms[1] - window_ms[0],
        peaks={location: m.peak},
        started=st.started,
        prewarmed=st.prewarmed,
        lifetimes=machine.lifetimes,
        spec=spec,
    )
    return PoolOutcome(
        np.array(served, dtype=bool),
        np.array(start),
        np.array(busy),
        np.array(cold, dtype=bool),
        tally,
        events_pending_max=kernel.statistics().pending_max,
    )


@dataclass(slots=True)
class PoolTally:
    """Mergeable pool meters of one or more (location, replication) runs.

    ``time_ms`` adds up the measured time of every run merged, ``peaks`` holds each location's
    peak (merged across replications by max): with L locations and R replications,
    ``time_ms = L·R·measured`` and a time-averaged count is ``area · L / time_ms``.
    """

    area: np.ndarray
    rejected_by_batch: np.ndarray
    time_ms: float
    peaks: dict[str, int]
    started: int
    prewarmed: int
    lifetimes: LatencyHistogram
    spec: PoolSpec

    def __iadd__(self, other: PoolTally) -> PoolTally:
        self.area = self.area + other.area
        self.rejected_by_batch = self.rejected_by_batch + other.rejected_by_batch
        self.time_ms += other.time_ms
        for loc, peak in other.peaks.items():
            self.peaks[loc] = max(self.peaks.get(loc, 0), peak)
        self.started += other.started
        self.prewarmed += other.prewarmed
        self.lifetimes += other.lifetimes
        return self

    def copy(self) -> PoolTally:
        return PoolTally(
            self.area.copy(),
            self.rejected_by_batch.copy(),
            self.time_ms,
            dict(self.peaks),
            self.started,
            self.prewarmed,
            LatencyHistogram(
                self.lifetimes.counts.copy(), self.lifetimes.zeros, self.lifetimes.total
            ),
            self.spec,
        )

    def summary(
        self, served: int, cold: int, served_by_batch: np.ndarray, cold_by_batch: np.ndarray
    ) -> dict[str, object]:
        """The ``instances`` block and the request probabilities (SimFaaS's definitions)."""
        locs = max(len(self.peaks), 1)
        scale = locs / self.time_ms if self.time_ms > 0 else 0.0
        live = float(self.area[:, 0].sum()) * scale
        busy = float(self.area[:, 1].sum()) * scale
        rejected = int(self.rejected_by_batch.sum())
        arrivals = served + rejected
        nb = len(self.area)
        per_batch = self.area * (scale * nb)
        arr_b = np.maximum(served_by_batch + self.rejected_by_batch, 1.0)
        life = self.lifetimes.summary()
        ci = {
            "mean": mean_ci(per_batch[:, 0]),
            "idle_mean": mean_ci(per_batch[:, 0] - per_batch[:, 1]),
            "busy_mean": mean_ci(per_batch[:, 1]),
            "cold_start_probability": mean_ci(cold_by_batch / arr_b),
            "rejection_probability": mean_ci(self.rejected_by_batch / arr_b),
        }
        for v in ci.values():
            v["method"] = "batch_means"  # type: ignore[assignment]
        return {
            "instances": {
                "instance_concurrency": self.spec.instance_concurrency,
                "max_instances": self.spec.max_instances or None,
                "mean": round(live, 6),
                "idle_mean": round(live - busy, 6),
                "busy_mean": round(busy, 6),
                "max": int(sum(self.peaks.values())),
                "started": self.started,
                "prewarmed": self.prewarmed,
                "lifetime_s": {
                    "count": self.lifetimes.n,
                    **{k: round(v / 1000.0, 6) for k, v in life.items()},
                },
                "ci95": ci,
            },
            "rejected": rejected,
            "cold_start_probability": round(cold / arrivals, 6) if arrivals else 0.0,
            "rejection_probability": round(rejected / arrivals, 6) if arrivals else 0.0,
        }
