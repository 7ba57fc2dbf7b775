"""One authenticated request, and how errors become HTTP answers."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from pyvz.api.grants import Grant, Role
from pyvz.errors import ExitCode, VzError

PREFIX = "/api/v1"

if TYPE_CHECKING:
    from pyvz.api.daemon import Daemon

# vzctl's codes for "no such CT", "busy", and "you asked for something malformed"; every
# other refusal is a conflict with the CT's state (409). A client can cause no 5xx.
_NOT_FOUND = frozenset({ExitCode.NO_CT_CONFIG, ExitCode.NO_PRIVATE, ExitCode.OSTEMPLATE_NOT_FOUND})
_BAD_REQUEST = frozenset(
    {
        ExitCode.INVALID_PARAMETER_SYNTAX,
        ExitCode.INVALID_PARAMETER_VALUE,
        ExitCode.BAD_HOSTNAME,
        ExitCode.INVALID_IP,
        ExitCode.INVALID_CONFIG,
    }
)


def http_status(code: int) -> int:
    if code in _NOT_FOUND:
        return 404
    if code in _BAD_REQUEST:
        return 400
    if code == ExitCode.NO_ACCESS:
        return 403
    return 409


def error_response(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """The one error shape: {"error": {"status", "code" (vzctl's exit code), "message"}}."""
    body = {"error": {"status": status, "code": code, "message": message}}
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)


def vz_error_response(err: VzError) -> web.Response:
    return error_response(http_status(err.code), int(err.code), err.message)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def ok(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(value, status=status, headers=headers, dumps=_dumps)


@dataclass
class Call:
    request: web.Request
    daemon: Daemon
    grant: Grant
    remote: str
    body: Any = None
    ctid: int | None = None
    ct_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def actor(self) -> str:
        return f"{self.grant.who} from {self.remote}"

    def query(self, name: str, default: str | None = None) -> str | None:
        return self.request.query.get(name, default)

    def need(self, role: Role) -> None:
        if not self.grant.may(role):
            raise Forbidden(f"{self.grant.who} is {self.grant.role.label}; this needs {role.label}")


class Forbidden(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


Handler = Callable[[Call], Awaitable[web.StreamResponse]]
