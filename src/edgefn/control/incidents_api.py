"""``/v1/incidents``: the core's incidents (edgefn.control.incidents_driver) over HTTP.

    GET  /v1/incidents                  read   ?state=open|acknowledged|resolved&limit=100
    POST /v1/incidents/{id}/ack         admin  open -> acknowledged (stops escalation)
    POST /v1/incidents/{id}/resolve     admin  open|acknowledged -> resolved

Incidents span functions and accounts (a location unreachable is everyone's), so changing one
is the planet operator's: ``admin``. Reading needs ``read``, like ``/v1/stats``; a reader who is
not an admin sees the connectivity incidents (everyone's) and the function incidents of its own
account's functions only. An unknown id
answers 404, a change the incident's state forbids 409, an app without incidents (a test's
control service) 503. Who acknowledged or resolved is the token's name and id.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from edgefn.control.auth import Principal
from edgefn.control.errors import Conflict, ControlError, NotFound
from edgefn.control.incidents_driver import IncidentsDriver
from edgefn.errors import IncidentError
from edgefn.observe.incidents import STATES

__all__ = ["incidents_endpoints"]

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
_LIMIT_MAX = 1000


class IncidentsUnavailable(ControlError):
    status = 503
    code = "incidents_unavailable"


def _need(driver: IncidentsDriver | None) -> IncidentsDriver:
    if driver is None:
        raise IncidentsUnavailable(
            "this control service keeps no incidents", hint="run the core with `edgefn core`"
        )
    return driver


def _incident_id(request: Request) -> int:
    raw = str(request.path_params["id"])
    if not raw.isdigit() or len(raw) > 12:
        raise NotFound(f"no incident {raw!r}", hint="incident ids are numbers: GET /v1/incidents")
    return int(raw)


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= _LIMIT_MAX:
        raise ControlError(
            f"limit={text!r} is not a number from 1 to {_LIMIT_MAX}", hint="e.g. ?limit=100"
        )
    return int(text)


def incidents_endpoints(
    driver: IncidentsDriver | None,
    principal: Callable[[Request], Principal],
    may_see: Callable[[Principal, str], bool] = lambda _p, _f: True,
) -> tuple[Handler, Handler, Handler]:
    """The handlers of list, ack and resolve (api.py declares their routes and scopes).

    ``may_see(principal, function)``: whether the caller may see that function's incidents."""

    async def list_incidents(request: Request) -> Response:
        d = _need(driver)
        state = request.query_params.get("state") or None
        if state is not None and state not in STATES:
            raise ControlError(f"state={state!r} is not one of {', '.join(STATES)}")
        limit = _limit(request.query_params.get("limit", "100"))
        who = principal(request)
        found = [
            i
            for i in d.store.recent(state=state, limit=_LIMIT_MAX)
            if i.kind != "function" or may_see(who, i.function)
        ][:limit]
        body = {"incidents": [i.as_json() for i in found]}
        return JSONResponse(msgspec.to_builtins(body))

    def change(op: str) -> Handler:
        async def handler(request: Request) -> Response:
            d = _need(driver)
            incident_id = _incident_id(request)
            who = principal(request)
            by = f"{who.name} ({who.token_id})"
            try:
                if op == "ack":
                    inc = d.acknowledge(incident_id, by=by)
                else:
                    inc = d.resolve(incident_id, by=by)
            except IncidentError as err:
                cls = NotFound if err.not_found else Conflict
                raise cls(err.message, hint=err.hint) from None
            return JSONResponse(msgspec.to_builtins(inc.as_json()))

        return handler

    return list_incidents, change("ack"), change("resolve")
