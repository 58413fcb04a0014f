"""Sandbox pool policy: which worker serves a request, when to fork, specialise and retire.

A pure machine (STYLE.md §1). The node's pool driver feeds it events and carries out the
instructions it returns; the simulator can drive the same machine with simulated time.

Workers come in two kinds. *Generic* workers are forked from the zygote ahead of need and hold no
function; *specialised* workers have loaded one function version (``key`` = ``name@version``). A cold
start takes a generic worker and specialises it, so the fork is off the request's critical path
(Fission's pool manager, Azure's pre-warmed instances); the generic pool is refilled in the background.

Rules, in order, for ``RequestArrived(key)``:
1. a ready worker of ``key`` with the fewest in-flight requests below ``max_concurrency_per_worker``;
2. else, if ``key`` has fewer than ``max_workers_per_version`` workers, specialise a generic worker
   (cold start) and fork a replacement; with no generic worker, fork one (if the budget allows);
3. else the request waits (the driver bounds the wait).
``Tick`` retires specialised workers idle for longer than the keep-alive, evicts the least recently
used idle workers while the memory estimate is over budget, and refills the generic pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

WorkerState = Literal["starting", "generic", "loading", "ready"]


@dataclass(frozen=True, slots=True)
class PoolConfig:
    generic_target: int = 2
    max_workers_per_version: int = 8
    max_concurrency_per_worker: int = 64
    max_total_workers: int = 256
    memory_budget_mb: int = 4096
    worker_memory_mb: int = 16
    keep_alive_ms: int = 600_000


# Events ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerSpawned:
    worker_id: int
    now_ms: int


@dataclass(frozen=True, slots=True)
class RequestArrived:
    key: str
    now_ms: int


@dataclass(frozen=True, slots=True)
class Prewarm:
    key: str
    now_ms: int


@dataclass(frozen=True, slots=True)
class WorkerLoaded:
    worker_id: int
    ok: bool
    now_ms: int


@dataclass(frozen=True, slots=True)
class RequestDone:
    worker_id: int
    now_ms: int


@dataclass(frozen=True, slots=True)
class WorkerExited:
    worker_id: int
    now_ms: int


@dataclass(frozen=True, slots=True)
class VersionRetired:
    key: str
    now_ms: int


@dataclass(frozen=True, slots=True)
class Tick:
    now_ms: int


Event = (
    WorkerSpawned
    | RequestArrived
    | Prewarm
    | WorkerLoaded
    | RequestDone
    | WorkerExited
    | VersionRetired
    | Tick
)

# Instructions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spawn:
    """Fork ``count`` generic workers from the zygote."""

    count: int


@dataclass(frozen=True, slots=True)
class Specialize:
    """Load ``key`` into generic worker ``worker_id``; ``for_request`` if a request waits on it."""

    worker_id: int
    key: str
    for_request: bool


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Send the arrived request to ready worker ``worker_id``."""

    worker_id: int


@dataclass(frozen=True, slots=True)
class Wait:
    """No worker can take the request now; retry after the next event."""

    key: str


@dataclass(frozen=True, slots=True)
class Retire:
    """Stop worker ``worker_id`` (idle past keep-alive, memory pressure or retired version)."""

    worker_id: int
    reason: str


Instruction = Spawn | Specialize | Dispatch | Wait | Retire


@dataclass(slots=True)
class _Worker:
    worker_id: int
    state: WorkerState
    key: str | None = None
    inflight: int = 0
    last_used_ms: int = 0
    retiring: bool = False


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    workers_total: int
    workers_generic: int
    workers_starting: int
    workers_ready: int
    inflight: int
    cold_starts: int
    retired: int
    per_key: dict[str, int] = field(default_factory=dict)


class PoolPolicy:
    """The pool's decisions. Change it only through :meth:`handle`."""

    def __init__(self, config: PoolConfig | None = None) -> None:
        self.config = config or PoolConfig()
        self._workers: dict[int, _Worker] = {}
        self._spawning = 0  # forks asked for but not yet reported
        self._cold_starts = 0
        self._retired = 0

    # -- public ---------------------------------------------------------------------------
    def handle(self, event: Event) -> list[Instruction]:
        """Apply one event; return what the driver must do."""
        out: list[Instruction]
        match event:
            case WorkerSpawned():
                self._spawning = max(0, self._spawning - 1)
                self._workers.setdefault(event.worker_id, _Worker(event.worker_id, "generic"))
                out = []
            case RequestArrived():
                out = self._arrive(event.key, event.now_ms)
            case Prewarm():
                out = self._prewarm(event.key, event.now_ms)
            case WorkerLoaded():
                out = self._loaded(event)
            case RequestDone():
                out = self._done(event)
            case WorkerExited():
                w = self._workers.pop(event.worker_id, None)
                out = [] if w is None else self._refill()
            case VersionRetired():
                out = self._retire_version(event.key)
            case Tick():
                out = self._tick(event.now_ms)
        return out

    def check_invariants(self) -> None:
        """Assert internal consistency (tests and the simulator call this after every step)."""
        assert len(self._workers) + self._spawning <= self.config.max_total_workers + 1
        for w in self._workers.values():
            assert w.inflight >= 0
            assert w.inflight <= self.config.max_concurrency_per_worker
            if w.state == "generic":
                assert w.key is None
                assert w.inflight == 0
            else:
                assert w.state == "starting" or w.key is not None

    def statistics(self) -> PoolStatistics:
        per_key: dict[str, int] = {}
        for w in self._workers.values():
            if w.key is not None:
                per_key[w.key] = per_key.get(w.key, 0) + 1
        states = [w.state for w in self._workers.values()]
        return PoolStatistics(
            workers_total=len(self._workers),
            workers_generic=states.count("generic"),
            workers_starting=self._spawning,
            workers_ready=states.count("ready"),
            inflight=sum(w.inflight for w in self._workers.values()),
            cold_starts=self._cold_starts,
            retired=self._retired,
            per_key=per_key,
        )

    def worker_key(self, worker_id: int) -> str | None:
        w = self._workers.get(worker_id)
        return None if w is None else w.key

    # -- helpers ------------------------------------------------------------------------------
    def _of_key(self, key: str) -> list[_Worker]:
        return [w for w in self._workers.values() if w.key == key and not w.retiring]

    def _memory_mb(self) -> int:
        return (len(self._workers) + self._spawning) * self.config.worker_memory_mb

    def _can_fork(self) -> bool:
        cfg = self.config
        within_count = len(self._workers) + self._spawning < cfg.max_total_workers
        return within_count and self._memory_mb() + cfg.worker_memory_mb <= cfg.memory_budget_mb

    def _spawn(self, n: int) -> list[Instruction]:
        n_ok = 0
        while n_ok < n and self._can_fork():
            self._spawning += 1
            n_ok += 1
        return [Spawn(n_ok)] if n_ok else []

    def _refill(self) -> list[Instruction]:
        generic = sum(1 for w in self._workers.values() if w.state == "generic")
        missing = self.config.generic_target - generic - self._spawning
        return self._spawn(missing) if missing > 0 else []

    def _arrive(self, key: str, now_ms: int) -> list[Instruction]:
        cap = self.config.max_concurrency_per_worker
        ready = [w for w in self._of_key(key) if w.state == "ready" and w.inflight < cap]
        if ready:
            best = min(ready, key=lambda w: (w.inflight, w.worker_id))
            best.inflight += 1
            best.last_used_ms = now_ms
            return [Dispatch(best.worker_id)]
        loading = [w for w in self._of_key(key) if w.state == "loading" and w.inflight < cap]
        if loading:
            # A cold start for this key is already under way: ride on it instead of paying another.
            best = min(loading, key=lambda w: (w.inflight, w.worker_id))
            best.inflight += 1
            best.last_used_ms = now_ms
            return [Specialize(best.worker_id, key, for_request=True)]
        if len(self._of_key(key)) >= self.config.max_workers_per_version:
            return [Wait(key)]
        out = self._specialize(key, now_ms, for_request=True)
        if out:
            return out
        # No generic worker: fork one, first making room by evicting an idle worker if needed.
        # A request re-polls after every pool event: fork only when no fork is already under way,
        # or every re-poll would ask for another worker.
        if self._spawning:
            return [Wait(key)]
        evicted = [] if self._can_fork() else self._evict_lru_idle(now_ms, need=1)
        return [*evicted, *self._spawn(1), Wait(key)]

    def _specialize(self, key: str, now_ms: int, *, for_request: bool) -> list[Instruction]:
        generic = sorted(w.worker_id for w in self._workers.values() if w.state == "generic")
        if not generic:
            return []
        w = self._workers[generic[0]]
        w.state, w.key, w.last_used_ms = "loading", key, now_ms
        w.inflight = 1 if for_request else 0
        self._cold_starts += 1
        return [Specialize(w.worker_id, key, for_request=for_request), *self._refill()]

    def _prewarm(self, key: str, now_ms: int) -> list[Instruction]:
        if self._of_key(key):
            return []
        return self._specialize(key, now_ms, for_request=False) or self._spawn(1)

    def _loaded(self, event: WorkerLoaded) -> list[Instruction]:
        w = self._workers.get(event.worker_id)
        if w is None or w.state != "loading":
            return []
        if not event.ok:
            self._retired += 1
            del self._workers[w.worker_id]
            return [Retire(w.worker_id, "load failed"), *self._refill()]
        w.state = "ready"
        w.last_used_ms = event.now_ms
        return []

    def _done(self, event: RequestDone) -> list[Instruction]:
        w = self._workers.get(event.worker_id)
        if w is None:
            return []
        w.inflight = max(0, w.inflight - 1)
        w.last_used_ms = event.now_ms
        if w.retiring and w.inflight == 0:
            return self._retire(w, "version retired")
        return []

    def _retire(self, w: _Worker, reason: str) -> list[Instruction]:
        self._workers.pop(w.worker_id, None)
        self._retired += 1
        return [Retire(w.worker_id, reason), *self._refill()]

    def _retire_version(self, key: str) -> list[Instruction]:
        out: list[Instruction] = []
        for w in [w for w in self._workers.values() if w.key == key]:
            if w.inflight == 0:
                out += self._retire(w, "version retired")
            else:
                w.retiring = True
        return out

    def _evict_lru_idle(self, now_ms: int, *, need: int) -> list[Instruction]:
        idle = [w for w in self._workers.values() if w.state == "ready" and w.inflight == 0]
        idle.sort(key=lambda w: (w.last_used_ms, w.worker_id))
        out: list[Instruction] = []
        for w in idle[:need]:
            out += self._retire(w, "memory budget")
        return out

    def _tick(self, now_ms: int) -> list[Instruction]:
        out: list[Instruction] = []
        ttl = self.config.keep_alive_ms
        for w in list(self._workers.values()):
            if w.state == "ready" and w.inflight == 0 and now_ms - w.last_used_ms > ttl:
                out += self._retire(w, "idle past keep-alive")
        over = self._memory_mb() - self.config.memory_budget_mb
        if over > 0:
            need = -(-over // self.config.worker_memory_mb)
            out += self._evict_lru_idle(now_ms, need=need)
        return out + self._refill()
