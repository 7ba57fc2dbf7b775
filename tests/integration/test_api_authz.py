"""Who may do what over the API: every endpoint x every role x a CT in and out of the
token's scope (issue 13's authorization matrix), checked without changing anything: a
request that gets past authorization is stopped by an unknown query parameter (400)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pyvz.api.calls import PREFIX
from pyvz.api.grants import Role
from pyvz.api.routes import ROUTES
from tests.apiclient import Client, Daemon
from tests.conftest import VzRoot

pytestmark = pytest.mark.root

NO_SUCH_ID = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def api(vzroot: VzRoot) -> Iterator[Daemon]:
    vzroot.ok("create", "101", "--ostemplate", "busybox", "--name", "web1")
    vzroot.ok("create", "201", "--ostemplate", "busybox", "--name", "db1")
    daemon = Daemon(vzroot)
    try:
        yield daemon
    finally:
        daemon.stop()


def _expected(role: Role, needed: Role, on_ct: bool, in_scope: bool) -> int:
    if role < needed:
        return 403
    if on_ct and not in_scope:
        return 404
    return 400


def test_every_endpoint_for_every_role(api: Daemon, vzroot: VzRoot) -> None:
    clients = {role: api.token(f"t-{role.label}", role.label, "101,web*") for role in Role}
    before = {p.name: p.read_text() for p in vzroot.conf_dir.glob("*.conf")}
    wrong = []
    for route in ROUTES:
        for role, client in clients.items():
            for ctid, in_scope in ((101, True), (201, False)) if route.on_ct else ((None, True),):
                path = PREFIX + route.path.replace("{ct}", str(ctid)).replace("{id}", NO_SUCH_ID)
                body = {} if route.method in ("POST", "PATCH") else None
                reply = client.request(route.method, path + "?bogus=1", body)
                want = _expected(role, route.role, route.on_ct, in_scope)
                if reply.status != want:
                    wrong.append(f"{route.method} {path} as {role.label}: {reply.status}, expected {want}")
    assert not wrong, "\n".join(wrong)
    after = {p.name: p.read_text() for p in vzroot.conf_dir.glob("*.conf")}
    assert before == after


def test_out_of_scope_cts_are_not_even_listed(api: Daemon) -> None:
    viewer = api.token("scoped", "viewer", "web*")
    listed = viewer.get("/api/v1/cts").body
    assert [ct["ctid"] for ct in listed] == [101]
    assert {ct["ctid"] for ct in api.admin.get("/api/v1/cts").body} == {101, 201}
    # By name, in scope; by name or id, out of scope: not there.
    assert viewer.get("/api/v1/cts/web1").status == 200
    assert viewer.get("/api/v1/cts/db1").status == 404
    assert viewer.get("/api/v1/cts/201").status == viewer.get("/api/v1/cts/999").status == 404
    # An operation on an out-of-scope CT is invisible too.
    op = api.admin.operation("POST", "/api/v1/cts/201/mount")
    assert op["status"] == "success"
    api.admin.ok("POST", "/api/v1/cts/201/umount")
    assert viewer.get(f"/api/v1/operations/{op['id']}").status == 404
    assert op["id"] not in {o["id"] for o in viewer.get("/api/v1/operations").body}
    # Creating out of scope is refused, whatever the role.
    scoped_admin = api.token("scoped-admin", "admin", "100-199")
    refused = scoped_admin.request("POST", "/api/v1/cts", {"ctid": 301, "params": {"ostemplate": "busybox"}})
    assert refused.status == 403
    assert viewer.get("/metrics").status == 403


def test_a_revoked_token_stops_working(api: Daemon, vzroot: VzRoot) -> None:
    client = api.token("short-lived", "viewer")
    assert client.get("/api/v1/cts").status == 200
    done = vzroot.run("pyvzd", "token", "remove", "short-lived")
    assert done.code == 0, done.err
    assert client.get("/api/v1/cts").status == 401
    listing = vzroot.run("pyvzd", "token", "list").out
    assert "short-lived" not in listing and "admin" in listing
    # Only hashes are kept.
    assert (client.token or "").split("_")[2] not in (vzroot.root / "etc/vz/api/grants.json").read_text()


def test_failed_logins_are_slowed_down(api: Daemon) -> None:
    import time

    bad = Client(api.port, "pyvz_000000000000_wrong", api.fingerprint)
    times = []
    for _ in range(5):
        start = time.monotonic()
        assert bad.get("/api/v1/cts").status == 401
        times.append(time.monotonic() - start)
    # Each failure waits longer before its answer (0, 0.25, 0.5, 1, 2 s).
    assert times[4] >= 1.5, times
    audit = (api.vz.root / "var/log/pyvz-audit.log").read_text()
    assert audit.count('"refused"') >= 5


def test_a_revoked_token_ends_its_web_sessions(api: Daemon, vzroot: VzRoot) -> None:
    client = api.token("browser", "viewer")
    login = api.admin.request("POST", "/ui/login", {"token": client.token}, headers={"Authorization": ""})
    assert login.status == 200
    cookie = login.headers["Set-Cookie"].split(";")[0]
    cookie_only = Client(api.port, None, api.fingerprint)
    assert cookie_only.request("GET", "/api/v1/cts", headers={"Cookie": cookie}).status == 200
    assert vzroot.run("pyvzd", "token", "remove", "browser").code == 0
    assert cookie_only.request("GET", "/api/v1/cts", headers={"Cookie": cookie}).status == 401


def test_a_scoped_admin_cannot_reach_the_host_through_its_ct(api: Daemon, vzroot: VzRoot) -> None:
    """Devices, capabilities, the private area's place: only for a grant over every CT."""
    scoped = api.token("ct-admin", "admin", "101")
    before = (vzroot.conf_dir / "101.conf").read_text()
    for params in ({"devnodes": ["net/tun:rw"]}, {"capability": ["sys_admin:on"]},
                   {"private": "/etc"}, {"netdev_add": ["lo"]}, {"mount_opts": "dev"}):  # fmt: skip
        reply = scoped.request("PATCH", "/api/v1/cts/101", {"params": params, "save": True})
        assert reply.status == 403 and "reaches the host" in reply.body["error"]["message"], reply.body
    refused = scoped.request(
        "POST", "/api/v1/cts/101/clone", {"target": 102, "params": {"private": "/tmp/x"}}
    )
    assert refused.status in (403, 400)
    assert (vzroot.conf_dir / "101.conf").read_text() == before
    # What stays inside the CT's own share is the scoped admin's to change.
    assert scoped.ok("PATCH", "/api/v1/cts/101", {"params": {"cpus": 1}, "save": True})["status"] == "success"
    assert 'CPUS="1"' in (vzroot.conf_dir / "101.conf").read_text()
    # The host's admin may.
    api.admin.ok("PATCH", "/api/v1/cts/101", {"params": {"devnodes": ["net/tun:rw"]}, "save": True})
    assert "net/tun" in (vzroot.conf_dir / "101.conf").read_text()
