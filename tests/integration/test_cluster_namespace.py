"""One namespace for the cluster (issue 14, item 2): CTIDs, names and addresses reserved in
etcd as CTs are created, so two hosts never hand out the same one; a host cut off from the
quorum refuses to create and says so while its CTs keep running; `vzlist --cluster`."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Done
from tests.testhosts import HostFactory, TestHost

pytest_plugins = ["tests.testhosts"]
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

# Sleeps until the instant given, then becomes vzctl: both hosts' commands start together.
_AT = (
    "import os, sys, time; time.sleep(max(0.0, float(sys.argv[1]) - time.time())); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def ok(done: Done) -> str:
    assert done.code == 0, f"{done.code}: {done.err}{done.out}"
    return done.out


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.2)


def together(hosts: list[TestHost], args: list[list[str]], logs: Path) -> list[tuple[int, str]]:
    """`vzctl ARGS` on each host, started at the same instant; (exit code, output) of each."""
    start = time.time() + 2.0
    racers = []
    for index, (host, argv) in enumerate(zip(hosts, args, strict=True)):
        log = logs / f"{host.name}-{index}-{time.monotonic_ns()}.log"
        vzctl = [sys.executable, "-m", "pyvz.cli.vzctl", *argv]
        racers.append((host.spawn([sys.executable, "-c", _AT, str(start), *vzctl], log=log), log))
    return [(proc.wait(timeout=120), log.read_text()) for proc, log in racers]


def test_two_hosts_asking_for_one_ctid_name_or_address_at_once(
    test_hosts: HostFactory, tmp_path: Path
) -> None:
    a, b, _c = test_hosts(3, etcd=True)
    rounds = [
        (["create", "201"], ["create", "201"], "CTID 201"),
        (["create", "202", "--name", "web"], ["create", "203", "--name", "web"], "name 'web'"),
        (
            ["create", "204", "--ipadd", "10.9.0.4"],
            ["create", "205", "--ipadd", "10.9.0.4"],
            "address 10.9.0.4",
        ),
    ]
    for on_a, on_b, what in rounds:
        results = together([a, b], [on_a, on_b], tmp_path)
        codes = sorted(code for code, _out in results)
        assert codes == [0, 172], f"{what}: {results}"
        loser, argv = next(
            (host, args)
            for (code, _o), host, args in zip(results, (a, b), (on_a, on_b), strict=False)
            if code
        )
        text = next(out for code, out in results if code)
        assert f"{what} is already used in the cluster" in one_line(text), text
        assert not (loser.root.conf_dir / f"{argv[1]}.conf").exists(), "the refused create left its config"
        assert loser.vzctl("status", argv[1]).out.split()[2] == "deleted"


def test_a_destroyed_ct_gives_its_names_back(test_hosts: HostFactory) -> None:
    a, b, _c = test_hosts(3, etcd=True)
    ok(a.vzctl("create", "301", "--name", "db", "--ipadd", "10.9.1.1"))
    taken = b.vzctl("create", "301")
    assert taken.code == 172 and "CT 301 on host a" in one_line(taken.err)
    renamed = b.vzctl("create", "302", "--name", "db")
    assert renamed.code == 172 and "name 'db'" in one_line(renamed.err)
    ok(b.vzctl("create", "303"))
    clash = b.vzctl("set", "303", "--ipadd", "10.9.1.1", "--save")
    assert clash.code == 172 and "address 10.9.1.1" in one_line(clash.err)
    assert "10.9.1.1" not in (b.root.conf_dir / "303.conf").read_text()  # nothing changed
    ok(a.vzctl("set", "301", "--name", "db2", "--save"))  # the old name is given back
    ok(b.vzctl("set", "303", "--name", "db", "--save"))
    ok(a.vzctl("destroy", "301"))
    ok(b.vzctl("create", "301", "--ipadd", "10.9.1.1"))


def test_a_host_cut_off_refuses_to_create_and_its_cts_keep_running(test_hosts: HostFactory) -> None:
    a, b, _c = test_hosts(3, etcd=True)
    ok(a.vzctl("create", "401"))
    ok(a.vzctl("start", "401"))
    a.cut()
    try:
        refused = a.vzctl("create", "402")
        assert refused.code in (170, 171), refused
        assert "cannot reach its cluster's quorum" in one_line(refused.err)
        assert not (a.root.conf_dir / "402.conf").exists()
        assert "running" in ok(a.vzctl("status", "401"))
        assert ok(a.vzctl("exec", "401", "echo alive")).strip() == "alive"
        ok(b.vzctl("create", "403"))  # the others have the quorum
    finally:
        a.restore()
    wait_for("a creating again", lambda: a.vzctl("create", "402").code == 0, 60)
    ok(a.vzctl("stop", "401", "--fast"))


def test_vzlist_cluster_shows_every_hosts_cts(test_hosts: HostFactory) -> None:
    hosts = test_hosts(3, etcd=True)
    for index, host in enumerate(hosts):
        ok(host.vzctl("create", str(501 + index), "--hostname", f"ct-on-{host.name}"))
    ok(hosts[1].vzctl("start", "502"))
    agents = [host.spawn([sys.executable, "-m", "pyvz.cli.vzcluster", "agent"]) for host in hosts]
    try:

        def listed() -> list[list[str]]:
            done = hosts[0].run([sys.executable, "-m", "pyvz.cli.vzlist", "--cluster", "-a", "-H"])
            return [line.split() for line in done.out.splitlines()]

        wait_for("every host's CTs listed", lambda: len(listed()) == 3, 30)
        rows = listed()
        assert [(r[0], r[1]) for r in rows] == [("a", "501"), ("b", "502"), ("c", "503")]
        assert rows[1][3] == "running" and rows[0][3] == "stopped"
        running = hosts[2].run([sys.executable, "-m", "pyvz.cli.vzlist", "--cluster"]).out.splitlines()
        assert running[0].split()[:3] == ["HOST", "CTID", "NPROC"]
        assert [line.split()[:2] for line in running[1:]] == [["b", "502"]]
        as_json = json.loads(
            ok(
                hosts[2].run(
                    [sys.executable, "-m", "pyvz.cli.vzlist", "--cluster", "-a", "-j", "-o", "ctid,hostname"]
                )
            )
        )
        assert as_json == [
            {"host": h.name, "ctid": 501 + i, "hostname": f"ct-on-{h.name}"} for i, h in enumerate(hosts)
        ]
        by_tasks = hosts[0].run(
            [sys.executable, "-m", "pyvz.cli.vzlist", "--cluster", "-a", "-H", "-s", "-numproc"]
        )
        assert by_tasks.out.split()[:2] == ["b", "502"], by_tasks  # the running one has the most
        described = hosts[0].run([sys.executable, "-m", "pyvz.cli.vzlist", "--cluster", "-d", "*"])
        assert described.code == 1 and "cannot filter by description" in one_line(described.err)
        unknown = hosts[0].run([sys.executable, "-m", "pyvz.cli.vzlist", "--cluster", "-o", "diskspace"])
        assert unknown.code == 1 and "not in the cluster's view" in one_line(unknown.err)
    finally:
        for agent in agents:
            agent.terminate()
        for agent in agents:
            agent.wait(timeout=30)
        ok(hosts[1].vzctl("stop", "502", "--fast"))


def test_a_migrated_ct_keeps_its_names_on_its_new_host(test_hosts: HostFactory) -> None:
    from tests.integration.test_migrate import move, trust

    a, b, _c = test_hosts(3, etcd=True)
    trust(a, b)
    ok(a.vzctl("create", "601", "--name", "moving", "--ipadd", "10.9.6.1"))
    agents = [host.spawn([sys.executable, "-m", "pyvz.cli.vzcluster", "agent"]) for host in (a, b)]
    try:
        done = move(a, b, "601")
        assert done.code == 0, done
        assert b.vzctl("status", "601").out.split()[2] == "exist"

        def held_by(host: str) -> bool:
            refused = [a.vzctl("create", "602", "--name", "moving"), a.vzctl("create", "601")]
            return all(r.code == 172 and f"on host {host}" in r.err for r in refused)

        # Never free for someone else, nor the source's: the new host's from the hand-over.
        assert held_by("b"), "the source handed the CT's names over as it let go of the CT"
        assert not (a.root.conf_dir / "602.conf").exists()
    finally:
        for agent in agents:
            agent.terminate()
        for agent in agents:
            agent.wait(timeout=30)
    ok(b.vzctl("destroy", "601"))
    ok(a.vzctl("create", "601", "--name", "moving", "--ipadd", "10.9.6.1"))
