"""The OpenAPI 3.1 document of the control API, written by hand.

Response bodies that mirror msgspec types (``VersionInfo``, ``DeploymentStarted``...) take their
JSON Schema from ``msgspec.json.schema_components`` so the document cannot drift from the code;
the paths and request bodies are spelled out here.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

from edgefn.control.auth import AuditRecord, DeployerKey
from edgefn.control.events import DeploymentRecord, DeploymentStarted, FunctionStatus, RolledBack
from edgefn.control.model import DesiredState, ObservedState
from edgefn.control.registry import NamespaceRecord, VersionInfo

__all__ = ["openapi_document"]

_REF = "#/components/schemas/{name}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _ok(description: str, schema: dict[str, Any], status: str = "200") -> dict[str, Any]:
    return {
        status: {"description": description, "content": _json_content(schema)},
        "default": {"description": "error", "content": _json_content(_ref("Error"))},
    }


_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_SECRET = {
    "name": "secret",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$"},
}


def _paths() -> dict[str, Any]:
    object_list = {"type": "object"}
    return {
        "/v1/functions": {
            "get": {"summary": "List functions", "responses": _ok("functions", object_list)}
        },
        "/v1/functions/{name}/versions": {
            "parameters": [_NAME],
            "post": {
                "summary": "Upload a signed bundle as a new version",
                "parameters": [
                    {
                        "name": "x-edgefn-signature",
                        "in": "header",
                        "required": True,
                        "description": "base64 Ed25519 signature of 'edgefn-bundle-v1:<sha256>'",
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/gzip": {"schema": {"format": "binary"}}},
                },
                "responses": _ok("stored version", _ref("VersionInfo"), "201"),
            },
            "get": {
                "summary": "List versions, newest first",
                "responses": _ok("versions", object_list),
            },
        },
        "/v1/functions/{name}/deployments": {
            "parameters": [_NAME],
            "post": {
                "summary": "Start a rollout",
                "requestBody": {
                    "required": True,
                    "content": _json_content(
                        {
                            "type": "object",
                            "required": ["version"],
                            "properties": {
                                "version": {"type": "string"},
                                "strategy": {"enum": ["immediate", "canary"]},
                                "allow_no_traffic": {"type": "boolean"},
                            },
                        }
                    ),
                },
                "responses": _ok("rollout started", _ref("DeploymentStarted"), "202"),
            },
            "get": {
                "summary": "Recent deployments",
                "responses": _ok(
                    "deployments",
                    {
                        "type": "object",
                        "properties": {
                            "deployments": {"type": "array", "items": _ref("DeploymentRecord")}
                        },
                    },
                ),
            },
        },
        "/v1/functions/{name}/rollback": {
            "parameters": [_NAME],
            "post": {
                "summary": "Roll back to the previous (or a named) version everywhere",
                "requestBody": {
                    "content": _json_content(
                        {"type": "object", "properties": {"to": {"type": "string"}}}
                    )
                },
                "responses": _ok("rolled back", _ref("RolledBack")),
            },
        },
        "/v1/functions/{name}/cache/purge": {
            "parameters": [_NAME],
            "post": {
                "summary": "Purge the function's edge cache at every location and region tier",
                "requestBody": {
                    "content": _json_content(
                        {
                            "type": "object",
                            "properties": {
                                "tags": {"type": "array", "items": {"type": "string"}},
                                "urls": {"type": "array", "items": {"type": "string"}},
                                "everything": {"type": "boolean"},
                            },
                        }
                    )
                },
                "responses": _ok("purge published", {"type": "object"}, "202"),
            },
        },
        "/v1/functions/{name}/placement": {
            "parameters": [_NAME],
            "post": {
                "summary": "Re-plan a smart function's locations now from the demand observed, "
                "and deploy the change",
                "requestBody": {"content": _json_content({"type": "object"})},
                "responses": _ok(
                    "the placement before and after, and why",
                    {
                        "type": "object",
                        "properties": {
                            "function": {"type": "string"},
                            "before": {"type": "array", "items": {"type": "string"}},
                            "locations": {"type": "array", "items": {"type": "string"}},
                            "moved": {"type": "boolean"},
                            "reason": {"type": "string"},
                            "mean_rtt_ms": {"type": "number"},
                            "demand": {"type": "array", "items": {"type": "object"}},
                            "observed": {"type": "boolean"},
                        },
                    },
                ),
            },
        },
        "/v1/functions/{name}/secrets": {
            "parameters": [_NAME],
            "get": {
                "summary": "Secret names and update times (never values)",
                "responses": _ok("secrets", object_list),
            },
        },
        "/v1/functions/{name}/secrets/{secret}": {
            "parameters": [_NAME, _SECRET],
            "put": {
                "summary": "Set a secret (encrypted at rest) and roll it out immediately",
                "requestBody": {
                    "required": True,
                    "content": _json_content(
                        {
                            "type": "object",
                            "required": ["value"],
                            "properties": {"value": {"type": "string", "maxLength": 5120}},
                            "additionalProperties": False,
                        }
                    ),
                },
                "responses": _ok("stored; the response never contains the value", object_list),
            },
            "delete": {
                "summary": "Delete a secret and roll the change out immediately",
                "responses": _ok("deleted", object_list),
            },
        },
        "/v1/status": {
            "get": {
                "summary": "Locations (observed state) and functions (desired, convergence)",
                "responses": _ok(
                    "status",
                    {
                        "type": "object",
                        "properties": {
                            "functions": {"type": "array", "items": _ref("FunctionStatus")},
                            "locations": {"type": "array"},
                        },
                    },
                ),
            }
        },
        "/v1/bundles/{sha256}": {
            "parameters": [
                {"name": "sha256", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": {
                "summary": "Bundle bytes",
                "responses": {
                    "200": {
                        "description": "bundle",
                        "content": {"application/gzip": {"schema": {"format": "binary"}}},
                    },
                    "default": {"description": "error", "content": _json_content(_ref("Error"))},
                },
            },
        },
        "/v1/metrics": {
            "get": {
                "summary": "The planet's rollups for Prometheus (admin: every function and the "
                "locations; else the account's functions); see docs/design/0024-prometheus.md",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition (OpenMetrics on request)",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "default": {"description": "error", "content": _json_content(_ref("Error"))},
                },
            }
        },
        **_access_paths(),
        **_queue_paths(),
    }


def _queue_paths() -> dict[str, Any]:
    """Queues (docs/design/0028-queues.md; edgefn.control.queues_api)."""
    queue = {"name": "queue", "in": "path", "required": True, "schema": {"type": "string"}}
    limit = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}}
    listing = {"type": "object"}
    message = {
        "type": "object",
        "properties": {
            "body": {},
            "key": {"type": "string"},
            "idempotency_key": {"type": "string"},
            "delay_s": {"type": "number"},
        },
        "required": ["body"],
    }
    return {
        "/v1/queues": {
            "get": {
                "summary": "The account's queues and their backlog",
                "responses": _ok("queues", listing),
            }
        },
        "/v1/queues/{queue}/messages": {
            "parameters": [queue],
            "get": {
                "summary": "Unfinished messages, oldest first",
                "parameters": [limit],
                "responses": _ok("messages", listing),
            },
            "post": {
                "summary": "Send messages (as a producer function would)",
                "requestBody": _body(
                    {"messages": {"type": "array", "items": message}}, ["messages"]
                ),
                "responses": _ok("sent", listing, "202"),
            },
        },
        "/v1/queues/{queue}/dlq": {
            "parameters": [queue],
            "get": {
                "summary": "The messages of the queue's dead-letter queue",
                "parameters": [limit],
                "responses": _ok("dead letters", listing),
            },
        },
        "/v1/queues/{queue}/dlq/replay": {
            "parameters": [queue],
            "post": {
                "summary": "Move dead letters back into the queue",
                "requestBody": {
                    "content": _json_content(
                        {"type": "object", "properties": {"limit": {"type": "integer"}}}
                    )
                },
                "responses": _ok("replayed", listing),
            },
        },
    }


def _body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": required}
    return {"required": True, "content": _json_content(schema)}


def _access_paths() -> dict[str, Any]:
    """Tokens, deployer keys, audit and KV namespace sharing (see docs/design/0012)."""
    text = {"type": "string"}
    listing = {"type": "object"}
    return {
        "/v1/whoami": {"get": {"summary": "The calling token", "responses": _ok("me", listing)}},
        "/v1/tokens": {
            "post": {
                "summary": "Create an API token (admin); the token is in the response only",
                "requestBody": _body(
                    {"name": text, "scopes": {"type": "array", "items": text}, "account": text},
                    ["name", "scopes"],
                ),
                "responses": _ok("created", listing, "201"),
            },
            "get": {"summary": "List tokens (admin)", "responses": _ok("tokens", listing)},
        },
        "/v1/tokens/{token_id}": {
            "parameters": [{"name": "token_id", "in": "path", "required": True, "schema": text}],
            "delete": {"summary": "Revoke a token (admin)", "responses": _ok("revoked", listing)},
        },
        "/v1/keys": {
            "post": {
                "summary": "Register a deployer public key for an account (admin)",
                "requestBody": _body(
                    {"public_key": text, "account": text, "name": text}, ["public_key"]
                ),
                "responses": _ok("registered", _ref("DeployerKey"), "201"),
            },
            "get": {"summary": "List deployer keys", "responses": _ok("keys", listing)},
        },
        "/v1/audit": {
            "get": {
                "summary": "Audit records, oldest first (admin)",
                "responses": _ok(
                    "audit",
                    {
                        "type": "object",
                        "properties": {"records": {"type": "array", "items": _ref("AuditRecord")}},
                    },
                ),
            }
        },
        "/v1/kv": {"get": {"summary": "KV namespaces and owners", "responses": _ok("ns", listing)}},
        "/v1/kv/{namespace}/shares": {
            "parameters": [{"name": "namespace", "in": "path", "required": True, "schema": text}],
            "post": {
                "summary": "Let another account bind this namespace (owner or admin)",
                "requestBody": _body({"account": text}, ["account"]),
                "responses": _ok("shared", _ref("NamespaceRecord")),
            },
        },
    }


@cache
def openapi_document() -> dict[str, Any]:
    types = (
        VersionInfo,
        DeploymentStarted,
        DeploymentRecord,
        RolledBack,
        FunctionStatus,
        DesiredState,
        ObservedState,
        DeployerKey,
        AuditRecord,
        NamespaceRecord,
    )
    _, components = msgspec.json.schema_components(types, ref_template=_REF)
    components["Error"] = {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string"},
            "message": {"type": "string"},
            "hint": {"type": "string"},
            "scope": {"type": "string", "description": "403 forbidden: the scope needed"},
            "owner": {"type": "string", "description": "403: the account that owns the object"},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "edgefn control API", "version": "1"},
        "paths": _paths(),
        "components": {
            "schemas": components,
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"token": []}],
    }
