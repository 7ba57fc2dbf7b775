"""A pyvz cluster on three test hosts (tests/testhosts.py): vzcluster init/join over SSH,
the agents' leases and publications, what losing etcd members does and does not change,
reservations raced from two hosts at once, and bad input to vzcluster."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Done
from tests.testhosts import HostFactory, TestHost

pytest_plugins = ["tests.testhosts"]
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

TTL = 4  # seconds: short, so that an expiry is seen in a test's time


def vzcluster(host: TestHost, *args: str, timeout: float = 120) -> Done:
    return host.run([sys.executable, "-m", "pyvz.cli.vzcluster", *args], timeout=timeout)


def probe(host: TestHost, *args: str, timeout: float = 60) -> Done:
    return host.run([sys.executable, "-m", "tests.clusterprobe", *args], timeout=timeout)


def ok(done: Done) -> str:
    assert done.code == 0, f"{done.code}: {done.err}{done.out}"
    return done.out


def one_line(done: Done) -> str:
    lines = [line for line in done.err.splitlines() if line.strip()]
    assert len(lines) == 1, done.err
    return lines[0]


def wait_for(
    what: str, check: Callable[[], bool], timeout: float, why: Callable[[], str] | None = None
) -> float:
    """Until check() holds; `why` says what was seen instead, if it never does."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started >= timeout:
            raise AssertionError(f"{what}: not within {timeout} s" + (f"; {why()}" if why else ""))
        time.sleep(0.2)
    return time.monotonic() - started


def etcd_log_tail(host: TestHost, lines: int = 15) -> str:
    """The last words of the host's etcd member (its supervisor's log), for a failure message."""
    path = host.root.root / "var/log/pyvz-etcd.log"
    tail = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
    return "".join(f"\n  etcd: {line[:300]}" for line in tail)


def nodes(host: TestHost) -> dict[str, dict[str, Any]]:
    done = vzcluster(host, "nodes", "-j")
    if done.code != 0:
        return {}
    return {node["name"]: node for node in json.loads(done.out)}


def leases(host: TestHost) -> dict[str, str]:
    """Each host's lease in `host`'s view, read with quorum; {} when that view cannot be had
    (a view during an election is no view: waiting on it must not pass on a failure)."""
    done = vzcluster(host, "nodes", "-j")
    if done.code != 0:
        return {}
    return {node["name"]: node["lease"] for node in json.loads(done.out)}


def cluster_files(host: TestHost) -> list[str]:
    etc = host.root.root / "etc/vz"
    found = [
        str(p)
        for p in (etc / "cluster.conf", etc / "cluster", host.root.root / "var/lib/vz/etcd")
        if p.exists()
    ]
    run_dir = host.root.root / "run/pyvz"
    found += [str(p) for p in run_dir.glob("*.pid")] if run_dir.exists() else []
    return found


def host_processes(host: TestHost) -> list[str]:
    """What runs in the host's namespace besides its sshd."""
    pids = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True, text=True).stdout.split()
    found = []
    for pid in pids:
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if args and "sshd" not in args:
            found.append(args)
    return found


def join(host: TestHost, via: TestHost) -> Done:
    return vzcluster(
        host,
        "join",
        via.address,
        "--name",
        host.name,
        "--listen",
        host.address,
        "--ssh",
        shlex.join(host.ssh_options),
    )


def test_init_join_nodes_lease_and_leave(test_hosts: HostFactory) -> None:
    a, b, c = test_hosts(3)
    ok(vzcluster(a, "init", "--name", "a", "--listen", a.address, "--ttl", str(TTL)))
    for host in (b, c):
        ok(join(host, a))
    # Every host sees every host, alive, from its own view.
    for host in (a, b, c):
        wait_for(
            f"all three alive in {host.name}'s vzcluster nodes",
            lambda host=host: {n: v["lease"] for n, v in nodes(host).items()}
            == {"a": "alive", "b": "alive", "c": "alive"},
            30,
        )
    table = ok(vzcluster(a, "nodes")).splitlines()
    assert table[0].split()[:3] == ["HOST", "ADDRESS", "LEASE"]
    assert [line.split()[:3] for line in table[1:]] == [[h.name, h.address, "alive"] for h in (a, b, c)]
    status = vzcluster(c, "status")
    assert status.code == 0, status.err
    assert "quorum   yes: 3 of 3 etcd members answer" in status.out
    assert f"host     c {c.address}" in status.out
    # Every key file is the owner's alone; the CA key stays on the host that made it.
    for host in (a, b, c):
        keys = sorted((host.root.root / "etc/vz/cluster").glob("*.key"))
        assert keys and all(k.stat().st_mode & 0o777 == 0o600 for k in keys)
    assert (a.root.root / "etc/vz/cluster/ca.key").exists()
    assert not (b.root.root / "etc/vz/cluster/ca.key").exists()

    # The agent publishes the host's CTs.
    ok(b.vzctl("create", "101", "--hostname", "on-b", "--name", "web", "--ipadd", "10.99.0.1"))
    wait_for("b's CT in a's view", lambda: nodes(a).get("b", {}).get("cts") == 1, 20)
    listed = nodes(a)["b"]["ct_list"]
    assert listed == [
        {
            "ctid": 101,
            "name": "web",
            "hostname": "on-b",
            "status": "stopped",
            "numproc": 0,
            "ip": ["10.99.0.1"],
            "ha": False,
            "ha_prio": 0,
        }
    ]

    # b's agent dies: its lease expires and the others say so within the TTL and a margin.
    pid = int((b.root.root / "run/pyvz/cluster-agent.pid").read_text())
    b.run(["kill", "-9", str(pid)])
    waited = wait_for(
        "b expired in a's view", lambda: nodes(a).get("b", {}).get("lease") == "expired", TTL + 8
    )
    assert waited <= TTL + 8
    assert nodes(c)["b"]["lease"] == "expired" and nodes(c)["a"]["lease"] == "alive"
    problem = vzcluster(b, "status")
    assert problem.code == 170 and "the cluster agent is not running" in problem.err

    # b leaves: it is gone from the cluster, and nothing of it is left on b.
    ok(vzcluster(b, "leave"))
    assert set(nodes(a)) == {"a", "c"}
    assert cluster_files(b) == []
    assert host_processes(b) == []
    assert "quorum   yes: 2 of 2" in ok(vzcluster(a, "status"))
    # ... and may come back.
    ok(join(b, a))
    wait_for("b back", lambda: nodes(c).get("b", {}).get("lease") == "alive", 30)


def test_losing_one_member_changes_nothing_losing_two_blocks(test_hosts: HostFactory) -> None:
    a, b, c = test_hosts(3, etcd=True)
    ok(a.vzctl("create", "101", "--hostname", "keeps-running"))
    ok(a.vzctl("start", "101"))
    held = probe(a, "reserve", "/pyvz/reservations/ctid/101")
    assert held.code == 172, held  # the create reserved it (pyvz.cluster.namespace)

    c.stop_etcd()
    # One of three gone: reservations go on, from every host, exactly as before.
    ok(probe(a, "reserve", "/pyvz/reservations/ctid/102", "/pyvz/reservations/name/x"))
    ok(probe(b, "reserve", "/pyvz/reservations/ctid/103"))
    ok(probe(c, "reserve", "/pyvz/reservations/ctid/105"))  # c's own member is the one lost
    taken = probe(b, "reserve", "/pyvz/reservations/ctid/102")
    assert taken.code == 172 and taken.out.strip() == "/pyvz/reservations/ctid/102"

    b.stop_etcd()
    # Two of three gone: no reservation can be made, and the one line says why.
    blocked = probe(a, "reserve", "/pyvz/reservations/ctid/104")
    assert blocked.code == 171, blocked
    line = one_line(blocked)
    assert "no quorum" in line
    status = vzcluster(a, "status")
    assert status.code == 171 and "no quorum" in status.err.splitlines()[0]
    # The CT already running on a keeps running.
    assert "running" in ok(a.vzctl("status", "101"))
    assert ok(a.vzctl("exec", "101", "echo alive")).strip() == "alive"

    # A member back: quorum again, and what was reserved before is still there.
    b.start_etcd()
    wait_for("reservations again", lambda: probe(a, "reserve", "/pyvz/reservations/ctid/104").code == 0, 30)
    assert probe(b, "reserve", "/pyvz/reservations/ctid/101").code == 172


def test_two_hosts_reserving_at_the_same_instant(test_hosts: HostFactory) -> None:
    hosts = test_hosts(3, etcd=True)
    a, b = hosts[0], hosts[1]
    for round_ in range(5):
        keys = [f"/pyvz/reservations/ctid/{300 + round_}", f"/pyvz/reservations/ip/10.0.0.{round_}"]
        start = time.time() + 1.5  # both wait for this instant, connected already
        racers = [
            host.spawn([sys.executable, "-m", "tests.clusterprobe", "reserve", *keys, "--at", str(start)])
            for host in (a, b)
        ]
        codes = sorted(racer.wait(timeout=60) for racer in racers)
        assert codes == [0, 172], f"round {round_}: {codes}"


def test_bad_input_is_one_line_and_leaves_nothing(test_hosts: HostFactory) -> None:
    a, b = test_hosts(2)
    typo = vzcluster(a, "nodez")
    assert typo.code == 20 and "nodes" in one_line(typo)
    assert vzcluster(a, "status").code == 173
    assert "in no cluster" in one_line(vzcluster(a, "nodes"))
    nobody = b.address.rsplit(".", 1)[0] + ".200"
    unreachable = vzcluster(a, "join", nobody, "--name", "a", "--listen", a.address, timeout=60)
    assert unreachable.code == 175, unreachable
    assert f"cannot reach {nobody}" in one_line(unreachable)
    for args, code in (
        (("init", "--listen", "203.0.113.7"), 21),
        (("init", "--listen", "not-an-ip"), 21),
        (("init", "--name", "Bad_Name", "--listen", a.address), 21),
        (("init", "--ttl", "1", "--listen", a.address), 21),
        (("init", "--ca", "/nonexistent", "--listen", a.address), 20),
        (("init", "--endpoints", "ftp://x", "--listen", a.address), 21),
        (("join", "--listen", a.address, "--", "-oProxyCommand=x"), 21),
        (("leave",), 173),
    ):
        done = vzcluster(a, *args)
        assert done.code == code, (args, done)
        one_line(done)
        assert cluster_files(a) == [], args
        assert host_processes(a) == [], args
    # An existing etcd that does not answer: refused, and nothing kept.
    dead = vzcluster(a, "init", "--endpoints", f"http://{b.address}:2379", "--listen", a.address)
    assert dead.code == 170 and "no etcd member answers" in one_line(dead)
    assert cluster_files(a) == []
    ok(vzcluster(a, "init", "--name", "a", "--listen", a.address))
    again = vzcluster(a, "init", "--name", "a", "--listen", a.address)
    assert again.code == 174 and "in a cluster already" in one_line(again)
    # Joining through a host that is in no cluster: b says why, in one line; b is left clean.
    refused = join(b, b)
    assert refused.code == 175 and "in no cluster" in one_line(refused)
    assert cluster_files(b) == [] and host_processes(b) == []


def test_agent_lease_follows_the_host(test_hosts: HostFactory) -> None:
    a, b, c = test_hosts(3, etcd=True, ttl=TTL)
    agents = [host.spawn([sys.executable, "-m", "pyvz.cli.vzcluster", "agent"]) for host in (a, b, c)]
    wait_for(
        "three agents publishing",
        lambda: leases(b) == {"a": "alive", "b": "alive", "c": "alive"},
        30,
    )
    # a's member leads (the hard case: b's and c's members forward their renewals to it until
    # they elect another) and a is cut off: its lease cannot be renewed, and the others see it
    # expire, and only it.
    ok(probe(a, "lead"))
    a.cut()
    for host in (b, c):
        # a has no member record (the test hosts' cluster is made without init/join): its
        # host record gone, it is not listed at all.
        wait_for(
            f"a gone from {host.name}'s view",
            lambda host=host: leases(host) == {"b": "alive", "c": "alive"},
            TTL + 8,
        )
    for host in (b, c):  # their leases held all along: not one was lost and taken anew
        assert "had expired" not in (host.root.root / "var/log/spawned.log").read_text()
    # Back on the network: a's agent takes a new lease and publishes again by itself.
    a.restore()
    for host in (b, c):
        wait_for(
            f"a alive again in {host.name}'s view",
            lambda host=host: leases(host) == {"a": "alive", "b": "alive", "c": "alive"},
            30,
        )
    assert agents[0].poll() is None
    # A clean stop revokes the lease: the record goes at once, not a TTL later.
    agents[0].terminate()
    assert agents[0].wait(timeout=30) == 0
    assert leases(b) == {"b": "alive", "c": "alive"}


def test_interrupted_join_is_undone_or_swept(test_hosts: HostFactory, tmp_path: Path) -> None:
    a, b = test_hosts(2)
    ok(vzcluster(a, "init", "--name", "a", "--listen", a.address, "--ttl", str(TTL)))
    fault = b.root.root / "var/lib/vz/.fault-point"
    # A join that fails once a has admitted b: b's learner is taken out of the cluster again,
    # and nothing is left on b.
    fault.write_text("join-admitted:fail\n")
    failed = join(b, a)
    assert failed.code != 0 and "join-admitted" in one_line(failed)
    assert "quorum   yes: 1 of 1" in ok(vzcluster(a, "status"))
    assert cluster_files(b) == [] and host_processes(b) == []
    # A join killed -9 while b's new member runs as a learner: the next join sweeps what it
    # left on b, and a replaces the stale learner.
    fault.write_text("join-started\n")
    log = tmp_path / "join.log"
    argv = ["join", a.address, "--name", "b", "--listen", b.address, "--ssh", shlex.join(b.ssh_options)]
    joining = b.spawn([sys.executable, "-m", "pyvz.cli.vzcluster", *argv], log=log)
    # A join that ends instead of getting there says why at once: its words, its member's.
    wait_for(
        "the join at its fault point",
        lambda: "fault point join-started reached" in log.read_text() or joining.poll() is not None,
        60,
        why=lambda: f"{log.read_text()}{etcd_log_tail(b)}",
    )
    assert (
        joining.poll() is None
    ), f"the join exited ({joining.returncode}): {log.read_text()}{etcd_log_tail(b)}"
    joining.kill()
    joining.wait()
    assert (b.root.root / "etc/vz/cluster.conf").exists()  # half-made, and not "ready"
    fault.unlink()
    ok(join(b, a))
    wait_for("b alive", lambda: nodes(a).get("b", {}).get("lease") == "alive", 30)
    assert "quorum   yes: 2 of 2" in ok(vzcluster(a, "status"))


def test_existing_etcd_given_by_endpoints(test_hosts: HostFactory, tmp_path: Path) -> None:
    from pyvz.cluster import pki

    a, b = test_hosts(2)
    ok(vzcluster(a, "init", "--name", "a", "--listen", a.address, "--ttl", str(TTL)))
    # b uses a's etcd as an existing one, with a client certificate its operator was given.
    ca_dir = a.root.root / "etc/vz/cluster"
    given = tmp_path / "given"
    pki.install_ca(given, pki.ca_cert(ca_dir).read_text())
    pki.install_cert(
        given, "client", pki.sign(ca_dir, pki.request(given, "client", "b"), "client", "b", b.address)
    )
    files = [
        "--ca",
        str(pki.ca_cert(given)),
        "--cert",
        str(pki.cert(given, "client")),
        "--key",
        str(pki.key(given, "client")),
    ]
    # Without the certificates an https endpoint is refused before anything is made.
    bare = vzcluster(b, "init", "--name", "b", "--listen", b.address, "--endpoints", a.etcd_endpoint)
    assert bare.code == 20 and "--ca" in one_line(bare)
    ok(vzcluster(b, "init", "--name", "b", "--listen", b.address, "--endpoints", a.etcd_endpoint, *files))
    assert not (b.root.root / "var/lib/vz/etcd").exists()  # no member of its own
    assert (b.root.root / "etc/vz/cluster/client.key").stat().st_mode & 0o777 == 0o600
    wait_for("b alive in a's view", lambda: nodes(a).get("b", {}).get("lease") == "alive", 30)
    status = ok(vzcluster(b, "status"))
    assert "quorum   yes: 1 of 1" in status and "\nmember " not in status
    # b leaves through a's etcd: its records go, a's member stays as it was.
    ok(vzcluster(b, "leave"))
    assert set(nodes(a)) == {"a"}
    assert cluster_files(b) == [] and host_processes(b) == []
    # A name the cluster has already is refused, and nothing is kept.
    same = vzcluster(b, "init", "--name", "a", "--listen", b.address, "--endpoints", a.etcd_endpoint, *files)
    assert same.code == 172 and "in that cluster already" in one_line(same)
    assert cluster_files(b) == [] and host_processes(b) == []
