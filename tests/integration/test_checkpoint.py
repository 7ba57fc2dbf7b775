"""Checkpoint and restore (CRIU) on real busybox CTs: vzctl chkpnt/restore, `vzctl start` of a
suspended CT, the staged forms, --dumpfile, a TCP connection kept across a dump, and what a
refused command leaves (nothing changed, the CT neither stopped nor left frozen).

A shell loop in the CT counts in a shell variable and publishes the count in /tmp/count
(tmpfs): after a restore it must be the same process (same PID), counting on from where it was;
a frozen CT's count does not move. The count is read from the host through the CT's init,
which works while the CT is frozen (a `vzctl exec` would wait for the thaw).
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, Done, VzRoot
from tests.integration.test_network import HOST, ct_pid, netns, vzctl_in  # noqa: F401 (a fixture)

pytestmark = pytest.mark.root

CTID = "101"
# `$$` is the loop's own PID; the count goes through a rename so it is never read half-written.
# Its stdio is redirected: on our pipes it would keep the `vzctl exec` that started it waiting.
COUNTER = (
    "sh -c 'echo $$ > /tmp/pid; i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; "
    "mv /tmp/count.new /tmp/count; sleep 0.05; done' </dev/null >/dev/null 2>&1 &"
)
NO_CRIU_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # criu is in /usr/local/sbin
SUSPENDED = f"CTID {CTID} exist unmounted down suspended"
RUNNING = f"CTID {CTID} exist mounted running"
DOWN = f"CTID {CTID} exist unmounted down"


# ---- helpers ------------------------------------------------------------------------------


@pytest.fixture
def vz(vzroot: VzRoot) -> Iterator[VzRoot]:
    """vzroot, with CT 101 thawed at the end: a CT a failed test left frozen cannot be stopped."""
    try:
        yield vzroot
    finally:
        thaw(vzroot)


def thaw(vzroot: VzRoot) -> None:
    sys.path.insert(0, str(REPO))
    from pyvz.paths import Paths
    from pyvz.resources.cgroups import CtCgroups, detect

    path, _freeze, thawed = detect().freezer(CtCgroups.of(Paths(vzroot.root).tag, int(CTID)).container)
    if path.exists():
        path.write_text(thawed)


def status(vzroot: VzRoot) -> str:
    return vzroot.ok("status", CTID).strip()


def conf(vzroot: VzRoot) -> str:
    return (vzroot.conf_dir / f"{CTID}.conf").read_text()


def default_dump(vzroot: VzRoot) -> Path:
    return vzroot.root / f"var/lib/vz/dump/Dump.{CTID}"


def is_dump(path: Path) -> bool:
    return (path / "pyvz-dump.json").is_file()


def one_error_line(done: Done) -> str:
    lines = [line for line in done.err.splitlines() if line.strip()]
    assert len(lines) == 1, done.err
    return lines[0]


def vzctl_env(vzroot: VzRoot, env: dict[str, str], *args: str) -> Done:
    """vzctl with some of its environment changed (VzRoot.run always uses vzroot.env)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pyvz.cli.vzctl", *args],
        env={**vzroot.env, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Done(proc.returncode, proc.stdout, proc.stderr)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def count(vzroot: VzRoot) -> int:
    """The loop's latest count, read on the host through the CT's init (frozen or not)."""
    return int(Path(f"/proc/{ct_pid(vzroot, CTID)}/root/tmp/count").read_text())


def count_or_none(vzroot: VzRoot) -> int | None:
    try:
        return count(vzroot)
    except (FileNotFoundError, ValueError):
        return None


def counted_past(vzroot: VzRoot, value: int) -> int:
    """Wait until the count goes beyond `value`: the loop is running (not frozen, not gone)."""
    wait_for(f"count beyond {value}", lambda: (count_or_none(vzroot) or 0) > value)
    return count(vzroot)


def assert_frozen(vzroot: VzRoot) -> int:
    first = count(vzroot)
    time.sleep(0.5)  # ten rounds of the loop, had it run
    assert count(vzroot) == first, "the count moved in a frozen CT"
    return first


def loop_pid(vzroot: VzRoot) -> int:
    """The counting loop's PID in the CT; it must be that very loop running under it."""
    pid = int(vzroot.ok("exec", CTID, "cat /tmp/pid"))
    cmdline = vzroot.vzctl("exec", CTID, f"tr '\\0' ' ' < /proc/{pid}/cmdline")
    assert cmdline.code == 0 and "/tmp/count.new" in cmdline.out, (pid, cmdline)
    return pid


def running_ct(vzroot: VzRoot) -> int:
    """CT 101 running the loop, with a count of 10 at least (so that 'from 0 again' would show)."""
    vzroot.ok("create", CTID)
    vzroot.ok("start", CTID)
    vzroot.ok("exec", CTID, COUNTER)
    counted_past(vzroot, 9)
    return loop_pid(vzroot)


def assert_still_counting(vzroot: VzRoot, pid: int) -> None:
    """The same loop goes on: the CT was neither restarted nor left frozen."""
    assert status(vzroot) == RUNNING
    assert loop_pid(vzroot) == pid
    counted_past(vzroot, count(vzroot))


# ---- the tests ----------------------------------------------------------------------------


def test_memory_and_pids_survive_chkpnt_and_restore(vz: VzRoot) -> None:
    pid = running_ct(vz)
    before = count(vz)
    out = vz.ok("chkpnt", CTID)
    assert "Checkpointing completed successfully in " in out and str(default_dump(vz)) in out
    assert status(vz) == SUSPENDED
    assert is_dump(default_dump(vz))
    vz.ok("restore", CTID)
    assert status(vz) == RUNNING
    assert loop_pid(vz) == pid
    # The count lives in the shell's memory: it goes on from where it was, not from 0.
    after = count(vz)
    assert after >= before, (before, after)
    counted_past(vz, after)
    assert not default_dump(vz).exists()  # used up by the restore


def test_start_of_a_suspended_ct_restores_it(vz: VzRoot) -> None:
    pid = running_ct(vz)
    assert status(vz) == RUNNING
    before = count(vz)
    vz.ok("chkpnt", CTID)
    assert status(vz) == SUSPENDED
    out = vz.ok("start", CTID)
    assert f"Dump file {default_dump(vz)} exists, trying to restore from it" in out
    assert status(vz) == RUNNING
    assert loop_pid(vz) == pid
    assert count(vz) >= before
    counted_past(vz, before)
    assert not default_dump(vz).exists()


SERVER_PORT = 7000
CLIENT = r"""
import json, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
print(json.dumps(s.getsockname()), flush=True)
sent, pending = 0, b""
for command in sys.stdin:  # N: send the next N numbered lines, one at a time, read each echo
    echoed = []
    for _ in range(int(command)):
        sent += 1
        s.sendall(b"line %d\n" % sent)
        while b"\n" not in pending:
            chunk = s.recv(4096)
            if not chunk:
                sys.exit("the server closed the connection")
            pending += chunk
        line, pending = pending.split(b"\n", 1)
        echoed.append(line.decode())
    print(json.dumps(echoed), flush=True)
s.shutdown(socket.SHUT_WR)  # the server's cat ends; whatever else comes back is a duplicate
while chunk := s.recv(4096):
    pending += chunk
print(json.dumps(pending.decode()), flush=True)
"""


class Client:
    """The Python client above, run in the test's network namespace (the "host")."""

    def __init__(self, namespace: str, address: str, port: int) -> None:
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{namespace}", sys.executable, "-c", CLIENT, address, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def reply(self) -> object:
        try:
            return json.loads(self.lines.get(timeout=60))
        except queue.Empty:
            raise AssertionError(f"the client gave no answer (exit {self.proc.poll()})") from None

    def ask(self, lines: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{lines}\n")
        self.proc.stdin.flush()

    def finish(self) -> object:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        rest = self.reply()
        assert self.proc.wait(timeout=30) == 0
        return rest

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def numbered(first: int, last: int) -> list[str]:
    return [f"line {n}" for n in range(first, last + 1)]


def test_a_tcp_connection_survives_chkpnt_and_restore(vz: VzRoot, netns: str) -> None:  # noqa: F811
    """An echo server in the CT, a client on the "host" (the test's namespace) with one
    connection: lines sent before the dump, while the CT is down and after the restore all
    come back once, in order, on that connection."""

    def run(*args: str) -> Done:  # every command for this CT runs where its host side is
        proc = vzctl_in(vz, netns, *args)
        return Done(proc.returncode, proc.stdout, proc.stderr)

    def ok(*args: str) -> str:
        done = run(*args)
        assert done.code == 0, f"vzctl {' '.join(args)} -> {done.code}: {done.err}{done.out}"
        return done.out

    def listening() -> bool:
        rows = [line.split() for line in ok("exec", CTID, "cat /proc/net/tcp /proc/net/tcp6").splitlines()]
        # busybox nc listens on IPv6's any address; 0A is LISTEN
        return any(row[1].endswith(f":{SERVER_PORT:04X}") and row[3] == "0A" for row in rows if len(row) > 3)

    def server_pid() -> str:
        return ok("exec", CTID, "pidof cat").strip()

    ok("create", CTID, "--ipadd", "10.9.0.2")
    ok("start", CTID)
    ok("exec", CTID, f"nc -l -p {SERVER_PORT} -e cat </dev/null >/dev/null 2>&1 &")
    wait_for("listening server", listening)
    client = Client(netns, "10.9.0.2", SERVER_PORT)
    try:
        address = client.reply()
        assert isinstance(address, list) and address[0] == HOST, address  # from the namespace
        client.ask(20)
        assert client.reply() == numbered(1, 20)
        server = server_pid()
        assert server.isdigit()
        ok("chkpnt", CTID)
        assert run("status", CTID).out.strip() == SUSPENDED
        client.ask(20)  # line 21 goes out while the CT is down; TCP sends it again later
        ok("restore", CTID)
        assert client.reply() == numbered(21, 40)
        client.ask(20)
        assert client.reply() == numbered(41, 60)
        assert server_pid() == server  # the same server process, on the same connection
        assert client.finish() == ""  # nothing came back twice
    finally:
        client.kill()
    ok("stop", "--fast", CTID)


def test_a_dump_over_changed_files_is_refused(vz: VzRoot) -> None:
    pid = running_ct(vz)
    vz.ok("chkpnt", CTID)
    vz.ok("mount", CTID)
    (vz.root / f"var/lib/vz/root/{CTID}/root/changed").write_text("edited while suspended\n")
    vz.ok("umount", CTID)
    assert status(vz) == SUSPENDED
    config = conf(vz)
    for command in ("restore", "start"):
        done = vz.vzctl(command, CTID)
        line = one_error_line(done)
        assert done.code == 17, f"{command}: {done.code} {done.err}"
        assert "files changed" in line, line
        assert status(vz) == SUSPENDED, command
        assert is_dump(default_dump(vz)) and conf(vz) == config, command
    # The message says how to start afresh; doing just that boots the CT anew.
    advice = re.search(r"rm -r (\S+)\)", line)
    assert advice and Path(advice.group(1)) == default_dump(vz), line
    subprocess.run(["rm", "-r", advice.group(1)], check=True)
    assert status(vz) == DOWN
    out = vz.ok("start", CTID)
    assert "trying to restore" not in out
    assert status(vz) == RUNNING
    assert vz.ok("exec", CTID, "cat /root/changed") == "edited while suspended\n"
    assert vz.vzctl("exec", CTID, "test -e /tmp/count").code != 0  # a fresh tmpfs: no loop ran
    old = vz.vzctl("exec", CTID, f"tr '\\0' ' ' < /proc/{pid}/cmdline")
    assert "/tmp/count.new" not in old.out


def test_staged_suspend_dump_resume(vz: VzRoot) -> None:
    """chkpnt --suspend freezes, --dump saves the frozen CT (it stays frozen), --resume thaws:
    the CT goes on from its own memory."""
    pid = running_ct(vz)
    vz.ok("chkpnt", CTID, "--suspend")
    frozen_at = assert_frozen(vz)
    assert status(vz) == RUNNING
    out = vz.ok("chkpnt", CTID, "--dump")
    assert "Checkpointing completed successfully" in out
    assert is_dump(default_dump(vz))
    assert assert_frozen(vz) == frozen_at  # the dump did not let it run
    assert status(vz) == RUNNING
    vz.ok("chkpnt", CTID, "--resume")
    counted_past(vz, frozen_at)
    assert loop_pid(vz) == pid


def test_the_dump_of_a_ct_that_ran_on_is_not_restored(vz: VzRoot) -> None:
    """After --dump and --resume the CT's memory and files moved on without the dump: the
    stop removes it, the CT is not `suspended`, and start boots it afresh."""
    running_ct(vz)
    vz.ok("chkpnt", CTID, "--suspend")
    vz.ok("chkpnt", CTID, "--dump")
    vz.ok("chkpnt", CTID, "--resume")
    assert is_dump(default_dump(vz))  # the staged dump is there for whoever wants it
    vz.ok("stop", "--fast", CTID)
    assert status(vz) == DOWN  # "suspended" would say `vzctl start` restores it
    assert not default_dump(vz).exists()
    restore = vz.vzctl("restore", CTID)
    assert restore.code == 17 and "no dump" in one_error_line(restore), restore
    start = vz.vzctl("start", CTID)
    assert start.code == 0, start.err
    assert "trying to restore" not in start.out
    assert status(vz) == RUNNING
    assert vz.vzctl("exec", CTID, "test -e /tmp/count").code != 0  # a fresh tmpfs: booted anew


def test_the_wrong_resume_is_refused(vz: VzRoot) -> None:
    """Only the staged command that froze the CT thaws it: the other one's --resume would
    pair the running CT with a dump of another moment."""
    pid = running_ct(vz)
    vz.ok("chkpnt", CTID, "--suspend")
    wrong = vz.vzctl("restore", CTID, "--resume")
    assert wrong.code == 17 and "undumped" in one_error_line(wrong), wrong
    assert_frozen(vz)
    vz.ok("chkpnt", CTID, "--resume")
    vz.ok("chkpnt", CTID)
    vz.ok("restore", CTID, "--undump")
    wrong = vz.vzctl("chkpnt", CTID, "--resume")
    assert wrong.code == 16 and "restore --resume" in one_error_line(wrong), wrong
    vz.ok("restore", CTID, "--resume")
    assert loop_pid(vz) == pid


def test_staged_suspend_dump_kill_undump_resume(vz: VzRoot) -> None:
    pid = running_ct(vz)
    vz.ok("chkpnt", CTID, "--suspend")
    vz.ok("chkpnt", CTID, "--dump")
    frozen_at = assert_frozen(vz)
    killed = vz.vzctl("chkpnt", CTID, "--kill")
    assert killed.code == 0, killed.err
    assert status(vz) == SUSPENDED
    vz.ok("restore", CTID, "--undump")
    assert status(vz) == RUNNING
    assert assert_frozen(vz) >= frozen_at
    assert is_dump(default_dump(vz))
    vz.ok("restore", CTID, "--resume")
    counted_past(vz, frozen_at)
    assert loop_pid(vz) == pid
    assert not default_dump(vz).exists()


def test_restore_undump_then_resume(vz: VzRoot) -> None:
    pid = running_ct(vz)
    vz.ok("chkpnt", CTID)
    vz.ok("restore", CTID, "--undump")
    assert status(vz) == RUNNING
    frozen_at = assert_frozen(vz)
    assert is_dump(default_dump(vz))  # kept until the CT runs from it
    vz.ok("restore", CTID, "--resume")
    counted_past(vz, frozen_at)
    assert loop_pid(vz) == pid
    assert not default_dump(vz).exists()


def test_restore_kill_stops_an_undumped_ct_and_keeps_the_dump(vz: VzRoot) -> None:
    pid = running_ct(vz)
    vz.ok("chkpnt", CTID)
    vz.ok("restore", CTID, "--undump")
    assert_frozen(vz)
    killed = vz.vzctl("restore", CTID, "--kill")
    assert killed.code == 0, killed.err
    assert status(vz) == SUSPENDED
    vz.ok("restore", CTID)
    assert loop_pid(vz) == pid
    counted_past(vz, count(vz))


def test_dumpfile_at_a_custom_path(vz: VzRoot) -> None:
    pid = running_ct(vz)
    custom = vz.root / "elsewhere/ct101.dump"
    out = vz.ok("chkpnt", CTID, "--dumpfile", str(custom))
    assert str(custom) in out
    assert is_dump(custom) and not default_dump(vz).exists()
    assert status(vz) == DOWN  # suspended means: `vzctl start` would restore it
    vz.ok("restore", CTID, "--dumpfile", str(custom))
    assert status(vz) == RUNNING
    assert loop_pid(vz) == pid
    assert count(vz) >= 10
    counted_past(vz, count(vz))
    assert not custom.exists()


def test_a_dump_that_fails_halfway_leaves_the_ct_running_and_thawed(vz: VzRoot) -> None:
    """pyvz freezes the CT before CRIU's dump, and CRIU leaves a CT frozen as it found it:
    a dump onto a full disk must still leave the CT running and thawed, with no dump."""
    pid = running_ct(vz)
    full = vz.root / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "pyvz-test-full", str(full)], check=True)
    try:
        done = vz.vzctl("chkpnt", CTID, "--dumpfile", str(full / "ct101.dump"))
        line = one_error_line(done)
        assert done.code == 16, f"{done.code}: {done.err}"
        assert "unable to checkpoint" in line, line
        assert_still_counting(vz, pid)
        assert list(full.iterdir()) == []
    finally:
        subprocess.run(["umount", str(full)], check=True)


def test_without_criu_chkpnt_refuses_and_the_ct_runs_on(vz: VzRoot) -> None:
    pid = running_ct(vz)
    config = conf(vz)
    for stage in ((), ("--suspend",)):
        done = vzctl_env(vz, {"PATH": NO_CRIU_PATH}, "chkpnt", CTID, *stage)
        line = one_error_line(done)
        assert done.code == 16, f"{stage}: {done.code} {done.err}"
        assert "CRIU" in line and "make install" in line, line
        assert_still_counting(vz, pid)
        assert conf(vz) == config and not default_dump(vz).exists()
    # A suspended CT stays suspended when CRIU is gone at restore time, and nothing is lost.
    vz.ok("chkpnt", CTID)
    for command in ("restore", "start"):
        done = vzctl_env(vz, {"PATH": NO_CRIU_PATH}, command, CTID)
        line = one_error_line(done)
        assert done.code != 0 and "CRIU" in line and "make install" in line, (command, done)
        assert status(vz) == SUSPENDED and is_dump(default_dump(vz)), command
    vz.ok("restore", CTID)
    assert_still_counting(vz, pid)


def test_bad_input_on_a_stopped_ct_changes_nothing(vz: VzRoot) -> None:
    vz.ok("create", CTID)
    config, dumps = conf(vz), sorted(default_dump(vz).parent.iterdir())
    cases = [
        (("chkpnt", CTID), 31, "not running"),
        (("chkpnt", CTID, "--dump"), 31, "not running"),
        (("chkpnt", CTID, "--kill"), 31, "not running"),
        (("chkpnt", CTID, "--resume"), 31, "not running"),
        (("suspend", CTID), 31, "not running"),
        (("restore", CTID), 17, "no dump"),
        (("resume", CTID), 17, "no dump"),
        (("restore", CTID, "--dumpfile", str(vz.root / "nowhere")), 17, "no dump"),
        (("restore", CTID, "--resume"), 17, "--undump"),
        (("restore", CTID, "--kill"), 17, "--undump"),
        (("chkpnt", CTID, "--suspend", "--dump"), 20, "only one of"),
        (("chkpnt", CTID, "--kill", "--resume"), 20, "only one of"),
        (("restore", CTID, "--undump", "--resume"), 20, "only one of"),
        (("chkpnt", "999"), 14, "config file does not exist"),  # vzctl 4.11's words
        (("restore", "999"), 14, "config file does not exist"),
    ]
    for args, code, words in cases:
        done = vz.vzctl(*args)
        line = one_error_line(done)
        assert done.code == code, f"{args}: {done.code} {done.err}"
        assert words in line, f"{args}: {line}"
        assert status(vz) == DOWN, args
        assert conf(vz) == config, args
        assert sorted(default_dump(vz).parent.iterdir()) == dumps, args


def test_bad_input_on_a_running_ct_changes_nothing(vz: VzRoot) -> None:
    pid = running_ct(vz)
    not_a_dump = vz.root / "mine"
    not_a_dump.mkdir()
    (not_a_dump / "keep").write_text("mine\n")
    config, dumps = conf(vz), sorted(default_dump(vz).parent.iterdir())
    cases = [
        (("restore", CTID), 32, "already running"),
        (("start", CTID), 32, "already running"),
        (("chkpnt", CTID, "--dump"), 16, "--suspend"),  # not frozen
        (("chkpnt", CTID, "--resume"), 16, "not suspended"),
        (("chkpnt", CTID, "--kill"), 16, "no dump"),
        (("restore", CTID, "--resume"), 17, "--undump"),
        (("restore", CTID, "--kill"), 17, "--undump"),
        (("restore", CTID, "--undump"), 32, "already running"),
        (("chkpnt", CTID, "--dumpfile", str(not_a_dump)), 16, "not a pyvz dump"),
        (("chkpnt", CTID, "--suspend", "--kill"), 20, "only one of"),
        (("restore", CTID, "--kill", "--resume"), 20, "only one of"),
    ]
    for args, code, words in cases:
        done = vz.vzctl(*args)
        line = one_error_line(done)
        assert done.code == code, f"{args}: {done.code} {done.err}"
        assert words in line, f"{args}: {line}"
        assert_still_counting(vz, pid)
        assert conf(vz) == config, args
        assert sorted(default_dump(vz).parent.iterdir()) == dumps, args
        assert sorted(p.name for p in not_a_dump.iterdir()) == ["keep"], args
