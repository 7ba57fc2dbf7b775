"""A running pyvzd on a test root, and a small HTTPS client for it that pins the
daemon's certificate by its fingerprint (as `pyvzd fingerprint` prints it)."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import REPO, VzRoot


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    sent_bytes: int = 0  # the body as it came over the wire (before any gunzip)

    @property
    def error_code(self) -> int | None:
        return self.body["error"]["code"] if isinstance(self.body, dict) and "error" in self.body else None


class Client:
    def __init__(
        self, port: int, token: str | None, fingerprint: str, cert: tuple[Path, Path] | None = None
    ) -> None:
        self.port, self.token, self.fingerprint, self.cert = port, token, fingerprint, cert

    def _connection(self) -> http.client.HTTPSConnection:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # pinned below instead: the certificate is self-signed
        if self.cert is not None:
            context.load_cert_chain(*self.cert)
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=120)
        connection.connect()
        der = connection.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
        digest = hashlib.sha256(der or b"").hexdigest().upper()
        assert ":".join(digest[i : i + 2] for i in range(0, 64, 2)) == self.fingerprint
        return connection

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Reply:
        connection = self._connection()
        sent = dict(headers or {})
        if self.token is not None:
            sent.setdefault("Authorization", f"Bearer {self.token}")
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        raw = response.read()
        connection.close()
        sent_bytes = len(raw)
        if response.getheader("Content-Encoding") == "gzip":  # as a browser or aiohttp unpacks it
            raw = gzip.decompress(raw)
        kind = response.getheader("Content-Type", "")
        parsed: Any = json.loads(raw) if "json" in kind and raw else raw.decode(errors="replace")
        return Reply(response.status, parsed, {k: v for k, v in response.getheaders()}, sent_bytes)

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post(self, path: str, body: Any = None) -> Reply:
        return self.request("POST", path, body if body is not None else {})

    def operation(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """Start an operation and follow it to its end."""
        reply = self.request(method, path, body)
        assert reply.status in (200, 202), (reply.status, reply.body)
        op = reply.body
        while op["status"] in ("pending", "running"):
            op = self.get(f"/api/v1/operations/{op['id']}/wait?timeout=60").body
        return dict(op)

    def ok(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        op = self.operation(method, path, body)
        assert op["status"] == "success", op
        return op


class Daemon:
    """pyvzd serving a test root on a free port of 127.0.0.1 (and its unix socket)."""

    def __init__(self, vz: VzRoot) -> None:
        self.vz = vz
        self.port = free_port()
        self.log = vz.root / "pyvzd.log"
        done = vz.run("pyvzd", "token", "add", "admin", "--role", "admin")
        assert done.code == 0, done.err
        self.admin_token = done.out.strip()
        done = vz.run("pyvzd", "fingerprint")
        assert done.code == 0, done.err
        self.fingerprint = done.out.strip()
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pyvz.cli.pyvzd", "serve", "--listen", f"127.0.0.1:{self.port}"],
                env=vz.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                assert self.process.poll() is None, self.log.read_text()
                time.sleep(0.05)
        else:
            raise AssertionError("pyvzd did not listen: " + self.log.read_text())
        self.admin = Client(self.port, self.admin_token, self.fingerprint)

    def token(self, name: str, role: str, scope: str = "*") -> Client:
        done = self.vz.run("pyvzd", "token", "add", name, "--role", role, "--scope", scope)
        assert done.code == 0, done.err
        return Client(self.port, done.out.strip(), self.fingerprint)

    @property
    def socket_path(self) -> Path:
        return self.vz.root / "run/pyvz/api.sock"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
