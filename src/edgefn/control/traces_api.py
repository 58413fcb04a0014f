"""``GET /v1/traces?function=NAME`` and ``GET /v1/traces/{trace_id}`` (scope ``read``).

The list needs ``function``: the function's account or admin (the same check as
``/v1/stats``), at most ``limit`` (default 20, at most 200) of its latest kept traces. A trace
may cross functions of several accounts (a subrequest to another function joins its trace), so
``/v1/traces/{id}`` shows a caller only the spans of the functions their account owns (admin:
all), and answers 404 when that leaves none, the same answer as for a trace that does not exist:
another account cannot even learn that a trace id is known. A store-less app answers 503.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from edgefn.control.errors import ControlError, NotFound
from edgefn.errors import EdgefnError
from edgefn.observe.span_store import SpanStore

__all__ = ["traces_endpoints"]

_TRACE_ID = re.compile(r"[0-9a-f]{32}")
LIMIT_MAX = 200


class TracesUnavailable(ControlError):
    status = 503
    code = "traces_unavailable"


def traces_endpoints(
    store: SpanStore | None, owned: Callable[[Request, str], None]
) -> tuple[Callable[[Request], object], Callable[[Request], object]]:
    """(list, one trace) route handlers; ``owned(request, name)`` raises unless the caller's
    account owns ``name`` (admin: any)."""

    def _store() -> SpanStore:
        if store is None:
            raise TracesUnavailable(
                "this control service keeps no traces", hint="run the core with `edgefn core`"
            )
        return store

    async def listing(request: Request) -> Response:
        spans = _store()
        name = request.query_params.get("function", "")
        if not name:
            raise ControlError(
                "query parameter 'function' is required", hint="GET /v1/traces?function=NAME"
            )
        owned(request, name)
        raw = request.query_params.get("limit", "20")
        if not raw.isdigit() or not 1 <= int(raw) <= LIMIT_MAX:
            raise ControlError(f"limit {raw!r} is out of range", hint=f"use 1 to {LIMIT_MAX}")
        traces = [t.as_json() for t in spans.recent(name, limit=int(raw))]
        return JSONResponse({"function": name, "traces": traces})

    async def one(request: Request) -> Response:
        spans = _store()
        trace_id = request.path_params["trace_id"].lower()
        if not _TRACE_ID.fullmatch(trace_id):
            raise ControlError(
                f"trace id {trace_id!r} is not 32 hex digits",
                hint="take it from the x-edgefn-trace-id response header or `edgefn traces NAME`",
            )
        visible = {f for f in spans.functions_of(trace_id) if _may_read(request, f)}
        records = spans.trace(trace_id, functions=visible) if visible else []
        if not records:
            raise NotFound(
                f"no trace {trace_id} of a function you can read",
                hint="traces are sampled: errors and slow requests are always kept, "
                "others with the probability shown by `edgefn traces NAME`",
            )
        out = [{**msgspec.structs.asdict(s), "duration_ms": s.duration_ms} for s in records]
        return JSONResponse({"trace_id": trace_id, "spans": out})

    def _may_read(request: Request, function: str) -> bool:
        try:
            owned(request, function)
        except EdgefnError:
            return False
        return True

    return listing, one
