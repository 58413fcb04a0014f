"""The OpenAPI 3.1 document of the control API, written by hand.

Response bodies that mirror msgspec types (``VersionInfo``, ``DeploymentStarted``...) take their
JSON Schema from ``msgspec.json.schema_components`` so the document cannot drift from the code;
the paths and request bodies are spelled out here.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

from edgefn.control.events import DeploymentRecord, DeploymentStarted, FunctionStatus, RolledBack
from edgefn.control.model import DesiredState, ObservedState
from edgefn.control.registry import VersionInfo

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
    )
    _, components = msgspec.json.schema_components(types, ref_template=_REF)
    components["Error"] = {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string"},
            "message": {"type": "string"},
            "hint": {"type": "string"},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "edgefn control API", "version": "1"},
        "paths": _paths(),
        "components": {"schemas": components},
    }
