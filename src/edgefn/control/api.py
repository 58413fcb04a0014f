"""The control HTTP API: a thin starlette app over ``ControlService``; schema at /openapi.json.

Endpoints (JSON unless noted; errors are ``{"error": code, "message": ..., "hint": ...}``), with
the scope each one needs::

    POST   /v1/functions/{name}/versions     deploy:{name}  bundle bytes; x-edgefn-signature
                                                            (+ x-edgefn-key-id: signer's key id)
    GET    /v1/functions                     read
    GET    /v1/functions/{name}/versions     read
    POST   /v1/functions/{name}/deployments  deploy:{name}  {"version": id, "strategy": ...}
    GET    /v1/functions/{name}/deployments  read
    POST   /v1/functions/{name}/rollback     deploy:{name}  {"to": id?}
    POST   /v1/functions/{name}/cache/purge  deploy:{name}  {"tags": [...], "urls": [...],
                                                            "everything": bool} (edge cache)
    POST   /v1/functions/{name}/placement  deploy:{name}  {}: re-plan a smart function now and
                                                            deploy the change (edgefn plan --apply)
    PUT    /v1/functions/{name}/secrets/{secret}  deploy:{name}  {"value": "..."} (5 KiB max; never echoed)
    GET    /v1/functions/{name}/secrets   deploy:{name}  names and updated_ms only
    DELETE /v1/functions/{name}/secrets/{secret}  deploy:{name}
    GET    /v1/status                        read
    GET    /v1/bundles/{sha256}              read           application/gzip
    GET    /v1/whoami                        read
    POST   /v1/tokens                        admin          {"name", "scopes": [...], "account"?}
    GET    /v1/tokens                        admin
    DELETE /v1/tokens/{token_id}             admin
    POST   /v1/keys                          admin          {"public_key", "account"?, "name"?}
    GET    /v1/keys                          read
    GET    /v1/audit                         admin          ?limit=n
    GET    /v1/kv                            read
    GET    /v1/stats/{name}                  read           ?window=5m (edgefn.control.stats_api)
    GET    /v1/metrics                       read           Prometheus text format; admin: every
                                                            function and the locations, else the
                                                            account's functions (control.metrics_api)
    POST   /v1/kv/{namespace}/shares         deploy:*       {"account"} (owner or admin)
    GET    /v1/traces                        read           ?function=NAME&limit=20 (control.traces_api)
    GET    /v1/traces/{trace_id}             read           the spans the caller may read
    GET    /v1/incidents                     read           ?state=open&limit=100 (control.incidents_api)
    POST   /v1/incidents/{id}/ack            admin
    POST   /v1/incidents/{id}/resolve        admin
    GET    /v1/tail/{name}                   read           application/x-ndjson, streamed
                                                            ?location=L (repeatable)&status=5xx
                                                            &search=TEXT&sample=0.1
    GET    /v1/queues                        read           the account's queues (control.queues_api)
    GET    /v1/queues/{queue}/messages       read           ?limit=20: unfinished, oldest first
    POST   /v1/queues/{queue}/messages       deploy:*       {"messages": [{"body", "key"?, ...}]}
    GET    /v1/queues/{queue}/dlq            read           ?limit=20: its dead letters
    POST   /v1/queues/{queue}/dlq/replay     deploy:*       {"limit"?}: back into the queue
    GET    /openapi.json                     public
    GET    /dashboard, /dashboard/{asset}    public         the dashboard page and its assets
    GET    /v1/dashboard                     read           its map and rollouts (edgefn.control.dashboard)

Authentication. Every route is a ``ScopedRoute`` that declares the scope it needs (a string, or a
function of the path parameters). ``_AuthMiddleware`` matches each request to its route before
the app sees it and answers ``401 {"error": "unauthorized"}`` without a valid
``Authorization: Bearer edgefn_<id>_<secret>`` and ``403 {"error": "forbidden", "scope": needed}``
when the token lacks the scope. Deny by default: a route added without a declared scope answers
403 to everyone (and ``tests/integration/control`` fails). Scope rules: ``edgefn.control.auth``.
A new route on one function declares ``need=function_deploy`` and reads the caller with
``_principal(request)`` (token id, name, account, scopes) for ownership checks and the audit log.

Trust model: an upload carries its signature (``x-edgefn-signature``, base64 Ed25519 over the
bundle sha256) and the signer's key id; it must verify under a deployer key registered for the
caller's account (``POST /v1/keys``), so neither a leaked token nor a leaked key alone deploys code.

Secret routes answer with names, update times, the secrets generation and the deployment they
started; never a value (not even in errors). They need ``deploy:<function>`` (listing names too) and
the function's account, like a deploy.

Uploads are read with a hard cap (``max_upload_bytes``, default 10 MiB + 64 KiB of headroom) and
refused with 413 beyond it, before any parsing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from edgefn.bundle.build import DEFAULT_MAX_BUNDLE_BYTES
from edgefn.bus.cache_purge import decode_purge
from edgefn.control.access import AccessService
from edgefn.control.auth import ADMIN, PUBLIC, READ, Principal, deploy_scope, grants
from edgefn.control.dashboard import dashboard_handlers
from edgefn.control.errors import ControlError, NotFound, TooLarge
from edgefn.control.events import STRATEGIES
from edgefn.control.incidents_api import incidents_endpoints
from edgefn.control.incidents_driver import IncidentsDriver
from edgefn.control.metrics_api import metrics_endpoint
from edgefn.control.openapi import openapi_document
from edgefn.control.queues_api import QueueAdmin, queue_endpoints
from edgefn.control.service import ControlService
from edgefn.control.stats_api import stats_endpoint
from edgefn.control.tail import TailHub
from edgefn.control.traces_api import traces_endpoints
from edgefn.errors import BundleError, ConfigError, EdgefnError, UsageError
from edgefn.observe.span_store import SpanStore
from edgefn.observe.tail import SEARCH_MAX, parse_sample, parse_status_class
from edgefn.observe.telemetry_store import TelemetryStore

__all__ = ["KEY_ID_HEADER", "SIGNATURE_HEADER", "ScopedRoute", "create_app", "function_deploy"]

SIGNATURE_HEADER: Final = "x-edgefn-signature"
KEY_ID_HEADER: Final = "x-edgefn-key-id"
PRINCIPAL_SCOPE_KEY: Final = "edgefn.principal"
_MAX_JSON_BYTES: Final = 64 * 1024
# A 5 KiB value JSON-escaped as \uXXXX is at most 30 KiB; anything larger is refused unread.
_MAX_SECRET_BODY_BYTES: Final = 32 * 1024

Need = str | Callable[[Mapping[str, Any]], str]


class ScopedRoute(Route):
    """A route that declares the scope a caller needs (``PUBLIC`` for none)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], *, method: str, need: Need) -> None:
        super().__init__(path, endpoint, methods=[method])
        self.need = need

    def needed(self, path_params: Mapping[str, Any]) -> str:
        return self.need(path_params) if callable(self.need) else self.need


def function_deploy(path_params: Mapping[str, Any]) -> str:
    """The need of a route on one function: ``deploy:<name>`` (``deploy:*`` and admin cover it)."""
    return deploy_scope(str(path_params["name"]))


def _error(
    status: int, code: str, message: str, hint: str = "", extra: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"error": code, "message": message, "hint": hint, **(extra or {})}
    return JSONResponse(body, status_code=status)


def _from_exception(err: EdgefnError) -> JSONResponse:
    if isinstance(err, ControlError):
        return _error(err.status, err.code, err.message, err.hint, err.extra)
    if isinstance(err, BundleError | ConfigError):
        return _error(400, "bad_bundle", err.message, err.hint)
    if isinstance(err, UsageError):
        return _error(400, "bad_request", err.message, err.hint)
    return _error(500, "internal", err.message, err.hint)


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(msgspec.to_builtins(data), status_code=status)


async def _read_capped(request: Request, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _decode_object(raw: bytes | None, allowed: tuple[str, ...]) -> dict[str, Any]:
    if raw is None:
        raise TooLarge(
            f"request body over {_MAX_JSON_BYTES} bytes", hint="send a smaller JSON object"
        )
    try:
        body = msgspec.json.decode(raw or b"{}")
    except msgspec.DecodeError as err:
        raise ControlError(f"request body is not JSON: {err}", hint="send a JSON object") from None
    if not isinstance(body, dict):
        raise ControlError("request body must be a JSON object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ControlError(f"unknown field(s) {unknown}", hint=f"allowed: {list(allowed)}")
    return body


async def _json_body(request: Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    body = _decode_object(await _read_capped(request, _MAX_JSON_BYTES), allowed)
    for key, value in body.items():
        if value is not None and not isinstance(value, str):
            raise ControlError(f"field {key!r} must be a string")
    return body


class _AuthMiddleware:
    """Authenticate and authorise every HTTP request against the scope its route declares."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute], access: AccessService) -> None:
        self.app, self.routes, self.access = app, routes, access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route, params = self._match(scope)
        if route is None:  # no such path or method: the router answers 404/405 (JSON)
            await self.app(scope, receive, send)
            return
        response = await self._check(scope, route, params)
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _match(self, scope: Scope) -> tuple[BaseRoute | None, Mapping[str, Any]]:
        for route in self.routes:
            match, child = route.matches(scope)
            if match == Match.FULL:
                return route, child.get("path_params", {})
        return None, {}

    async def _check(
        self, scope: Scope, route: BaseRoute, params: Mapping[str, Any]
    ) -> Response | None:
        if not isinstance(route, ScopedRoute):
            return _error(
                403,
                "forbidden",
                "this route declares no scope (deny by default)",
                "declare one with ScopedRoute(need=...)",
                {"scope": ADMIN},
            )
        needed = route.needed(params)
        if needed == PUBLIC:
            return None
        headers = dict(scope["headers"])
        raw = headers.get(b"authorization")
        try:
            principal = await self.access.authenticate(raw.decode("latin-1") if raw else None)
        except ControlError as err:
            return _from_exception(err)
        if not grants(principal.scopes, needed):
            return _error(
                403,
                "forbidden",
                f"token {principal.token_id} ({principal.name!r}) lacks scope {needed!r}",
                f"create a token with --scope {needed} (or admin)",
                {"scope": needed},
            )
        scope[PRINCIPAL_SCOPE_KEY] = principal
        return None


def _principal(request: Request) -> Principal:
    principal = request.scope.get(PRINCIPAL_SCOPE_KEY)
    assert isinstance(principal, Principal), "a mutating route must declare a scope"
    return principal


def _secret_value(raw: bytes) -> str:
    """The ``value`` of a secret PUT body; errors name the problem, never the content."""
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise ControlError(
            "request body is not JSON", hint='send {"value": "..."} as JSON'
        ) from None
    if not isinstance(body, dict) or set(body) != {"value"}:
        raise ControlError(
            'request body must be a JSON object with exactly one field, "value"',
            hint='send {"value": "..."}',
        )
    value = body["value"]
    if not isinstance(value, str):
        raise ControlError('field "value" must be a string', hint="send the secret as text")
    return value


def _tail_filters(request: Request, known: Sequence[str]) -> dict[str, Any]:
    """The filters of ``GET /v1/tail/{name}``; a clear 400 for any bad one."""
    q = request.query_params
    unknown = sorted(set(q) - {"location", "status", "search", "sample"})
    if unknown:
        raise UsageError(
            f"unknown query parameter(s) {unknown}", hint="use location, status, search, sample"
        )
    locations = tuple(dict.fromkeys(q.getlist("location")))
    strangers = [loc for loc in locations if loc not in known]
    if strangers:
        raise UsageError(
            f"unknown location(s) {strangers}", hint=f"locations: {', '.join(known) or 'none yet'}"
        )
    search = q.get("search", "")
    if len(search) > SEARCH_MAX:
        raise UsageError(f"search text over {SEARCH_MAX} characters", hint="search a shorter text")
    return {
        "status_class": parse_status_class(q.get("status", "")),
        "locations": locations,
        "search": search,
        "sample": parse_sample(q.get("sample", "1")),
    }


def tail_route(service: ControlService, hub: TailHub) -> ScopedRoute:
    """``GET /v1/tail/{name}``: the function's request events from every location, as NDJSON."""

    async def tail(request: Request) -> Response:
        name = request.path_params["name"]
        if service.registry().get_function(name) is None:
            raise NotFound(f"unknown function {name!r}", hint="GET /v1/functions lists them")
        # Request paths and console lines are the function's users' data: its account only.
        service.check_owner(name, _principal(request))
        known = [str(loc["location"]) for loc in service.status()["locations"]]
        stream = await hub.open(name, **_tail_filters(request, known))

        async def body() -> Any:
            try:
                async for line in hub.lines(stream):
                    yield line
            finally:  # the client left (or the server stops): this runs cancelled, so no await
                hub.close_soon(stream)

        return StreamingResponse(body(), media_type="application/x-ndjson")

    return ScopedRoute("/v1/tail/{name}", tail, method="GET", need=READ)


def dashboard_routes(service: ControlService) -> list[ScopedRoute]:
    """The dashboard (docs/design/0022-dashboard.md): the page is public, its data needs ``read``."""
    page, asset, view = dashboard_handlers(service, _principal)
    return [
        ScopedRoute("/dashboard", page, method="GET", need=PUBLIC),
        ScopedRoute("/dashboard/{asset}", asset, method="GET", need=PUBLIC),
        ScopedRoute("/v1/dashboard", view, method="GET", need=READ),
    ]


def _incident_routes(
    incidents: IncidentsDriver | None, service: ControlService
) -> list[ScopedRoute]:
    def may_see(principal: Principal, function: str) -> bool:
        owner = service.registry().owner(function)
        return ADMIN in principal.scopes or owner == principal.account

    listing, ack, resolve = incidents_endpoints(incidents, _principal, may_see)
    return [
        ScopedRoute("/v1/incidents", listing, method="GET", need=READ),
        ScopedRoute("/v1/incidents/{id}/ack", ack, method="POST", need=ADMIN),
        ScopedRoute("/v1/incidents/{id}/resolve", resolve, method="POST", need=ADMIN),
    ]


def _queue_routes(service: ControlService) -> list[ScopedRoute]:
    listing, peek, send, dlq, replay = queue_endpoints(QueueAdmin(service), _principal)
    return [
        ScopedRoute("/v1/queues", listing, method="GET", need=READ),
        ScopedRoute("/v1/queues/{queue}/messages", peek, method="GET", need=READ),
        ScopedRoute("/v1/queues/{queue}/messages", send, method="POST", need="deploy:*"),
        ScopedRoute("/v1/queues/{queue}/dlq", dlq, method="GET", need=READ),
        ScopedRoute("/v1/queues/{queue}/dlq/replay", replay, method="POST", need="deploy:*"),
    ]


def _trace_routes(
    spans: SpanStore | None, owned: Callable[[Request, str], None]
) -> list[ScopedRoute]:
    listing, one = traces_endpoints(spans, owned)
    return [
        ScopedRoute("/v1/traces", listing, method="GET", need=READ),
        ScopedRoute("/v1/traces/{trace_id}", one, method="GET", need=READ),
    ]


def create_app(
    service: ControlService,
    *,
    max_upload_bytes: int = DEFAULT_MAX_BUNDLE_BYTES + 64 * 1024,
    telemetry: TelemetryStore | None = None,
    tail: TailHub | None = None,
    incidents: IncidentsDriver | None = None,
    spans: SpanStore | None = None,
) -> Starlette:
    """The API app for ``service`` (which the caller starts and stops).

    ``telemetry`` is the core's rollup store that ``/v1/stats`` and ``/v1/metrics`` read (None:
    they answer 503); ``tail`` serves ``/v1/tail``, by default a :class:`TailHub` on the service's NATS
    connection. ``incidents`` serves ``/v1/incidents`` (None: those routes answer 503);
    ``spans`` is the span store ``/v1/traces`` reads (None: 503).
    """

    async def upload(request: Request) -> Response:
        name = request.path_params["name"]
        signature = request.headers.get(SIGNATURE_HEADER)
        if not signature:
            return _error(400, "missing_signature", f"header {SIGNATURE_HEADER} is required",
                          "sign the bundle's sha256 with your key (edgefn deploy does this)")  # fmt: skip
        data = await _read_capped(request, max_upload_bytes)
        if data is None:
            return _error(413, "too_large", f"bundle over {max_upload_bytes} bytes",
                          "remove large files from the function directory")  # fmt: skip
        key_id = request.headers.get(KEY_ID_HEADER) or None
        info = await service.upload(
            name, data, signature, principal=_principal(request), key_id=key_id
        )
        return _json(info, 201)

    def _visible(request: Request, account: str, shared: tuple[str, ...] = ()) -> bool:
        """Whether the caller may see a record of ``account`` (or shared with it): its own
        account's, and everything for an admin."""
        principal = _principal(request)
        return ADMIN in principal.scopes or principal.account in (account, *shared)

    async def list_functions(request: Request) -> Response:
        out = []
        for record in service.registry().functions():
            if not _visible(request, record.account):
                continue
            status = service.function_status(record.name)
            out.append(
                {
                    "name": record.name,
                    "created_ms": record.created_ms,
                    "versions": len(record.versions),
                    "active": status.active if status else None,
                    "deployment": status.deployment if status else None,
                    "converged": status.converged if status else None,
                }
            )
        return _json({"functions": out})

    def _known(name: str) -> None:
        if service.registry().get_function(name) is None:
            raise NotFound(f"unknown function {name!r}", hint="GET /v1/functions lists them")

    def _owned(request: Request, name: str) -> None:
        """Known, and the caller's account owns it (admin: any): what its users sent and saw."""
        _known(name)
        service.check_owner(name, _principal(request))

    async def list_versions(request: Request) -> Response:
        name = request.path_params["name"]
        _owned(request, name)
        status = service.function_status(name)
        active = status.active.version_id if status and status.active else None
        versions = [
            {**msgspec.to_builtins(v), "active": v.version_id == active}
            for v in service.registry().versions(name)
        ]
        return _json({"function": name, "versions": versions})

    async def deploy(request: Request) -> Response:
        name = request.path_params["name"]
        body = await _json_body(request, ("version", "strategy", "allow_no_traffic"))
        strategy = body.get("strategy") or "canary"
        if strategy not in STRATEGIES:
            raise ControlError(f"unknown strategy {strategy!r}", hint=f"use one of {STRATEGIES}")
        if not body.get("version"):
            raise ControlError("field 'version' is required", hint="a version id from upload")
        no_traffic = body.get("allow_no_traffic", False)
        if not isinstance(no_traffic, bool):
            raise ControlError("field 'allow_no_traffic' must be true or false", hint="a boolean")
        started = await service.deploy(
            name,
            body["version"],
            strategy,
            principal=_principal(request),
            allow_no_traffic=no_traffic,
        )
        return _json(started, 202)

    async def list_deployments(request: Request) -> Response:
        name = request.path_params["name"]
        _owned(request, name)
        return _json({"function": name, "deployments": list(service.deployments(name))})

    async def rollback(request: Request) -> Response:
        name = request.path_params["name"]
        body = await _json_body(request, ("to",))
        _known(name)
        return _json(await service.rollback(name, body.get("to"), principal=_principal(request)))

    async def purge_cache(request: Request) -> Response:
        name = request.path_params["name"]
        body = _decode_object(
            await _read_capped(request, _MAX_JSON_BYTES), ("tags", "urls", "everything")
        )
        _known(name)
        try:
            purge = decode_purge(msgspec.json.encode({"function": name, **body}))
        except ValueError as err:
            raise ControlError(
                f"bad purge: {err}",
                hint='send {"tags": ["t"]}, {"urls": ["https://..."]} or {"everything": true}',
            ) from None
        return _json(
            await service.purge_cache(
                name,
                tags=purge.tags,
                urls=purge.urls,
                everything=purge.everything,
                principal=_principal(request),
            ),
            202,
        )

    async def apply_placement(request: Request) -> Response:
        name = request.path_params["name"]
        await _json_body(request, ())
        _known(name)
        return _json(await service.apply_placement(name, principal=_principal(request)))

    async def put_secret(request: Request) -> Response:
        name, secret = request.path_params["name"], request.path_params["secret"]
        raw = await _read_capped(request, _MAX_SECRET_BODY_BYTES)
        if raw is None:
            return _error(413, "too_large", f"request body over {_MAX_SECRET_BODY_BYTES} bytes",
                          "a secret value is at most 5 KiB")  # fmt: skip
        value = _secret_value(raw)
        return _json(await service.put_secret(name, secret, value, principal=_principal(request)))

    async def list_secrets(request: Request) -> Response:
        name = request.path_params["name"]
        service.check_owner(name, _principal(request))
        secrets = [msgspec.to_builtins(s) for s in service.list_secrets(name)]
        return _json({"function": name, "secrets": secrets})

    async def delete_secret(request: Request) -> Response:
        name, secret = request.path_params["name"], request.path_params["secret"]
        return _json(await service.delete_secret(name, secret, principal=_principal(request)))

    async def status(request: Request) -> Response:
        return _json(service.status(_principal(request)))

    async def bundle(request: Request) -> Response:
        data = await service.bundle(request.path_params["sha256"], principal=_principal(request))
        return Response(data, media_type="application/gzip")

    async def openapi(_request: Request) -> Response:
        return JSONResponse(openapi_document())

    access = service.access

    async def whoami(request: Request) -> Response:
        return _json(_principal(request))

    async def create_token(request: Request) -> Response:
        raw = await _read_capped(request, _MAX_JSON_BYTES)
        body = _decode_object(raw, ("name", "scopes", "account"))
        scopes = body.get("scopes")
        if not isinstance(scopes, list) or not all(isinstance(x, str) for x in scopes):
            raise ControlError("field 'scopes' must be a list of strings", hint='e.g. ["read"]')
        by = _principal(request)
        token, record = await access.create_token(
            by,
            name=str(body.get("name") or ""),
            scopes=scopes,
            account=str(body.get("account") or by.account),
        )
        return _json({**record.public(), "token": token}, 201)

    async def list_tokens(_request: Request) -> Response:
        return _json({"tokens": [t.public() for t in access.tokens()]})

    async def revoke_token(request: Request) -> Response:
        record = await access.revoke(_principal(request), request.path_params["token_id"])
        return _json(record.public())

    async def add_key(request: Request) -> Response:
        body = await _json_body(request, ("public_key", "account", "name"))
        by = _principal(request)
        if not body.get("public_key"):
            raise ControlError("field 'public_key' is required", hint="the key's PEM text")
        deployer = await access.add_key(
            by,
            public_key_pem=body["public_key"],
            account=body.get("account") or by.account,
            name=body.get("name") or "",
        )
        return _json(deployer, 201)

    async def list_keys(request: Request) -> Response:
        keys = access.keys()
        return _json({"keys": [k for k in keys if _visible(request, k.account)]})

    async def audit(request: Request) -> Response:
        try:
            limit = int(request.query_params.get("limit", "200"))
        except ValueError:
            raise ControlError("query parameter 'limit' must be an integer") from None
        return _json({"records": access.audit_log(limit)})

    async def list_namespaces(request: Request) -> Response:
        namespaces = service.registry().namespaces()
        return _json(
            {"namespaces": [n for n in namespaces if _visible(request, n.owner, n.shared_with)]}
        )

    async def share_namespace(request: Request) -> Response:
        body = await _json_body(request, ("account",))
        if not body.get("account"):
            raise ControlError("field 'account' is required", hint="the account to share with")
        record = await service.share_namespace(
            request.path_params["namespace"], body["account"], principal=_principal(request)
        )
        return _json(record)

    async def on_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, EdgefnError)
        return _from_exception(exc)

    async def on_http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        response = _error(exc.status_code, code, str(exc.detail), "see /openapi.json")
        headers = dict(exc.headers or {})
        if (
            "Allow" in headers
        ):  # 405 keeps its Allow header, in a stable order (Starlette's is a set)
            methods = sorted(m.strip() for m in headers["Allow"].split(","))
            headers["Allow"] = ", ".join(methods)
        response.headers.update(headers)
        return response

    async def on_crash(_request: Request, _exc: Exception) -> Response:
        # Never echo the exception: it may hold request data. The log has the traceback.
        return _error(500, "internal", "internal error", "see the core's log")

    routes = [
        ScopedRoute("/openapi.json", openapi, method="GET", need=PUBLIC),
        ScopedRoute("/v1/functions", list_functions, method="GET", need=READ),
        ScopedRoute("/v1/functions/{name}/versions", upload, method="POST", need=function_deploy),
        ScopedRoute("/v1/functions/{name}/versions", list_versions, method="GET", need=READ),
        ScopedRoute(
            "/v1/functions/{name}/deployments", deploy, method="POST", need=function_deploy
        ),
        ScopedRoute("/v1/functions/{name}/deployments", list_deployments, method="GET", need=READ),
        ScopedRoute("/v1/functions/{name}/rollback", rollback, method="POST", need=function_deploy),
        ScopedRoute(
            "/v1/functions/{name}/cache/purge", purge_cache, method="POST", need=function_deploy
        ),
        ScopedRoute(
            "/v1/functions/{name}/placement", apply_placement, method="POST", need=function_deploy
        ),
        ScopedRoute("/v1/status", status, method="GET", need=READ),
        ScopedRoute("/v1/bundles/{sha256}", bundle, method="GET", need=READ),
        ScopedRoute("/v1/whoami", whoami, method="GET", need=READ),
        ScopedRoute("/v1/tokens", create_token, method="POST", need=ADMIN),
        ScopedRoute("/v1/tokens", list_tokens, method="GET", need=ADMIN),
        ScopedRoute("/v1/tokens/{token_id}", revoke_token, method="DELETE", need=ADMIN),
        ScopedRoute("/v1/keys", add_key, method="POST", need=ADMIN),
        ScopedRoute("/v1/keys", list_keys, method="GET", need=READ),
        ScopedRoute("/v1/audit", audit, method="GET", need=ADMIN),
        ScopedRoute("/v1/kv", list_namespaces, method="GET", need=READ),
        ScopedRoute("/v1/kv/{namespace}/shares", share_namespace, method="POST", need="deploy:*"),
        ScopedRoute(
            "/v1/functions/{name}/secrets/{secret}", put_secret, method="PUT", need=function_deploy
        ),
        ScopedRoute(
            "/v1/functions/{name}/secrets", list_secrets, method="GET", need=function_deploy
        ),
        ScopedRoute(
            "/v1/functions/{name}/secrets/{secret}",
            delete_secret,
            method="DELETE",
            need=function_deploy,
        ),
        ScopedRoute("/v1/stats/{name}", stats_endpoint(telemetry, _owned), method="GET", need=READ),
        ScopedRoute(
            "/v1/metrics", metrics_endpoint(service, telemetry, _principal), method="GET", need=READ
        ),
        *_trace_routes(spans, _owned),
        tail_route(service, tail or TailHub(service.nc)),
        *dashboard_routes(service),
        *_incident_routes(incidents, service),
        *_queue_routes(service),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            EdgefnError: on_error,
            HTTPException: on_http_error,
            Exception: on_crash,
        },
    )
    app.add_middleware(_AuthMiddleware, routes=app.routes, access=access)
    return app
