"""vzreplicate between test hosts: full then incremental runs, replicas kept apart from CTs,
runs killed (sender, receiver, kill -9) or cut off mid-stream leaving the previous replica
intact, the two ends' parents kept in step, `vzctl recover` on the standby, and bad input."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.background import Background
from tests.conftest import Done
from tests.integration.test_migrate import ok, ssh_options, trust
from tests.integration.test_migrate_faults import (
    _proc_state,
    arm,
    disarm,
    host_files,
    receivers,
    slow_link,
    tree,
)
from tests.testhosts import HostFactory, TestHost

pytest_plugins = ["tests.testhosts"]
pytestmark = pytest.mark.root


def vzreplicate(host: TestHost, *args: str, timeout: float = 300) -> Done:
    return host.run([sys.executable, "-m", "pyvz.cli.vzreplicate", *args], timeout=timeout)


def replicate(a: TestHost, *args: str) -> Done:
    return vzreplicate(a, "run", f"--ssh={ssh_options(a)}", *args)


def status(a: TestHost, ctid: str = "101") -> list[dict[str, Any]]:
    done = vzreplicate(a, "status", ctid, "-j")
    assert done.code == 0, done
    rows: list[dict[str, Any]] = json.loads(done.out)
    return rows


def replica_files(b: TestHost, ctid: str = "101") -> Path:
    return b.root.private_dir / f".replicas/{ctid}/replica/fs"


def one_error(done: Done) -> str:
    lines = [line for line in done.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), f"not one line of error: {done.err!r}"
    return lines[0]


def set_conf(host: TestHost, **values: str) -> None:
    conf = host.root.root / "etc/vz/vz.conf"
    conf.write_text(conf.read_text() + "".join(f'{k}="{v}"\n' for k, v in values.items()))


def write(host: TestHost, relative: str, data: bytes, ctid: str = "101") -> None:
    """A file in a stopped CT's private area (its own files: uid 0 on disk)."""
    path = host.root.private_dir / ctid / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def standby(a: TestHost, b: TestHost, ctid: str = "101", data_mb: int = 8) -> None:
    """CT `ctid` on a, stopped, with `data_mb` MB of its own, replicated to b once (full)."""
    trust(a, b)
    ok(a, "create", ctid, "--hostname", "rep")
    write(a, "root/data", os.urandom(data_mb << 20), ctid)
    ok(a, "set", ctid, "--replicate", b.address, "--replicate-interval", "5m", "--save")
    done = replicate(a, ctid)
    assert done.code == 0, done
    assert status(a, ctid)[0]["kind"] == "full"


def test_full_then_incremental(test_hosts: HostFactory) -> None:
    a, b = test_hosts(2)
    trust(a, b)
    ok(a, "create", "101", "--hostname", "rep", "--name", "web")
    write(a, "root/data", os.urandom(40 << 20))
    ok(a, "set", "101", "--replicate", b.address, "--replicate-interval", "5m", "--save")
    conf = (a.root.conf_dir / "101.conf").read_text()
    assert f'REPLICATE="{b.address}"' in conf and 'REPLICATE_INTERVAL="5m"' in conf

    first = replicate(a, "101")
    assert first.code == 0, first
    assert re.search(rf"CT 101 -> {re.escape(b.address)}: full", first.out), first.out
    [row] = status(a)
    assert row["host"] == b.address and row["last"] == "ok" and row["kind"] == "full"
    assert row["sent"] >= 40 << 20 and row["size"] >= 40 << 20
    # The replica holds the CT's files as they were at the snapshot.
    assert tree(replica_files(b)) == tree(a.root.private_dir / "101")

    write(a, "root/changed", os.urandom(1 << 20))
    (a.root.private_dir / "101/root/data").open("r+b").write(os.urandom(256 << 10))
    second = replicate(a, "101")
    assert second.code == 0, second
    [row] = status(a)
    assert row["kind"] == "incremental", row
    # Only the change went: what the sender reports, against the CT's size.
    assert row["sent"] < row["size"] * 0.05, row
    assert row["sent"] >= 1 << 20
    assert tree(replica_files(b)) == tree(a.root.private_dir / "101")

    # A replica is no CT: not listed, no config, no status, no boot.
    assert vzreplicate(b, "list", "-j").code == 0
    [held] = json.loads(vzreplicate(b, "list", "-j").out)
    assert held["ctid"] == 101 and held["name"] == "web" and held["incremental"] is True
    assert b.run([sys.executable, "-m", "pyvz.cli.vzlist", "-a", "-H", "-o", "ctid"]).out.strip() == ""
    assert b.vzctl("status", "101").out.strip() == "CTID 101 deleted unmounted down"
    assert b.vzctl("boot").code == 0
    assert not (b.root.conf_dir / "101.conf").exists()
    listing = vzreplicate(b, "list")
    assert re.search(r"^\s*101\s+web\s+\S+", listing.out, re.M), listing.out

    # --replicate '' takes the standby off; status still shows what was sent.
    ok(a, "set", "101", "--replicate", "", "--save")
    [row] = status(a)
    assert row["configured"] is False and row["last"] == "ok"


def test_running_ct_and_due(test_hosts: HostFactory) -> None:
    """A running CT is snapshotted frozen for an instant; --due runs only what is due."""
    a, b = test_hosts(2)
    trust(a, b)
    ok(a, "create", "101", "--hostname", "rep")
    ok(a, "set", "101", "--replicate", b.address, "--replicate-interval", "1h", "--save")
    ok(a, "start", "101")
    ok(a, "exec", "101", "echo before > /root/mark")
    set_conf(a, REPLICATE_SSH=ssh_options(a))
    done = vzreplicate(a, "run", "--due")
    assert done.code == 0, done
    assert "CT 101 ->" in done.out
    assert (replica_files(b) / "root/mark").read_text() == "before\n"
    again = vzreplicate(a, "run", "--due")  # within the hour: nothing is due
    assert again.code == 0 and "CT 101 ->" not in again.out, again
    text = vzreplicate(a, "status")
    assert re.search(
        rf"^\s*101\s+{re.escape(b.address)}\s+\d+[smh]\s+\S+\s+\S+\s+ok\s*$", text.out, re.M
    ), text
    ok(a, "stop", "101")


# ---- runs that break off ------------------------------------------------------------------------


class Run(Background):
    """vzreplicate run on `a`, in the background (tests/background.py)."""

    def __init__(self, a: TestHost, ctid: str = "101") -> None:
        argv = [
            *a.enter,
            sys.executable,
            "-m",
            "pyvz.cli.vzreplicate",
            "run",
            f"--ssh={ssh_options(a)}",
            ctid,
        ]
        super().__init__(argv, a.env, "vzreplicate")
        _started.append(self)


_started: list[Run] = []


@pytest.fixture(autouse=True)
def _no_strays(test_hosts: HostFactory) -> Iterator[None]:
    yield
    while _started:
        run = _started.pop()
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and _proc_state(pid) != "Z":
        assert time.monotonic() < deadline, f"pid {pid} did not die"
        time.sleep(0.02)


def no_receiver(b: TestHost, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while receivers(b):
        assert time.monotonic() < deadline, f"receivers {receivers(b)} still run on {b.name}"
        time.sleep(0.2)


def staging(b: TestHost) -> Path:
    return b.root.private_dir / ".replicas/101/.incoming"


def intact(b: TestHost, before: dict[str, tuple[object, ...]], swept: bool = True) -> None:
    """The previous replica is still the replica, file for file, and (`swept`: a receiver
    that lived to see its sender go) nothing half-made of the broken run is left once the
    receiver has ended; a killed receiver's staging goes with the next run."""
    assert tree(replica_files(b)) == before
    no_receiver(b)
    assert staging(b).exists() != swept


def next_run_works(a: TestHost, b: TestHost) -> dict[str, Any]:
    done = replicate(a, "101")
    assert done.code == 0, done
    assert tree(replica_files(b)) == tree(a.root.private_dir / "101")
    assert not staging(b).exists()
    assert not (a.root.private_dir / f".101.replicate/{b.address}/new").exists()
    [row] = status(a)
    assert row["last"] == "ok"
    return row


@pytest.mark.parametrize("side", ["sender", "receiver"])
def test_killed_mid_stream(test_hosts: HostFactory, side: str) -> None:
    a, b = test_hosts(2)
    standby(a, b)
    before = tree(replica_files(b))
    write(a, "root/new", os.urandom(4 << 20))
    killed_host = a if side == "sender" else b
    point = "replicate-sending" if side == "sender" else "replica-receiving"
    set_conf(a, REPLICATE_RETRIES="0")
    arm(killed_host, point)
    run = Run(a)
    pid = run.wait_point(point)
    disarm(killed_host)
    # While it is stopped there, mid-stream: the old replica is the replica.
    assert tree(replica_files(b)) == before
    kill(pid)
    done = run.finish()
    if side == "sender":
        assert done.code == -signal.SIGKILL
    else:
        assert done.code == 3, done
        one_error(done)
        [row] = status(a)
        assert row["last"] == "failed" and row["error"], row
        assert row["age"] is not None  # the good replica is still the one before
    intact(b, before, swept=side == "sender")
    assert not (replica_files(b) / "root/new").exists()
    row = next_run_works(a, b)
    assert row["kind"] == "incremental", row  # the parents on both ends still agree


def test_a_failed_run_is_retried(test_hosts: HostFactory) -> None:
    a, b = test_hosts(2)
    standby(a, b)
    write(a, "root/new", os.urandom(1 << 20))
    set_conf(a, REPLICATE_RETRIES="2", REPLICATE_RETRY_DELAY="0.5")
    arm(b, "replica-receiving")
    run = Run(a)
    pid = run.wait_point("replica-receiving")
    disarm(b)
    kill(pid)
    done = run.finish()
    assert done.code == 0, done
    assert "2 attempts" in done.out and "trying again" in done.out, done.out
    [row] = status(a)
    assert row["last"] == "ok" and row["attempts"] == 2 and row["kind"] == "incremental", row
    assert tree(replica_files(b)) == tree(a.root.private_dir / "101")


def test_cable_cut_mid_stream(test_hosts: HostFactory) -> None:
    a, b = test_hosts(2)
    standby(a, b, data_mb=2)
    before = tree(replica_files(b))
    write(a, "root/big", os.urandom(120 << 20))
    set_conf(a, REPLICATE_RETRIES="0")
    set_conf(b, MIGRATE_TIMEOUT="5")
    incoming = b.root.private_dir / ".replicas/101/.incoming/fs"
    with slow_link(b):
        run = Run(a)
        deadline = time.monotonic() + 60
        while not (incoming.exists() and _used(incoming) > 10 << 20):
            assert run.proc.poll() is None, run.finish()
            assert time.monotonic() < deadline, "the stream did not get going"
            time.sleep(0.1)
        b.cut()
        try:
            done = run.finish(90)
            assert done.code == 3, done
            one_error(done)
            assert tree(replica_files(b)) == before
        finally:
            b.restore()
    intact(b, before)
    assert not (replica_files(b) / "root/big").exists()
    row = next_run_works(a, b)
    assert row["kind"] == "incremental", row


def _used(path: Path) -> int:
    return sum(os.lstat(Path(t) / f).st_blocks * 512 for t, _d, fs in os.walk(path) for f in fs)


@pytest.mark.parametrize("side", ["sender", "receiver"])
def test_killed_after_the_commit(test_hosts: HostFactory, side: str) -> None:
    """The standby took the new replica but the sender never heard so (it died, or the
    receiver died before it answered): the next run finds the standby's parent in what the
    broken run left and stays incremental; if this side's parent is lost, the next run is
    full, and says why."""
    a, b = test_hosts(2)
    standby(a, b)
    write(a, "root/second", b"second\n")
    killed, point = (a, "replicate-sent") if side == "sender" else (b, "replica-committed")
    set_conf(a, REPLICATE_RETRIES="0")
    arm(killed, point)
    run = Run(a)
    pid = run.wait_point(point)
    disarm(killed)
    kill(pid)
    done = run.finish()
    assert done.code == (-signal.SIGKILL if side == "sender" else 3), done
    assert (replica_files(b) / "root/second").read_text() == "second\n"
    no_receiver(b)
    write(a, "root/third", b"third\n")
    row = next_run_works(a, b)
    assert row["kind"] == "incremental" and row["note"] is None, row

    # This side's parent goes (a restored host, a hand-made change): a full send, said so.
    subprocess.run(
        [
            "btrfs",
            "-q",
            "subvolume",
            "delete",
            str(a.root.private_dir / f".101.replicate/{b.address}/base/fs"),
        ],
        check=True,
    )
    write(a, "root/fourth", b"fourth\n")
    done = replicate(a, "101")
    assert done.code == 0, done
    assert "full send" in done.out, done.out
    [row] = status(a)
    assert row["kind"] == "full" and "do not match" in row["note"], row
    assert (replica_files(b) / "root/fourth").read_text() == "fourth\n"


# ---- recover -------------------------------------------------------------------------------------


def test_recover_after_a_broken_run(test_hosts: HostFactory) -> None:
    """A run killed on the standby after its stream was all in (just before the swap): the
    replica that recover starts is the previous one, whole."""
    a, b = test_hosts(2)
    standby(a, b)
    write(a, "root/state", b"the next run's\n")
    set_conf(a, REPLICATE_RETRIES="0")
    arm(b, "replica-staged")
    run = Run(a)
    pid = run.wait_point("replica-staged")
    disarm(b)
    kill(pid)
    assert run.finish().code == 3
    done = b.vzctl("recover", "101", "--force")
    assert done.code == 0, done
    assert b.vzctl("exec", "101", "test -e /root/state").code != 0  # the previous replica's files
    assert ok(b, "exec", "101", "wc -c < /root/data").strip() == str(8 << 20)
    assert not staging(b).exists() and json.loads(vzreplicate(b, "list", "-j").out) == []
    ok(b, "stop", "101")


def test_recover_starts_the_replica(test_hosts: HostFactory) -> None:
    a, b = test_hosts(2)
    standby(a, b)
    ok(a, "set", "101", "--name", "web", "--save")
    write(a, "root/state", b"replicated\n")
    assert replicate(a, "101").code == 0
    write(a, "root/state", b"after the last run\n")  # never reaches b
    b_before = host_files(b)

    unvouched = b.vzctl("recover", "101")
    assert unvouched.code == 20, unvouched
    assert "--force" in unvouched.err and host_files(b) == b_before

    done = b.vzctl("recover", "web", "--force")  # by the name its replica knows
    assert done.code == 0, done
    assert b.vzctl("status", "101").out.strip() == "CTID 101 exist mounted running"
    assert ok(b, "exec", "101", "cat /root/state") == "replicated\n"
    assert ok(b, "exec", "101", "hostname").strip() == "rep"
    assert json.loads(vzreplicate(b, "list", "-j").out) == []
    assert b.run([sys.executable, "-m", "pyvz.cli.vzlist", "-H", "-o", "ctid"]).out.split() == ["101"]
    # The CT is here now: a second recover and a run from the old host are refused.
    again = b.vzctl("recover", "101", "--force")
    assert again.code == 44 and "already exists" in again.err, again
    back = replicate(a, "101")
    assert back.code == 44, back
    assert "exists on this host as a CT" in one_error(back)
    ok(b, "stop", "101")


def test_recover_refuses_an_existing_ct(test_hosts: HostFactory) -> None:
    a, b = test_hosts(2)
    standby(a, b, ctid="103")
    ok(b, "create", "103", "--hostname", "local")
    conf = (b.root.conf_dir / "103.conf").read_bytes()
    done = b.vzctl("recover", "103", "--force")
    assert done.code == 44, done
    assert "already exists" in done.err
    assert (b.root.conf_dir / "103.conf").read_bytes() == conf
    assert json.loads(vzreplicate(b, "list", "-j").out)[0]["ctid"] == 103


# ---- bad input ----------------------------------------------------------------------------------


def test_bad_input_is_one_line(test_hosts: HostFactory) -> None:
    a, b, c = test_hosts(3)
    trust(a, b)
    trust(a, a)  # so that only the receiver's own check stops a run to itself
    ok(a, "create", "101", "--hostname", "rep")
    before_a, before_b, before_c = host_files(a), host_files(b), host_files(c)
    cases = {
        "unknown CT": (("999", b.address), 14),
        "bad host": (("101", "bad/host"), 21),
        "unknown host": (("101", "no-such-host.invalid"), 3),
        "host without keys": (("101", c.address), 3),
        "itself": (("101", a.address), 21),
        "no standby": (("101",), 21),
    }
    for what, (args, code) in cases.items():
        done = replicate(a, *args)
        print(what, done.code, done.err.strip())
        assert done.code == code, f"{what}: {done}"
        one_error(done)
    assert vzreplicate(a, "run").code == 20
    assert a.vzctl("set", "101", "--replicate", "a,b/c", "--save").code == 21
    assert a.vzctl("set", "101", "--replicate-interval", "5x", "--save").code == 21
    assert b.vzctl("recover", "101", "--force").code == 43
    assert host_files(a) == before_a
    assert host_files(b) == before_b
    assert host_files(c) == before_c


# ---- the restricted key in replication mode ------------------------------------------------------


class Forger:
    """Replication sessions with b under `sender`'s migration key, driven by hand."""

    def __init__(self, sender: TestHost, b: TestHost, tmp: Path) -> None:
        self.sender, self.b, self.tmp = sender, b, tmp
        self.count = 0

    def run(self, *steps: dict[str, object]) -> list[dict[str, object]]:
        from tests.integration.test_migrate_faults import DRIVER

        self.count += 1
        plan = self.tmp / f"plan-{self.count}.json"
        ssh = shlex.split(ssh_options(self.sender))
        plan.write_text(
            json.dumps({"destination": self.b.address, "ssh": ssh, "steps": list(steps), "timeout": 20})
        )
        done = self.sender.run([sys.executable, "-c", DRIVER, str(plan)])
        assert done.code == 0 and done.out.strip(), done
        answers: list[dict[str, object]] = json.loads(done.out.strip().splitlines()[-1])
        print(f"session {self.count}: {answers}")
        no_receiver(self.b, 30)
        answers = [answer for answer in answers if answer.get("op") != "ping"]
        # After a refusal the receiver has ended: the driver's `bye` may find no one there.
        if len(answers) > 1 and answers[-2]["op"] == "error" and answers[-1]["op"] == "raised":
            answers.pop()
        return answers

    def stream(self, raw: bytes, incremental: bool) -> dict[str, object]:
        self.count += 1
        path = self.tmp / f"stream-{self.count}"
        path.write_bytes(raw)
        message = {
            "op": "stream",
            "kind": "btrfs",
            "name": "fs",
            "incremental": incremental,
            "bytes": len(raw),
        }
        return {"message": message, "data": str(path)}


def hello(ctid: int = 101) -> dict[str, object]:
    return {"message": {"op": "replicate", "version": 1, "ctid": ctid, "source": "forger", "layout": "btrfs"}}


def config(text: str) -> dict[str, object]:
    return {"message": {"op": "config", "text": text, "scripts": {}}}


def refused_at(answers: list[dict[str, object]], step: int) -> str:
    assert len(answers) == step and all(a["op"] == "ok" for a in answers[:-1]), answers
    assert answers[-1]["op"] == "error", answers
    return str(answers[-1]["error"])


def test_the_key_keeps_only_its_own_replicas(test_hosts: HostFactory, tmp_path: Path) -> None:
    from tests.integration.test_migrate_faults import _subvolume_field, only_migration_key, real_stream
    from tests.unit.test_sendstream import end, snapshot, stream, subvol

    a, b, c = test_hosts(3)
    only_migration_key(a, b)
    trust(c, b)
    ok(a, "create", "101", "--hostname", "rep")
    write(a, "root/data", b"the real replica\n")
    ok(a, "set", "101", "--replicate", b.address, "--save")
    assert replicate(a, "101").code == 0
    ok(b, "create", "103")  # a CT of b's own, with a snapshot
    ok(b, "snapshot", "103", "--id", "31111111-2222-3333-4444-555555555555")
    victim = uuidlib.UUID(
        _subvolume_field(
            b.root.private_dir / ".103.snapshots/31111111-2222-3333-4444-555555555555/fs", "UUID"
        )
    )
    conf = (a.root.conf_dir / "101.conf").read_text()
    replica_before = tree(replica_files(b))
    before = host_files(b)
    forger = Forger(a, b, tmp_path)

    # A config whose paths lead out of b's root, a privileged one: refused.
    evil = conf + 'VE_PRIVATE="/../../../etc/evil/$VEID"\n'
    assert "outside" in refused_at(forger.run(hello(), config(evil)), 2)
    assert "privileged" in refused_at(forger.run(hello(), config(conf + 'LOCAL_UID="0"\n')), 2)
    # A stream whose parent is another CT's snapshot, full or "incremental": refused.
    steal = stream(snapshot(victim, "fs", uuidlib.uuid4()), end())
    for incremental in (False, True):
        answers = forger.run(hello(), config(conf), forger.stream(steal, incremental))
        assert "did not bring" in refused_at(answers, 3)
    # A stream for another subvolume name, or claiming a UUID b's pool has.
    other = real_stream(a, tmp_path, "other")
    assert "not 'fs'" in refused_at(forger.run(hello(), config(conf), forger.stream(other, False)), 3)
    claim = stream(subvol("fs", victim), end())
    assert "already has" in refused_at(forger.run(hello(), config(conf), forger.stream(claim, False)), 3)
    # A CTID that is a CT on b.
    assert "exists on this host as a CT" in refused_at(forger.run(hello(103)), 1)
    # Another host's key may not touch a's replica.
    other_key = Forger(c, b, tmp_path)
    assert "another host" in refused_at(other_key.run(hello()), 1)
    assert "another host" in refused_at(
        other_key.run({"message": {"op": "replicate-remove", "ctid": 101}}), 1
    )
    # Nothing but the protocol: a migration op in the middle of a replication session.
    assert "unexpected" in refused_at(forger.run(hello(), {"message": {"op": "hello", "version": 1}}), 2)

    assert tree(replica_files(b)) == replica_before
    assert host_files(b) == before, f"b changed: {sorted(host_files(b) ^ before)}"
    # The key's own replica: a may drop it (and only through vzreplicate remove).
    done = vzreplicate(a, "remove", f"--ssh={ssh_options(a)}", "101", b.address)
    assert done.code == 0, done
    assert json.loads(vzreplicate(b, "list", "-j").out) == []
    assert not (a.root.private_dir / ".101.replicate").exists()
    assert status(a)[0]["last"] == "-"


def test_connection_reuse(test_hosts: HostFactory) -> None:
    """REPLICATE_SSH_PERSIST keeps one SSH connection per standby for the next run."""
    a, b = test_hosts(2)
    set_conf(a, REPLICATE_SSH_PERSIST="30s")
    standby(a, b, data_mb=1)
    sockets = list((a.root.root / "run/pyvz/ssh").iterdir())
    assert len(sockets) == 1 and sockets[0].is_socket(), sockets
    write(a, "root/next", b"next\n")
    done = replicate(a, "101")
    assert done.code == 0, done
    assert (replica_files(b) / "root/next").read_text() == "next\n"
    assert status(a)[0]["kind"] == "incremental"
    # The master goes when asked (the test hosts' end would kill it anyway).
    a.run(["ssh", "-o", f"ControlPath={sockets[0]}", "-O", "exit", f"root@{b.address}"])
