"""The web console's side of the daemon: its static page, log-in with an API token, the
session cookie (HttpOnly, Secure, SameSite=Strict) and the CSRF token every change made
with that cookie must carry. Sessions live in the daemon's memory: a restart logs the
browser out, and nothing about them is on disk."""

from __future__ import annotations

import hmac
import json
import mimetypes
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from pyvz.api.calls import error_response, ok
from pyvz.api.grants import Grant
from pyvz.errors import ExitCode

if TYPE_CHECKING:
    from pyvz.api.daemon import Daemon

COOKIE = "pyvz_session"
IDLE = 8 * 3600.0  # seconds a session lasts unused
STATIC = Path(__file__).parent / "web"
# xterm.js as `npm ci` (make install) puts it beside pyproject.toml, pinned by package-lock.json.
XTERM = Path(__file__).resolve().parents[2] / "node_modules" / "@xterm"
# ES modules must be served as JavaScript (nosniff); not every host's mime.types knows .mjs.
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("text/javascript", ".js")


@dataclass
class Session:
    grant: Grant
    csrf: str
    token: str  # what it logged in with, checked again at each use: a revoked token ends it
    used: float = field(default_factory=time.monotonic)


class Sessions:
    def __init__(self, verify: Callable[[str], Grant | None]) -> None:
        self.by_id: dict[str, Session] = {}
        self.verify = verify

    def new(self, grant: Grant, token: str) -> tuple[str, Session]:
        self._expire()
        key = secrets.token_urlsafe(32)
        session = Session(grant, secrets.token_urlsafe(32), token)
        self.by_id[key] = session
        return key, session

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, s in self.by_id.items() if now - s.used > IDLE]:
            del self.by_id[key]

    def of(self, request: web.Request) -> Session | None:
        key = request.cookies.get(COOKIE)
        session = self.by_id.get(key) if key else None
        if session is None or time.monotonic() - session.used > IDLE:
            return None
        grant = self.verify(session.token)
        if grant is None:  # revoked (or changed) since the log-in
            self.by_id.pop(key or "", None)
            return None
        session.grant = grant
        session.used = time.monotonic()
        return session

    def grant_of(self, request: web.Request) -> Grant | None:
        session = self.of(request)
        return session.grant if session else None

    def end(self, request: web.Request) -> None:
        key = request.cookies.get(COOKIE)
        if key:
            self.by_id.pop(key, None)


def csrf_ok(daemon: Daemon, request: web.Request) -> bool:
    """A change made with the session cookie must carry the session's CSRF token; a token,
    a certificate or the unix socket are not sent by a browser on its own, so need none."""
    if "Authorization" in request.headers:
        return True
    session = daemon.sessions.of(request)
    if session is None:
        return True  # not a cookie session: authenticated some other way
    given = request.headers.get("X-CSRF-Token", "")
    return hmac.compare_digest(given.encode(), session.csrf.encode())


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser's cross-site post (those always say where from)
    return origin.split("://", 1)[-1] == request.host


async def _login(daemon: Daemon, request: web.Request) -> web.StreamResponse:
    if not _same_origin(request):
        return error_response(403, int(ExitCode.NO_ACCESS), "log-in from another site refused")
    address = daemon.remote(request)
    if daemon.throttle.blocked(address):
        return error_response(429, int(ExitCode.NO_ACCESS), "too many failed logins from here; try later")
    try:
        body = json.loads(await request.read() or b"{}")
        token = str(body.get("token", "")) if isinstance(body, dict) else ""
    except ValueError:
        token = ""
    grant = daemon.grants.for_token(token) if token else None
    if grant is None:
        import asyncio

        wait = daemon.throttle.delay(address)
        daemon.throttle.failed(address)
        daemon.audit.write(actor=f"unknown from {address}", refused="web log-in")
        await asyncio.sleep(wait)
        return error_response(401, int(ExitCode.NO_ACCESS), "that token is not valid")
    daemon.throttle.succeeded(address)
    key, session = daemon.sessions.new(grant, token)
    daemon.audit.write(actor=f"{grant.who} from {address}", request="web log-in")
    response = ok(_session_json(session))
    response.set_cookie(COOKIE, key, httponly=True, secure=True, samesite="Strict", path="/")
    return response


def _session_json(session: Session) -> dict[str, Any]:
    grant = session.grant
    return {"who": grant.who, "role": grant.role.label, "scope": list(grant.scope), "csrf": session.csrf}


async def _session(daemon: Daemon, request: web.Request) -> web.StreamResponse:
    session = daemon.sessions.of(request)
    if session is None:
        return error_response(401, int(ExitCode.NO_ACCESS), "not logged in")
    return ok(_session_json(session))


async def _logout(daemon: Daemon, request: web.Request) -> web.StreamResponse:
    session = daemon.sessions.of(request)
    if session is not None and not hmac.compare_digest(
        request.headers.get("X-CSRF-Token", "").encode(), session.csrf.encode()
    ):
        return error_response(403, int(ExitCode.NO_ACCESS), "missing or wrong CSRF token")
    daemon.sessions.end(request)
    response = ok({"logged_out": True})
    response.del_cookie(COOKIE, path="/")
    return response


async def _index(_request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Content-Type": "text/html; charset=utf-8"})


def add_routes(app: web.Application, daemon: Daemon) -> None:
    async def login(request: web.Request) -> web.StreamResponse:
        return await _login(daemon, request)

    async def session(request: web.Request) -> web.StreamResponse:
        return await _session(daemon, request)

    async def logout(request: web.Request) -> web.StreamResponse:
        return await _logout(daemon, request)

    app.router.add_get("/", _index)
    app.router.add_post("/ui/login", login)
    app.router.add_get("/ui/session", session)
    app.router.add_post("/ui/logout", logout)
    if STATIC.is_dir():
        app.router.add_static("/static/", STATIC, follow_symlinks=False)
    if XTERM.is_dir():
        app.router.add_static("/vendor/xterm/", XTERM, follow_symlinks=False)
