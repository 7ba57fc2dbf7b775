"""pyvzd: the API daemon (serve), and what its admin does around it: tokens, trusted
client certificates, the server certificate's fingerprint."""

from __future__ import annotations

import sys
from pathlib import Path

from pyvz.cli.common import exit_now, run_tool
from pyvz.cli.parser import ArgumentParser
from pyvz.errors import ExitCode, VzError


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="pyvzd", description="The pyvz API daemon and its grants.")
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    parser.add_argument("--verbose", action="store_true", help="print more")
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    p = sub.add_parser("serve", help="serve the API (the default command)")
    p.add_argument(
        "--listen", metavar="HOST:PORT", help="HTTPS here (default: vz.conf API_LISTEN; none if unset)"
    )
    p.add_argument("--no-socket", action="store_true", help="no unix socket")
    sub.add_parser("fingerprint", help="the server certificate's SHA-256 fingerprint (made if missing)")
    sub.add_parser("status", help="whether pyvzd serves this root (exit 3 if not)")
    token = sub.add_parser("token", help="API tokens").add_subparsers(
        dest="action", metavar="ACTION", parser_class=ArgumentParser, required=True
    )
    p = token.add_parser("add", help="make a token (shown once)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--role", required=True, help="viewer, operator or admin")
    p.add_argument(
        "--scope", default="*", help="CTIDs, ranges, names or patterns, comma-separated (default *)"
    )
    token.add_parser("list", help="tokens and trusted certificates")
    p = token.add_parser("remove", help="revoke a token or a trusted certificate")
    p.add_argument("name", metavar="NAME")
    trust = sub.add_parser("trust", help="trust a client certificate").add_subparsers(
        dest="action", metavar="ACTION", parser_class=ArgumentParser, required=True
    )
    p = trust.add_parser("add", help="trust a PEM certificate (takes effect at the daemon's next start)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("certificate", type=Path, metavar="CERT.pem")
    p.add_argument("--role", required=True, help="viewer, operator or admin")
    p.add_argument("--scope", default="*", help="as for tokens")
    return parser


DEFAULT_LISTEN = "127.0.0.1:8443"


def _status(paths: object) -> int:
    """Ask the daemon on its socket who it is; 3 (as a service's status) if nobody answers."""
    import json
    import socket

    from pyvz.paths import Paths

    assert isinstance(paths, Paths)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(paths.api_socket))
            s.sendall(b"GET /api/v1 HTTP/1.0\r\nHost: pyvzd\r\n\r\n")
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
        print(f"pyvzd is running (socket {paths.api_socket}; you are {body['you']['who']})")
        return 0
    except (OSError, ValueError, KeyError, IndexError):
        print(f"pyvzd is not running (no answer on {paths.api_socket})")
        return 3


def _listen(text: str | None) -> tuple[str, int] | None:
    if not text:
        return None
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise VzError(
            ExitCode.INVALID_PARAMETER_VALUE, f"invalid listen address {text!r}: expected HOST:PORT"
        )
    return host.strip("[]"), int(port)


def dispatch(argv: list[str]) -> int:
    ns = build_parser().parse_args(argv)
    from pyvz.paths import Paths

    paths = Paths.from_env()
    command = ns.command or "serve"
    if command == "serve":
        return _serve(paths, getattr(ns, "listen", None), getattr(ns, "no_socket", False))
    if command == "status":
        return _status(paths)
    if command == "fingerprint":
        from pyvz.api.tls import ensure_certificate, server_fingerprint

        ensure_certificate(paths)
        print(server_fingerprint(paths))
        return 0
    from pyvz.api.grants import Grants, Role, fingerprint, parse_scope

    grants = Grants(paths)
    if command == "token" and ns.action == "add":
        secret = grants.add_token(ns.name, Role.parse(ns.role), parse_scope(ns.scope))
        print(secret)
        print(
            f"token {ns.name} ({ns.role}, scope {ns.scope}): shown only now; pyvz keeps its hash",
            file=sys.stderr,
        )
    elif command == "token" and ns.action == "list":
        for entry in grants.entries():
            what = entry.get("fingerprint") if entry.get("kind") == "certificate" else f"id {entry.get('id')}"
            print(f"{entry.get('name')!s:24} {entry.get('kind')!s:12} {entry.get('role')!s:9} "
                  f"{','.join(entry.get('scope') or [])!s:20} {what}")  # fmt: skip
    elif command == "token":
        grants.remove(ns.name)
        (paths.api_dir / "clients" / f"{ns.name}.crt").unlink(missing_ok=True)
    else:
        import ssl

        from pyvz.atomic import write_atomic

        try:
            pem = ns.certificate.read_text()
            der = ssl.PEM_cert_to_DER_cert(pem)
        except (OSError, ValueError) as err:
            raise VzError(
                ExitCode.INVALID_PARAMETER_VALUE, f"{ns.certificate}: not a PEM certificate ({err})"
            ) from None
        print_ = fingerprint(der)
        grants.add_certificate(ns.name, print_, Role.parse(ns.role), parse_scope(ns.scope))
        clients = paths.api_dir / "clients"
        clients.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(clients / f"{ns.name}.crt", pem, mode=0o600)
        print(print_)
    return 0


def _serve(paths: object, listen_text: str | None, no_socket: bool) -> int:
    import asyncio
    import signal

    from pyvz.api.daemon import Listen, serve
    from pyvz.host import Host
    from pyvz.paths import Paths

    assert isinstance(paths, Paths)
    # API_LISTEN absent: the local default; set but empty: the unix socket only
    configured = listen_text if listen_text is not None else Host(paths).global_conf.get("API_LISTEN")
    if configured is None:
        configured = DEFAULT_LISTEN
    listen = Listen(None if no_socket else paths.api_socket, _listen(configured))
    if listen.socket_path is None and listen.https is None:
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, "nothing to serve: no socket and no --listen")

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await serve(paths, listen)
        except asyncio.CancelledError:
            pass

    try:
        asyncio.run(main())
    except OSError as err:
        raise VzError(ExitCode.SYSTEM_ERROR, f"pyvzd cannot listen: {err.strerror or err}") from None
    return 0


def main() -> None:
    exit_now(run_tool("pyvzd", dispatch))


if __name__ == "__main__":
    main()
