"""vzcluster evacuate and restore (issue 14, item 4): a host with 10 running CTs is emptied
onto the two others, killed with -9 halfway and resumed, and every CT runs exactly once at
the end; restore brings them all back."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Done
from tests.integration.test_migrate import ssh_options, trust
from tests.testhosts import HostFactory, TestHost

pytest_plugins = ["tests.testhosts"]
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

CTIDS = [str(ctid) for ctid in range(701, 711)]


def ok(done: Done) -> str:
    assert done.code == 0, f"{done.code}: {done.err}{done.out}"
    return done.out


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.3)


def running(host: TestHost) -> set[str]:
    out = host.run([sys.executable, "-m", "pyvz.cli.vzlist", "-H", "-o", "ctid,status"]).out
    return {line.split()[0] for line in out.splitlines() if line.split()[1:] == ["running"]}


def present(host: TestHost) -> set[str]:
    out = host.run([sys.executable, "-m", "pyvz.cli.vzlist", "-a", "-H", "-o", "ctid"]).out
    return {line.strip() for line in out.splitlines() if line.strip()}


def vzcluster(host: TestHost, *args: str) -> list[str]:
    return [sys.executable, "-m", "pyvz.cli.vzcluster", *args, f"--ssh={ssh_options(host)}"]


def test_evacuate_killed_halfway_and_resumed_then_restored(test_hosts: HostFactory, tmp_path: Path) -> None:
    a, b, c = test_hosts(3, etcd=True)
    for other in (b, c):
        trust(a, other)
        trust(other, a)
    for number, ctid in enumerate(CTIDS):
        ok(a.vzctl("create", ctid))
        ok(a.vzctl("set", ctid, "--bootorder", str(number), "--save"))
        ok(a.vzctl("start", ctid))
    agents = [host.spawn([sys.executable, "-m", "pyvz.cli.vzcluster", "agent"]) for host in (a, b, c)]
    try:
        listing = [sys.executable, "-m", "pyvz.cli.vzlist", "--cluster", "-H", "-o", "ctid"]
        wait_for("the agents publishing", lambda: len(b.run(listing).out.splitlines()) == 10, 60)
        log = tmp_path / "evacuate.log"
        first = a.spawn(vzcluster(a, "evacuate", "a"), log=log)
        wait_for("half of the CTs gone from a", lambda: len(present(a)) <= 5, 300)
        os.killpg(first.pid, signal.SIGKILL)  # wherever it is: between two CTs or inside one
        first.wait(timeout=30)
        assert (a.root.root / "var/lib/vz/evacuation.json").exists(), log.read_text()
        order = [line.split()[2] for line in log.read_text().splitlines() if line.startswith("Evacuating CT")]
        assert order[:3] == ["710", "709", "708"], order  # higher BOOTORDER first, as vzctl boot

        resumed = a.run(vzcluster(a, "evacuate"), timeout=600)
        assert resumed.code == 0, f"{resumed.err}{resumed.out}\n{log.read_text()}"
        assert "Resuming the evacuation of a" in resumed.err + resumed.out
        assert present(a) == set(), "CTs are left on the evacuated host"
        on_b, on_c = running(b), running(c)
        assert on_b.isdisjoint(on_c), f"running on two hosts: {on_b & on_c}"
        assert on_b | on_c == set(CTIDS), f"not every CT runs once: b {on_b}, c {on_c}"
        assert on_b and on_c, "the CTs went to one host only"
        assert not (a.root.root / "var/lib/vz/evacuation.json").exists()

        for host in (b, c):
            back = host.run(vzcluster(host, "restore", "a"), timeout=600)
            assert back.code == 0, f"{back.err}{back.out}"
        assert running(a) == set(CTIDS)
        assert present(b) == set() and present(c) == set()
    finally:
        for agent in agents:
            agent.terminate()
        for agent in agents:
            agent.wait(timeout=30)
        for host in (a, b, c):
            for ctid in present(host):
                host.vzctl("stop", ctid, "--fast")


def test_evacuate_says_what_is_wrong_in_one_line(test_hosts: HostFactory) -> None:
    a, _b, _c = test_hosts(3, etcd=True)
    elsewhere = a.run(vzcluster(a, "evacuate", "b"))
    assert elsewhere.code == 21 and "run `vzcluster evacuate` on b" in elsewhere.err
    nobody = a.run(vzcluster(a, "evacuate"))  # no agent publishes: no host to take the CTs
    assert nobody.code == 21 and "no other alive host" in nobody.err
    unknown = a.run(vzcluster(a, "restore", "c"))
    assert unknown.code == 21 and "no evacuation of c" in unknown.err
