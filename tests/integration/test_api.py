"""pyvzd: a CT's whole life through the API alone, and the API and vzctl seeing each
other's changes at once (issue 13's first Must-hold)."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.apiclient import Client, Daemon
from tests.conftest import VzRoot

pytestmark = pytest.mark.root


@pytest.fixture
def api(vzroot: VzRoot) -> Iterator[Daemon]:
    daemon = Daemon(vzroot)
    try:
        yield daemon
    finally:
        daemon.stop()


def test_a_ct_lives_and_dies_through_the_api(api: Daemon, vzroot: VzRoot) -> None:
    admin = api.admin
    body = {"ctid": 101, "params": {"ostemplate": "busybox", "hostname": "api.example", "ram": "128M"}}
    created = admin.ok("POST", "/api/v1/cts", body)
    assert created["command"].startswith("vzctl create 101")
    assert admin.get("/api/v1/cts/101").body["hostname"] == "api.example"

    admin.ok("POST", "/api/v1/cts/101/start")
    assert admin.get("/api/v1/cts/101/status").body["running"] is True

    ran = admin.ok("POST", "/api/v1/cts/101/exec", {"command": "hostname; echo out; echo err >&2; exit 0"})
    assert ran["result"]["stdout"] == "api.example\nout\n"
    assert ran["result"]["stderr"] == "err\n"
    failed = admin.operation("POST", "/api/v1/cts/101/exec", {"command": ["/bin/sh", "-c", "exit 7"]})
    assert failed["status"] == "failure" and failed["result"]["exit_code"] == 7

    admin.ok("POST", "/api/v1/cts/101/snapshots", {"name": "before"})
    snaps = admin.get("/api/v1/cts/101/snapshots").body
    assert [s["name"] for s in snaps] == ["before"]
    assert vzroot.ok("snapshot-list", "101", "-H", "-o", "name").split() == ["before"]

    admin.ok("POST", "/api/v1/cts/101/backups")
    backups = admin.get("/api/v1/cts/101/backups").body
    assert len(backups) == 1 and backups[0]["archive"].startswith("vzdump-101-")
    verified = admin.ok("POST", "/api/v1/cts/101/backups/verify", {"archive": backups[0]["archive"]})
    assert "OK" in verified["result"]["stdout"]

    capacity = admin.get("/api/v1/cts/101/capacity").body["vzcalc"]
    assert capacity == vzroot.run("vzcalc", "-v", "101").out
    host = admin.get("/api/v1/host/capacity").body
    assert set(host) == {"vzmemcheck", "vzcpucheck", "vzoversell"} and "Summary" in host["vzmemcheck"]

    admin.ok("POST", "/api/v1/cts/101/stop")
    assert "down" in vzroot.ok("status", "101")
    admin.ok("DELETE", "/api/v1/cts/101")
    assert admin.get("/api/v1/cts/101").status == 404
    assert "deleted" in vzroot.ok("status", "101")


def test_the_api_gives_the_clis_code_and_message(api: Daemon, vzroot: VzRoot) -> None:
    admin = api.admin
    vzroot.ok("create", "101", "--ostemplate", "busybox")
    # A bad value is refused before anything runs, with vzctl's code and words.
    cli = vzroot.vzctl("set", "101", "--cpus", "lots")
    reply = admin.request("PATCH", "/api/v1/cts/101", {"params": {"cpus": "lots"}})
    assert reply.status == 400 and reply.error_code == cli.code
    assert reply.body["error"]["message"] in cli.err
    # A refusal from the command itself arrives in the operation's result.
    op = admin.operation("POST", "/api/v1/cts/101/snapshots/00000000-0000-0000-0000-000000000000/switch")
    cli = vzroot.vzctl("snapshot-switch", "101", "--id", "00000000-0000-0000-0000-000000000000")
    assert op["status"] == "failure" and op["result"]["exit_code"] == cli.code != 0
    assert op["result"]["message"] in cli.err
    # Stop of a stopped CT: vzctl's message and 0.
    assert admin.ok("POST", "/api/v1/cts/101/stop")["result"]["exit_code"] == 0
    assert admin.get("/api/v1/cts/999").status == 404
    assert admin.get("/api/v1/cts/bad%20name").status == 400
    assert admin.request("POST", "/api/v1/cts/101/start", b"{not json").status == 400
    assert admin.request("POST", "/api/v1/cts", {"ctid": 5}).status == 400
    assert Client(api.port, None, api.fingerprint).get("/api/v1/cts").status == 401
    assert Client(api.port, "pyvz_000000000000_nope", api.fingerprint).get("/api/v1/cts").status == 401


def _events(api: Daemon, found: list[dict[str, Any]], stop: threading.Event) -> None:
    """Follow /api/v1/events (SSE) and collect what arrives, with its arrival time."""
    import ssl

    raw = socket.create_connection(("127.0.0.1", api.port))
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    conn = context.wrap_socket(raw)
    conn.sendall(
        f"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api.admin_token}\r\n\r\n".encode()
    )
    conn.settimeout(0.2)
    buffer = b""
    while not stop.is_set():
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        buffer += chunk
        for line in buffer.split(b"\n"):
            if line.startswith(b"data: "):
                event = json.loads(line[6:])
                if event not in [f["event"] for f in found]:
                    found.append({"event": event, "at": time.time()})
    conn.close()


def test_vzctl_and_the_api_see_each_others_changes(api: Daemon, vzroot: VzRoot) -> None:
    found: list[dict[str, Any]] = []
    stop = threading.Event()
    follower = threading.Thread(target=_events, args=(api, found, stop), daemon=True)
    follower.start()
    time.sleep(0.5)
    try:
        vzroot.ok("create", "101", "--ostemplate", "busybox", "--hostname", "one")
        assert api.admin.get("/api/v1/cts/101").body["hostname"] == "one"  # at once, no cache
        listed = api.admin.get("/api/v1/cts?fields=ctid,hostname").body
        vzroot.ok("set", "101", "--hostname", "two", "--save")
        assert api.admin.get("/api/v1/cts/101").body["hostname"] == "two"
        assert listed == [{"ctid": 101, "hostname": "one"}]
        assert api.admin.get("/api/v1/cts?fields=ctid,hostname").body == [{"ctid": 101, "hostname": "two"}]
        api.admin.ok("PATCH", "/api/v1/cts/101", {"params": {"hostname": "three"}, "save": True})
        assert 'HOSTNAME="three"' in (vzroot.conf_dir / "101.conf").read_text()
        vzroot.ok("start", "101")
        deadline = time.time() + 10
        while time.time() < deadline and not any(
            f["event"]["type"] == "ct-state" and f["event"]["status"] == "running" for f in found
        ):
            time.sleep(0.05)
    finally:
        stop.set()
        follower.join(5)
        vzroot.vzctl("stop", "101", "--fast")
    kinds = [(f["event"]["type"], f["event"]["ctid"]) for f in found]
    assert ("ct-created", 101) in kinds
    config = [f["event"] for f in found if f["event"]["type"] == "ct-config"]
    assert any("HOSTNAME" in e["keys"] and "vzctl" in e["actor"] for e in config)
    assert any("HOSTNAME" in e["keys"] and e["actor"].startswith("token admin") for e in config)
    running = [
        f["event"] for f in found if f["event"]["type"] == "ct-state" and f["event"]["status"] == "running"
    ]
    assert running and "start 101" in running[0]["command"]


def test_a_client_that_takes_gzip_gets_the_same_list_gzipped(api: Daemon, vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--ostemplate", "busybox", "--hostname", "zipped")
    plain = api.admin.get("/api/v1/cts")
    assert plain.status == 200 and "Content-Encoding" not in plain.headers
    packed = api.admin.request("GET", "/api/v1/cts", headers={"Accept-Encoding": "br, gzip;q=0.5"})
    assert packed.status == 200 and packed.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in packed.headers["Vary"]
    assert packed.body == plain.body and packed.sent_bytes < plain.sent_bytes / 3
    refused = api.admin.request("GET", "/api/v1/cts", headers={"Accept-Encoding": "gzip;q=0, *"})
    assert "Content-Encoding" not in refused.headers and refused.body == plain.body


def test_audit_log_says_who_changed_what_from_where(api: Daemon, vzroot: VzRoot) -> None:
    api.admin.ok("POST", "/api/v1/cts", {"ctid": 101, "params": {"ostemplate": "busybox"}})
    api.admin.ok("POST", "/api/v1/cts/101/mount")
    lines = [json.loads(line) for line in (vzroot.root / "var/log/pyvz-audit.log").read_text().splitlines()]
    asked = [e for e in lines if e.get("request") == "POST /api/v1/cts/101/mount"]
    assert asked and asked[0]["actor"] == "token admin from 127.0.0.1" and asked[0]["ctid"] == 101
    ended = [e for e in lines if e.get("command") == "vzctl mount 101"]
    assert ended and ended[0]["status"] == "success" and ended[0]["time"]
    api.admin.ok("POST", "/api/v1/cts/101/umount")


def test_a_trusted_client_certificate_is_its_own_grant(vzroot: VzRoot, tmp_path: Path) -> None:
    key, cert = tmp_path / "client.key", tmp_path / "client.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", "/CN=robot", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    done = vzroot.run("pyvzd", "trust", "add", "robot", str(cert), "--role", "viewer", "--scope", "101")
    assert done.code == 0, done.err
    other_key, other_cert = tmp_path / "other.key", tmp_path / "other.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", "/CN=stranger", "-keyout", str(other_key), "-out", str(other_cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    daemon = Daemon(vzroot)
    try:
        robot = Client(daemon.port, None, daemon.fingerprint, (cert, key))
        reply = robot.get("/api/v1")
        assert reply.status == 200 and reply.body["you"] == {"who": "certificate robot", "role": "viewer",
                                                             "scope": ["101"]}  # fmt: skip
        assert robot.post("/api/v1/cts/101/start").status == 403
        stranger = Client(daemon.port, None, daemon.fingerprint, (other_cert, other_key))
        try:
            assert stranger.get("/api/v1").status == 401
        except (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected):
            pass  # refused in the TLS handshake: an untrusted certificate gets nothing either way
    finally:
        daemon.stop()


def test_the_unix_socket_is_roots(api: Daemon, vzroot: VzRoot) -> None:
    """On the socket, the caller is who the kernel says it is (SO_PEERCRED)."""
    import http.client
    import os
    import subprocess
    import sys

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(str(api.socket_path))

    connection = UnixConnection("localhost")
    connection.request("GET", "/api/v1")
    reply = json.loads(connection.getresponse().read())
    assert reply["you"]["role"] == "admin" and reply["you"]["who"].startswith("root")
    # Another user cannot even connect (the socket is root:pyvz 0660).
    probe = (
        "import socket,sys; s=socket.socket(socket.AF_UNIX)\n"
        "try: s.connect(sys.argv[1]); print('connected')\n"
        "except PermissionError: print('refused')"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(api.socket_path)],
        capture_output=True, text=True, user=65534, group=65534, extra_groups=[],
        env={"PATH": os.environ["PATH"]},
    )  # fmt: skip
    assert done.stdout.strip() == "refused", done.stderr
