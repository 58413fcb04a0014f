"""``GET /v1/stats/{name}?window=5m`` (scope ``read``, the function's account or admin): a
function's figures from the rollups.

The answer groups the core's telemetry store (edgefn.observe.telemetry_store) by location (where
the request was answered) and client region, over the last ``window`` (default ``5m``, 10 s to
30 days): requests, by status class, error rate (5xx share), p50/p95/p99 latency, cold-start
rate, KV operations, subrequests and ``cpu_ms`` (the function's mean CPU time per request, as
its workers measured it; null without requests). It
also gives ``totals`` per location, ``by_client_region`` (every location's rows of one client
region merged: latency as the client region saw it, sketches merged, not percentiles averaged) and ``overflow_requests``: requests of keys that did not fit
in a node's bounded rollup (they count in no function's rows, so a non-zero figure says the
rows are incomplete). A store-less app (a test's control service) answers 503.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from edgefn.control.errors import ControlError
from edgefn.errors import UsageError
from edgefn.observe.telemetry_store import LocationStats, TelemetryStore, parse_window

__all__ = ["stats_endpoint"]


class StatsUnavailable(ControlError):
    status = 503
    code = "stats_unavailable"


def _totals(rows: list[LocationStats]) -> list[dict[str, object]]:
    by_location: dict[str, LocationStats] = {}
    for r in rows:
        total = by_location.setdefault(r.location, LocationStats(r.location, "*"))
        total.absorb(r)
    return [by_location[k].as_json() for k in sorted(by_location)]


def _by_client_region(rows: list[LocationStats]) -> list[dict[str, object]]:
    by_region: dict[str, LocationStats] = {}
    for r in rows:
        total = by_region.setdefault(r.client_region, LocationStats("*", r.client_region))
        total.absorb(r)
    return [by_region[k].as_json() for k in sorted(by_region)]


def stats_endpoint(
    store: TelemetryStore | None, owned: Callable[[Request, str], None]
) -> Callable[[Request], object]:
    """The route handler; ``owned(request, name)`` raises NotFound for a function never
    uploaded and 403 when the caller's account does not own it (admin: any)."""

    async def stats(request: Request) -> Response:
        name = request.path_params["name"]
        if store is None:
            raise StatsUnavailable(
                "this control service keeps no telemetry", hint="run the core with `edgefn core`"
            )
        owned(request, name)
        text = request.query_params.get("window", "5m")
        try:
            window_s = parse_window(text)
        except UsageError as err:
            raise ControlError(err.message, hint=err.hint) from None
        now_ms = time.time_ns() // 1_000_000
        since_ms = now_ms - window_s * 1000
        rows = store.stats(name, since_ms=since_ms)
        body = {
            "function": name,
            "window_s": window_s,
            "since_ms": since_ms,
            "until_ms": now_ms,
            "rows": [r.as_json() for r in rows],
            "totals": _totals(rows),
            "by_client_region": _by_client_region(rows),
            "overflow_requests": store.overflow_requests(since_ms=since_ms),
        }
        return JSONResponse(msgspec.to_builtins(body))

    return stats
