"""Running one cron tick of a function on this node: ``scheduled(event, env, ctx)`` in a worker.

The tick travels as an ``Invoke`` with ``cron`` set, through the same sandbox pool, limits
(``cpu_ms``, ``memory_mb``, ``timeout_ms``), host callbacks (KV, subrequests, logs) and
``ctx.wait_until`` rules as a request; there is no client, so the outcome is logged (a
``scheduled`` record in ``node.log``) and counted (``edgefn_scheduled_runs_total``) instead of
answered. Which node runs a tick is decided elsewhere (:mod:`edgefn.edge.cron_policy`); this
module only runs it, and ``edgefn dev --test-scheduled`` calls it directly.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from edgefn.bundle.crons import check_cron
from edgefn.edge.functions import ActiveFunction, ActiveVersion, FunctionTable
from edgefn.edge.listener import Scope, Send
from edgefn.edge.request_context import RequestContext
from edgefn.edge.request_io import decode_headers, respond
from edgefn.observe import JsonLog, NodeMetrics
from edgefn.runtime import protocol as p
from edgefn.runtime.sandbox import BACKGROUND_MAX_S, InvokeFailed, SandboxPool

__all__ = ["TEST_PATH", "ScheduledOutcome", "ScheduledRunner", "serve_test_scheduled"]


@dataclass(frozen=True, slots=True)
class ScheduledOutcome:
    """How a tick's run ended: ``outcome`` is ``ok`` or an error kind of the error table."""

    function: str
    cron: str
    scheduled_ms: int
    attempt: int
    outcome: str
    request_id: str
    version: str = ""
    duration_ms: float = 0.0
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


class ScheduledRunner:
    """Runs ticks on one node's pool; ``requests`` and ``release`` are the node's registry of
    in-flight invocations (the workers' KV and subrequest callbacks look them up there)."""

    def __init__(
        self,
        *,
        location: str,
        table: FunctionTable,
        pool: SandboxPool,
        log: JsonLog,
        metrics: NodeMetrics,
        requests: dict[str, RequestContext],
        release: Callable[[str], None],
        seed: int = 0,
    ) -> None:
        self.location = location
        self.table = table
        self.pool = pool
        self.log = log
        self.metrics = metrics
        self._requests = requests
        self._release = release
        self._rng = random.Random(seed)

    def version_for(self, function: str, cron: str) -> ActiveVersion | None:
        """An active version of ``function`` that declares ``cron`` (by weight), if any."""
        fn = self.table.functions.get(function)
        if fn is None:
            return None
        versions = [v for v in fn.versions if cron in v.manifest.triggers.crons]
        if not versions:
            return None
        return ActiveFunction(function, tuple(versions)).pick(self._rng)

    async def run(
        self,
        function: str,
        cron: str,
        scheduled_ms: int,
        *,
        attempt: int = 1,
        any_cron: bool = False,
    ) -> ScheduledOutcome:
        """Run the tick. ``any_cron``: ``cron`` need not be one the manifest declares (the dev
        server's test URL, like wrangler's, fires any expression)."""
        t0 = time.perf_counter()
        rid = os.urandom(8).hex()
        active = self.version_for(function, cron)
        if active is None and any_cron and (fn := self.table.functions.get(function)):
            active = fn.versions[0]
        if active is None:
            why = "not active here" if function not in self.table.functions else "no such cron"
            kind = "no_such_function" if function not in self.table.functions else "no_such_cron"
            return self._done(function, cron, scheduled_ms, attempt, kind, rid, "", t0, why)
        outcome, message = await self._invoke(active, cron, scheduled_ms, attempt, rid)
        return self._done(
            function, cron, scheduled_ms, attempt, outcome, rid, active.version, t0, message
        )

    async def _invoke(
        self, active: ActiveVersion, cron: str, scheduled_ms: int, attempt: int, rid: str
    ) -> tuple[str, str]:
        spec, manifest = active.spec, active.manifest
        url = f"http://{spec.function}.localhost/__scheduled"
        msg = p.Invoke(
            0, "SCHEDULED", url, [], b"", self.location, "", rid, False, cron, scheduled_ms, attempt
        )
        self._requests[rid] = RequestContext(
            rid, spec.function, active.version, spec.key, manifest, []
        )
        try:
            inv = await self.pool.invoke(spec.key, msg, timeout_ms=manifest.limits.timeout_ms)
        except InvokeFailed as err:
            self._requests.pop(rid, None)
            return err.kind, err.message
        try:
            await inv.start()
            return "ok", ""
        except InvokeFailed as err:
            return err.kind, err.message
        finally:
            inv.finish()
            if inv.background:
                asyncio.get_running_loop().call_later(BACKGROUND_MAX_S, self._release, rid)
            else:
                self._release(rid)

    def _done(
        self,
        function: str,
        cron: str,
        scheduled_ms: int,
        attempt: int,
        outcome: str,
        rid: str,
        version: str,
        t0: float,
        message: str,
    ) -> ScheduledOutcome:
        ms = round((time.perf_counter() - t0) * 1000, 3)
        self.log.emit(
            "scheduled",
            request_id=rid,
            function=function,
            version=version,
            cron=cron,
            scheduled_time=scheduled_ms,
            attempt=attempt,
            outcome=outcome,
            duration_ms=ms,
            message=message[:2048] or None,
        )
        self.metrics.scheduled_runs.labels(self.location, function, outcome).inc()
        return ScheduledOutcome(
            function, cron, scheduled_ms, attempt, outcome, rid, version, ms, message
        )


TEST_PATH = "/__scheduled"


async def serve_test_scheduled(runner: ScheduledRunner, scope: Scope, send: Send) -> None:
    """``GET /__scheduled?cron=<expr>&time=<ms>`` on ``edgefn dev --test-scheduled``: fire one tick
    of the function the Host names (the dev function by default) and answer how it went.

    ``cron`` defaults to the manifest's first, ``time`` to now; any valid expression may be given.
    200 ``{"outcome": "ok", ...}``; 500 with the error kind when the handler failed; 400 for a bad
    query, 404 when no function is served.
    """
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    host = next((v for k, v in decode_headers(scope["headers"]) if k == "host"), "")
    fn = runner.table.resolve(host, "/")
    if fn is None:
        await respond(send, 404, {"error": "no_such_function", "host": host})
        return
    crons = fn.versions[0].manifest.triggers.crons
    cron = query.get("cron", [crons[0] if crons else "* * * * *"])[0]
    problem = check_cron(cron)
    time_text = query.get("time", [""])[0]
    if problem is None and time_text and not time_text.isdigit():
        problem = f"time={time_text!r} is not milliseconds since the epoch"
    if problem is not None:
        hint = "e.g. /__scheduled?cron=*/5+*+*+*+* (time= is optional, in ms since the epoch)"
        await respond(send, 400, {"error": "bad_request", "message": problem, "hint": hint})
        return
    when = int(time_text) if time_text else time.time_ns() // 1_000_000
    out = await runner.run(fn.name, cron, when, any_cron=True)
    body = {
        "outcome": out.outcome,
        "function": out.function,
        "version": out.version,
        "cron": out.cron,
        "scheduled_time": out.scheduled_ms,
        "request_id": out.request_id,
        "duration_ms": out.duration_ms,
    }
    if not out.ok:
        body["error"] = out.outcome  # the message is in the log, like a request's
    await respond(send, 200 if out.ok else 500, body)
