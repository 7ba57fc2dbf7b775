"""HA (issue 14, items 5 and 6): two HA CTs of host a, replicated to b; a dies (every process
of it killed, its CTs' too), is cut off but alive, or loses only its agent. Both CTs answer
from b within 30 s, with the data of their last replica, and a client probing each CT's
address every 100 ms from host c never gets answers from two hosts in one period: each
answer names the CT's incarnation (its init's start time), and the test knows which host
ran which. Losing two of three etcd members fences nothing and moves nothing. `vzctl
recover` of a replicated CT without HA waits out the same fencing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pyvz.paths import Paths
from tests.conftest import Done
from tests.integration.test_migrate import ssh_options, trust
from tests.testhosts import HostFactory, TestHost

pytest_plugins = ["tests.testhosts"]
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

TTL = 4
CTIDS = ("301", "302")
PORT = "7000"
ID_SCRIPT = '#!/bin/sh\nread -r line < /proc/1/stat\nset -- $line\necho "${22}"\n'
SERVICE = (
    "#!/bin/sh\n" f'case "$1" in start) nc -ll -p {PORT} -e /srv/id.sh </dev/null >/dev/null 2>&1 & ;; esac\n'
)

PROBER = r"""
import json, socket, sys, time
addresses, stop = sys.argv[1].split(","), sys.argv[2]
import os
while not os.path.exists(stop):
    started = time.monotonic()
    for address in addresses:
        try:
            with socket.create_connection((address, 7000), timeout=0.09) as sock:
                sock.settimeout(0.09)
                answer = sock.recv(64).decode().strip()
        except OSError:
            answer = ""
        if answer:
            print(json.dumps({"t": time.monotonic(), "ct": address, "id": answer}), flush=True)
    time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))
"""


def ok(done: Done) -> str:
    assert done.code == 0, f"{done.code}: {done.err}{done.out}"
    return done.out


def wait_for(what: str, check: Callable[[], bool], timeout: float, why: Callable[[], str] = str) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout} s; {why()}"
        time.sleep(0.2)
    return time.monotonic() - started


def address_of(host: TestHost, ctid: str) -> str:
    return ".".join(host.address.split(".")[:3] + [str(int(ctid) - 200)])


def incarnation(host: TestHost, ctid: str) -> str:
    return ok(host.vzctl("exec", ctid, "/srv/id.sh")).strip()


def alive(host: TestHost) -> int:
    done = host.run([sys.executable, "-m", "pyvz.cli.vzcluster", "nodes", "-j"])
    return sum(1 for node in json.loads(done.out) if node.get("lease")) if done.code == 0 else 0


def logs(*hosts: TestHost) -> str:
    said = []
    for host in hosts:
        for name in ("spawned.log", "pyvz-fence.log"):
            path = host.root.root / "var/log" / name
            if path.exists():
                said.append(f"--- {host.name} {name}\n" + "\n".join(path.read_text().splitlines()[-25:]))
    return "\n".join(said)


def kill_host(host: TestHost) -> None:
    """Every process of the host: those of its network namespace and those of its CTs."""
    tag = Paths(host.root.root).tag
    pids = set(
        subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True, text=True).stdout.split()
    )
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"/{tag}/" in (entry / "cgroup").read_text():
                    pids.add(entry.name)
            except OSError:
                continue
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def setup(
    a: TestHost, b: TestHost, c: TestHost, ctids: tuple[str, ...] = CTIDS, ha: bool = True
) -> tuple[dict[str, str], list[subprocess.Popen[bytes]]]:
    """The CTs created, replicated to b and running on a, the agents up; each CT's first
    incarnation, and the agents (a's first)."""
    trust(a, b)
    trust(b, a)
    for ctid in ctids:
        ok(a.vzctl("create", ctid, "--ipadd", address_of(a, ctid), "--hostname", f"ha{ctid}"))
        ok(a.vzctl("mount", ctid))
        root = a.root.root / "var/lib/vz/root" / ctid
        (root / "srv").mkdir(exist_ok=True)
        (root / "srv/id.sh").write_text(ID_SCRIPT)
        (root / "srv/id.sh").chmod(0o755)
        (root / "etc/init.d/S50id").write_text(SERVICE)
        (root / "etc/init.d/S50id").chmod(0o755)
        (root / "root/data").write_text("replicated\n")
        ok(a.vzctl("umount", ctid))
        ok(a.vzctl("set", ctid, "--replicate", b.address, "--replicate-interval", "30s", "--save"))
        if ha:
            ok(a.vzctl("set", ctid, "--ha_enable", "yes", "--ha_prio", ctid[-1], "--save"))
    agents = [h.spawn([sys.executable, "-m", "pyvz.cli.vzcluster", "agent"]) for h in (a, b, c)]
    wait_for("the agents publishing", lambda: alive(c) == 3, 60, lambda: logs(a, b, c))
    first: dict[str, str] = {}
    for ctid in ctids:
        ok(a.vzctl("start", ctid))
        ok(
            a.run(
                [sys.executable, "-m", "pyvz.cli.vzreplicate", "run", ctid, f"--ssh={ssh_options(a)}"],
                timeout=300,
            )
        )
        ok(a.vzctl("exec", ctid, "echo after-the-replica > /root/data"))  # never replicated
        first[ctid] = incarnation(a, ctid)
    return first, agents


def state(host: TestHost, ctids: tuple[str, ...]) -> set[str]:
    """The CTs' states on the host, as the fifth word of vzctl status: {"running"}, {"down"}…"""
    return {" ".join(host.vzctl("status", ct).out.split()[4:5]) for ct in ctids}


class Prober:
    """A client on `host` asking each CT's service address for its incarnation every 100 ms,
    from entering until answers() (killed on the way out if still running)."""

    def __init__(self, host: TestHost, tmp: Path, ctids: tuple[str, ...] = CTIDS) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.stop = tmp / "stop"
        addresses = ",".join(address_of(host, ctid) for ctid in ctids)
        self.proc = subprocess.Popen(
            [*host.enter, sys.executable, "-c", PROBER, addresses, str(self.stop)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def answers(self) -> list[dict[str, Any]]:
        self.stop.touch()
        out, _err = self.proc.communicate(timeout=30)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def __enter__(self) -> Prober:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def check_failover(
    a: TestHost, b: TestHost, seen: list[dict[str, Any]], first: dict[str, str], failed_at: float
) -> list[float]:
    later = {ctid: incarnation(b, ctid) for ctid in first}
    took = []
    for ctid in first:
        mine = [s for s in seen if s["ct"] == address_of(a, ctid)]
        ids = {s["id"] for s in mine}
        assert ids <= {first[ctid], later[ctid]}, f"CT {ctid} answered as something unknown: {ids}"
        from_a = [s["t"] for s in mine if s["id"] == first[ctid]]
        from_b = [s["t"] for s in mine if s["id"] == later[ctid]]
        assert from_a and from_b, f"CT {ctid}: answers from a {len(from_a)}, from b {len(from_b)}"
        # Never two hosts in one period: every answer from a comes before every one from b.
        assert max(from_a) < min(from_b), f"CT {ctid} answered from a and b at once"
        took.append(min(from_b) - failed_at)
        assert (
            min(from_b) - failed_at <= 30
        ), f"CT {ctid} answered from b {min(from_b) - failed_at:.1f} s later"
        # The data of its last replica: what was written after it is not there.
        assert ok(b.vzctl("exec", ctid, "cat /root/data")).strip() == "replicated"
    return took


def test_a_dead_host_s_ha_cts_answer_from_the_standby(test_hosts: HostFactory, tmp_path: Path) -> None:
    a, b, c = test_hosts(3, etcd=True, ttl=TTL)
    first, _agents = setup(a, b, c)
    with Prober(c, tmp_path) as probe:
        time.sleep(1.0)
        failed_at = time.monotonic()
        kill_host(a)
        a.cut()  # what is dead answers nothing, not even ARP
        wait_for("both CTs running on b", lambda: state(b, CTIDS) == {"running"}, 60, lambda: logs(b, c))
        time.sleep(1.5)
        seen = probe.answers()
    took = check_failover(a, b, seen, first, failed_at)
    print(f"host failure to HA CT answering on b: {', '.join(f'{t:.1f} s' for t in took)}")


def test_a_cut_off_host_fences_before_the_standby_starts(test_hosts: HostFactory, tmp_path: Path) -> None:
    a, b, c = test_hosts(3, etcd=True, ttl=TTL)
    first, _agents = setup(a, b, c)
    # a's own view too: its CTs, behind the cut.
    with Prober(a, tmp_path / "a") as local, Prober(c, tmp_path) as probe:
        time.sleep(1.0)
        failed_at = time.monotonic()
        a.cut()
        wait_for("a fencing its HA CTs", lambda: state(a, CTIDS) == {"down"}, TTL + 10, lambda: logs(a))
        wait_for("both CTs running on b", lambda: state(b, CTIDS) == {"running"}, 60, lambda: logs(b, c))
        time.sleep(1.5)
        seen = probe.answers() + local.answers()
    took = check_failover(a, b, seen, first, failed_at)
    print(f"cut-off host: HA CTs answered from b after {', '.join(f'{t:.1f} s' for t in took)}")
    # Back: its copies are stale, stay stopped, and say so.
    a.restore()
    fenced = a.root.root / "var/lib/vz/fenced.json"
    wait_for("a marking its copies stale", lambda: '"stale": true' in fenced.read_text(), 60, lambda: logs(a))
    again = a.vzctl("start", CTIDS[0])
    assert again.code != 0 and "stale" in again.err, again
    for ctid in CTIDS:
        assert b.vzctl("status", ctid).out.split()[4:5] == ["running"]


def test_an_agent_killed_is_fenced_by_its_watchdog(test_hosts: HostFactory, tmp_path: Path) -> None:
    """kill -9 of the agent alone: nothing renews the lease, so the watchdog (its own
    process) stops the HA CTs before the leader starts them on b."""
    a, b, c = test_hosts(3, etcd=True, ttl=TTL)
    first, agents = setup(a, b, c)
    with Prober(c, tmp_path) as probe:
        time.sleep(1.0)
        failed_at = time.monotonic()
        agents[0].kill()
        agents[0].wait()
        wait_for(
            "the watchdog fencing a's HA CTs", lambda: state(a, CTIDS) == {"down"}, TTL + 10, lambda: logs(a)
        )
        wait_for("both CTs running on b", lambda: state(b, CTIDS) == {"running"}, 60, lambda: logs(b, c))
        time.sleep(1.5)
        seen = probe.answers()
    check_failover(a, b, seen, first, failed_at)
    assert "Fenced CT 301" in logs(a)
    # The agent back (as systemd restarts it): the copies are stale now, and stay stopped.
    a.spawn([sys.executable, "-m", "pyvz.cli.vzcluster", "agent"])
    fenced = a.root.root / "var/lib/vz/fenced.json"
    wait_for("a marking its copies stale", lambda: '"stale": true' in fenced.read_text(), 60, lambda: logs(a))
    time.sleep(1.0)
    assert state(a, CTIDS) == {"down"} and state(b, CTIDS) == {"running"}


def test_losing_two_etcd_members_fences_nothing_and_moves_nothing(test_hosts: HostFactory) -> None:
    a, b, c = test_hosts(3, etcd=True, ttl=TTL)
    first, _agents = setup(a, b, c)
    b.stop_etcd()
    c.stop_etcd()
    # Well past the lease and the fencing margin: no quorum can exist anywhere, so no host
    # can take the CTs over, and a keeps them running.
    time.sleep(TTL + 5 + 4)
    assert state(a, CTIDS) == {"running"}, logs(a)
    assert {ct: incarnation(a, ct) for ct in CTIDS} == first
    assert not (a.root.root / "var/lib/vz/fenced.json").exists()
    said = logs(a, b)
    assert "nothing is fenced" in said and "HA decisions wait" in said, said
    status = a.run([sys.executable, "-m", "pyvz.cli.vzcluster", "status"])
    assert status.code != 0 and "no quorum" in status.err.splitlines()[0], status
    refused = a.vzctl("create", "309", "--hostname", "new")
    assert refused.code != 0 and "no quorum" in refused.err, refused
    assert not (Paths(a.root.root).conf_file(309)).exists()
    # One member back: quorum again, the leases were kept (etcd's new leader extends them),
    # and after another margin nothing has moved.
    b.start_etcd()
    wait_for("the agents publishing again", lambda: alive(c) == 3, 60, lambda: logs(a, b, c))
    time.sleep(5 + 2)
    assert state(a, CTIDS) == {"running"} and state(b, CTIDS) == {"down"}, logs(a, b, c)
    assert {ct: incarnation(a, ct) for ct in CTIDS} == first


def test_vzctl_recover_waits_for_the_dead_host_s_fencing(test_hosts: HostFactory, tmp_path: Path) -> None:
    """Item 6: a replicated CT without HA, started by hand on the standby once its host is
    gone; refused while that host lives."""
    ctids = ("303",)
    a, b, c = test_hosts(3, etcd=True, ttl=TTL)
    first, _agents = setup(a, b, c, ctids, ha=False)
    refused = b.vzctl("recover", "303")
    assert (
        refused.code != 0 and "alive" in refused.err and len(refused.err.strip().splitlines()) == 1
    ), refused
    assert not (Paths(b.root.root).conf_file(303)).exists()
    with Prober(c, tmp_path, ctids) as probe:
        time.sleep(1.0)
        failed_at = time.monotonic()
        a.cut()
        wait_for("a's lease expiring", lambda: alive(c) == 2, 30, lambda: logs(a, c))
        recovered = b.vzctl("recover", "303", timeout=300)
        assert recovered.code == 0, recovered
        assert "waiting" in recovered.out + recovered.err
        assert state(a, ctids) == {"down"}, logs(a)  # fenced: it is replicated, so protected
        time.sleep(1.5)
        seen = probe.answers()
    took = check_failover(a, b, seen, first, failed_at)
    print(f"vzctl recover: CT answered from b {took[0]:.1f} s after the cut")
    again = b.vzctl("recover", "303")
    assert again.code != 0 and "already exists" in again.err, again
