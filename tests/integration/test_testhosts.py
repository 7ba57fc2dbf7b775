"""The test hosts of tests/testhosts.py: separate roots reached over SSH, a network that stays
inside its namespaces, a cable that can be pulled, and a cleanup that leaves nothing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.testhosts import HostFactory, host_network, new_key

pytest_plugins = ["tests.testhosts"]
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]


def _links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True).stdout
    return {link["ifname"] for link in json.loads(out)}


def test_ssh_lands_in_the_target_hosts_root(test_hosts: HostFactory) -> None:
    a, b = test_hosts(2)
    done = a.ssh(b, "echo $PYVZ_ROOT; echo $SSH_CONNECTION")
    assert done.code == 0, done.err
    root, connection = done.out.splitlines()
    assert root == str(b.root.root) != str(a.root.root)
    client, _port, server, _ = connection.split()
    assert (client, server) == (a.address, b.address)
    # The real tools over SSH use that root: a CT made on b is listed there, not on a.
    created = b.vzctl("create", "101", "--hostname", "on-b")
    assert created.code == 0, created.err
    listed = a.ssh(b, "vzlist -a -H -o ctid,hostname")
    assert listed.code == 0, listed.err
    assert listed.out.split() == ["101", "on-b"]
    assert b.ssh(a, "vzlist -a -H -o ctid").out.strip() == ""


def test_network_stays_inside_the_namespaces(test_hosts: HostFactory) -> None:
    before = _links()
    a, b = test_hosts(2)
    # Nothing was added to the machine's own namespace: no link, no address.
    assert _links() == before
    addresses = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    assert b.address not in addresses and a.address not in addresses
    # Seen from here b is not on any link of ours. A UDP connect only picks a route and sends
    # nothing (a TCP connect could leave through this machine's default route, if it has one).
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((b.address, 22))
        source = probe.getsockname()[0]
    except OSError:
        source = None  # no route at all
    finally:
        probe.close()
    assert source is None or not source.startswith("198.18.")
    # From a host, only the hosts' subnet exists: anything else is unreachable at once.
    routes = a.run(["ip", "-4", "route"]).out.split()
    assert routes[0] == b.address.rsplit(".", 1)[0] + ".0/24" and "default" not in routes
    escape = a.run(
        [
            sys.executable,
            "-c",
            "import socket; socket.create_connection(('203.0.113.1', 22), timeout=3)",
        ]
    )
    assert escape.code != 0 and "Network is unreachable" in escape.err


def test_cut_and_restore(test_hosts: HostFactory) -> None:
    a, b = test_hosts(2)
    assert a.ssh(b, "true").code == 0
    b.cut()
    started = time.monotonic()
    argv = [*a.ssh_argv(b, connect_timeout=3), "true"]
    cut = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - started
    assert cut.returncode == 255 and "timed out" in cut.stderr, cut.stderr
    assert elapsed < 8
    # Only the cable is gone: b itself is still up and serving.
    assert b.ssh(b, "echo alive").out.strip() == "alive"
    b.restore()
    deadline = time.monotonic() + 10
    while (back := a.ssh(b, "echo back")).code != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert back.out.strip() == "back", back.err


def test_unauthorized_key_is_refused(test_hosts: HostFactory, tmp_path: Path) -> None:
    a, b = test_hosts(2)
    key, pub = new_key(tmp_path, "other")
    a.authorize(pub)
    # The same key works where it is authorized and is refused where it is not.
    assert b.ssh(a, "echo in", identity=key).out.strip() == "in"
    refused = a.ssh(b, "echo in", identity=key)
    assert refused.code == 255 and refused.out == ""
    assert "Permission denied (publickey)" in refused.err
    # Nothing in root's own ~/.ssh lets the run's key in either: with an empty
    # authorized_keys the client key is refused too.
    b.authorized_keys.write_text("")
    assert a.ssh(b, "true").code == 255


def test_cleanup_leaves_nothing_even_after_a_failure() -> None:
    with pytest.raises(RuntimeError, match="test failed"), host_network(3) as hosts:
        names = [h.netns for h in hosts] + [hosts[0].bridge_netns]
        roots = [h.root.root for h in hosts]
        tmp = hosts[0].authorized_keys.parent.parent
        pids = [int((h.authorized_keys.parent / "sshd.pid").read_text()) for h in hosts]
        # A session still open when the test fails, and a stray process in a namespace.
        session = subprocess.Popen([*hosts[0].ssh_argv(hosts[1]), "sleep 600"], stdin=subprocess.DEVNULL)
        stray = subprocess.Popen([*hosts[2].enter, "sleep", "600"])
        deadline = time.monotonic() + 10
        while "sleep 600" not in hosts[1].run(["ps", "-eo", "args"]).out:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        raise RuntimeError("test failed")
    session.wait(timeout=10)
    stray.wait(timeout=10)
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(name in netns for name in names)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()
    procs = []
    for entry in Path("/proc").iterdir():
        try:
            procs.append((entry / "cmdline").read_bytes())
        except OSError:
            pass
    assert not any(str(tmp).encode() in cmdline for cmdline in procs)
    mounts = Path("/proc/self/mountinfo").read_text()
    assert not any(name in mounts for name in names)
    assert not any(str(root) in mounts for root in roots)
    assert not tmp.exists() and not any(root.exists() for root in roots)


def test_etcd_members_listen_at_home_and_are_gone_after_a_failure() -> None:
    with pytest.raises(RuntimeError, match="test failed"), host_network(3, etcd=True) as hosts:
        names = [h.netns for h in hosts] + [hosts[0].bridge_netns]
        roots = [h.root.root for h in hosts]
        pids = [h.etcd.pid for h in hosts if h.etcd is not None]
        assert len(pids) == 3
        for host in hosts:
            assert (host.root.root / "var/lib/vz/etcd/member").is_dir()  # its data in its own root
            listening = {line.split()[3] for line in host.run(["ss", "-Htln"]).out.splitlines()}
            assert {f"{host.address}:2379", f"{host.address}:2380"} <= listening
            assert not {a for a in listening if a.endswith((":2379", ":2380")) and host.address not in a}
        # Nothing of it is in the machine's own namespace.
        here = subprocess.run(["ss", "-Htln"], capture_output=True, text=True).stdout
        assert not any(h.address in here for h in hosts)
        hosts[1].stop_etcd()  # a member lost mid-test is no trouble for the cleanup either
        raise RuntimeError("test failed")
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(name in netns for name in names)
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        assert not any(str(root).encode() in cmdline for root in roots), cmdline
    assert not any(root.exists() for root in roots)
