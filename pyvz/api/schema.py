"""The JSON shapes of the API: built once from the parameter table, used both to check
request bodies and to write the OpenAPI document, so the two cannot disagree."""

from __future__ import annotations

import re
from typing import Any

from pyvz.errors import ExitCode, VzError
from pyvz.params import IntText, Param, for_command

JSON = dict[str, Any]


def param_schema(param: Param[Any]) -> JSON:
    """One CT parameter: a value in vzctl's own syntax (`256M`, `100:110`, `yes`), or a
    number where the parameter is a plain number; a list where the option may repeat."""
    notes = [param.help]
    if param.key:
        notes.append(f"config key {param.key}")
    notes.append("applies to a running CT" if param.live else "takes effect at the next start")
    if isinstance(param.parse, IntText):
        one: JSON = {
            "anyOf": [
                {"type": "integer", "minimum": param.parse.minimum, "maximum": param.parse.maximum},
                {"type": "string", "pattern": r"^[0-9]+$", "maxLength": 12},
            ]
        }
    else:  # the table's parser checks the value, whichever form it came in
        one = {"anyOf": [{"type": "string", "maxLength": 4096}, {"type": "integer"}]}
    schema: JSON = {"type": "array", "items": one, "maxItems": 64} if param.multi else dict(one)
    schema["description"] = "; ".join(notes) + f" (vzctl {param.options[0]} {param.metavar})"
    schema["x-pyvz-live"] = param.live
    if param.key:
        schema["x-pyvz-config-key"] = param.key
    return schema


def params_object(command: str) -> JSON:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {p.name: param_schema(p) for p in for_command(command)},
    }


def obj(properties: dict[str, JSON], required: tuple[str, ...] = ()) -> JSON:
    schema: JSON = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


BOOL: JSON = {"type": "boolean"}
CTID: JSON = {"type": "integer", "minimum": 101, "maximum": 2**31 - 1}
NAME: JSON = {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{1,64}$"}
TEXT: JSON = {"type": "string", "maxLength": 4096}
PATH: JSON = {"type": "string", "pattern": r"^/[^\n\x00]{0,4000}$"}
UUID: JSON = {"type": "string", "pattern": r"^\{?[0-9a-fA-F-]{36}\}?$"}
COMMAND: JSON = {
    "description": "argv (a list) or a shell command line (a string, run by the CT's /bin/sh)",
    "oneOf": [
        {"type": "array", "items": {"type": "string", "maxLength": 65536}, "minItems": 1, "maxItems": 4096},
        {"type": "string", "minLength": 1, "maxLength": 65536},
    ],
}


def check(schema: JSON, value: Any, where: str = "body") -> None:
    """Raise VzError (invalid parameter) where `value` does not fit `schema`: the subset
    of JSON Schema this API uses."""
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf") or schema["oneOf"]
        for option in options:
            try:
                check(option, value, where)
                return
            except VzError:
                continue
        raise _bad(where, "has the wrong type or value")
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            raise _bad(where, "must be an object")
        properties = schema.get("properties", {})
        for key in schema.get("required", ()):
            if key not in value:
                raise _bad(f"{where}.{key}", "is required")
        for key, item in value.items():
            if key not in properties:
                if schema.get("additionalProperties", True) is False:
                    raise _bad(f"{where}.{_shown(key)}", "is not a known field")
                continue
            check(properties[key], item, f"{where}.{key}")
    elif kind == "array":
        if not isinstance(value, list):
            raise _bad(where, "must be a list")
        if len(value) > schema.get("maxItems", 10**6) or len(value) < schema.get("minItems", 0):
            raise _bad(where, "has the wrong number of items")
        for index, item in enumerate(value):
            check(schema.get("items", {}), item, f"{where}[{index}]")
    elif kind == "string":
        if not isinstance(value, str):
            raise _bad(where, "must be a string")
        if len(value) > schema.get("maxLength", 10**6) or len(value) < schema.get("minLength", 0):
            raise _bad(where, "has the wrong length")
        if "\x00" in value:
            raise _bad(where, "holds a NUL character")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise _bad(where, "is not in the expected form")
        if "enum" in schema and value not in schema["enum"]:
            raise _bad(where, f"must be one of {', '.join(schema['enum'])}")
    elif kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            raise _bad(where, "must be a whole number")
        if value < schema.get("minimum", -(2**63)) or value > schema.get("maximum", 2**63):
            raise _bad(where, "is out of range")
    elif kind == "number":
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _bad(where, "must be a number")
        if value < schema.get("minimum", float("-inf")) or value > schema.get("maximum", float("inf")):
            raise _bad(where, "is out of range")
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise _bad(where, "must be true or false")


def _shown(key: object) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "?", str(key))[:64]


def _bad(where: str, what: str) -> VzError:
    return VzError(ExitCode.INVALID_PARAMETER_VALUE, f"{where} {what}")
