"""What an answered request leaves behind on its node: the per-version health figures the
deploy gates read (:class:`~edgefn.observe.version_stats.VersionStatsTracker`), one entry in the
telemetry rollup, a live-tail event when a session watches the function, and the access log line.

The request path calls :meth:`RequestRecorder.answered` once per request, whatever its outcome
(served, failed, refused before a function was found); a forward's relayed answer is counted by
the node that produced it, not here.
"""

from __future__ import annotations

import time

from edgefn.edge.listener import Scope
from edgefn.edge.request_context import RequestContext
from edgefn.edge.tail import TailPublisher
from edgefn.observe import JsonLog
from edgefn.observe.rollup import Accumulator, client_cell, client_region
from edgefn.observe.tail import TailRequest
from edgefn.observe.version_stats import VersionStatsTracker

__all__ = ["RequestRecorder"]

_CLIENT_LOCATION = b"x-edgefn-client-location"


class RequestRecorder:
    """Records answered requests. ``telemetry`` None records no rollup, ``tail`` None no events."""

    def __init__(
        self,
        *,
        log: JsonLog,
        version_stats: VersionStatsTracker,
        requests: dict[str, RequestContext],
        access_log: bool,
        telemetry: Accumulator | None,
        tail: TailPublisher | None,
    ) -> None:
        self.log = log
        self.version_stats = version_stats
        self._requests = requests
        self.access_log = access_log
        self.telemetry = telemetry
        self.tail = tail

    def answered(
        self,
        rid: str,
        scope: Scope,
        name: str,
        version: str,
        status: int,
        t0: float,
        cold: bool,
        *,
        relayed: bool = False,
        store_fault: bool = False,
    ) -> None:
        """``store_fault``: the replicated store failed the request (503 ``consistency_unavailable``
        or ``outcome_unknown``); it is logged, counted and tailed like any answer, but not held
        against the version by the deploy gates (``version_stats``): a core server's leader dying
        during a deploy is not the new code's fault."""
        duration_ms = (time.perf_counter() - t0) * 1000
        if name:
            if not store_fault:
                self.version_stats.record(name, version, ok=status < 500, latency_ms=duration_ms)
            # A relayed forward's answer is counted and tailed by the node that produced it.
            if not relayed:
                telemetry = self.telemetry
                # Only for a function a tail session watches: the hot path pays one lookup.
                tail = self.tail if self.tail is not None and self.tail.watching(name) else None
                # The client's position is read only when something records it.
                client = (
                    _client_location(scope) if telemetry is not None or tail is not None else ""
                )
                if telemetry is not None:
                    self._record(telemetry, rid, name, version, status, duration_ms, cold, client)
                if tail is not None:
                    tail.offer(
                        TailRequest(
                            request_id=rid,
                            ts_ms=tail.stamp(),
                            function=name,
                            version=version,
                            method=scope["method"],
                            path=scope["path"],
                            status=status,
                            duration_ms=duration_ms,
                            cold=cold,
                            client=client,
                        )
                    )
        if self.access_log:
            self.log.emit(
                "access",
                request_id=rid,
                method=scope["method"],
                path=scope["path"],
                function=name,
                version=version,
                status=status,
                cold=cold,
                duration_ms=round(duration_ms, 3),
            )

    def _record(
        self,
        telemetry: Accumulator,
        rid: str,
        name: str,
        version: str,
        status: int,
        duration_ms: float,
        cold: bool,
        client: str,
    ) -> None:
        """One answered request into the telemetry rollup.

        The client's position is the header as it arrived: the entry's signed ``lat,lon``, or
        what a direct client said about itself (which the traffic driver signs as is, too).
        """
        ctx = self._requests.get(rid)
        kv, sub, cpu = (ctx.kv_ops, ctx.subrequests, ctx.cpu_us) if ctx is not None else (0, 0, 0)
        telemetry.record(
            name,
            version,
            status,
            client_region(client),
            duration_ms,
            cold=cold,
            kv_ops=kv,
            subrequests=sub,
            # A worker's figure is not trusted beyond this: never more than the wall time.
            cpu_us=max(0, min(cpu, round(duration_ms * 1000))),
            # Where the client is, finer than its region, for smart placement.
            demand_cell=client_cell(client),
        )


def _client_location(scope: Scope) -> str:
    for k, v in scope["headers"]:
        if k == _CLIENT_LOCATION:
            return str(v.decode("latin-1"))
    return ""
