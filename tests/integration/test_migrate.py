"""vzmigrate between test hosts (network namespaces with their own root and sshd): offline
with snapshots, restart migration with pre-copy, live migration keeping a TCP connection,
the restricted key, and bad input."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Done
from tests.testhosts import HostFactory, TestHost

pytest_plugins = ["tests.testhosts"]
pytestmark = pytest.mark.root


def vzmigrate(host: TestHost, *args: str, timeout: float = 300) -> Done:
    return host.run([sys.executable, "-m", "pyvz.cli.vzmigrate", *args], timeout=timeout)


def ssh_options(host: TestHost) -> str:
    """The run's ssh client options without its (unrestricted) client key: vzmigrate must
    get in with the host's own migration key alone."""
    options = list(host.ssh_options)
    while "-i" in options:
        at = options.index("-i")
        del options[at : at + 2]
    return shlex.join(options)


def trust(sender: TestHost, receiver: TestHost) -> str:
    """Authorize sender's migration key on receiver; returns the key line."""
    pubkey = vzmigrate(sender, "--pubkey")
    assert pubkey.code == 0, pubkey
    line = pubkey.out.strip()
    done = vzmigrate(receiver, "--authorize", line, "--authorized-keys", str(receiver.authorized_keys))
    assert done.code == 0, done
    return line


def move(sender: TestHost, receiver: TestHost, ctid: str, *args: str) -> Done:
    return vzmigrate(sender, f"--ssh={ssh_options(sender)}", *args, receiver.address, ctid)


def firewall_tables(host: TestHost, ctid: str) -> list[str]:
    """The nftables tables of CT `ctid` in the host's namespace (pyvz names them
    `<root tag>_ct<CTID>`)."""
    from pyvz.net.firewall import table_name
    from pyvz.paths import Paths

    done = host.run(["nft", "list", "tables"])
    assert done.code == 0, done
    name = table_name(Paths(host.root.root).tag, int(ctid))
    return [line for line in done.out.splitlines() if line.split()[-1:] == [name]]


def ok(host: TestHost, *args: str) -> str:
    done = host.vzctl(*args)
    assert done.code == 0, f"vzctl {' '.join(args)} -> {done.code}: {done.err}{done.out}"
    return done.out


def test_a_stopped_ct_with_three_snapshots_arrives_whole(test_hosts: HostFactory) -> None:
    a, b = test_hosts(2)
    trust(a, b)
    ok(a, "create", "101", "--hostname", "mover", "--name", "mover")
    ids = []
    for number in range(3):
        ok(a, "mount", "101")
        (a.root.root / "var/lib/vz/root/101/root").mkdir(exist_ok=True)
        (a.root.root / f"var/lib/vz/root/101/root/file{number}").write_text(f"version {number}\n")
        ok(a, "umount", "101")
        uuid = f"{number + 1}1111111-2222-3333-4444-555555555555"
        ok(a, "snapshot", "101", "--id", uuid, "--name", f"snap{number}", "--description", f"desc {number}")
        ids.append(uuid)
    ok(a, "snapshot-switch", "101", "--id", ids[1])
    before = ok(a, "snapshot-list", "101", "-o", "uuid,parent_uuid,current,name,desc")
    done = move(a, b, "101")
    assert done.code == 0, done
    after = ok(b, "snapshot-list", "101", "-o", "uuid,parent_uuid,current,name,desc")
    assert after == before
    assert ok(b, "status", "101").strip() == "CTID 101 exist unmounted down"
    assert a.vzctl("status", "101").out.strip() == "CTID 101 deleted unmounted down"
    assert not (a.root.conf_dir / "101.conf").exists()
    # The snapshots arrived as snapshots: switching works and gives each one's files back.
    ok(b, "snapshot-switch", "101", "--id", ids[0])
    ok(b, "mount", "101")
    files = sorted(p.name for p in (b.root.root / "var/lib/vz/root/101/root").iterdir())
    assert files == ["file0"]
    ok(b, "umount", "101")
    ok(b, "start", "101")
    assert ok(b, "exec", "101", "hostname").strip() == "mover"
    assert re.search(r"\bmover\b", b.run(["ls", str(b.root.root / "etc/vz/names")]).out)


CLIENT = r"""
import socket, sys, time, json
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
sock.settimeout(30)
stop = sys.argv[3]
sent = received = 0
buffer = b""
gaps = []
last = time.monotonic()
import os
while not os.path.exists(stop) or received < sent:
    if not os.path.exists(stop):
        sent += 1
        sock.sendall(b"%d\n" % sent)
    while b"\n" not in buffer:
        chunk = sock.recv(4096)
        if not chunk:
            print(json.dumps({"closed": True, "sent": sent, "received": received}))
            sys.exit(1)
        buffer += chunk
    line, buffer = buffer.split(b"\n", 1)
    received += 1
    now = time.monotonic()
    gaps.append(now - last)
    last = now
    if int(line) != received:
        print(json.dumps({"out_of_order": int(line), "expected": received}))
        sys.exit(2)
    time.sleep(0.01)
print(json.dumps({"sent": sent, "received": received, "longest_gap": max(gaps)}))
"""


class EchoClient:
    """CLIENT run in `host` against ADDRESS:PORT (see echo_client)."""

    def __init__(self, host: TestHost, address: str, port: str, stop: Path) -> None:
        self.stop = stop
        argv = [*host.enter, sys.executable, "-c", CLIENT, address, port, str(stop)]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(self) -> tuple[dict[str, Any], str]:
        """Stop sending, collect the last answers: the client's summary ({} if it said
        nothing) and everything it printed, for messages."""
        self.stop.touch()
        out, err = self.process.communicate(timeout=60)
        lines = out.strip().splitlines()
        result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
        return {**result, "code": self.process.returncode}, f"{out} {err}"


@contextmanager
def echo_client(host: TestHost, address: str, port: str) -> Iterator[EchoClient]:
    """A client in `host` keeping one TCP connection to an echo server at ADDRESS:PORT,
    a numbered line every 10 ms; killed on the way out if it was not finished."""
    with tempfile.TemporaryDirectory(prefix="pyvz-echo-client-") as scratch:
        client = EchoClient(host, address, port, Path(scratch) / "stop")
        try:
            yield client
        finally:
            if client.process.poll() is None:
                client.process.kill()
                client.process.wait()


def _subnet_address(host: TestHost, last: int) -> str:
    return ".".join(host.address.split(".")[:3] + [str(last)])


def _counter(host: TestHost, ctid: str) -> tuple[int, int]:
    """(PID, count) of the CT's in-memory counter loop."""
    out = ok(host, "exec", ctid, "cat /tmp/counter.pid /tmp/count").split()
    return int(out[0]), int(out[1])


COUNTER = (
    # The count is renamed into place: a reader never catches it truncated and empty.
    "sh -c 'echo $$ > /tmp/counter.pid; i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; "
    "mv /tmp/count.new /tmp/count; sleep 0.05; done' </dev/null >/dev/null 2>&1 &"
)


def test_live_migration_keeps_a_tcp_connection_and_the_processes(test_hosts: HostFactory) -> None:
    import time

    a, b, c = test_hosts(3)
    trust(a, b)
    address = _subnet_address(a, 50)
    ok(a, "create", "101", "--ipadd", address, "--hostname", "live")
    ok(a, "start", "101")
    ok(a, "exec", "101", "nc -ll -p 5000 -e cat </dev/null >/dev/null 2>&1 &")
    ok(a, "exec", "101", COUNTER)
    time.sleep(0.5)
    pid_before, count_before = _counter(a, "101")
    with echo_client(c, address, "5000") as client:
        time.sleep(1.0)
        done = move(a, b, "101", "--online", "--times")
        if done.code:
            for log in (*a.root.lxc_dir.glob("*/criu-*.log"), *b.root.lxc_dir.glob("*/criu-*.log")):
                print(log, [line for line in log.read_text().splitlines() if "Error" in line][:12])
        assert done.code == 0, f"{done.code}: {done.err} {done.out}"
        time.sleep(1.0)
        result, said = client.finish()
    assert result["code"] == 0, said
    assert result["sent"] == result["received"] > 50, said
    print(f"longest gap the client saw: {result['longest_gap']:.3f} s")
    print(done.out)
    assert "downtime" in done.err + done.out
    pid_after, count_after = _counter(b, "101")
    assert pid_after == pid_before
    assert count_after >= count_before
    time.sleep(0.3)
    assert _counter(b, "101")[1] > count_after  # it goes on counting there
    assert ok(b, "status", "101").strip() == "CTID 101 exist mounted running"
    assert a.vzctl("status", "101").out.strip() == "CTID 101 deleted unmounted down"
    # The firewall table came ahead to the destination and left the source after the move.
    assert [table.split()[1] for table in firewall_tables(b, "101")] == ["inet"]
    assert firewall_tables(a, "101") == []
    # Back again, keeping the source's copy (-r no): stopped there, its config aside, and its
    # firewall table gone from there too; the CT runs on a with its processes.
    trust(b, a)
    back = move(b, a, "101", "--online", "-r", "no")
    assert back.code == 0, f"{back.code}: {back.err} {back.out}"
    assert _counter(a, "101")[0] == pid_before
    assert (b.root.conf_dir / "101.conf.migrated").exists()
    assert b.vzctl("status", "101").out.strip() == "CTID 101 deleted unmounted down"
    assert firewall_tables(b, "101") == []
    assert [table.split()[1] for table in firewall_tables(a, "101")] == ["inet"]


def test_restart_migration_with_a_writer_keeps_every_byte(test_hosts: HostFactory) -> None:
    """500 MB of data and a writer appending numbered, fsynced lines during the pre-copy:
    the destination has every line written before the stop, and the downtime is recorded.
    The writer's last line comes from its TERM trap, during the clean stop: after the last
    pre-copy round, so only the final delta can carry it."""
    a, b = test_hosts(2)
    trust(a, b)
    ok(a, "create", "101", "--hostname", "busy")
    ok(a, "mount", "101")
    data = a.root.root / "var/lib/vz/root/101/data"
    data.mkdir()
    for number in range(10):
        with open(data / f"blob{number}", "wb") as out:
            out.write(os.urandom(50 << 20))
    ok(a, "umount", "101")
    ok(a, "start", "101")
    writer = (
        'sh -c \'trap "echo stopped >> /root/log; sync; exit 0" TERM; '
        "i=0; while :; do i=$((i+1)); echo line $i >> /root/log; sync /root/log 2>/dev/null || sync; "
        "sleep 0.01; done' </dev/null >/dev/null 2>&1 &"
    )
    ok(a, "exec", "101", writer)
    done = move(a, b, "101", "--times")
    assert done.code == 0, f"{done.code}: {done.err} {done.out}"
    match = re.search(r"was down for ([0-9.]+) s", done.out + done.err)
    assert match, done.out
    print(f"restart migration downtime: {match.group(1)} s")
    assert "Pre-copy round 1" in done.out
    assert ok(b, "status", "101").strip() == "CTID 101 exist mounted running"
    log = (b.root.root / "var/lib/vz/root/101/root/log").read_text().splitlines()
    numbers = [int(line.split()[1]) for line in log if line.startswith("line ")]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) > 10  # none lost, none torn
    assert log[-1] == "stopped", log[-3:]  # written while the CT stopped
    for number in range(10):
        assert (b.root.root / f"var/lib/vz/root/101/data/blob{number}").stat().st_size == 50 << 20
    assert a.vzctl("status", "101").out.strip() == "CTID 101 deleted unmounted down"


def test_a_dir_layout_ct_moves_to_a_host_with_other_paths(test_hosts: HostFactory) -> None:
    """A dir CT goes over as a tar stream and arrives as dir, on a host whose VE_PRIVATE and
    VE_ROOT are elsewhere; its files keep their owners as the CT sees them."""
    a, b = test_hosts(2)
    trust(a, b)
    conf = b.root.root / "etc/vz/vz.conf"
    text = conf.read_text()
    text = re.sub(r"^VE_PRIVATE=.*$", 'VE_PRIVATE="/srv/vz/private/$VEID"', text, flags=re.M)
    text = re.sub(r"^VE_ROOT=.*$", 'VE_ROOT="/srv/vz/root/$VEID"', text, flags=re.M)
    conf.write_text(text)
    ok(a, "create", "102", "--layout", "dir", "--hostname", "dirct")
    ok(a, "start", "102")
    ok(
        a,
        "exec",
        "102",
        "mkdir -p /home/someone && echo hi > /home/someone/note && chown 1234:1234 /home/someone/note",
    )
    ok(a, "stop", "102")
    done = move(a, b, "102")
    assert done.code == 0, f"{done.code}: {done.err} {done.out}"
    assert (b.root.root / "srv/vz/private/102/fs").is_dir()
    ok(b, "start", "102")
    assert ok(b, "exec", "102", "stat -c %u:%g /home/someone/note").strip() == "1234:1234"
    assert ok(b, "exec", "102", "cat /home/someone/note").strip() == "hi"
    assert ok(b, "exec", "102", "hostname").strip() == "dirct"


def test_a_ct_comes_back_to_a_host_whose_own_hand_over_of_it_was_cut(test_hosts: HostFactory) -> None:
    """a handed CT 101 to b and was killed after taking it apart, before its hand-over
    marker went (the evacuation test's kill point): the CT moving back to a must start."""
    a, b = test_hosts(2)
    trust(b, a)
    assert b.vzctl("create", "101").code == 0 and b.vzctl("start", "101").code == 0
    from pyvz.paths import Paths

    left = Paths(a.root.root).conf_file(101).with_name("101.migrating")
    left.parent.mkdir(parents=True, exist_ok=True)
    left.write_text(json.dumps({"to": b.address, "running": True}))
    done = move(b, a, "101")
    assert done.code == 0, done
    assert a.vzctl("status", "101").out.split()[4] == "running"
    assert not left.exists()
    assert a.vzctl("stop", "--fast", "101").code == 0
