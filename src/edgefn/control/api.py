"""The control HTTP API: a thin starlette app over ``ControlService``; schema at /openapi.json.

Endpoints (JSON unless noted; errors are ``{"error": code, "message": ..., "hint": ...}``)::

    POST /v1/functions/{name}/versions       body: bundle bytes; header x-edgefn-signature
    GET  /v1/functions
    GET  /v1/functions/{name}/versions
    POST /v1/functions/{name}/deployments    {"version": id, "strategy": "immediate"|"canary"}
    GET  /v1/functions/{name}/deployments
    POST /v1/functions/{name}/rollback       {"to": id?}
    PUT    /v1/functions/{name}/secrets/{secret}   {"value": "..."} (5 KiB max; never echoed)
    GET    /v1/functions/{name}/secrets            names and updated_ms only
    DELETE /v1/functions/{name}/secrets/{secret}
    GET  /v1/status
    GET  /v1/bundles/{sha256}                application/gzip

Trust model: the control plane is started with the public keys it trusts; an upload carries only
its signature (``x-edgefn-signature``, base64 Ed25519 over the bundle sha256). A bundle signed by
any other key is refused with 403, so a leaked API URL alone cannot deploy code.

Secret routes answer with names, update times, the secrets generation and the deployment they
started; never a value (not even in errors). Each route's required token scope is declared in
``ROUTE_SCOPES`` (``deploy:{name}`` for the secret routes), for the control-API token check.

Uploads are read with a hard cap (``max_upload_bytes``, default 10 MiB + 64 KiB of headroom) and
refused with 413 beyond it, before any parsing.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgefn.bundle.build import DEFAULT_MAX_BUNDLE_BYTES
from edgefn.control.errors import ControlError, NotFound
from edgefn.control.events import STRATEGIES
from edgefn.control.openapi import openapi_document
from edgefn.control.service import ControlService
from edgefn.errors import BundleError, ConfigError, EdgefnError, UsageError

__all__ = ["ROUTE_SCOPES", "SIGNATURE_HEADER", "create_app"]

SIGNATURE_HEADER: Final = "x-edgefn-signature"
_MAX_JSON_BYTES: Final = 64 * 1024
# A 5 KiB value JSON-escaped as \uXXXX is at most 30 KiB; anything larger is refused unread.
_MAX_SECRET_BODY_BYTES: Final = 32 * 1024

# The token scope each route requires, by (method, path template); "{name}" is the function.
# Only the secret routes are declared so far; the control-API token check reads this table.
ROUTE_SCOPES: Final[dict[tuple[str, str], str]] = {
    ("PUT", "/v1/functions/{name}/secrets/{secret}"): "deploy:{name}",
    ("GET", "/v1/functions/{name}/secrets"): "deploy:{name}",
    ("DELETE", "/v1/functions/{name}/secrets/{secret}"): "deploy:{name}",
}


def _error(status: int, code: str, message: str, hint: str = "") -> JSONResponse:
    return JSONResponse({"error": code, "message": message, "hint": hint}, status_code=status)


def _from_exception(err: EdgefnError) -> JSONResponse:
    if isinstance(err, ControlError):
        return _error(err.status, err.code, err.message, err.hint)
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


async def _json_body(request: Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    raw = await _read_capped(request, _MAX_JSON_BYTES)
    if raw is None:
        raise ControlError(f"request body over {_MAX_JSON_BYTES} bytes")
    try:
        body = msgspec.json.decode(raw or b"{}")
    except msgspec.DecodeError as err:
        raise ControlError(f"request body is not JSON: {err}", hint="send a JSON object") from None
    if not isinstance(body, dict):
        raise ControlError("request body must be a JSON object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ControlError(f"unknown field(s) {unknown}", hint=f"allowed: {list(allowed)}")
    for key, value in body.items():
        if value is not None and not isinstance(value, str):
            raise ControlError(f"field {key!r} must be a string")
    return body


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


def create_app(
    service: ControlService, *, max_upload_bytes: int = DEFAULT_MAX_BUNDLE_BYTES + 64 * 1024
) -> Starlette:
    """The API app for ``service`` (which the caller starts and stops)."""

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
        info = await service.upload(name, data, signature)
        return _json(info, 201)

    async def list_functions(_request: Request) -> Response:
        out = []
        for record in service.registry().functions():
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

    async def list_versions(request: Request) -> Response:
        name = request.path_params["name"]
        _known(name)
        status = service.function_status(name)
        active = status.active.version_id if status and status.active else None
        versions = [
            {**msgspec.to_builtins(v), "active": v.version_id == active}
            for v in service.registry().versions(name)
        ]
        return _json({"function": name, "versions": versions})

    async def deploy(request: Request) -> Response:
        name = request.path_params["name"]
        body = await _json_body(request, ("version", "strategy"))
        strategy = body.get("strategy") or "canary"
        if strategy not in STRATEGIES:
            raise ControlError(f"unknown strategy {strategy!r}", hint=f"use one of {STRATEGIES}")
        if not body.get("version"):
            raise ControlError("field 'version' is required", hint="a version id from upload")
        started = await service.deploy(name, body["version"], strategy)
        return _json(started, 202)

    async def list_deployments(request: Request) -> Response:
        name = request.path_params["name"]
        _known(name)
        return _json({"function": name, "deployments": list(service.deployments(name))})

    async def rollback(request: Request) -> Response:
        name = request.path_params["name"]
        body = await _json_body(request, ("to",))
        _known(name)
        return _json(await service.rollback(name, body.get("to")))

    async def put_secret(request: Request) -> Response:
        name, secret = request.path_params["name"], request.path_params["secret"]
        raw = await _read_capped(request, _MAX_SECRET_BODY_BYTES)
        if raw is None:
            return _error(413, "too_large", f"request body over {_MAX_SECRET_BODY_BYTES} bytes",
                          "a secret value is at most 5 KiB")  # fmt: skip
        value = _secret_value(raw)
        return _json(await service.put_secret(name, secret, value))

    async def list_secrets(request: Request) -> Response:
        name = request.path_params["name"]
        secrets = [msgspec.to_builtins(s) for s in service.list_secrets(name)]
        return _json({"function": name, "secrets": secrets})

    async def delete_secret(request: Request) -> Response:
        name, secret = request.path_params["name"], request.path_params["secret"]
        return _json(await service.delete_secret(name, secret))

    async def status(_request: Request) -> Response:
        return _json(service.status())

    async def bundle(request: Request) -> Response:
        data = await service.bundle(request.path_params["sha256"])
        return Response(data, media_type="application/gzip")

    async def openapi(_request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def on_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, EdgefnError)
        return _from_exception(exc)

    routes = [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/v1/functions", list_functions, methods=["GET"]),
        Route("/v1/functions/{name}/versions", upload, methods=["POST"]),
        Route("/v1/functions/{name}/versions", list_versions, methods=["GET"]),
        Route("/v1/functions/{name}/deployments", deploy, methods=["POST"]),
        Route("/v1/functions/{name}/deployments", list_deployments, methods=["GET"]),
        Route("/v1/functions/{name}/rollback", rollback, methods=["POST"]),
        Route("/v1/functions/{name}/secrets/{secret}", put_secret, methods=["PUT"]),
        Route("/v1/functions/{name}/secrets", list_secrets, methods=["GET"]),
        Route("/v1/functions/{name}/secrets/{secret}", delete_secret, methods=["DELETE"]),
        Route("/v1/status", status, methods=["GET"]),
        Route("/v1/bundles/{sha256}", bundle, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={EdgefnError: on_error})
