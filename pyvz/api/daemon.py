"""pyvzd: the API daemon of one root. It serves /api/v1, the web console and /metrics on
a unix socket (root and the pyvz group) and, when configured, on HTTPS.

It holds nothing the files do not hold: reads go to the library and the files on every
request, changes run as the CLI commands that make them (pyvz/api/operations.py), events
come from the commands themselves (pyvz/api/bus.py). Stop it and vzctl goes on working.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from pyvz.api import routes, web_ui
from pyvz.api.audit import Audit
from pyvz.api.bus import Bus, Snapshot, Watcher
from pyvz.api.calls import PREFIX, Call, Forbidden, error_response, vz_error_response
from pyvz.api.coalesce import SharedReads
from pyvz.api.grants import Grant, Grants, fingerprint, gids_of, local_grant
from pyvz.api.operations import Operation, Operations, tool_argv
from pyvz.api.throttle import Throttle
from pyvz.config import resolve_ctid
from pyvz.errors import ExitCode, VzError
from pyvz.log import log
from pyvz.paths import ROOT_ENV, Paths

MAX_BODY = 1024 * 1024
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
}


@dataclass(frozen=True)
class Listen:
    socket_path: Path | None
    https: tuple[str, int] | None


class Daemon:
    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.grants = Grants(paths)
        self.audit = Audit(paths)
        self.throttle = Throttle()
        self.bus = Bus()
        self.operations = Operations(paths, self._operation_changed)
        self.shared_reads = SharedReads()
        self.watcher = Watcher(paths, self.bus, self._look, self.shared_reads.changed, self._busy)
        self.sessions = web_ui.Sessions(self.grants.for_token)
        self.started = time.time()

    # -- what the routes use ---------------------------------------------------------

    def sees_operation(self, grant: Grant, op: Operation) -> bool:
        if op.ctid is None:
            return grant.everything
        return grant.covers(op.ctid, self._name_of(op.ctid))

    def _name_of(self, ctid: int) -> str | None:
        seen = self.watcher.seen.get(ctid)
        return seen[1].get("NAME") if seen else None

    async def run_quick(self, tool: str, args: list[str]) -> str:
        """A read-only command's output (vzmemcheck and friends), with a time limit."""
        process = await asyncio.create_subprocess_exec(
            *tool_argv(tool, args),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, ROOT_ENV: str(self.paths.root)},
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
        except TimeoutError:
            process.kill()
            await process.wait()
            return f"{tool}: timed out\n"
        return out.decode(errors="replace")

    async def _operation_changed(self, op: Operation) -> None:
        self.bus.publish("operation", op.ctid, op.actor, operation=op.as_json())
        if op.done.is_set():
            self.audit.write(
                actor=op.actor, operation=op.id, command=" ".join(op.argv), status=str(op.status),
                exit_code=op.exit_code, message=op.message,
            )  # fmt: skip

    def _busy(self, ctids: set[int]) -> set[int]:
        from pyvz.host import Host
        from pyvz.lock import held

        lock_dir = Host(self.paths).lock_dir
        return {ctid for ctid in ctids if held(lock_dir / f"{ctid}.lck")}

    def _look(self, ctid: int | None) -> dict[int, Snapshot]:
        """Each CT's status and own config keys (one CT, or all)."""
        from pyvz.host import Host
        from pyvz.listing import records

        host = Host(self.paths)
        chosen = None if ctid is None else [ctid]
        found: dict[int, Snapshot] = {}
        for record in records(host, chosen, frozenset()):
            if record.conf_file is None:
                continue
            found[record.ctid] = (record.status, dict(record.own))
        return found

    # -- the HTTP side ---------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._headers])
        for route in routes.ROUTES:
            app.router.add_route(route.method, PREFIX + route.path, self._endpoint(route))
        app.router.add_get("/metrics", self._metrics)
        web_ui.add_routes(app, self)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_startup(self, _app: web.Application) -> None:
        await self.watcher.start()

    async def _on_shutdown(self, _app: web.Application) -> None:
        await self.watcher.stop()
        await self.operations.shutdown()

    @web.middleware
    async def _headers(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as err:
            if err.status >= 400:
                response = error_response(err.status, int(ExitCode.INVALID_PARAMETER_SYNTAX), err.reason)
                for key in ("Allow",):
                    if key in err.headers:
                        response.headers[key] = err.headers[key]
            else:
                raise
        if not response.prepared:
            for key, value in SECURITY_HEADERS.items():
                response.headers.setdefault(key, value)
        return response

    def remote(self, request: web.Request) -> str:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if isinstance(peer, tuple) and peer:
            return str(peer[0])
        return "local"

    def identify(self, request: web.Request) -> Grant | None:
        """Who is asking: the unix socket's peer, a client certificate, a bearer token, or
        the web console's session cookie."""
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport else None
        if sock is not None and sock.family == socket.AF_UNIX:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid, uid, gid = struct.unpack("3i", creds)
            return local_grant(uid, gids_of(pid) | {gid})
        ssl_object = transport.get_extra_info("ssl_object") if transport else None
        if isinstance(ssl_object, ssl.SSLObject):
            der = ssl_object.getpeercert(binary_form=True)
            if der:
                grant = self.grants.for_certificate(fingerprint(der))
                if grant is not None:
                    return grant
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return self.grants.for_token(header[7:].strip())
        return self.sessions.grant_of(request)

    def _endpoint(self, route: routes.Route) -> Any:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            return await self.handle(route, request)

        return endpoint

    async def authenticate(self, request: web.Request) -> tuple[Grant | None, web.StreamResponse | None]:
        address = self.remote(request)
        if self.throttle.blocked(address):
            return None, error_response(
                429,
                int(ExitCode.NO_ACCESS),
                "too many failed logins from here; try later",
                {"Retry-After": "60"},
            )
        try:
            grant = self.identify(request)
        except VzError as err:
            return None, vz_error_response(err)
        if grant is None:
            wait = self.throttle.delay(address)
            self.throttle.failed(address)
            self.audit.write(actor=f"unknown from {address}", refused=f"{request.method} {request.path}")
            await asyncio.sleep(wait)
            what = "authentication required: a token, a client certificate or a login"
            challenge = {"WWW-Authenticate": 'Bearer realm="pyvz"'}
            return None, error_response(401, int(ExitCode.NO_ACCESS), what, challenge)
        self.throttle.succeeded(address)
        return grant, None

    async def handle(self, route: routes.Route, request: web.Request) -> web.StreamResponse:
        grant, refused = await self.authenticate(request)
        if refused is not None:
            return refused
        assert grant is not None
        call = Call(request, self, grant, self.remote(request))
        response: web.StreamResponse
        try:
            if route.method != "GET" and not web_ui.csrf_ok(self, request):
                raise Forbidden("missing or wrong CSRF token (X-CSRF-Token) for this session")
            call.need(route.role)
            if route.on_ct:
                self._resolve_ct(call)
            self._check_query(route, request)
            if route.body is not None:
                raw = await request.read() if request.can_read_body else b""
                call.body = routes.body_of(route, raw)
            if route.path == "/cts" and route.method == "POST":
                self._check_new_ct(call)
            response = await route.handler(call)
        except Forbidden as err:
            response = error_response(403, int(ExitCode.NO_ACCESS), err.message)
        except VzError as err:
            response = vz_error_response(err)
        except web.HTTPRequestEntityTooLarge:
            response = error_response(413, int(ExitCode.INVALID_PARAMETER_SYNTAX), "the body is too large")
        if route.method != "GET":
            self.audit.write(
                actor=call.actor, request=f"{route.method} {request.path}", ctid=call.ctid,
                status=response.status, operation=call.extra.get("operation"),
            )  # fmt: skip
        return response

    def _check_query(self, route: routes.Route, request: web.Request) -> None:
        from pyvz.api.schema import check

        known = {q.name: q for q in route.query}
        for key, value in request.query.items():
            query = known.get(key)
            if query is None:
                raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, f"unknown query parameter {key[:40]!r}")
            check(query.schema, value, key)

    def _resolve_ct(self, call: Call) -> None:
        """{ct} is a CTID or name; a CT outside the caller's scope does not exist for it."""
        text = call.request.match_info["ct"]
        try:
            ctid = resolve_ctid(self.paths, text)
        except VzError as err:
            if err.code == ExitCode.INVALID_PARAMETER_VALUE:
                raise
            raise VzError(ExitCode.NO_CT_CONFIG, f"CT {text[:64]!r} not found") from None
        from pyvz.listing import Record

        name = Record(_host(self.paths), ctid, frozenset()).name
        if not call.grant.covers(ctid, name) or not self.paths.conf_file(ctid).exists():
            raise VzError(ExitCode.NO_CT_CONFIG, f"CT {text[:64]!r} not found")
        call.ctid, call.ct_name = ctid, name

    def _check_new_ct(self, call: Call) -> None:
        body = call.body or {}
        ctid, name = int(body["ctid"]), (body.get("params") or {}).get("name")
        if not call.grant.covers(ctid, name if isinstance(name, str) else None):
            raise Forbidden(f"CT {ctid} is outside your scope")
        call.ctid = ctid

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        grant, refused = await self.authenticate(request)
        if refused is not None:
            return refused
        assert grant is not None
        if not grant.everything:
            return error_response(403, int(ExitCode.NO_ACCESS), "/metrics needs a grant for every CT")
        from pyvz.api import metrics

        text = await asyncio.to_thread(metrics.render, self.paths)
        return web.Response(
            text=text, content_type="text/plain", charset="utf-8", headers={"X-Version": "0.0.4"}
        )


class _NotOurs(logging.Filter):
    """A request the HTTP parser refuses (a NUL in a header, say) is answered 400 by aiohttp
    and is the client's fault: it is not logged with a traceback as if it were a bug."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, HttpProcessingError)


def _host(paths: Paths) -> Any:
    from pyvz.host import Host

    return Host(paths)


async def serve(paths: Paths, listen: Listen, ready: asyncio.Event | None = None) -> None:
    """Run until cancelled (SIGTERM/SIGINT in the entry point)."""
    daemon = Daemon(paths)
    logging.getLogger("aiohttp.server").addFilter(_NotOurs())
    runner = web.AppRunner(daemon.app(), access_log=None, handle_signals=False, shutdown_timeout=5)
    await runner.setup()
    sites: list[web.BaseSite] = []
    if listen.socket_path is not None:
        path = listen.socket_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        site = web.UnixSite(runner, str(path))
        await site.start()
        os.chmod(path, 0o660)
        with contextlib.suppress(KeyError, PermissionError):
            import grp

            os.chown(path, 0, grp.getgrnam("pyvz").gr_gid)
        sites.append(site)
    if listen.https is not None:
        from pyvz.api.tls import ensure_certificate, server_context

        ensure_certificate(paths)
        host, port = listen.https
        https = web.TCPSite(runner, host, port, ssl_context=server_context(paths), reuse_address=True)
        await https.start()
        sites.append(https)
    log.info(f"pyvzd: serving {', '.join(s.name for s in sites)}")
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        if listen.socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                listen.socket_path.unlink()
