"""The sandbox worker: runs inside a process forked from the zygote.

A worker starts *generic* (no function) and sends ``Ready``. ``Load`` specialises it: the memory
limit is applied (``RLIMIT_AS``), the user's module is imported from the bundle directory and its
``fetch`` checked. From then on every ``Invoke`` runs ``fetch(request, env, ctx)`` as an asyncio task,
so one worker serves many concurrent requests. A request body that does not fit the ``Invoke`` frame
arrives as ``RequestChunk`` frames into the request's :class:`_BodyStream`, which grants the node
credit (``RequestCredit``) as the function reads, so at most a window per request waits here.
Responses go back as ``ResponseStart``, ``ResponseChunk``
(streamed as the function yields) and ``ResponseEnd``; a failure as ``InvokeError``. ``print`` and
``logging`` become ``Log`` frames tagged with the request id. ``edgefn.fetch`` becomes a ``FetchCall``
answered by the node, which enforces the subrequest rules.

The worker never enforces its own CPU or wall-clock limits: the node watches it from outside and kills
it. A ``MemoryError`` is reported as ``exceeded_memory`` and the worker exits afterwards, since its
heap can no longer be trusted.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib.util
import json
import logging
import os
import random
import resource
import socket
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, TextIO

from edgefn._loop import run
from edgefn.errors import (
    EdgefnError,
    EgressDeniedError,
    FetchError,
    FetchTimeoutError,
    InvalidURLError,
    KVConflict,
    KVError,
    KVLimitError,
    KVOutcomeUnknown,
    KVUnavailable,
    QueueError,
    ResponseTooLargeError,
    SubrequestLimitError,
)
from edgefn.runtime import _isolation, _seccomp
from edgefn.runtime import protocol as p
from edgefn.sdk import Context, EdgeInfo, Env, KVEntry, Request, Response, ScheduledEvent
from edgefn.sdk._cdn import cdn_handler, load_hooks
from edgefn.sdk._durable import (
    DURABLE_BINDING,
    DurableObjectId,
    DurableObjectNamespace,
    DurableObjectState,
    DurableObjectStorage,
    durable_classes,
)
from edgefn.sdk._fetch import Subrequest, current_request_id, fetch_backend
from edgefn.sdk._origin import Origin
from edgefn.sdk._queue import QUEUE_BINDING, Queue, decisions_of, decode_batch
from edgefn.sdk._scheduled import handler_of

CHUNK_BYTES = p.CHUNK_BYTES
WAIT_UNTIL_TIMEOUT_S = 30.0
NOFILE_LIMIT = 256

current_invoke_id: contextvars.ContextVar[int] = contextvars.ContextVar("iid", default=0)

FETCH_ERRORS: dict[str, type[FetchError]] = {
    "subrequest_limit": SubrequestLimitError,
    "egress_denied": EgressDeniedError,
    "timeout": FetchTimeoutError,
    "too_large": ResponseTooLargeError,
    "invalid_url": InvalidURLError,
    "error": FetchError,
}
KV_ERRORS: dict[str, type[EdgefnError]] = {
    "queue": QueueError,
    "conflict": KVConflict,
    "unavailable": KVUnavailable,
    "outcome_unknown": KVOutcomeUnknown,
    "limit": KVLimitError,
    "error": KVError,
}


class _LogStream:
    """A text stream that turns each written line into a ``Log`` frame."""

    def __init__(self, worker: Worker, level: str) -> None:
        self._worker = worker
        self._level = level
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        while "\n" in self._partial:
            line, self._partial = self._partial.split("\n", 1)
            self._worker.log(self._level, line)
        if len(self._partial) > 8192:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if self._partial:
            self._worker.log(self._level, self._partial)
            self._partial = ""

    def isatty(self) -> bool:
        return False


class _LogHandler(logging.Handler):
    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self._worker = worker

    def emit(self, record: logging.LogRecord) -> None:
        self._worker.log(record.levelname.lower(), self.format(record))


class CpuMeter(Coroutine[Any, Any, None]):
    """Runs an invocation's coroutine as a task, adding up the thread CPU time of its steps.

    The worker's loop runs many invocations at once; each step of a task runs on the one thread
    until it awaits, so the CPU time between a step's start and end is that invocation's. The
    cost is two ``clock_gettime(CLOCK_THREAD_CPUTIME_ID)`` calls per step.
    """

    __slots__ = ("_coro", "_since", "_spent")

    def __init__(self) -> None:
        self._coro: Coroutine[Any, Any, None] | None = None
        self._spent = 0
        self._since = 0

    def run(self, coro: Coroutine[Any, Any, None]) -> CpuMeter:
        self._coro = coro
        return self

    def used_us(self) -> int:
        """CPU µs so far, the step that is running now included."""
        running = time.thread_time_ns() - self._since if self._since else 0
        return (self._spent + running) // 1000

    def send(self, value: Any) -> Any:
        assert self._coro is not None
        self._since = time.thread_time_ns()
        try:
            return self._coro.send(value)
        finally:
            self._spent += time.thread_time_ns() - self._since
            self._since = 0

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        assert self._coro is not None
        self._since = time.thread_time_ns()
        try:
            if val is None and tb is None:
                return self._coro.throw(typ)
            return self._coro.throw(typ, val, tb)  # pragma: no cover - asyncio passes one
        finally:
            self._spent += time.thread_time_ns() - self._since
            self._since = 0

    def close(self) -> None:
        if self._coro is not None:
            self._coro.close()

    def __await__(self) -> Generator[Any, None, None]:  # pragma: no cover - a task's coroutine
        raise TypeError("a CpuMeter runs as a task, it is not awaited")


def _used(meter: CpuMeter | None) -> int:
    return meter.used_us() if meter is not None else 0


class _BodyStream:
    """A streamed request body in the worker: chunks as the node sends them, credit as read.

    The node never sends more than ``BODY_WINDOW_BYTES`` beyond the credit granted here, so the
    queue is bounded by the window (plus the first piece, which came in the Invoke frame).
    """

    __slots__ = ("_chunks", "_ended", "_id", "_wake", "_worker")

    def __init__(self, worker: Worker, invoke_id: int, first: bytes) -> None:
        self._worker = worker
        self._id = invoke_id
        # (data, whether reading it grants credit): the Invoke's own piece was never counted.
        self._chunks: deque[tuple[bytes, bool]] = deque([(first, False)] if first else [])
        self._ended = False
        self._wake: asyncio.Future[None] | None = None

    def feed(self, data: bytes) -> None:
        self._chunks.append((data, True))
        self._notify()

    def end(self) -> None:
        self._ended = True
        self._notify()

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def __aiter__(self) -> _BodyStream:
        return self

    async def __anext__(self) -> bytes:
        while not self._chunks:
            if self._ended:
                raise StopAsyncIteration
            self._wake = asyncio.get_running_loop().create_future()
            await self._wake
        data, credit = self._chunks.popleft()
        if credit:
            self._worker.send(p.RequestCredit(self._id, len(data)))
        return data


class Worker:
    """State of one worker process (lives only in the child)."""

    def __init__(self, sock: socket.socket, plan: Plan, layers: _isolation.Layers) -> None:
        self.sock = sock
        self.plan = plan
        self.layers = layers
        self.vm_base_bytes = _vm_bytes()
        self.prepared = _isolation.Prepared()
        self.writer: asyncio.StreamWriter | None = None
        self.fetch_fn: Callable[..., Any] | None = None
        self.scheduled_fn: Callable[..., Any] | None = None
        self.queue_fn: Callable[..., Any] | None = None
        self.durable_classes: dict[str, Any] = {}
        self.env = Env({})
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.bodies: dict[int, _BodyStream] = {}  # streamed request bodies by invoke id
        self.pending: dict[tuple[int, int], asyncio.Future[Any]] = {}
        self.next_call = 0
        self.function = ""
        self.load_error = ""

    def send(self, msg: p.Message) -> None:
        assert self.writer is not None
        self.writer.write(p.encode(msg))

    def log(self, level: str, message: str) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.send(
                p.Log(request_id=current_request_id.get(), level=level, message=message[:8192])
            )

    # -- loading --------------------------------------------------------------------------
    def load(self, msg: p.Load) -> p.Loaded:
        t0 = time.perf_counter()
        faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        phases = _Phases(t0)
        try:
            code_dir = self._isolate(msg, phases)
            self._apply_limits(msg.memory_mb, msg.scratch_mb)
            phases.mark("rlimits")
            _preload(code_dir, msg.preload)
            phases.mark("preload")
            module = _import_main(code_dir, msg.main, msg.version)
            if msg.cdn:
                binding = msg.cdn["origin"]
                hooks = {k: v for k, v in msg.cdn.items() if k != "origin"}
                self.fetch_fn = cdn_handler(
                    Origin(binding, msg.origins[binding]), load_hooks(module, hooks, main=msg.main)
                )
            else:
                self.fetch_fn = handler_of(module, "fetch", main=msg.main, required=True)
            self.durable_classes = durable_classes(
                module, sorted(set(msg.durable_objects.values())), main=msg.main
            )
            self.scheduled_fn = handler_of(
                module, "scheduled", main=msg.main, required=msg.scheduled
            )
            self.queue_fn = handler_of(module, "queue", main=msg.main, required=msg.queue_consumer)
            phases.mark("import")
        except Exception as err:
            self.load_error = str(err)
            return p.Loaded(ok=False, error=str(err), isolation=dict(self.layers.status))
        self.function = msg.function
        values: dict[str, Any] = dict(msg.vars)
        values.update(msg.secrets)
        for binding in msg.bindings:
            values[binding] = KVBinding(self, binding)
        for binding, url in msg.origins.items():
            values[binding] = Origin(binding, url)
        for binding, class_name in msg.durable_objects.items():
            values[binding] = DurableObjectNamespace(binding, class_name)
        for binding in msg.queues:
            values[binding] = Queue(binding, self._queue_call)
        self.env = Env(values)
        phases.mark("env")
        load_ms = (time.perf_counter() - t0) * 1000
        return p.Loaded(
            ok=True,
            load_ms=load_ms,
            isolation=dict(self.layers.status),
            phases_ms=phases.ms,
            minor_faults=resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0,
        )

    def _isolate(self, msg: p.Load, phases: _Phases) -> str:
        """Mount the bundle, drop privileges, install seccomp; the code dir as seen from here."""
        versions = self.plan.versions_dir
        rel = os.path.relpath(msg.code_dir, versions) if versions else ""
        if self.prepared.private_root and (not rel or rel.startswith("..")):
            raise RuntimeError(f"the bundle {msg.code_dir} is outside the node's versions dir")
        code_dir = _isolation.setup_load(
            self.layers,
            self.prepared,
            version_rel=rel,
            scratch_mb=msg.scratch_mb,
            uid=msg.uid,
            mark=phases.mark,
        )
        return code_dir or msg.code_dir

    def _apply_limits(self, memory_mb: int, scratch_mb: int) -> None:
        # The address-space limit is measured from the generic worker's size (read before /proc
        # went away); the cgroup set by the node bounds what is actually resident.
        limit = self.vm_base_bytes + memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        fsize = scratch_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    # -- invocation -----------------------------------------------------------------------
    async def invoke(
        self, msg: p.Invoke, stream: _BodyStream | None, meter: CpuMeter | None = None
    ) -> None:
        current_request_id.set(msg.request_id)
        current_invoke_id.set(msg.id)
        fetch_backend.set(self._subrequest)
        edge = EdgeInfo(msg.location, msg.client_location, msg.request_id)
        body = msg.body if stream is None else stream
        req = Request(msg.url, method=msg.method, headers=msg.headers, body=body, edge=edge)
        ctx = Context()
        try:
            if self.fetch_fn is None:  # the pipelined Load before this Invoke failed
                self._error(msg.id, "load_failed", self.load_error or "the function is not loaded")
                return
            if msg.cron:
                await self._scheduled(msg, ctx, meter)
                return
            if msg.queue:
                await self._queue(msg, ctx, meter)
                return
            if msg.durable:
                resp = await self._durable(msg, req)
            else:
                resp = await self.fetch_fn(req, self.env, ctx)
            if not isinstance(resp, Response):
                self._error(
                    msg.id, "bad_response", f"fetch returned {type(resp).__name__}", ctx=ctx
                )
                return
            if not resp.is_streaming:
                body = await resp.body()
                if len(body) <= CHUNK_BYTES:
                    cpu = _used(meter)
                    self._last(
                        msg.id,
                        ctx,
                        p.Respond(msg.id, resp.status, resp.headers.items(), body, cpu),
                    )
                    return
            self.send(p.ResponseStart(msg.id, resp.status, resp.headers.items()))
            assert self.writer is not None
            async for chunk in resp.iter_body():
                for i in range(0, len(chunk), CHUNK_BYTES):
                    self.send(p.ResponseChunk(msg.id, chunk[i : i + CHUNK_BYTES]))
                    # Per frame: a large body is handed to the socket as the node takes it, not
                    # copied into the write buffer whole.
                    await self.writer.drain()
            self._last(msg.id, ctx, p.ResponseEnd(msg.id, _used(meter)))
        except asyncio.CancelledError:
            return
        except KVOutcomeUnknown as err:
            # Uncaught: 503 outcome_unknown, distinct from consistency_unavailable (a strong
            # write may have applied; the client should check before retrying).
            self._error(msg.id, "outcome_unknown", str(err), ctx=ctx, meter=meter)
        except KVUnavailable as err:
            # Uncaught: the platform answers 503 consistency_unavailable (the level asked for
            # cannot be served here now, e.g. strong on the far side of a partition).
            self._error(msg.id, "consistency_unavailable", str(err), ctx=ctx, meter=meter)
        except MemoryError:
            self._error(msg.id, "exceeded_memory", "the function ran out of memory")
            self._exit_soon()
            return
        except Exception as err:
            tb = traceback.format_exc()
            self._error(
                msg.id, "exception", f"{type(err).__name__}: {err}", tb, ctx=ctx, meter=meter
            )
        finally:
            self.tasks.pop(msg.id)
            self.bodies.pop(msg.id, None)
            if ctx._pending:
                asyncio.get_running_loop().create_task(self._drain(ctx, msg.id))

    async def _durable(self, msg: p.Invoke, req: Request) -> Any:
        """A durable object's request (or alarm) on a fresh instance of its class; its storage
        calls go to the node, which knows which object this invocation is for."""
        class_name, _, oid = msg.durable.partition("\n")
        cls = self.durable_classes.get(class_name)
        if cls is None:
            raise RuntimeError(f"no durable object class {class_name!r} in this version")
        storage = DurableObjectStorage(lambda op, args: self.kv_call(DURABLE_BINDING, op, args))
        instance = cls(DurableObjectState(DurableObjectId(oid), storage), self.env)
        if msg.method == "ALARM":
            alarm = getattr(instance, "alarm", None)
            if alarm is not None:
                await alarm()
            return Response(b"", status=204)
        return await instance.fetch(req)

    async def _scheduled(self, msg: p.Invoke, ctx: Context, meter: CpuMeter | None) -> None:
        """A cron tick: ``scheduled(event, env, ctx)``; its return value is ignored."""
        if self.scheduled_fn is None:
            self._error(
                msg.id,
                "no_scheduled_handler",
                "the function defines no `async def scheduled(event, env, ctx)`",
                ctx=ctx,
            )
            return
        event = ScheduledEvent(msg.cron, msg.scheduled_ms, msg.attempt)
        await self.scheduled_fn(event, self.env, ctx)
        self._last(msg.id, ctx, p.Respond(msg.id, 204, [], b"", _used(meter)))

    async def _queue(self, msg: p.Invoke, ctx: Context, meter: CpuMeter | None) -> None:
        """A batch of queue messages: ``queue(batch, env, ctx)``; the answer is each message's
        decision (acknowledged unless it was retried)."""
        if self.queue_fn is None:
            self._error(
                msg.id,
                "no_queue_handler",
                "the function defines no `async def queue(batch, env, ctx)`",
                ctx=ctx,
            )
            return
        batch = decode_batch(msg.queue, msg.body)
        await self.queue_fn(batch, self.env, ctx)
        self._last(msg.id, ctx, p.Respond(msg.id, 200, [], decisions_of(batch), _used(meter)))

    async def _queue_call(self, op: str, args: dict[str, Any]) -> Any:
        return await self.kv_call(QUEUE_BINDING, op, args)

    def _last(self, invoke_id: int, ctx: Context, frame: p.Message) -> None:
        """Send a response's last frame, announced by ``Background`` if wait_until tasks run on."""
        if ctx._pending:
            self.send(p.Background(invoke_id))
        self.send(frame)

    async def _drain(self, ctx: Context, invoke_id: int) -> None:
        # The tasks keep the invocation's context variables, so their KV calls and subrequests
        # still name this request; the node answers them until BackgroundDone.
        for exc in await ctx.drain(timeout_s=WAIT_UNTIL_TIMEOUT_S):
            self.log("error", f"wait_until task failed: {type(exc).__name__}: {exc}")
        self.send(p.BackgroundDone(invoke_id))

    def _error(
        self,
        invoke_id: int,
        kind: str,
        message: str,
        tb: str = "",
        *,
        ctx: Context | None = None,
        meter: CpuMeter | None = None,
    ) -> None:
        frame = p.InvokeError(invoke_id, kind, message[:4096], tb[-16384:], _used(meter))
        if ctx is None:
            self.send(frame)
        else:
            self._last(invoke_id, ctx, frame)

    def _exit_soon(self) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, os._exit, 3)

    async def _call(self, make: Callable[[int], p.Message]) -> Any:
        self.next_call += 1
        key = (current_invoke_id.get(), self.next_call)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[key] = fut
        try:
            self.send(make(self.next_call))
            return await fut
        finally:
            self.pending.pop(key, None)

    async def _subrequest(self, sub: Subrequest) -> Response:
        iid = current_invoke_id.get()
        res: p.FetchResult = await self._call(
            lambda n: p.FetchCall(
                iid,
                n,
                sub.url,
                sub.method,
                sub.headers,
                sub.body,
                sub.timeout_ms,
                sub.origin,
                sub.cache_op,
                sub.put_status,
                sub.put_headers,
                sub.ticket,
                sub.durable,
            )
        )
        return fetch_response(res)

    async def kv_call(self, binding: str, op: str, args: dict[str, Any]) -> Any:
        iid = current_invoke_id.get()
        res: p.KVResult = await self._call(lambda n: p.KVCall(iid, n, binding, op, args))
        return kv_value(res)

    def resolve(self, invoke_id: int, call_id: int, result: Any) -> None:
        fut = self.pending.get((invoke_id, call_id))
        if fut is not None and not fut.done():
            fut.set_result(result)

    # -- main loop ------------------------------------------------------------------------
    async def serve(self) -> None:
        reader, self.writer = await asyncio.open_unix_connection(sock=self.sock)
        self.send(p.Ready(os.getpid(), dict(self.layers.status)))
        buf = p.FrameBuffer()
        while True:
            data = await reader.read(256 * 1024)
            if not data:
                return
            for msg in buf.feed(data):
                if not self._dispatch(msg):
                    return

    def _dispatch(self, msg: p.Message) -> bool:
        match msg:
            case p.Load():
                self.send(self.load(msg))
            case p.Invoke():
                # The body stream exists before the task runs: its chunks may be in this read.
                stream = None
                if msg.more_body:
                    stream = self.bodies[msg.id] = _BodyStream(self, msg.id, msg.body)
                meter = CpuMeter()
                task = asyncio.get_running_loop().create_task(
                    meter.run(self.invoke(msg, stream, meter))
                )
                self.tasks[msg.id] = task
            case p.RequestChunk():
                if msg.id in self.bodies:
                    self.bodies[msg.id].feed(msg.data)
            case p.RequestEnd():
                if msg.id in self.bodies:
                    self.bodies[msg.id].end()
            case p.Cancel():
                if msg.id in self.tasks:
                    self.tasks[msg.id].cancel()
            case p.FetchResult():
                self.resolve(msg.id, msg.fetch_id, msg)
            case p.KVResult():
                self.resolve(msg.id, msg.call_id, msg)
            case p.Shutdown():
                return False
            case _:
                raise AssertionError(f"unexpected message for a worker: {type(msg).__name__}")
        return True


def fetch_response(res: p.FetchResult) -> Response:
    """The node's answer to a ``FetchCall`` as ``edgefn.fetch`` returns (or raises) it."""
    if res.error_kind:
        raise FETCH_ERRORS.get(res.error_kind, FetchError)(res.error_message)
    return Response(res.body, status=res.status, headers=res.headers)


_HINT_SEP = "\n  hint: "  # how EdgefnError.__str__ joins a message and its hint


def kv_value(res: p.KVResult) -> Any:
    """The node's answer to a ``KVCall`` as ``env.<BINDING>.<op>`` returns (or raises) it."""
    if not res.ok:
        # The node sends ``str(err)``: the message, then its hint on a line of its own.
        message, _, hint = res.error_message.partition(_HINT_SEP)
        if res.error_kind == "conflict" and isinstance(res.value, dict):
            raise KVConflict(
                message,
                key=str(res.value.get("key", "")),
                revision=int(res.value.get("revision") or 0),
                hint=hint,
            )
        raise KV_ERRORS.get(res.error_kind, KVError)(message, hint=hint)
    return res.value


class KVCaller(Protocol):
    """Where a KV binding's calls go: the worker (over IPC), or ``edgefn.testing`` (in-process)."""

    async def kv_call(self, binding: str, op: str, args: dict[str, Any]) -> Any: ...


class KVBinding:
    """``env.<BINDING>`` inside a worker: every call goes to the node's KV replica over IPC."""

    def __init__(self, worker: KVCaller, binding: str) -> None:
        self._worker = worker
        self._binding = binding

    async def get(self, key: str, *, consistency: str = "eventual", type: str = "text") -> Any:
        args = {"key": key, "consistency": consistency, "type": type}
        return await self._worker.kv_call(self._binding, "get", args)

    async def get_entry(self, key: str, *, consistency: str = "eventual") -> KVEntry:
        args = {"key": key, "consistency": consistency}
        out = await self._worker.kv_call(self._binding, "get_entry", args)
        return KVEntry(out.get("value"), int(out.get("revision", 0)), out.get("metadata"))

    async def put(
        self,
        key: str,
        value: Any,
        *,
        ttl_s: float | None = None,
        metadata: Any = None,
        if_revision: int | None = None,
        consistency: str = "eventual",
    ) -> Any:
        args = {
            "key": key,
            "value": value,
            "ttl_s": ttl_s,
            "metadata": metadata,
            "if_revision": if_revision,
            "consistency": consistency,
        }
        return await self._worker.kv_call(self._binding, "put", args)

    async def delete(
        self, key: str, *, if_revision: int | None = None, consistency: str = "eventual"
    ) -> Any:
        args = {"key": key, "if_revision": if_revision, "consistency": consistency}
        return await self._worker.kv_call(self._binding, "delete", args)

    async def list(self, prefix: str = "", limit: int = 1000, cursor: str | None = None) -> Any:
        args = {"prefix": prefix, "limit": limit, "cursor": cursor}
        return await self._worker.kv_call(self._binding, "list", args)


class _Phases:
    """Milliseconds since the previous mark, by phase name (a cold start's breakdown)."""

    __slots__ = ("_t", "ms")

    def __init__(self, t0: float) -> None:
        self._t = t0
        self.ms: dict[str, float] = {}

    def mark(self, name: str) -> None:
        t = time.perf_counter()
        self.ms[name] = round((t - self._t) * 1000, 4)
        self._t = t


def _preload(code_dir: str, modules: list[str]) -> None:
    """Import ``[runtime] preload`` (from the bundle or the installed packages), inside the sandbox
    and under the startup limit like the main module."""
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    for i, name in enumerate(modules):
        try:
            importlib.import_module(name)
        except Exception as err:
            raise RuntimeError(
                f"runtime.preload[{i}] = {name!r} cannot be imported: "
                f"{type(err).__name__}: {err} (install it, add it to the bundle, or remove it "
                "from [runtime] preload)"
            ) from None


def _import_main(code_dir: str, main: str, version: str) -> ModuleType:
    path = os.path.join(code_dir, main)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{main}: no such file in the bundle (main = {main!r})")
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    name = f"edgefn_user_{version.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        tb = traceback.format_exc(limit=-3)
        raise RuntimeError(f"{main}: importing failed: {type(err).__name__}: {err}\n{tb}") from None
    return module


@dataclass(frozen=True, slots=True)
class Plan:
    """How the zygote isolates its workers (fixed for the zygote's lifetime)."""

    versions_dir: str = ""
    cgroup_parent: str = ""
    isolate: bool = True
    roots: tuple[str, ...] = ()


def _vm_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _prepare(sock_fd: int, plan: Plan, layers: _isolation.Layers) -> _isolation.Prepared:
    """Pre-fork hygiene and the private root (before any frame is read)."""
    _isolation.close_inherited_fds(keep=sock_fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE_LIMIT, NOFILE_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Forked workers share the zygote's PRNG state; each must draw its own sequence.
    random.seed()
    np_random = sys.modules.get("numpy.random")
    if np_random is not None:
        np_random.seed()
    if not plan.isolate:
        prepared = _isolation.Prepared(seccomp_program=_seccomp.build_filter(os.getpid()))
    else:
        prepared = _isolation.setup_prefork(layers, plan.versions_dir)
    _isolation.stage_seccomp(prepared)
    return prepared


def probe_worker(report_fd: int, plan: Plan, layers: _isolation.Layers) -> None:
    """Run the full set-up as a throw-away worker would and write the layers as JSON."""
    prepared = _prepare(report_fd, plan, layers)
    try:
        _isolation.setup_load(
            layers,
            prepared,
            version_rel=".",
            scratch_mb=1,
            uid=_isolation.tenant_uid("probe", (200000, 265535)),
        )
    except OSError as err:
        layers.set("filesystem", f"off: {err}")
    for layer in _isolation.LAYERS:
        layers.status.setdefault(layer, "off: not set up")
    os.write(report_fd, json.dumps(layers.status).encode())


def run_worker(sock: socket.socket, plan: Plan, layers: _isolation.Layers) -> None:
    """Entry point in the forked worker: harden, then serve frames until the node hangs up."""
    worker = Worker(sock, plan, layers)
    worker.prepared = _prepare(sock.fileno(), plan, layers)
    out: TextIO = _LogStream(worker, "info")  # type: ignore[assignment]
    err: TextIO = _LogStream(worker, "error")  # type: ignore[assignment]
    sys.stdout, sys.stderr = out, err
    root = logging.getLogger()
    root.handlers[:] = [_LogHandler(worker)]
    root.setLevel(logging.INFO)
    try:
        run(worker.serve())
    finally:
        os._exit(0)
