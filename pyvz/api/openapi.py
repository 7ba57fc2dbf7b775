"""The OpenAPI 3 document, written from the route table and the parameter table."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from pyvz import __version__
from pyvz.api.calls import PREFIX
from pyvz.api.routes import ROUTES, Route
from pyvz.api.schema import JSON

ERROR: JSON = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "code", "message"],
            "properties": {
                "status": {"type": "integer", "description": "the HTTP status"},
                "code": {"type": "integer", "description": "vzctl's exit code for this error"},
                "message": {"type": "string"},
            },
        }
    },
}
OPERATION: JSON = {
    "type": "object",
    "required": ["id", "kind", "status"],
    "properties": {
        "id": {"type": "string"},
        "kind": {"type": "string"},
        "ctid": {"type": ["integer", "null"]},
        "command": {"type": "string"},
        "actor": {"type": "string"},
        "status": {"type": "string", "enum": ["pending", "running", "success", "failure", "cancelled"]},
        "created": {"type": "number"},
        "updated": {"type": "number"},
        "progress": {"type": ["object", "null"]},
        "result": {
            "type": ["object", "null"],
            "properties": {
                "exit_code": {"type": "integer", "description": "the command's exit code, as the CLI's"},
                "message": {"type": ["string", "null"]},
                "stdout": {"type": "string"},
                "stderr": {"type": "string"},
            },
        },
    },
}


def _errors() -> dict[str, Any]:
    ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {
        str(status): {"description": text, **ref}
        for status, text in (
            (400, "bad input (vzctl's code 20 or 21, or the parameter's own)"),
            (401, "not authenticated"),
            (403, "not allowed for your role"),
            (404, "no such CT (or not in your scope), operation or snapshot"),
            (409, "refused by the CT's state or lock"),
            (429, "too many failed logins"),
        )
    }


def _operation(route: Route) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = []
    for name in re.findall(r"{(\w+)}", route.path):
        schema: JSON = (
            {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{1,64}$", "description": "CTID or name"}
            if name == "ct"
            else {"type": "string", "pattern": r"^[A-Za-z0-9{}-]{1,64}$"}
        )
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    for query in route.query:
        parameters.append(
            {"name": query.name, "in": "query", "description": query.description, "schema": query.schema}
        )
    responses: dict[str, Any] = _errors()
    if route.operation:
        op_ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Operation"}}}}
        responses["202"] = {"description": "the operation, started", **op_ref}
        responses["200"] = {"description": "the operation, ended (with ?wait)", **op_ref}
    elif route.stream == "sse":
        responses["200"] = {"description": "server-sent events", "content": {"text/event-stream": {}}}
    elif route.stream == "websocket":
        responses["101"] = {"description": "switching to the websocket"}
        responses["200"] = {"description": "not upgraded"}
    else:
        responses["200"] = {"description": "the answer", "content": {"application/json": {"schema": {}}}}
    spec: dict[str, Any] = {
        "operationId": route.op_id,
        "summary": route.summary,
        "tags": [route.tag],
        "description": f"Needs the {route.role.label} role"
        + (" and the CT in your scope." if route.on_ct else "."),
        "parameters": parameters,
        "responses": responses,
    }
    if route.body is not None:
        spec["requestBody"] = {"required": False, "content": {"application/json": {"schema": route.body}}}
    return spec


@cache
def document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route in ROUTES:
        paths.setdefault(PREFIX + route.path, {})[route.method.lower()] = _operation(route)
    paths["/metrics"] = {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics of every CT and the host",
            "tags": ["metrics"],
            "description": "Needs a grant for every CT (scope *).",
            "responses": {
                "200": {"description": "text format 0.0.4", "content": {"text/plain": {}}},
                **_errors(),
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "pyvz API", "version": __version__, "description": "vzctl over HTTP"},
        "servers": [{"url": "/"}],
        "components": {
            "schemas": {"Error": ERROR, "Operation": OPERATION},
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"token": []}],
        "paths": paths,
    }
