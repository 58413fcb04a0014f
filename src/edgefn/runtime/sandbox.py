"""The sandbox pool driver: a zygote, its forked workers, and the limits enforced from outside.

:class:`SandboxPool` carries out :class:`~edgefn.runtime.pool_policy.PoolPolicy` decisions with real
processes. The node calls :meth:`SandboxPool.invoke` per request and gets an :class:`Invocation`
whose frames arrive on a per-request queue fed by the worker's reader task.

Limits are enforced here, never inside the sandbox: the wall-clock deadline by the invocation (the
worker is told to cancel; a worker still burning CPU after the grace period is killed), CPU time and
resident memory by a monitor that reads ``/proc/<pid>`` of busy workers every ``MONITOR_MS``. A killed
or crashed worker fails only the requests it was running; the pool replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from edgefn._loop import CoalescingTransport
from edgefn.errors import ProtocolError, SandboxError
from edgefn.runtime import _cgroup, _isolation, _seccomp
from edgefn.runtime import pool_policy as pp
from edgefn.runtime import protocol as p

MONITOR_MS = 20
# Subrequests and KV calls one worker may have in flight at the node at once. Each is a task in the
# node; without a bound a function gathering a million `env.KV.get`s (or a worker writing frames by
# hand) makes the node hold a million tasks. Past it a call fails at once with a limit error.
MAX_SIDE_CALLS = 256
# Requests of one worker whose wait_until tasks may still use KV and subrequests after the response
# (past it they lose that access, as before), and how long the node keeps such a request's context
# at most (the worker drains wait_until for 30 s).
MAX_BACKGROUND = 1024
BACKGROUND_MAX_S = 35.0
_TOO_MANY_CALLS = f"more than {MAX_SIDE_CALLS} subrequests and KV calls in flight in one worker"
# Streamed response bytes the node holds for one request before it stops reading that worker's
# socket (the worker's own writes then block: backpressure), and the level at which it resumes.
STREAM_HIGH_BYTES = 1024 * 1024
STREAM_LOW_BYTES = 256 * 1024
# A client that takes longer than this to accept one chunk is cut off (see Invocation.abort):
# the request ends `client_too_slow` and the worker's other requests go on.
STREAM_STALL_S = 10.0
TICK_MS = 1000
ACQUIRE_TIMEOUT_S = 10.0
CANCEL_GRACE_S = 0.2
IDLE_CHECK_MS = 200
# Added to a worker's cgroup memory limit on top of its usage at Load and memory_mb: the import of
# the user's module and its first allocations happen under the limit too.
LOAD_ALLOWANCE_MB = 16
HELLO_TIMEOUT_S = 30.0
DEFAULT_UID_RANGE = (200000, 265535)
Isolation = Literal["strict", "relaxed"]
_pool_ids = itertools.count(1)
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """Everything a worker needs to specialise to one function version."""

    function: str
    version: str
    code_dir: str
    main: str
    vars: dict[str, Any]
    memory_mb: int
    cpu_ms: int
    bindings: tuple[str, ...] = ()
    # Secrets travel only in the Load frame; repr=False keeps them out of logs and tracebacks.
    # A new generation is a new pool key, so workers holding old values are retired.
    secrets: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    secrets_generation: int = 0
    tenant: str = ""  # whose uid the workers run under; defaults to the function name
    scratch_mb: int = 16
    startup_ms: int = 10_000  # how long importing the module may take ([limits] startup_ms)
    preload: tuple[str, ...] = ()  # [runtime] preload, imported at Load before main
    scheduled: bool = False  # [triggers] crons set: main must define `async def scheduled`
    origins: tuple[tuple[str, str], ...] = ()  # [[origins]]: (binding, url), env.<binding>
    cdn: tuple[tuple[str, str], ...] = ()  # [cdn]: ("origin", binding), (hook point, handler)
    durable_objects: tuple[tuple[str, str], ...] = ()  # (binding, class name)
    queues: tuple[tuple[str, str], ...] = ()  # producers: (binding, queue)
    queue_consumer: bool = False

    @property
    def key(self) -> str:
        base = f"{self.function}@{self.version}"
        return f"{base}+s{self.secrets_generation}" if self.secrets_generation else base


class InvokeFailed(Exception):
    """The invocation failed; ``kind`` is the JSON error name, ``status`` the HTTP status.

    ``hint`` (what the client can do) goes into the JSON answer; it is set only by the node,
    never from a worker's text, which goes only to the log.
    """

    def __init__(
        self, kind: str, status: int, message: str, traceback: str = "", *, hint: str = ""
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.message = message
        self.traceback = traceback
        self.hint = hint


_KIND_STATUS = {
    "exception": 500,
    "bad_response": 500,
    "exceeded_memory": 503,
    "exceeded_cpu": 503,
    "timeout": 504,
    "worker_crashed": 503,
    "load_failed": 500,
    "overloaded": 503,
    "consistency_unavailable": 503,
    "outcome_unknown": 503,
    "client_too_slow": 408,
    "body_too_large": 413,
    "body_timeout": 408,
    "client_disconnected": 499,
}


# Failures of the replicated store, not of the function's code: the same for every version a
# location serves, so a deploy's health gate does not hold them against the new one.
STORE_FAULT_KINDS = frozenset({"consistency_unavailable", "outcome_unknown"})


def failure(kind: str, message: str, traceback: str = "", *, hint: str = "") -> InvokeFailed:
    return InvokeFailed(kind, _KIND_STATUS.get(kind, 500), message, traceback, hint=hint)


@dataclass(slots=True)
class _Inflight:
    queue: asyncio.Queue[p.Message | InvokeFailed]
    cpu_start_ms: float | None
    cpu_ms: int
    request_id: str
    buffered: int = 0  # bytes of ResponseChunk frames queued for the client
    aborted: bool = False  # cut off as too slow: further frames are dropped
    background: bool = False  # wait_until tasks run on after the response (Background frame)
    # Request-body bytes the node may still send before the worker grants more (RequestCredit).
    credit: int = p.BODY_WINDOW_BYTES
    credit_changed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(slots=True)
class Host:
    """What workers may ask of the node: subrequests, KV calls, logs."""

    on_fetch: Callable[[str, p.FetchCall], Awaitable[p.FetchResult]]
    on_kv: Callable[[str, p.KVCall], Awaitable[p.KVResult]]
    on_log: Callable[[str, p.Log], None]
    # A request's wait_until tasks finished (or its worker died): its context can go.
    on_background_done: Callable[[str], None] = lambda _request_id: None


class WorkerProcess:
    """The node's handle on one worker: its socket, reader task and in-flight requests."""

    def __init__(self, pid: int, sock: socket.socket, host: Host, cgroup: str = "") -> None:
        self.pid = pid
        self.cgroup = cgroup
        self.isolation: dict[str, str] = {}
        self.idle_cpu_start_ms: float | None = None
        self.uid_range = DEFAULT_UID_RANGE
        self.strict = True
        self.sock = sock
        self.host = host
        self.spec: LoadSpec | None = None
        self.inflight: dict[int, _Inflight] = {}
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.loaded: asyncio.Future[p.Loaded] | None = None
        self.load_sent_s = 0.0  # perf_counter when Load was sent
        self.load_round_trip_ms = 0.0  # Load sent to Loaded read, as the node saw it
        self.first_answer_ms = 0.0  # Loaded read to the first answer frame read (cold start)
        self._loaded_at_s = 0.0
        self.dead = False
        self.kill_reason = ""
        self.rss_base_pages = 0
        self.doom: Callable[[WorkerProcess, str], None] = lambda w, reason: w.kill(reason)
        # Frames of one loop turn go out in one write (design 0017).
        self._transport: CoalescingTransport | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.paused_at: float | None = None  # monotonic time reading was paused (backpressure)
        # invoke id -> request id of responses whose wait_until tasks still run (bounded).
        self.background: dict[int, str] = {}
        self.side_calls_refused = 0  # subrequests/KV calls answered at once over MAX_SIDE_CALLS

    async def start(self, on_exit: Callable[[WorkerProcess], None]) -> None:
        # A protocol rather than a StreamReader task: frames are decoded and routed in the
        # data_received callback, which saves a task switch per frame on the hot path.
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_unix_connection(
            lambda: _WorkerChannel(self, on_exit), sock=self.sock
        )
        self._transport = CoalescingTransport(transport, loop)

    def send(self, msg: p.Message) -> None:
        """Queue a frame; the frames sent in one turn of the event loop go out in one write
        (one syscall and one wake-up of the worker for a burst of requests, design 0017)."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(p.encode(msg))

    async def load(self, spec: LoadSpec) -> p.Loaded:
        self.begin_load(spec)
        assert self.loaded is not None
        return await asyncio.shield(self.loaded)

    def begin_load(self, spec: LoadSpec) -> None:
        """Send the Load frame once; ``self.loaded`` resolves with the worker's answer."""
        if self.loaded is None:
            self.spec = spec
            self.loaded = asyncio.get_running_loop().create_future()
            self.load_sent_s = time.perf_counter()
            tenant = spec.tenant or spec.function
            if self.cgroup:
                # Everything the function adds counts: heap, threads' stacks, memfd, tmpfs pages.
                base = _cgroup.memory_usage(self.cgroup) + LOAD_ALLOWANCE_MB * 2**20
                with contextlib.suppress(OSError):
                    _cgroup.set_memory_limit(self.cgroup, base + spec.memory_mb * 2**20)
            self.send(
                p.Load(
                    spec.function,
                    spec.version,
                    spec.code_dir,
                    spec.main,
                    spec.vars,
                    spec.memory_mb,
                    list(spec.bindings),
                    dict(spec.secrets),
                    tenant=tenant,
                    uid=_isolation.tenant_uid(tenant, self.uid_range),
                    scratch_mb=spec.scratch_mb,
                    preload=list(spec.preload),
                    scheduled=spec.scheduled,
                    origins=dict(spec.origins),
                    cdn=dict(spec.cdn),
                    durable_objects=dict(spec.durable_objects),
                    queues=dict(spec.queues),
                    queue_consumer=spec.queue_consumer,
                )
            )

    def cpu_ms(self) -> float:
        if self.cgroup:
            return _cgroup.cpu_ns(self.cgroup) / 1e6  # every thread, including finished ones
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) * 1000.0 / _CLK_TCK

    def rss_pages(self) -> int:
        try:
            with open(f"/proc/{self.pid}/statm", "rb") as f:
                return int(f.read().split()[1])
        except OSError:
            return 0

    def kill(self, reason: str) -> None:
        if not self.kill_reason:
            self.kill_reason = reason
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()  # a frame queued just before (Shutdown) still goes out

    def pause_reading(self) -> None:
        if self.paused_at is None and self._transport is not None:
            self._transport.pause_reading()
            self.paused_at = time.monotonic()

    def consumed(self, inf: _Inflight, n: int) -> None:
        """``n`` streamed bytes of ``inf`` reached the client: resume reading once all drained."""
        inf.buffered -= n
        self.maybe_resume()

    def maybe_resume(self) -> None:
        if self.paused_at is not None and all(
            i.buffered <= STREAM_LOW_BYTES for i in self.inflight.values() if not i.aborted
        ):
            self.resume_reading()

    def resume_reading(self) -> None:
        if self.paused_at is not None and self._transport is not None:
            self.paused_at = None
            if not self._transport.is_closing():
                self._transport.resume_reading()

    def _route(self, msg: p.Message) -> None:
        match msg:
            case p.Ready():
                self.isolation = dict(msg.isolation)
                if not self.ready.done():
                    self.ready.set_result(None)
            case p.Loaded():
                self.isolation = dict(msg.isolation)
                off = [k for k, v in self.isolation.items() if not v.startswith("on")]
                if self.strict and off and msg.ok:
                    # Fail closed: this worker could not set up a layer that the probe could.
                    layers = ", ".join(f"{k} ({self.isolation[k]})" for k in off)
                    msg = p.Loaded(ok=False, error=f"sandbox isolation failed: {layers}")
                    self.doom(self, "isolation_failed")
                if self.loaded is not None and not self.loaded.done():
                    self._loaded_at_s = time.perf_counter()
                    self.load_round_trip_ms = (self._loaded_at_s - self.load_sent_s) * 1000
                    self.loaded.set_result(msg)
                self.rss_base_pages = self.rss_pages()
            case (
                p.Respond()
                | p.ResponseStart()
                | p.ResponseChunk()
                | p.ResponseEnd()
                | p.InvokeError()
            ):
                if self._loaded_at_s:
                    self.first_answer_ms = (time.perf_counter() - self._loaded_at_s) * 1000
                    self._loaded_at_s = 0.0
                inf = self.inflight.get(msg.id)
                if inf is not None and not inf.aborted:
                    inf.queue.put_nowait(msg)
                    if isinstance(msg, p.ResponseChunk):
                        inf.buffered += len(msg.data)
                        if inf.buffered > STREAM_HIGH_BYTES:
                            self.pause_reading()
                if isinstance(msg, p.InvokeError) and msg.kind == "exceeded_memory":
                    # The worker exits by itself after a MemoryError; take it out of service now
                    # so that no new request is dispatched to it meanwhile.
                    self.doom(self, "exceeded_memory")
            case p.RequestCredit():
                inf = self.inflight.get(msg.id)
                if inf is not None:
                    inf.credit += msg.n
                    inf.credit_changed.set()
            case p.Background():
                inf = self.inflight.get(msg.id)
                if inf is not None and len(self.background) < MAX_BACKGROUND:
                    inf.background = True
                    self.background[msg.id] = inf.request_id
            case p.BackgroundDone():
                rid = self.background.pop(msg.id, None)
                if rid is not None:
                    self.host.on_background_done(rid)
            case p.Log():
                fn = self.spec.function if self.spec else ""
                self.host.on_log(fn, msg)
            case p.FetchCall():
                if len(self._side_tasks) >= MAX_SIDE_CALLS:
                    self.side_calls_refused += 1
                    self.send(p.FetchResult(msg.id, msg.fetch_id, 0, [], b"", "subrequest_limit",
                                            _TOO_MANY_CALLS))  # fmt: skip
                else:
                    self._spawn_side(self._answer_fetch(msg))
            case p.KVCall():
                if len(self._side_tasks) >= MAX_SIDE_CALLS:
                    self.side_calls_refused += 1
                    self.send(
                        p.KVResult(msg.id, msg.call_id, False, None, "limit", _TOO_MANY_CALLS)
                    )
                else:
                    self._spawn_side(self._answer_kv(msg))
            case _:
                raise ProtocolError(f"worker {self.pid} sent unexpected {type(msg).__name__}")

    def _spawn_side(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def _request_of(self, invoke_id: int) -> str:
        """The request a side call belongs to: in flight, or still running wait_until tasks."""
        inf = self.inflight.get(invoke_id)
        return inf.request_id if inf else self.background.get(invoke_id, "")

    async def _answer_fetch(self, call: p.FetchCall) -> None:
        self.send(await self.host.on_fetch(self._request_of(call.id), call))

    async def _answer_kv(self, call: p.KVCall) -> None:
        self.send(await self.host.on_kv(self._request_of(call.id), call))

    def _die(self, on_exit: Callable[[WorkerProcess], None]) -> None:
        if self.dead:
            return
        self.dead = True
        if not self.kill_reason and self.cgroup and _cgroup.oom_killed(self.cgroup):
            self.kill_reason = "exceeded_memory"
        kind = self.kill_reason or "worker_crashed"
        for inf in self.inflight.values():
            inf.queue.put_nowait(failure(kind, f"the worker stopped ({kind})"))
            inf.credit_changed.set()  # a body upload waiting for credit stops
        if self.loaded is not None and not self.loaded.done():
            self.loaded.set_result(p.Loaded(ok=False, error="the worker died while loading"))
        if not self.ready.done():
            self.ready.set_exception(SandboxError("the worker died before it was ready"))
        for task in self._side_tasks:
            task.cancel()
        for rid in self.background.values():
            self.host.on_background_done(rid)
        self.background.clear()
        self.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        on_exit(self)


class _WorkerChannel(asyncio.Protocol):
    """The node's end of one worker socket: frames in, routed to the WorkerProcess."""

    def __init__(self, worker: WorkerProcess, on_exit: Callable[[WorkerProcess], None]) -> None:
        self.worker = worker
        self.on_exit = on_exit
        self.buf = p.FrameBuffer()

    def data_received(self, data: bytes) -> None:
        try:
            for msg in self.buf.feed(data):
                self.worker._route(msg)
        except (SandboxError, ProtocolError):
            # A worker that speaks garbage is dropped; its requests fail as a crash.
            self.worker.kill("protocol_error")
            self.worker.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker._die(self.on_exit)


class Invocation:
    """One request running in a worker. Use ``start()``, then ``chunks()``; always ``finish()``."""

    def __init__(
        self,
        pool: SandboxPool,
        worker: WorkerProcess,
        invoke_id: int,
        *,
        cold: bool,
        deadline: float,
        inflight: _Inflight,
    ) -> None:
        self.pool = pool
        self.worker = worker
        self.id = invoke_id
        self.cold = cold
        self.deadline = deadline
        self._inf = inflight
        self._finished = False
        loop = asyncio.get_running_loop()
        self._loop_deadline = loop.time() + (deadline - time.monotonic())
        self._body: bytes | None = None
        # The worker's account of the function's CPU time (its last frame says it): telemetry
        # only, clamped by the node (it cannot exceed the request's wall time).
        self.cpu_us = 0

    async def _next(self) -> p.Message:
        queue = self._inf.queue
        try:
            if not queue.empty():
                item = queue.get_nowait()
            else:
                async with asyncio.timeout_at(self._loop_deadline):
                    item = await queue.get()
        except TimeoutError:
            self.pool.on_timeout(self.worker, self.id)
            raise failure("timeout", "the function did not respond within its timeout") from None
        if isinstance(item, InvokeFailed):
            raise item
        if isinstance(item, p.InvokeError):
            self.cpu_us = item.cpu_us
            raise failure(item.kind, item.message, item.traceback)
        return item

    async def start(self) -> tuple[int, list[tuple[str, str]]]:
        msg = await self._next()
        if isinstance(msg, p.Respond):
            self._body = msg.body
            self.cpu_us = msg.cpu_us
            return msg.status, msg.headers
        if not isinstance(msg, p.ResponseStart):
            raise failure("bad_response", f"unexpected {type(msg).__name__} before the response")
        return msg.status, msg.headers

    @property
    def whole_body(self) -> bytes | None:
        """The body of a non-streamed response (after :meth:`start`), else None."""
        return self._body

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._body is not None:
            if self._body:
                yield self._body
            return
        while True:
            msg = await self._next()
            if isinstance(msg, p.ResponseEnd):
                self.cpu_us = msg.cpu_us
                return
            if isinstance(msg, p.ResponseChunk):
                yield msg.data
                # The caller has sent the chunk on (its send waits while the client is slow).
                self.worker.consumed(self._inf, len(msg.data))

    @property
    def background(self) -> bool:
        """Whether the function's wait_until tasks run on after this response."""
        return self._inf.background

    async def send_body(self, data: bytes) -> bool:
        """Send more of a streamed request body, waiting for the worker's credit (backpressure).

        False when the invocation is over (failed, aborted, its worker gone): stop sending."""
        inf = self._inf
        for i in range(0, len(data), p.CHUNK_BYTES):
            piece = data[i : i + p.CHUNK_BYTES]
            while inf.credit < len(piece) and self._open():
                inf.credit_changed.clear()
                await inf.credit_changed.wait()
            if not self._open():
                return False
            inf.credit -= len(piece)
            self.worker.send(p.RequestChunk(self.id, piece))
        return True

    def end_body(self) -> None:
        if self._open():
            self.worker.send(p.RequestEnd(self.id))

    def _open(self) -> bool:
        return not (self._finished or self._inf.aborted or self.worker.dead)

    def fail(self, err: InvokeFailed) -> None:
        """End the request now with ``err`` (a body that broke a limit, a client that left):
        frames already queued are dropped, the worker is told to cancel, and the node answers
        ``err`` unless the response has begun."""
        inf = self._inf
        if inf.aborted or self._finished:
            return
        inf.aborted = True
        inf.buffered = 0
        while not inf.queue.empty():
            inf.queue.get_nowait()
        inf.queue.put_nowait(err)
        inf.credit_changed.set()
        self.worker.send(p.Cancel(self.id))
        self.worker.maybe_resume()

    def abort(self) -> None:
        """The client stopped reading: drop what is queued for it and tell the worker to cancel."""
        inf = self._inf
        if inf.aborted:
            return
        inf.aborted = True
        inf.buffered = 0
        while not inf.queue.empty():
            inf.queue.get_nowait()
        inf.credit_changed.set()
        self.worker.send(p.Cancel(self.id))
        self.worker.maybe_resume()
        self.pool.slow_clients_cut += 1

    def finish(self) -> None:
        if not self._finished:
            self._finished = True
            self.pool.release(self.worker, self.id)


@dataclass(frozen=True, slots=True)
class SandboxStatistics:
    workers: int
    zygote_pid: int
    pool: pp.PoolStatistics
    killed: dict[str, int] = field(default_factory=dict)
    slow_clients_cut: int = 0
    # Layer -> "on…" or "off: reason", as probed by the zygote at start (see _isolation.LAYERS).
    isolation: dict[str, str] = field(default_factory=dict)
    isolation_mode: str = "strict"


def check_isolation(layers: dict[str, str], mode: Isolation) -> None:
    """Raise SandboxError if ``layers`` (as probed) are not enough for ``mode``.

    Strict needs every layer; relaxed runs with whatever works but never without seccomp.
    """
    missing = [k for k, v in layers.items() if not v.startswith("on")]
    if mode == "relaxed":
        missing = [k for k in missing if k == "seccomp"]
        if "seccomp" not in layers:
            missing.append("seccomp")
    if not missing:
        return
    detail = "; ".join(f"{k}: {layers.get(k, 'off: not reported')}" for k in missing)
    if mode == "strict":
        raise SandboxError(
            f"strict sandbox isolation is not available on this machine ({detail})",
            hint="run the node as root on Linux with cgroup v1, user/mount/pid/net/IPC namespaces "
            "and Landlock, or pass `--isolation relaxed` to run with the layers that work",
        )
    raise SandboxError(
        f"the sandbox cannot run even in relaxed mode ({detail})",
        hint="seccomp-BPF is required: run on Linux x86_64 with seccomp enabled",
    )


class SandboxPool:
    """Real processes under a :class:`PoolPolicy`."""

    def __init__(
        self,
        host: Host,
        *,
        config: pp.PoolConfig | None = None,
        preload: tuple[str, ...] = (),
        isolation: Isolation = "strict",
        uid_range: tuple[int, int] = DEFAULT_UID_RANGE,
        host_layers: bool = True,
    ) -> None:
        """``host_layers=False`` (relaxed only) leaves out namespaces, the private root, Landlock,
        the tenant uid and cgroups, keeping seccomp and rlimits: what relaxed mode gives on a host
        without those layers, used by ``edgefn bench runtime`` to measure what they cost."""
        if isolation not in ("strict", "relaxed"):
            raise ValueError(f"isolation must be 'strict' or 'relaxed', not {isolation!r}")
        if not host_layers and isolation == "strict":
            raise ValueError("host_layers=False needs isolation='relaxed'")
        self.host_layers = host_layers
        self.host = host
        self.policy = pp.PoolPolicy(config)
        self.preload = preload
        self.isolation_mode: Isolation = isolation
        self.uid_range = uid_range
        self.layers: dict[str, str] = {}
        self._cgroup_parent = ""
        self._cgroups_to_remove: set[str] = set()
        self._hello: asyncio.Future[dict[str, str]] | None = None
        self.specs: dict[str, LoadSpec] = {}
        self.workers: dict[int, WorkerProcess] = {}
        self.killed: dict[str, int] = {}
        self.slow_clients_cut = 0  # streamed responses aborted because the client stopped reading
        self._zygote: subprocess.Popen[bytes] | None = None
        self._ctl: socket.socket | None = None
        self._ctl_buf = p.FrameBuffer()
        self._fds: deque[int] = deque()
        self._changed = asyncio.Event()
        self._next_invoke = 0
        self._tasks: list[asyncio.Task[None]] = []
        # Set when a request starts on a worker: the monitor, asleep while nothing is in flight,
        # then samples again MONITOR_MS later (see _monitor).
        self._invoked = asyncio.Event()
        self._stopping = False
        self._waiters = 0
        self._adopting: set[asyncio.Future[Any]] = set()

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, *, versions_dir: str = "") -> None:
        """Start the zygote; in strict mode raise SandboxError unless every layer works.

        ``versions_dir`` is the directory holding every bundle's unpacked ``<version>/``; workers
        see only the one they are loaded with, at ``/function``.
        """
        loop = asyncio.get_running_loop()
        # The node holds keys and every tenant's traffic: no core dumps, and the kernel refuses
        # ptrace and /proc/<pid>/mem to anything but root (process-wide, on purpose).
        _seccomp.set_not_dumpable()
        if self.host_layers and _cgroup.available() == "on":
            _cgroup.sweep_orphans()
            self._cgroup_parent = f"edgefn/{os.getpid()}-{next(_pool_ids)}"
            try:
                _cgroup.create(self._cgroup_parent)
            except OSError:
                self._cgroup_parent = ""
        node_end, zyg_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # -I: no cwd or script dir on sys.path and PYTHON* variables ignored, so nothing planted
        # in the node's working directory (a `uvloop.py`) is imported by the zygote.
        args = [sys.executable, "-I", "-m", "edgefn.runtime.zygote", "--fd", str(zyg_end.fileno())]
        args += ["--preload", ",".join(self.preload), "--versions-dir", versions_dir]
        args += ["--cgroup", self._cgroup_parent]
        args += [] if self.host_layers else ["--no-namespaces"]
        # Popen only forks and execs (about a millisecond); the zygote's start-up runs concurrently.
        self._zygote = subprocess.Popen(  # noqa: ASYNC220
            args,
            pass_fds=[zyg_end.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={"LANG": "C.UTF-8"},
            cwd="/",
        )
        zyg_end.close()
        assert self._zygote.stderr is not None
        os.set_blocking(self._zygote.stderr.fileno(), False)
        loop.add_reader(self._zygote.stderr.fileno(), self._on_zygote_stderr)
        node_end.setblocking(False)
        self._ctl = node_end
        self._hello = loop.create_future()
        loop.add_reader(node_end.fileno(), self._on_ctl_readable)
        try:
            self.layers = await asyncio.wait_for(asyncio.shield(self._hello), HELLO_TIMEOUT_S)
        except (TimeoutError, SandboxError):
            await self.stop()
            raise SandboxError(
                "the sandbox zygote did not start",
                hint="its stderr is in the node's log as `zygote: …` error lines",
            ) from None
        try:
            check_isolation(self.layers, self.isolation_mode)
        except SandboxError:
            await self.stop()
            raise
        self._apply(self.policy.handle(pp.Tick(_now_ms())))
        self._tasks = [loop.create_task(self._monitor()), loop.create_task(self._ticker())]

    def _on_zygote_stderr(self) -> None:
        assert self._zygote is not None
        assert self._zygote.stderr is not None
        try:
            data = os.read(self._zygote.stderr.fileno(), 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self._zygote.stderr.fileno())
            return
        for line in data.decode(errors="replace").splitlines():
            self.host.on_log("", p.Log("", "error", f"zygote: {line[:4096]}"))

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for w in list(self.workers.values()):
            w.kill("shutdown")
            w.close()
        if self._ctl is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._ctl.fileno())
            self._ctl.close()
        if self._zygote is not None:
            if self._zygote.stderr is not None:
                with contextlib.suppress(ValueError, OSError):
                    asyncio.get_running_loop().remove_reader(self._zygote.stderr.fileno())
            with contextlib.suppress(ProcessLookupError):
                self._zygote.terminate()
            try:
                await asyncio.to_thread(self._zygote.wait, 5)
            except subprocess.TimeoutExpired:
                self._zygote.kill()
                self._zygote.wait()
            if self._zygote.stderr is not None:
                self._zygote.stderr.close()
        while self._fds:
            os.close(self._fds.popleft())
        if self._cgroup_parent:
            await self._remove_cgroups(deadline=time.monotonic() + 5)

    async def _remove_cgroups(self, *, deadline: float) -> None:
        # A SIGKILLed worker leaves its cgroup only once the kernel has torn it down.
        while True:
            self._cgroups_to_remove = {g for g in self._cgroups_to_remove if not _cgroup.remove(g)}
            if not self._cgroups_to_remove or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        _cgroup.remove_tree(self._cgroup_parent)

    def pids(self) -> list[int]:
        """The pool's processes: its zygote (while it runs) and every worker."""
        zygote = [self._zygote.pid] if self._zygote is not None else []
        return [*zygote, *self.workers]

    def statistics(self) -> SandboxStatistics:
        return SandboxStatistics(
            workers=len(self.workers),
            zygote_pid=self._zygote.pid if self._zygote else 0,
            pool=self.policy.statistics(),
            killed=dict(self.killed),
            slow_clients_cut=self.slow_clients_cut,
            isolation=dict(self.layers),
            isolation_mode=self.isolation_mode,
        )

    # -- versions --------------------------------------------------------------------------
    def register(self, spec: LoadSpec, *, prewarm: bool = True) -> None:
        self.specs[spec.key] = spec
        if prewarm:
            self._apply(self.policy.handle(pp.Prewarm(spec.key, _now_ms())))

    def retire(self, key: str) -> None:
        self._apply(self.policy.handle(pp.VersionRetired(key, _now_ms())))

    async def check_load(self, spec: LoadSpec, *, timeout_s: float = 10.0) -> p.Loaded:
        """Load ``spec`` into a fresh worker and report whether it loads (then keep it warm)."""
        self.specs[spec.key] = spec
        try:
            worker, _ = await self._acquire(spec.key, time.monotonic() + timeout_s)
        except InvokeFailed as err:
            return p.Loaded(ok=False, error=err.message)
        try:
            assert worker.loaded is not None
            try:
                return await asyncio.wait_for(asyncio.shield(worker.loaded), spec.startup_ms / 1000)
            except TimeoutError:
                # A module that never finishes importing (a loop at module level) would hold the
                # caller, e.g. the node agent with its apply lock, forever.
                self._kill(worker, "startup_timeout")
                return p.Loaded(
                    ok=False,
                    error=f"{spec.main}: importing took longer than [limits] startup_ms = "
                    f"{spec.startup_ms} (a loop or a blocking call at module level?)",
                )
        finally:
            self._apply(self.policy.handle(pp.RequestDone(worker.pid, _now_ms())))

    # -- requests --------------------------------------------------------------------------
    async def invoke(self, key: str, msg: p.Invoke, *, timeout_ms: int) -> Invocation:
        """Start ``msg`` on a worker of ``key``; raises InvokeFailed if it cannot start."""
        spec = self.specs[key]
        deadline = time.monotonic() + timeout_ms / 1000
        worker, cold = await self._acquire(key, min(deadline, time.monotonic() + ACQUIRE_TIMEOUT_S))
        self._next_invoke += 1
        iid = self._next_invoke
        # CPU accounting starts at the monitor's first sample (<= MONITOR_MS later): reading /proc
        # on every request would cost more than the request itself.
        inf = _Inflight(asyncio.Queue(), None, spec.cpu_ms, msg.request_id)
        worker.inflight[iid] = inf
        self._invoked.set()
        msg.id = iid
        worker.send(msg)
        return Invocation(self, worker, iid, cold=cold, deadline=deadline, inflight=inf)

    def release(self, worker: WorkerProcess, invoke_id: int) -> None:
        if worker.inflight.pop(invoke_id, None) is not None and not worker.dead:
            worker.maybe_resume()
            self._apply(self.policy.handle(pp.RequestDone(worker.pid, _now_ms())))
            if self._waiters:
                self._notify()  # a slot freed up: let waiting requests re-poll

    def on_timeout(self, worker: WorkerProcess, invoke_id: int) -> None:
        worker.send(p.Cancel(invoke_id))
        cpu0 = worker.cpu_ms()
        loop = asyncio.get_running_loop()

        def check() -> None:
            # A worker that keeps burning CPU after being told to cancel is stuck: kill it.
            if not worker.dead and worker.cpu_ms() - cpu0 > CANCEL_GRACE_S * 1000 * 0.5:
                self._kill(worker, "timeout")

        loop.call_later(CANCEL_GRACE_S, check)

    async def _acquire(self, key: str, deadline: float) -> tuple[WorkerProcess, bool]:
        while True:
            changed = self._changed
            for ins in self._apply(self.policy.handle(pp.RequestArrived(key, _now_ms()))):
                if isinstance(ins, pp.Dispatch):
                    return self.workers[ins.worker_id], False
                if isinstance(ins, pp.Specialize) and ins.for_request:
                    # Pipelined cold start: the Load frame is sent now and the request's Invoke
                    # follows it on the same socket, so the worker imports and serves without a
                    # round trip in between. A failed load answers the request `load_failed`.
                    worker = self.workers[ins.worker_id]
                    if worker.loaded is None:
                        worker.begin_load(self.specs[key])  # now, before the Invoke is sent
                        self._track(asyncio.ensure_future(self._load(worker, key, fresh=True)))
                    elif worker.loaded.done() and not worker.loaded.result().ok:
                        raise failure("load_failed", worker.loaded.result().error)
                    return worker, True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise failure("overloaded", "no sandbox worker became free in time")
            self._waiters += 1
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=remaining)
            finally:
                self._waiters -= 1

    def _track(self, task: asyncio.Future[Any]) -> None:
        self._adopting.add(task)
        task.add_done_callback(self._adopting.discard)

    async def _load(self, worker: WorkerProcess, key: str, *, fresh: bool = False) -> p.Loaded:
        fresh = fresh or worker.loaded is None
        worker.begin_load(self.specs[key])
        assert worker.loaded is not None
        loaded = await asyncio.shield(worker.loaded)
        if fresh:
            self._apply(self.policy.handle(pp.WorkerLoaded(worker.pid, loaded.ok, _now_ms())))
        return loaded

    # -- carrying out instructions -------------------------------------------------------------
    def _apply(self, instructions: list[pp.Instruction]) -> list[pp.Instruction]:
        for ins in instructions:
            match ins:
                case pp.Spawn():
                    self._spawn(ins.count)
                case pp.Retire():
                    w = self.workers.get(ins.worker_id)
                    if w is not None:
                        w.send(p.Shutdown())
                        w.close()
                case pp.Specialize() if not ins.for_request:
                    task = asyncio.ensure_future(self._load(self.workers[ins.worker_id], ins.key))
                    task.add_done_callback(lambda t: t.exception())
                case _:
                    pass
        if any(not isinstance(i, pp.Dispatch | pp.Wait) for i in instructions):
            self._notify()
        return instructions

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _spawn(self, count: int) -> None:
        if self._ctl is None or count <= 0:
            return
        self._ctl.setblocking(True)
        try:
            self._ctl.sendall(p.encode(p.Spawn(count)))
        finally:
            self._ctl.setblocking(False)

    def _on_ctl_readable(self) -> None:
        assert self._ctl is not None
        try:
            data, fds, _flags, _addr = socket.recv_fds(self._ctl, 65536, 64)
        except BlockingIOError:
            return
        except OSError:
            data, fds = b"", []
        if not data:
            asyncio.get_running_loop().remove_reader(self._ctl.fileno())
            if self._hello is not None and not self._hello.done():
                self._hello.set_exception(SandboxError("the zygote exited"))
            return
        self._fds.extend(fds)
        for msg in self._ctl_buf.feed(data):
            if isinstance(msg, p.Hello) and self._hello is not None and not self._hello.done():
                self._hello.set_result(dict(msg.isolation))
            if isinstance(msg, p.Spawned) and self._fds:
                if msg.cgroup:
                    self._cgroups_to_remove.add(msg.cgroup)
                sock = socket.socket(fileno=self._fds.popleft())
                task = asyncio.ensure_future(self._adopt(msg.pid, sock, msg.cgroup))
                self._adopting.add(task)
                task.add_done_callback(self._adopting.discard)

    async def _adopt(self, pid: int, sock: socket.socket, cgroup: str) -> None:
        worker = WorkerProcess(pid, sock, self.host, cgroup)
        worker.doom = self._kill
        worker.uid_range = self.uid_range
        worker.strict = self.isolation_mode == "strict"
        self.workers[pid] = worker
        await worker.start(self._on_worker_exit)
        try:
            await asyncio.wait_for(worker.ready, timeout=10)
        except (TimeoutError, SandboxError):
            worker.kill("start failed")
            return
        self._apply(self.policy.handle(pp.WorkerSpawned(pid, _now_ms())))
        off = [k for k, v in worker.isolation.items() if not v.startswith("on")]
        if off and self.isolation_mode == "strict":
            # Fail closed: a worker that could not set up a layer the probe had never serves.
            # (Reported spawned first, so that the policy's count of forks in flight stays true.)
            self._kill(worker, "isolation_failed")
            return
        self._notify()

    def _on_worker_exit(self, worker: WorkerProcess) -> None:
        if worker.cgroup and worker.dead and _cgroup.remove(worker.cgroup):
            self._cgroups_to_remove.discard(worker.cgroup)
        if self.workers.pop(worker.pid, None) is not None and not self._stopping:
            self._apply(self.policy.handle(pp.WorkerExited(worker.pid, _now_ms())))

    def _kill(self, worker: WorkerProcess, reason: str) -> None:
        """Kill ``worker`` and take it out of the policy at once (its EOF arrives later).

        CPU burnt while the worker's cgroup sits at its memory limit is the kernel reclaiming
        for it (memfd or page-cache hogs): that worker is reported as ``exceeded_memory``, the
        cause, not ``exceeded_cpu``, whichever check notices first.
        """
        if reason == "exceeded_cpu" and worker.cgroup and _cgroup.memory_limit_hit(worker.cgroup):
            reason = "exceeded_memory"
        self.killed[reason] = self.killed.get(reason, 0) + 1
        worker.kill(reason)
        self._on_worker_exit(worker)

    # -- background loops -----------------------------------------------------------------
    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_MS / 1000)
            self._apply(self.policy.handle(pp.Tick(_now_ms())))
            self._cgroups_to_remove = {g for g in self._cgroups_to_remove if not _cgroup.remove(g)}

    async def _monitor(self) -> None:
        """Busy workers' limits every MONITOR_MS, idle workers' CPU every IDLE_CHECK_MS.

        While no request is in flight the loop sleeps until one starts (or the next idle
        check is due) instead of waking every MONITOR_MS for nothing: an idle node's monitor
        wakes ~5 times a second, not 50. A request's first sample stays MONITOR_MS after it
        started (or the next round), as before, so a fast request is never sampled at all."""
        idle_check_at = 0.0
        while True:
            if not any(w.inflight for w in self.workers.values() if not w.dead):
                self._invoked.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._invoked.wait(), IDLE_CHECK_MS / 1000)
            await asyncio.sleep(MONITOR_MS / 1000)
            now = time.monotonic()
            idle_due = now >= idle_check_at
            if idle_due:
                idle_check_at = now + IDLE_CHECK_MS / 1000
            for worker in list(self.workers.values()):
                if worker.dead:
                    continue
                if worker.inflight:
                    worker.idle_cpu_start_ms = None
                    self._check_limits(worker)
                elif worker.spec is not None and worker.cgroup and idle_due:
                    self._check_idle_cpu(worker)

    def _check_idle_cpu(self, worker: WorkerProcess) -> None:
        """CPU burnt outside requests (wait_until, background threads) is charged too: a worker
        that uses more than its function's cpu_ms while idle is killed as exceeded_cpu."""
        assert worker.spec is not None
        if worker.loaded is None or not worker.loaded.done():
            return  # importing the module is not idle time (and not a request's either)
        cpu = worker.cpu_ms()
        if worker.idle_cpu_start_ms is None:
            worker.idle_cpu_start_ms = cpu
        elif cpu - worker.idle_cpu_start_ms > worker.spec.cpu_ms:
            self._kill(worker, "exceeded_cpu")

    def _check_limits(self, worker: WorkerProcess) -> None:
        cpu = worker.cpu_ms()
        for inf in worker.inflight.values():
            if inf.cpu_start_ms is None:
                inf.cpu_start_ms = cpu
            elif cpu - inf.cpu_start_ms > inf.cpu_ms:
                self._kill(worker, "exceeded_cpu")
                return
        spec = worker.spec
        if spec is not None and worker.rss_base_pages:
            grown_mb = (worker.rss_pages() - worker.rss_base_pages) * _PAGE / 2**20
            if grown_mb > spec.memory_mb:
                self._kill(worker, "exceeded_memory")
