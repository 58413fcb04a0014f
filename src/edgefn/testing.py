"""Unit-test a function in-process, without a server: ``edgefn.testing.TestClient``.

    from edgefn.testing import TestClient

    def test_hello():
        client = TestClient("path/to/function")       # reads edgefn.toml, imports main
        resp = client.request("/hello?name=Ada")
        assert resp.status == 200
        assert resp.text_body == "Hello, Ada!"

The function runs in the test's own process with the same ``Request``/``Env``/``Context`` objects the
sandbox uses, and the node's own code serves what it asks of the platform:

- ``edgefn.fetch`` follows the manifest's ``[limits] subrequests`` and ``[egress]`` rules through
  the node's ``Outbound`` (same SSRF policy: loopback and private addresses need ``[egress]
  allow_private``). With ``fetch=`` a fake answers instead of the network, after the same limit
  and every policy check that needs no DNS.
- KV bindings (``env.<BINDING>``, also ``client.kv[binding]``) are :class:`MemoryKV` namespaces:
  the worker's binding, the node's KV call path (``edgefn.edge.kv_calls``: argument checks,
  encodings, limits, error kinds, signed session tokens in ``x-edgefn-session``) and the node's
  replica machine and store, as the one replica of its namespace (``edgefn.edge.kv_local``).
  Revisions, ``if_revision`` conflicts, TTLs, listing and errors are therefore the platform's; what
  needs other locations (replication, a session read forwarded to a writer) cannot happen, and
  ``consistency="strong"`` runs against the pure model of the home (``edgefn.state.home``).
- Calls and answers cross the worker ⇄ node frame codec (msgpack), as in a sandbox.

Cron triggers: ``await client.scheduled()`` (or ``client.run_scheduled()``) calls ``scheduled(event,
env, ctx)`` once with the manifest's first cron (or ``cron=``) and ``scheduled_time=`` (default
now), with the same ``ScheduledEvent``, bindings and subrequest rules as a request; exceptions from
the handler propagate. Which location runs a tick (the claim in the strong KV) needs a planet.

Edge cache: the client is one location with the node's own cache code (``OriginFetch``): requests
to ``[[origins]]``, ``caches.default`` and the ``[cdn]`` hooks behave as on a node, with the real
origin (or the ``fetch=`` fake) as upstream and no region tier; ``client.purge_cache(tags=...)``
purges as ``edgefn cache purge`` does.

Durable objects: every object's home is this process, with the node's record rules and storage
ops (``edgefn.edge.durable_policy``) and one request at a time per object;
``client.durable_storage(binding, name)`` shows what an object stored and ``await
client.durable_alarm(binding, name)`` rings its alarm now. Moving homes needs a planet.

Queues: ``env.<PRODUCER>.send(...)``/``send_batch(...)`` go through the node's checks and encoding
(``edgefn.edge.queues``) into an in-process stream that, like the real one, drops a re-send with
the same ``idempotency_key``; nothing is delivered until the test says so. ``await
client.drain_queues()`` (or ``client.run_queues()``) hands every due message of the manifest's
``[[queues.consumers]]`` to ``queue(batch, env, ctx)`` with the worker's ``MessageBatch``, batches
chosen and settled by the node's rules (``edgefn.edge.queue_policy``: one in flight per key, in send
order, ``max_batch_size``, back-off, ``max_retries`` then the ``dead_letter_queue``, itself a queue
of this client) and returns what each batch did (:class:`BatchOutcome`). As on a node a handler's
``consistency="strong"`` writes are committed only with its batch (one that raises keeps none, and
all its messages are retried, ``ack()`` or not), other levels apply at once, and a strong ``list``
is refused. The queues have a clock of their own, ``client.now_ms``, that only
``client.advance(seconds)`` moves (``delay_s`` and back-off wait for it); ``drain_queues(wait=True)``
moves it to each next due message until every consumed queue is empty.
``client.queue_messages(queue)`` shows what waits (:class:`QueuedMessage`: id, body, key, attempts,
due time) and ``client.dead_letters(queue)`` what failed more than ``max_retries`` times. Unlike a
node, batches run one at a time and a partial batch does not wait out ``max_batch_timeout_ms``
(``edgefn.edge.queue_local``).

Secrets: ``TestClient(path, secrets={"API_KEY": "test-key"})`` gives the function ``env.API_KEY``,
with the platform's rules (valid names, at most 5 KiB, no name shared with ``[vars]`` or a KV
binding). Never commit real secret values in tests.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import msgspec

from edgefn.bundle import Manifest, load_manifest
from edgefn.bundle.crons import check_cron
from edgefn.bundle.manifest import KVNamespace
from edgefn.bus.cache_purge import Purge
from edgefn.edge import durable_policy as dp
from edgefn.edge.cache_policy import CacheStore
from edgefn.edge.kv_calls import KVCalls
from edgefn.edge.kv_codec import check_namespace
from edgefn.edge.kv_local import LocalKVDriver
from edgefn.edge.node import RequestContext
from edgefn.edge.origin_fetch import OriginFetch, record_cache_headers
from edgefn.edge.outbound import Outbound, SubrequestRules
from edgefn.edge.queue_local import BatchOutcome, LocalQueues, QueuedMessage
from edgefn.edge.queue_policy import Decision, QueueMessage
from edgefn.edge.queues import QueueTxn, batch_body, batch_decisions, txn_kv_call
from edgefn.errors import KVOutcomeUnknown, KVUnavailable, ManifestError, UsageError
from edgefn.runtime import protocol as p
from edgefn.runtime.worker import KVBinding, fetch_response, kv_value
from edgefn.sdk import Context, EdgeInfo, Env, Request, Response, ScheduledEvent
from edgefn.sdk._cdn import cdn_handler, load_hooks
from edgefn.sdk._durable import (
    DURABLE_BINDING,
    DurableObject,
    DurableObjectId,
    DurableObjectNamespace,
    DurableObjectState,
    DurableObjectStorage,
    durable_classes,
)
from edgefn.sdk._fetch import FetchBackend, Subrequest, fetch_backend
from edgefn.sdk._headers import HeadersInit
from edgefn.sdk._origin import Origin
from edgefn.sdk._queue import QUEUE_BINDING, Queue, decisions_of, decode_batch
from edgefn.sdk._scheduled import handler_of
from edgefn.secrets.names import validate_secret_name, validate_secret_value

__all__ = ["BatchOutcome", "MemoryKV", "QueuedMessage", "TestClient", "TestResponse"]

_M = TypeVar("_M", bound=p.Message)
_log = logging.getLogger("edgefn.testing")


@dataclass(frozen=True, slots=True)
class TestResponse:
    """A finished response: status, headers and the whole body."""

    __test__ = False  # not a pytest test class

    status: int
    headers: dict[str, str]
    body: bytes
    chunks: list[bytes] = field(default_factory=list)

    @property
    def text_body(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


class _KVHost:
    """The node's side of the KV bindings of one function, in this process.

    One :class:`~edgefn.edge.kv_local.LocalKVDriver` per namespace (started on first use, like a
    node's drivers, named after ``location``) under the node's :class:`~edgefn.edge.kv_calls.KVCalls`.
    A call made while :meth:`TestClient.fetch` runs belongs to that request (its session header in,
    the new token out as a response header); any other call is a request of its own.
    """

    def __init__(self, manifest: Manifest, location: str) -> None:
        self.manifest = manifest
        self.location = location
        self.drivers: dict[str, LocalKVDriver] = {}
        self.calls = KVCalls(driver_for=self._driver, session_key=os.urandom(32))
        self._call_ids = itertools.count(1)

    async def _driver(self, namespace: str) -> LocalKVDriver:
        if namespace not in self.drivers:
            check_namespace(namespace)
            self.drivers[namespace] = LocalKVDriver(namespace=namespace, replica_id=self.location)
        return self.drivers[namespace]

    def context(self, request_id: str, headers: list[tuple[str, str]]) -> RequestContext:
        name = self.manifest.name
        return RequestContext(request_id, name, "test", f"{name}@test", self.manifest, headers)

    async def kv_call(self, binding: str, op: str, args: dict[str, Any]) -> Any:
        """What a worker's ``kv_call`` does, with the node in this process."""
        call = _across_ipc(p.KVCall(0, next(self._call_ids), binding, op, args))
        batch = _BATCH.get()
        if batch is not None and batch.host is self and batch.txn is not None:
            # A queue handler's call, as the node routes it: strong operations in the batch's
            # transaction, the others on the replica.
            answer = await txn_kv_call(batch.txn, self.manifest, call, self._driver)
            return kv_value(_across_ipc(answer))
        current = _REQUEST.get()
        if current is not None and current[0] is self:
            ctx = current[1]
        else:
            ctx = self.context(f"kv-{call.call_id}", [])
        return kv_value(_across_ipc(await self.calls.handle_call(ctx, call)))


_REQUEST: ContextVar[tuple[_KVHost, RequestContext] | None] = ContextVar(
    "edgefn_testing_request", default=None
)


class _Batch:
    """The queue batch a handler runs for: its strong KV goes to ``txn`` until the handler
    returned (``wait_until`` tasks still running then are not part of it, as on a node)."""

    __slots__ = ("host", "txn")

    def __init__(self, host: _KVHost, txn: QueueTxn) -> None:
        self.host = host
        self.txn: QueueTxn | None = txn


_BATCH: ContextVar[_Batch | None] = ContextVar("edgefn_testing_batch", default=None)


class MemoryKV(KVBinding):
    """A KV namespace in this process that behaves as on a node (see the module docstring).

    ``MemoryKV()`` on its own is namespace ``namespace`` bound as ``binding``; a
    :class:`TestClient` makes one per ``[[kv_namespaces]]`` entry of its manifest.
    """

    def __init__(self, namespace: str = "kv", *, binding: str = "KV") -> None:
        manifest = Manifest(name="memory-kv", kv_namespaces=(KVNamespace(binding, namespace),))
        super().__init__(_KVHost(manifest, "test"), binding)

    @classmethod
    def _bound(cls, host: _KVHost, binding: str) -> MemoryKV:
        kv = cls.__new__(cls)
        KVBinding.__init__(kv, host, binding)
        return kv


def _checked_secrets(secrets: Mapping[str, str], taken: set[str]) -> dict[str, str]:
    """``secrets`` if the platform would accept them for this manifest (else ``UsageError``)."""
    for name, value in secrets.items():
        validate_secret_name(name)
        validate_secret_value(value)
        if name in taken:
            raise UsageError(
                f"secret {name!r} has the name of a [vars] entry or KV binding",
                hint="the platform refuses this too: rename one of them",
            )
    return dict(secrets)


class _DurableHost:
    """The function's durable objects in this process: the node's record rules and storage ops
    (``edgefn.edge.durable_policy``), one request at a time per object, values across the frame
    codec; this process is every object's home (moving homes needs a planet)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.records: dict[str, dp.Record] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._call_ids = itertools.count(1)

    def _class(self, binding: str) -> tuple[str, type[DurableObject]]:
        manifest = self.client.manifest
        name = next((d.class_name for d in manifest.durable_objects if d.binding == binding), None)
        if name is None:
            raise UsageError(
                f"no [[durable_objects]] binding {binding!r} in {manifest.path}",
                hint='declare it: [[durable_objects]] binding = "ROOM" class_name = "Room"',
            )
        return name, self.client._durable_classes[name]

    async def run(self, binding: str, oid: str, request: Request | None) -> Response:
        """A request (or, with None, the alarm) of one object, as its home runs it."""
        class_name, cls = self._class(binding)
        key = dp.record_key(self.client.manifest.name, class_name, oid)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:

            async def call(op: str, args: dict[str, Any]) -> Any:
                msg = _across_ipc(p.KVCall(0, next(self._call_ids), DURABLE_BINDING, op, args))
                record = self.records.get(key, dp.Record())
                try:
                    new, result = dp.apply_op(record, msg.op, msg.args)
                except dp.StorageError as err:
                    res = p.KVResult(msg.id, msg.call_id, False, None, err.kv_kind, err.message)
                else:
                    if new is not None:
                        self.records[key] = new
                    res = p.KVResult(msg.id, msg.call_id, True, result)
                return kv_value(_across_ipc(res))

            storage = DurableObjectStorage(call)
            instance = cls(DurableObjectState(DurableObjectId(oid), storage), self.client.env)
            if request is None:
                alarm = getattr(instance, "alarm", None)
                if alarm is not None:
                    await alarm()
                return Response(b"", status=204)
            resp = await instance.fetch(request)
            if not isinstance(resp, Response):
                raise TypeError(f"{class_name}.fetch returned {type(resp).__name__}, not Response")
            body = b"".join([c async for c in resp.iter_body()])
            return Response(body, status=resp.status, headers=resp.headers.items())

    async def stub_call(self, sub: Subrequest) -> Response:
        binding, _, rest = sub.durable.partition("\n")
        oid = rest.partition("\n")[0]
        edge = EdgeInfo(self.client.location, "", f"do-{next(self._call_ids)}")
        req = Request(sub.url, method=sub.method, headers=sub.headers, body=sub.body, edge=edge)
        return await self.run(binding, oid, req)


class TestClient:
    """Runs ``fetch(request, env, ctx)`` of the function in ``path`` in this process."""

    __test__ = False

    def __init__(
        self,
        path: str | Path = ".",
        *,
        vars: Mapping[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
        location: str = "test",
        fetch: FetchBackend | None = None,
    ) -> None:
        self.path = Path(path)
        self.manifest: Manifest = load_manifest(self.path)
        module = _import(self.path, self.manifest)
        try:
            self._durable_classes = durable_classes(
                module,
                sorted({d.class_name for d in self.manifest.durable_objects}),
                main=self.manifest.main,
            )
        except RuntimeError as err:
            raise ManifestError(str(err), path=str(self.path / self.manifest.main)) from None
        cdn = self.manifest.cdn
        if cdn is not None:
            url = next(o.url for o in self.manifest.origins if o.binding == cdn.origin)
            try:
                hooks = load_hooks(module, cdn.hooks(), main=self.manifest.main)
            except RuntimeError as err:
                raise ManifestError(str(err), path=str(self.path / self.manifest.main)) from None
            self._fn = cdn_handler(Origin(cdn.origin, url), hooks)
        else:
            self._fn = _handler(module, "fetch", self.path / self.manifest.main, required=True)
        self._scheduled = _handler(
            module,
            "scheduled",
            self.path / self.manifest.main,
            required=bool(self.manifest.triggers.crons),
        )
        self._queue_fn = _handler(
            module,
            "queue",
            self.path / self.manifest.main,
            required=bool(self.manifest.queues.consumers),
        )
        values: dict[str, Any] = dict(self.manifest.vars)
        values.update(vars or {})
        self._kv_host = _KVHost(self.manifest, location)
        self._queues = LocalQueues(
            self.manifest, home_for=self._home_for, now_ms=time.time_ns() // 1_000_000
        )
        self._queue_call_ids = itertools.count(1)
        self.kv = {
            ns.binding: MemoryKV._bound(self._kv_host, ns.binding)
            for ns in self.manifest.kv_namespaces
        }
        origins: dict[str, Any] = {
            o.binding: Origin(o.binding, o.url) for o in self.manifest.origins
        }
        origins.update(
            (d.binding, DurableObjectNamespace(d.binding, d.class_name))
            for d in self.manifest.durable_objects
        )
        origins.update(
            (q.binding, Queue(q.binding, self._queue_call)) for q in self.manifest.queues.producers
        )
        taken = set(self.manifest.vars) | set(self.kv) | set(origins)
        values.update(_checked_secrets(secrets or {}, taken))
        values.update(self.kv)
        values.update(origins)
        self.env = Env(values)
        self.location = location
        self._backend = fetch
        self._counter = 0
        # [[origins]]: this client is one location; its edge cache lives as long as the client.
        self.cache = CacheStore()
        self._durable = _DurableHost(self)

    async def fetch(
        self,
        path: str = "/",
        *,
        method: str = "GET",
        headers: HeadersInit = None,
        body: bytes | str = b"",
        client_location: str = "",
    ) -> TestResponse:
        """Call the function; returns the whole response (streamed bodies are collected)."""
        self._counter += 1
        rid = f"test-{self._counter}"
        url = path if "://" in path else f"http://{self.manifest.name}.localhost{path}"
        data = body.encode() if isinstance(body, str) else body
        req = Request(
            url,
            method=method,
            headers=headers,
            body=data,
            edge=EdgeInfo(self.location, client_location, rid),
        )
        outbound = Outbound()
        token = fetch_backend.set(self._subrequests(outbound, rid))
        request = self._kv_host.context(rid, req.headers.items())
        request_token = _REQUEST.set((self._kv_host, request))
        ctx = Context()
        try:
            resp = await self._fn(req, self.env, ctx)
            if not isinstance(resp, Response):
                raise TypeError(f"fetch returned {type(resp).__name__}, not edgefn.Response")
            chunks = [c async for c in resp.iter_body()]
            await ctx.drain(timeout_s=30)
        finally:
            fetch_backend.reset(token)
            _REQUEST.reset(request_token)
            await outbound.aclose()
        # As on a node, the function cannot set x-edgefn-* headers; the node adds those of host
        # services (the KV session token, the edge cache's status) after the function's.
        out_headers = {
            k: v for k, v in resp.headers.items() if not k.lower().startswith("x-edgefn-")
        }
        out_headers.update(request.response_headers)
        return TestResponse(resp.status, out_headers, b"".join(chunks), chunks)

    async def scheduled(
        self, cron: str | None = None, *, scheduled_time: int | None = None, attempt: int = 1
    ) -> None:
        """Run ``scheduled(event, env, ctx)`` once, as a cron tick would (``wait_until`` tasks
        included). ``cron`` defaults to the manifest's first; ``scheduled_time`` (ms since the
        epoch) to now."""
        if self._scheduled is None:
            raise UsageError(
                f"{self.path / self.manifest.main} defines no `async def scheduled(event, env, ctx)`",
                hint="add one (and [triggers] crons in edgefn.toml to run it on a schedule)",
            )
        crons = self.manifest.triggers.crons
        cron = cron if cron is not None else (crons[0] if crons else "* * * * *")
        problem = check_cron(cron)
        if problem is not None:
            raise UsageError(f"invalid cron {cron!r}: {problem}", hint="e.g. '*/5 * * * *'")
        when = scheduled_time if scheduled_time is not None else time.time_ns() // 1_000_000
        self._counter += 1
        rid = f"test-{self._counter}"
        outbound = Outbound()
        token = fetch_backend.set(self._subrequests(outbound, rid))
        request = self._kv_host.context(rid, [])
        request_token = _REQUEST.set((self._kv_host, request))
        ctx = Context()
        try:
            await self._scheduled(ScheduledEvent(cron, when, attempt), self.env, ctx)
            await ctx.drain(timeout_s=30)
        finally:
            fetch_backend.reset(token)
            _REQUEST.reset(request_token)
            await outbound.aclose()

    def run_scheduled(self, cron: str | None = None, **kwargs: Any) -> None:
        """Synchronous :meth:`scheduled`."""
        asyncio.run(self.scheduled(cron, **kwargs))

    def request(self, path: str = "/", **kwargs: Any) -> TestResponse:
        """Synchronous :meth:`fetch` (for plain pytest without an async plugin)."""
        return asyncio.run(self.fetch(path, **kwargs))

    def _subrequests(self, outbound: Outbound, request_id: str) -> FetchBackend:
        """The platform's subrequest rules, from the same code the node runs.

        Without a ``fetch=`` fake, subrequests go through the real ``Outbound`` (limits, the SSRF
        policy, DNS pinning, redirects). With a fake, ``Outbound.precheck`` runs the limit and
        every policy check that needs no DNS before the fake is called.
        """
        rules = SubrequestRules.of(self.manifest)
        fake = self._backend
        fetch_ids = itertools.count(1)

        async def faked(rid: str, call: p.FetchCall, rules: SubrequestRules) -> p.FetchResult:
            refusal = outbound.precheck(rid, call, rules)
            if refusal is not None:
                return refusal
            assert fake is not None
            sub = Subrequest(call.url, call.method, call.headers, call.body, call.timeout_ms)
            resp = await fake(sub)
            body = b"".join([c async for c in resp.iter_body()])
            return p.FetchResult(call.id, call.fetch_id, resp.status, resp.headers.items(), body)

        origins = OriginFetch(outbound, store=self.cache, direct=None if fake is None else faked)

        async def backend(sub: Subrequest) -> Response:
            if sub.durable:
                return await self._durable.stub_call(sub)
            call = p.FetchCall(
                0, next(fetch_ids), sub.url, sub.method, sub.headers, sub.body, sub.timeout_ms,
                sub.origin, sub.cache_op, sub.put_status, sub.put_headers, sub.ticket,
            )  # fmt: skip
            call = _across_ipc(call)
            if call.cache_op or call.origin:
                if call.cache_op and not call.origin:
                    got = origins.cache_api(self.manifest.name, request_id, call, rules)
                else:
                    got = await origins.fetch(self.manifest.name, request_id, call, rules)
                request = _REQUEST.get()
                if request is not None and call.cache_op in ("", "match", "lookup", "complete"):
                    record_cache_headers(request[1].response_headers, got.headers)
                return fetch_response(_across_ipc(got))
            if fake is None:
                return fetch_response(_across_ipc(await outbound.fetch(request_id, call, rules)))
            refusal = outbound.precheck(request_id, call, rules)
            if refusal is not None:
                return fetch_response(_across_ipc(refusal))
            return await fake(sub)

        return backend

    def _object_id(self, binding: str, name_or_id: str | DurableObjectId) -> str:
        if isinstance(name_or_id, DurableObjectId):
            return name_or_id.hex
        class_name, _ = self._durable._class(binding)
        return DurableObjectNamespace(binding, class_name).id_from_name(name_or_id).hex

    def durable_storage(self, binding: str, name_or_id: str | DurableObjectId) -> dict[str, Any]:
        """What an object (by name, or id) has stored (a copy)."""
        class_name, _ = self._durable._class(binding)
        oid = self._object_id(binding, name_or_id)
        record = self._durable.records.get(dp.record_key(self.manifest.name, class_name, oid))
        return dict(record.data) if record is not None else {}

    async def durable_alarm(self, binding: str, name_or_id: str | DurableObjectId) -> bool:
        """Ring an object's alarm now if it has one set (tests do not wait for its time); False
        if none was set. As on a node, the alarm is cleared once ``alarm()`` returned."""
        class_name, _ = self._durable._class(binding)
        oid = self._object_id(binding, name_or_id)
        key = dp.record_key(self.manifest.name, class_name, oid)
        record = self._durable.records.get(key)
        if record is None or not record.alarm_ms:
            return False
        due = record.alarm_ms
        await self._durable.run(binding, oid, None)
        current = self._durable.records[key]
        if current.alarm_ms == due:
            self._durable.records[key] = msgspec.structs.replace(current, alarm_ms=0)
        return True

    # -- queues --------------------------------------------------------------------------------
    @property
    def now_ms(self) -> int:
        """The queues' clock (ms since the epoch): the wall clock when the client was made, then
        moved only by :meth:`advance` and ``drain_queues(wait=True)``."""
        return self._queues.now_ms

    def advance(self, seconds: float) -> None:
        """Move the queues' clock forward (delayed sends and retries' back-off wait for it)."""
        if seconds < 0:
            raise UsageError(f"advance({seconds}): the clock only moves forward")
        self._queues.now_ms += round(seconds * 1000)

    async def drain_queues(
        self, *, wait: bool = False, batches_max: int = 10_000
    ) -> list[BatchOutcome]:
        """Deliver every due message of the consumed queues, batch after batch, until none is
        due (at most ``batches_max`` batches); with ``wait``, move the clock to each next due
        message until they are empty. Returns what each batch did."""
        return await self._queues.drain(self._invoke_queue, wait=wait, batches_max=batches_max)

    def run_queues(self, **kwargs: Any) -> list[BatchOutcome]:
        """Synchronous :meth:`drain_queues`."""
        return asyncio.run(self.drain_queues(**kwargs))

    def queue_messages(self, queue: str) -> list[QueuedMessage]:
        """The messages waiting in ``queue`` (not finished yet), in send order."""
        self._known_queue(queue)
        return self._queues.waiting(queue)

    def dead_letters(self, queue: str) -> list[QueuedMessage]:
        """``queue``'s messages that failed more than its ``max_retries`` times (moved to its
        ``dead_letter_queue``, or dropped without one), in the order they died."""
        self._known_queue(queue)
        return self._queues.dead_messages(queue)

    def _known_queue(self, queue: str) -> None:
        names = self._queues.names()
        if queue not in names:
            raise UsageError(
                f"{self.manifest.path} names no queue {queue!r} (it names {sorted(names)})",
                hint="a queue is named by [[queues.producers]] queue, [[queues.consumers]] "
                "queue or dead_letter_queue",
            )

    async def _home_for(self, namespace: str) -> Any:
        return (await self._kv_host._driver(namespace)).home

    async def _queue_call(self, op: str, args: dict[str, Any]) -> Any:
        """What a worker's producer binding does: a ``KVCall`` with binding ``=q``."""
        call = _across_ipc(p.KVCall(0, next(self._queue_call_ids), QUEUE_BINDING, op, args))
        return kv_value(_across_ipc(self._queues.send(call)))

    async def _invoke_queue(
        self,
        function: str,
        queue: str,
        batch: list[QueueMessage],
        attempts: dict[int, int],
        txn: QueueTxn,
    ) -> tuple[list[Decision] | None, str]:
        """``queue(batch, env, ctx)`` as a node invokes it in a worker: each message's decision,
        or None and why the batch failed."""
        assert self._queue_fn is not None  # a manifest with consumers requires the handler
        self._counter += 1
        rid = f"test-{self._counter}"
        url = f"http://{function}.localhost/__queue"
        body = batch_body(batch, attempts)
        msg = _across_ipc(p.Invoke(0, "QUEUE", url, [], body, self.location, "", rid, queue=queue))
        messages = decode_batch(msg.queue, msg.body)
        outbound = Outbound()
        token = fetch_backend.set(self._subrequests(outbound, rid))
        request_token = _REQUEST.set((self._kv_host, self._kv_host.context(rid, [])))
        running = _Batch(self._kv_host, txn)
        batch_token = _BATCH.set(running)
        ctx = Context()
        error = ""
        try:
            await self._queue_fn(messages, self.env, ctx)
        except Exception as err:
            error = f"{_error_kind(err)}: {type(err).__name__}: {err}"
            _log.warning("queue %r: the batch failed: %s", queue, error, exc_info=True)
        finally:
            running.txn = None
            await ctx.drain(timeout_s=30)
            fetch_backend.reset(token)
            _REQUEST.reset(request_token)
            _BATCH.reset(batch_token)
            await outbound.aclose()
        if error:
            return None, error
        answer = _across_ipc(p.Respond(0, 200, [], decisions_of(messages)))
        return batch_decisions(batch, answer.body)

    def purge_cache(
        self, *, tags: tuple[str, ...] = (), urls: tuple[str, ...] = (), everything: bool = False
    ) -> int:
        """Purge this client's edge cache as ``edgefn cache purge`` purges a planet's; returns
        how many stored responses were dropped."""
        return self.cache.purge(Purge(self.manifest.name, tuple(tags), tuple(urls), everything))


def _error_kind(err: Exception) -> str:
    """The worker's ``InvokeError`` kind for an exception a handler raised."""
    if isinstance(err, KVOutcomeUnknown):
        return "outcome_unknown"
    if isinstance(err, KVUnavailable):
        return "consistency_unavailable"
    return "exception"


def _across_ipc(msg: _M) -> _M:
    """``msg`` as the other side of a worker's socket decodes it (same codec, same limits)."""
    out = p.decode(p.encode(msg)[4:])
    assert isinstance(out, type(msg)), (type(out), type(msg))
    return out


def _import(path: Path, manifest: Manifest) -> ModuleType:
    main = path / manifest.main
    name = f"edgefn_test_{manifest.name.replace('-', '_')}_{os.getpid()}"
    spec = importlib.util.spec_from_file_location(name, main)
    if spec is None or spec.loader is None:
        raise ManifestError(f"cannot import {main}", path=str(main))
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path))
    return module


def _handler(module: ModuleType, name: str, main: Path, *, required: bool) -> Any:
    """The worker's own check (``handler_of``), as a ManifestError naming the file."""
    try:
        return handler_of(module, name, main=main.name, required=required)
    except RuntimeError as err:
        raise ManifestError(str(err), path=str(main), hint=f"add an async {name} handler") from None
