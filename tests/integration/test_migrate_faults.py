"""vzmigrate under faults: never two, never none.

At every moment exactly one copy of a migrated CT counts as the CT. Each side is killed
(`kill -9`) at each of its fault points (pyvz/migrate/faults.py), for a restart migration,
a live one and a stopped CT; the cable is pulled while the pre-copy stream is in flight; the
restricted migration key is tried as a shell and fed forged requests and btrfs streams; and
bad input is refused in one line. Afterwards a CT that ran runs on exactly one host, a
stopped one is intact on exactly one host, nothing half-made is left that could start, and
a retry succeeds.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tarfile
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.background import Background
from tests.conftest import Done
from tests.integration.test_migrate import (
    COUNTER,
    _counter,
    _subnet_address,
    firewall_tables,
    move,
    ok,
    ssh_options,
    trust,
    vzmigrate,
)
from tests.testhosts import HostFactory, TestHost
from tests.unit.test_sendstream import Cmd, command, end, snapshot, stream, subvol, tlv

pytest_plugins = ["tests.testhosts"]
pytestmark = pytest.mark.root

SENDER_POINTS = ("precopy", "frozen", "final", "handover")
RECEIVER_POINTS = ("receiving", "staged", "committed", "started")
RUNNING = "exist mounted running"
DELETED = "deleted unmounted down"
MODES = {"restart": (), "live": ("--online",)}

# ---- the state of a CT on the test hosts ----------------------------------------------------


def state(host: TestHost, ctid: str = "101") -> str:
    """`vzctl status` without its "CTID N" head: "exist mounted running", "deleted ..."."""
    done = host.vzctl("status", ctid)
    assert done.code == 0, done
    return done.out.strip().removeprefix(f"CTID {ctid} ")


def marker(host: TestHost, ctid: str = "101") -> Path:
    return host.root.conf_dir / f"{ctid}.migrating"


def leftovers(host: TestHost, ctid: str = "101") -> list[str]:
    """What a migration of `ctid` may leave only while it runs: staging, the sender's work
    directory, a hand-over marker, a dump arriving."""
    private = host.root.private_dir
    paths = [private / f".{ctid}.{suffix}" for suffix in ("incoming", "migrate", "partial", "destroying")]
    paths += [marker(host, ctid), host.root.root / f"var/lib/vz/dump/.Dump.{ctid}.incoming"]
    return [str(p.relative_to(host.root.root)) for p in paths if p.exists() or p.is_symlink()]


def traces(host: TestHost, ctid: str = "101") -> list[str]:
    """Everything of `ctid` on a host that does not have it (or should not any more),
    its firewall table in the host's namespace too."""
    root = host.root.root
    found = leftovers(host, ctid) + firewall_tables(host, ctid)
    for path in (
        host.root.conf_dir / f"{ctid}.conf",
        host.root.private_dir / ctid,
        host.root.private_dir / f".{ctid}.snapshots",
        root / f"var/lib/vz/dump/Dump.{ctid}",
    ):
        if path.exists():
            found.append(str(path.relative_to(root)))
    return found


def counting(host: TestHost, ctid: str = "101") -> int:
    """The PID of the CT's counter, after checking that it goes on counting there."""
    pid, count = _counter(host, ctid)
    time.sleep(0.3)
    pid_again, count_again = _counter(host, ctid)
    assert pid_again == pid and count_again > count, f"the counter on {host.name} stands still"
    return pid


def running_ct(host: TestHost, ctid: str = "101") -> int:
    """A busybox CT with an address in the hosts' subnet and the counter running; its PID."""
    ok(host, "create", ctid, "--ipadd", _subnet_address(host, 40 + int(ctid) % 100), "--hostname", "mover")
    ok(host, "start", ctid)
    ok(host, "exec", ctid, COUNTER)
    deadline = time.monotonic() + 10
    while host.vzctl("exec", ctid, "cat /tmp/count").code != 0:
        assert time.monotonic() < deadline, "the counter did not start"
        time.sleep(0.1)
    return counting(host, ctid)


def settle(what: str, check: Callable[[], str | None], timeout: float = 30) -> float:
    """Wait for the guards: `check` says what is still wrong, or None once all is right;
    the seconds it took."""
    started = time.monotonic()
    while (wrong := check()) is not None:
        if time.monotonic() > started + timeout:
            pytest.fail(f"{what} did not happen within {timeout:.0f} s: {wrong}")
        time.sleep(0.25)
    return time.monotonic() - started


def runs_on(a: TestHost, b: TestHost, ctid: str = "101") -> list[str]:
    return [h.name for h in (a, b) if state(h, ctid) == RUNNING]


def one_error(done: Done) -> str:
    """vzmigrate's failure is one line on stderr, and nothing else is."""
    lines = [line for line in done.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), f"not one line of error: {done.err!r}"
    return lines[0]


def tree(path: Path) -> dict[str, tuple[object, ...]]:
    """Every entry below `path`: type and mode, size and a digest of file contents, link text."""
    entries: dict[str, tuple[object, ...]] = {}
    for top, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            full = Path(top) / name
            info = os.lstat(full)
            key = str(full.relative_to(path))
            if stat.S_ISREG(info.st_mode):
                digest = hashlib.sha256(full.read_bytes()).hexdigest()
                entries[key] = (info.st_mode, info.st_size, digest)
            elif stat.S_ISLNK(info.st_mode):
                entries[key] = (info.st_mode, os.readlink(full))
            else:
                entries[key] = (info.st_mode,)
    return entries


def host_files(host: TestHost) -> set[str]:
    """The paths below a host's root, but its logs, lock files, CRIU check cache and CT mounts."""
    root = host.root.root
    skip = {root / p for p in ("var/log", "var/lib/vz/lock", "var/lib/vz/root", "var/lib/vz/lxc/.criu")}
    found = set()
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(top) / d not in skip]
        found.update(str((Path(top) / n).relative_to(root)) for n in [*dirs, *files])
    return found


# ---- a migration in the background, stopped at a fault point -------------------------------


def arm(host: TestHost, point: str) -> None:
    (host.root.root / "var/lib/vz/.fault-point").write_text(f"{point}\n")


def disarm(host: TestHost) -> None:
    (host.root.root / "var/lib/vz/.fault-point").unlink(missing_ok=True)


class Migration(Background):
    """vzmigrate started on `sender`, in the background (tests/background.py)."""

    def __init__(
        self, sender: TestHost, receiver: TestHost, ctid: str, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.sender, self.receiver = sender, receiver
        _started.append(self)
        argv = [*sender.enter, sys.executable, "-m", "pyvz.cli.vzmigrate", f"--ssh={ssh_options(sender)}"]
        super().__init__([*argv, *args, receiver.address, ctid], env or sender.env, "vzmigrate")

    def kill(self, pid: int, side: TestHost) -> None:
        """kill -9 of the pyvz process of `side` that is `pid` (checked: not its ssh)."""
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert b"pyvz.cli.vzmigrate" in argv, argv
        assert (b"--receive" in argv) == (side is self.receiver), argv
        assert f"PYVZ_ROOT={side.root.root}".encode() in environ
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and _proc_state(pid) != "Z":
            assert time.monotonic() < deadline, f"pid {pid} did not die"
            time.sleep(0.02)


_started: list[Migration] = []


@pytest.fixture(autouse=True)
def _no_strays(test_hosts: HostFactory) -> Iterator[None]:
    """After a failed test, a vzmigrate may still wait at a point and a receiver for its
    sender: they end before the hosts are taken down (a receiver keeps its pool busy)."""
    yield
    while _started:
        migration = _started.pop()
        if migration.proc.poll() is None:
            migration.proc.kill()
            migration.proc.wait()
        for pid in receivers(migration.receiver):
            os.kill(pid, signal.SIGKILL)


def receivers(host: TestHost) -> list[int]:
    """PIDs of the `vzmigrate --receive` processes of the host's root."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--receive" in argv and f"PYVZ_ROOT={host.root.root}".encode() in environ:
            found.append(int(entry.name))
    return found


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def stop_at(point: str, side: TestHost, migration: Migration) -> None:
    """Wait for `side` to reach `point`, take the point away (the guards that the death
    starts must not stop there too) and kill that process."""
    pid = migration.wait_point(point)
    disarm(side)
    # While it is stopped there: never two.
    a, b = migration.sender, migration.receiver
    assert len(runs_on(a, b)) <= 1, f"at {point}: running on both hosts"
    migration.kill(pid, side)


def resolve(a: TestHost, b: TestHost, ctid: str = "101") -> Done:
    return vzmigrate(a, f"--ssh={ssh_options(a)}", "--resolve", b.address, ctid)


def retry(a: TestHost, b: TestHost, mode: tuple[str, ...], running: bool) -> None:
    """A migration of the same CT to the same host works: leftovers were swept."""
    done = move(a, b, "101", *mode)
    assert done.code == 0, f"the retry failed ({done.code}): {done.err}{done.out}"
    assert state(b) == (RUNNING if running else "exist unmounted down")
    assert state(a) == DELETED
    assert traces(a) == [], f"{a.name} keeps {traces(a)} of CT 101 after the retry"
    assert leftovers(b) == [], f"{b.name} keeps {leftovers(b)} after the retry"


# ---- 1. the sender dies at each of its points -------------------------------------------------


@pytest.mark.parametrize("mode", MODES, ids=list(MODES))
@pytest.mark.parametrize("point", SENDER_POINTS)
def test_sender_killed(test_hosts: HostFactory, point: str, mode: str) -> None:
    a, b = test_hosts(2)
    trust(a, b)
    pid = running_ct(a)
    arm(a, point)
    migration = Migration(a, b, "101", *MODES[mode])
    stop_at(point, a, migration)
    done = migration.finish()
    assert done.code == -signal.SIGKILL, done

    if point == "handover":
        # The destination runs it; the guard's `vzmigrate --resolve` takes the source apart.
        def handed_over() -> str | None:
            now = (state(a), state(b), marker(a).exists())
            return None if now == (DELETED, RUNNING, False) else f"a {now[0]}, b {now[1]}, marker {now[2]}"

        settle("the guard's resolve", handed_over)
        if mode == "live":  # (a restart migration starts the CT afresh: no counter)
            assert counting(b) == pid, "the live CT's processes were not kept"
        assert leftovers(b) == []
        assert traces(a) == [], f"{a.name} keeps {traces(a)} of the CT it handed over"
        return

    # Before the hand-over marker: the CT runs here again (the guard restarts or resumes it).
    def back_here() -> str | None:
        now = (state(a), state(b), leftovers(b))
        return None if now == (RUNNING, DELETED, []) else f"a {now[0]}, b {now[1]} {now[2]}"

    settle("the CT running on the source again", back_here)
    assert not marker(a).exists()
    if mode == "live" or point == "precopy":  # not stopped, or resumed from its dump
        assert counting(a) == pid, "the CT was not resumed as it was (its counter has another PID)"
    assert traces(b) == [], f"{b.name} keeps {traces(b)}"
    retry(a, b, MODES[mode], running=True)


# ---- 2. the receiver dies at each of its points -----------------------------------------------


@pytest.mark.parametrize("mode", MODES, ids=list(MODES))
@pytest.mark.parametrize("point", RECEIVER_POINTS)
def test_receiver_killed(test_hosts: HostFactory, point: str, mode: str) -> None:
    a, b = test_hosts(2)
    trust(a, b)
    pid = running_ct(a)
    limit = _subvolume_field(a.root.private_dir / "101", "Limit referenced")
    arm(b, point)
    migration = Migration(a, b, "101", *MODES[mode])
    stop_at(point, b, migration)
    done = migration.finish(90)
    assert done.code == 4, done
    error = one_error(done)
    print(f"{point}/{mode}: vzmigrate said {error!r} after {migration.took:.1f} s")
    problems = []
    if marker(a).exists() and "--resolve" not in error:
        problems.append(f"the error does not say that `vzmigrate --resolve` settles it: {error!r}")

    if point in ("receiving", "staged"):  # before the commit point: the CT stays the source's
        assert state(b) == DELETED
        assert b.vzctl("start", "101").code != 0, "what the receiver left could start"
        if point == "staged":
            assert marker(a).exists(), "the final request was out: the source must wait for --resolve"
            assert state(a) != RUNNING
            settled = resolve(a, b)
            assert settled.code == 0, settled
        assert state(b) == DELETED

        def back_here() -> str | None:
            now = (state(a), marker(a).exists())
            return None if now == (RUNNING, False) else f"a {now[0]}, marker {now[1]}"

        settle("the CT running on the source again", back_here)
        if mode == "live" or point == "receiving":  # not stopped, or resumed from its dump
            assert counting(a) == pid, "the CT was not resumed as it was (its counter has another PID)"
        assert state(b) == DELETED
        retry(a, b, MODES[mode], running=True)
        assert not problems, problems
        return

    # After the commit point: the destination has it and (its guard) starts it.
    assert marker(a).exists() and state(a) != RUNNING
    settle("the CT running on the destination", lambda: None if state(b) == RUNNING else state(b))
    there = _subvolume_field(b.root.private_dir / "101", "Limit referenced")
    if there != limit:
        problems.append(f"DISKSPACE limit on {b.name} is {there}, on {a.name} it was {limit}")
    settled = resolve(a, b)
    assert settled.code == 0, settled
    assert state(a) == DELETED and not marker(a).exists()
    assert runs_on(a, b) == ["b"]
    if mode == "live":
        assert counting(b) == pid, "the live CT's processes were not kept"
    assert traces(a) == [], f"{a.name} keeps {traces(a)} of the CT it handed over"
    # Nothing of the transfer stays on the destination once the CT is gone from there.
    ok(b, "stop", "101")
    ok(b, "destroy", "101")
    if traces(b):
        problems.append(f"`vzctl destroy` left {traces(b)} on {b.name}")
    assert not problems, problems


@pytest.mark.parametrize("mode", MODES, ids=list(MODES))
def test_destination_cannot_start_it(test_hosts: HostFactory, mode: str) -> None:
    """The CT arrives, but its start (its restore) fails on the destination: the destination
    takes it apart again, and it runs on the source as it did (never two)."""
    a, b = test_hosts(2)
    trust(a, b)
    pid = running_ct(a)
    arm(b, "starting:fail")
    done = move(a, b, "101", *MODES[mode])
    disarm(b)
    assert done.code != 0, done
    error = one_error(done)
    assert "made to fail" in error, error
    print(f"{mode}: vzmigrate said {error!r} (exit {done.code})")
    settle("the CT running on the source again", lambda: None if state(a) == RUNNING else state(a))
    assert not marker(a).exists()
    if mode == "live":
        assert counting(a) == pid, "the CT was not resumed as it was (its counter has another PID)"
    assert state(b) == DELETED
    assert traces(b) == [], f"{b.name} keeps {traces(b)} of a CT it did not start"
    retry(a, b, MODES[mode], running=True)


# ---- 3. a stopped CT --------------------------------------------------------------------------


def stopped_ct(host: TestHost, ctid: str = "101") -> tuple[dict[str, tuple[object, ...]], bytes]:
    """A stopped CT with a file of its own; (its private area's tree, its config bytes)."""
    ok(host, "create", ctid, "--hostname", "still")
    ok(host, "mount", ctid)
    (host.root.root / f"var/lib/vz/root/{ctid}/root").mkdir(exist_ok=True)
    (host.root.root / f"var/lib/vz/root/{ctid}/root/mine").write_bytes(os.urandom(300_000))
    ok(host, "umount", ctid)
    return tree(host.root.private_dir / ctid), (host.root.conf_dir / f"{ctid}.conf").read_bytes()


# No "precopy" here: a stopped CT is copied in one round, with no pre-copy (and no point).
@pytest.mark.parametrize(
    ("side", "point"), [("a", "frozen"), ("a", "final"), ("b", "receiving"), ("b", "staged")]
)
def test_stopped_ct(test_hosts: HostFactory, side: str, point: str) -> None:
    a, b = test_hosts(2)
    trust(a, b)
    files, conf = stopped_ct(a)
    killed = a if side == "a" else b
    arm(killed, point)
    migration = Migration(a, b, "101")
    stop_at(point, killed, migration)
    done = migration.finish(90)
    problems = []
    if killed is a:
        assert done.code == -signal.SIGKILL, done
    else:
        assert done.code == 4, done
        one_error(done)
    if point == "staged":
        assert marker(a).exists()
        assert a.vzctl("start", "101").code != 0, "a CT being handed over must not start on a guess"
        settled = resolve(a, b)
        assert settled.code == 0, settled
    assert not marker(a).exists()
    assert state(a) == "exist unmounted down"
    assert state(b) == DELETED
    assert b.vzctl("start", "101").code != 0, "what the receiver left could start"
    assert tree(a.root.private_dir / "101") == files
    assert (a.root.conf_dir / "101.conf").read_bytes() == conf
    # What a killed receiver left (a sender's death lets it sweep its own staging).
    if killed is a:
        settle("the receiver's sweep", lambda: None if traces(b) == [] else str(traces(b)))
    elif traces(b):
        left = traces(b)
        destroyed = b.vzctl("destroy", "101")
        if traces(b):
            problems.append(
                f"`vzctl destroy 101` on {b.name} ({destroyed.code}: {destroyed.err.strip()}) "
                f"left {traces(b)} (before: {left})"
            )
    retry(a, b, (), running=False)
    assert tree(b.root.private_dir / "101") == files
    assert not problems, problems


# ---- 4. the cable -----------------------------------------------------------------------------


@contextmanager
def slow_link(host: TestHost, rate: str = "64mbit") -> Iterator[None]:
    """Traffic towards `host` at `rate`: a 200 MB stream stays in flight for a while."""
    dev = ["dev", host.bridge_port]
    tc = ["tc", "-n", host.bridge_netns, "qdisc"]
    shape = ["tbf", "rate", rate, "burst", "256kb", "latency", "400ms"]
    subprocess.run([*tc, "add", *dev, "root", *shape], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run([*tc, "del", *dev, "root"], capture_output=True)


# The receiver's end, once the cable is cut: "killed" (what a dropped connection does to it,
# sooner or later), or "left" alone (b learns of the end when the cable is back: a's FIN, or
# the RST to what b retransmits).
@pytest.mark.parametrize("receiver", ["killed", "left"])
def test_cable_cut_during_precopy(test_hosts: HostFactory, receiver: str) -> None:
    a, b = test_hosts(2)
    trust(a, b)
    pid = running_ct(a)
    ok(a, "exec", "101", "dd if=/dev/urandom of=/root/data bs=1M count=200 2>/dev/null")
    with slow_link(b):
        migration = Migration(a, b, "101", "--online")
        incoming = b.root.private_dir / ".101.incoming/recv/round-1"
        deadline = time.monotonic() + 60
        while not (incoming.exists() and _used(incoming) > 20 << 20):
            assert migration.proc.poll() is None, migration.finish()
            assert time.monotonic() < deadline, "the pre-copy stream did not get going"
            time.sleep(0.1)
        b.cut()
        cut_at = time.monotonic()
        try:
            if receiver == "killed":
                for orphan in receivers(b):
                    os.kill(orphan, signal.SIGKILL)
            done = migration.finish(90)
            took = time.monotonic() - cut_at
            print(f"vzmigrate ended {took:.1f} s after the cut: {done.code} {done.err.strip()!r}")
            assert done.code in (4, 6), done
            one_error(done)
            assert took < 60
            assert counting(a) == pid, "the CT must go on running on the source, untouched"
            assert state(a) == RUNNING and not marker(a).exists()
        finally:
            b.restore()
    assert state(b) == DELETED

    def gone() -> str | None:
        left = receivers(b)
        return None if not left else f"receiver {left} still holds CT 101 on {b.name}"

    # A receiver whose sender vanished must not hold the CT (its lock) for long.
    took = settle("the orphaned receiver's end", gone, timeout=45)
    print(f"the receiver on {b.name} ended {took:.1f} s after the cable was back")
    retry(a, b, ("--online",), running=True)
    assert counting(b) == pid


# How long a receiver whose sender is gone for good may keep the CT locked on its host.
ORPHAN_LIMIT = 30


def test_sender_host_vanishes_while_the_session_is_idle(test_hosts: HostFactory) -> None:
    """a goes away without a word reaching b (a crash, or its TCP retries ran out in a long
    outage) while the session is idle (a checkpoints the CT): nothing tells b's receiver,
    which still holds the CT's lock and staging; a retry from a, back again, must still work."""
    a, b = test_hosts(2)
    trust(a, b)
    pid = running_ct(a)
    arm(a, "frozen")
    migration = Migration(a, b, "101", "--online")
    sender = migration.wait_point("frozen")
    disarm(a)
    time.sleep(1)  # all sent is acknowledged: b has nothing to retransmit
    b.cut()
    # a's end of the connection vanishes (the RST is lost on the cut cable), then a's
    # sender dies, and its guard resumes the CT on a.
    kill = ["ss", "-K", "dst", b.address, "dport", "=", "22"]
    subprocess.run([*a.enter, *kill], capture_output=True, check=True)
    migration.kill(sender, a)
    migration.finish(30)
    b.restore()
    settle("the CT resumed on the source", lambda: None if state(a) == RUNNING else state(a))
    assert counting(a) == pid
    assert state(b) == DELETED
    deadline = time.monotonic() + ORPHAN_LIMIT
    while receivers(b) and time.monotonic() < deadline:
        time.sleep(0.5)
    done = move(a, b, "101", "--online")
    assert done.code == 0, (
        f"{ORPHAN_LIMIT} s after a vanished, the receiver {receivers(b)} still holds CT 101 on "
        f"{b.name}; the retry got {done.code}: {done.err.strip()}"
    )
    assert state(b) == RUNNING and counting(b) == pid


def _used(path: Path) -> int:
    return sum(os.lstat(Path(t) / f).st_blocks * 512 for t, _d, fs in os.walk(path) for f in fs)


# ---- 5. the restricted key --------------------------------------------------------------------


def only_migration_key(a: TestHost, b: TestHost) -> Path:
    """b trusts a's migration key and nothing else (the run's client key is gone)."""
    b.authorized_keys.write_text("")
    trust(a, b)
    return a.root.root / "etc/vz/migrate/id_ed25519"


def test_migration_key_runs_no_shell(test_hosts: HostFactory, tmp_path: Path) -> None:
    a, b = test_hosts(2)
    key = only_migration_key(a, b)
    before = host_files(b)
    pwned = Path(f"/tmp/pyvz-pwned-{os.getpid()}")
    base = a.ssh_argv(b, identity=key)
    attempts = {
        "command": ([*base, f"sh -c 'touch {pwned}'"], b""),
        "pty": ([*base[:-1], "-tt", base[-1], f"touch {pwned}"], f"touch {pwned}\nid\n".encode()),
        "login shell": ([*base[:-1], "-tt", base[-1]], f"touch {pwned}\nexit\n".encode()),
        "stdio forwarding": ([*base[:-1], "-W", f"{b.address}:22", base[-1]], b""),
    }
    for what, (argv, stdin) in attempts.items():
        proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=60)
        print(what, proc.returncode, proc.stderr.decode(errors="replace").strip()[-300:])
        assert proc.returncode != 0, f"{what}: exit 0 ({proc.stdout!r})"
        assert b"uid=0" not in proc.stdout and b"SSH-2.0" not in proc.stdout, (what, proc.stdout)
        assert not pwned.exists(), f"{what} ran a shell command on {b.name}"
    assert host_files(b) == before


def test_existing_ctid_is_refused(test_hosts: HostFactory) -> None:
    a, b = test_hosts(2)
    only_migration_key(a, b)
    pid = running_ct(a)
    files, conf = stopped_ct(b)
    done = move(a, b, "101")
    assert done.code == 9, done
    assert "exists" in one_error(done)
    assert tree(b.root.private_dir / "101") == files
    assert (b.root.conf_dir / "101.conf").read_bytes() == conf
    assert state(b) == "exist unmounted down"
    assert counting(a) == pid and state(a) == RUNNING
    assert leftovers(a) == [] and leftovers(b) == []


# The protocol driven by hand, as a hostile sender holding a's migration key would: each step
# sends a message (and a data stream), then reads the answer; it stops at the first refusal.
DRIVER = r"""
import json, select, sys
from pathlib import Path
from pyvz.errors import VzError
from pyvz.host import Host
from pyvz.migrate.sender import session

plan = json.loads(Path(sys.argv[1]).read_text())
answers = []
try:
    with session(Host(), plan["destination"], tuple(plan["ssh"])) as wire:
        for step in plan["steps"]:
            wire.send(step["message"])
            if "data" in step:
                raw = Path(step["data"]).read_bytes()
                for at in range(0, len(raw), 65536):
                    wire.send_data(raw[at : at + 65536])
                wire.end_data()
            # A receiver that never answers hangs a real sender for ever: say so, and stop.
            if not select.select([wire.read_fd], [], [], plan["timeout"])[0]:
                answers.append({"op": "no answer"})
                break
            answers.append(wire.receive())
            if answers[-1].get("op") != "ok":
                break
except VzError as err:
    answers.append({"op": "raised", "code": int(err.code), "error": err.message})
print(json.dumps(answers))
"""


class Forger:
    """Sessions with b under a's migration key, for CT `ctid`, with a valid config of a's."""

    def __init__(self, a: TestHost, b: TestHost, tmp: Path, ctid: str = "102") -> None:
        self.a, self.b, self.tmp, self.ctid = a, b, tmp, ctid
        ok(a, "create", ctid)  # its config is what a real sender sends
        self.conf = (a.root.conf_dir / f"{ctid}.conf").read_text()
        self.sessions = self.streams = 0
        self.problems: list[str] = []
        # b's pool exists before the first session (a hello prepares it, rightly).
        ok(b, "create", "199")
        ok(b, "destroy", "199")

    def hello(self) -> dict[str, object]:
        return {
            "message": {
                "op": "hello",
                "version": 1,
                "ctid": int(self.ctid),
                "name": None,
                "addresses": [],
                "layout": "btrfs",
                "bytes": 1 << 20,
                "online": False,
            }
        }

    def config(self, text: str | None = None) -> dict[str, object]:
        return {
            "message": {
                "op": "config",
                "text": self.conf if text is None else text,
                "addresses": [],
                "scripts": {},
                "snapshot_configs": {},
                "keep_ids": False,
            }
        }

    def stream(self, name: str, raw: bytes, kind: str = "btrfs") -> dict[str, object]:
        self.streams += 1
        path = self.tmp / f"stream-{self.streams}-{name}"
        path.write_bytes(raw)
        return {"message": {"op": "stream", "kind": kind, "name": name}, "data": str(path)}

    def run(self, *steps: dict[str, object]) -> list[dict[str, object]]:
        self.sessions += 1
        plan = self.tmp / f"plan-{self.sessions}.json"
        ssh = shlex.split(ssh_options(self.a))
        steps_list = list(steps)
        plan.write_text(
            json.dumps({"destination": self.b.address, "ssh": ssh, "steps": steps_list, "timeout": 10})
        )
        done = self.a.run([sys.executable, "-c", DRIVER, str(plan)])
        assert done.code == 0 and done.out.strip(), done
        answers: list[dict[str, object]] = json.loads(done.out.strip().splitlines()[-1])
        for answer in answers:
            answer.pop("cpu_flags", None)
        ops = [step["message"]["op"] for step in steps_list]  # type: ignore[index]
        print(f"session {self.sessions} {ops}: {answers}")
        if answers[-1]["op"] == "no answer":
            self.problems.append(f"session {self.sessions} {ops}: no answer to the last (it hangs)")
        # The session is over: whatever it staged on b is gone (the receiver has ended).
        settle(
            f"the end of the receiver of session {self.sessions}",
            lambda: None if not receivers(self.b) else "still running",
            20,
        )
        if leftovers(self.b, self.ctid):
            self.problems.append(f"session {self.sessions} {ops} left {leftovers(self.b, self.ctid)}")
        return answers


def refused(answers: list[dict[str, object]], count: int) -> dict[str, object]:
    """The answer to step `count` (1-based) is a refusal, and every one before it an ok. A
    ping is no answer: a receiver that takes long over a step (a loaded host) pings meanwhile."""
    answers = [answer for answer in answers if answer.get("op") != "ping"]
    assert len(answers) == count, answers
    assert all(answer["op"] == "ok" for answer in answers[:-1]), answers
    assert answers[-1]["op"] == "error", answers
    return answers[-1]


def test_forged_config_outside_the_root(test_hosts: HostFactory, tmp_path: Path) -> None:
    a, b = test_hosts(2)
    only_migration_key(a, b)
    forger = Forger(a, b, tmp_path)
    before = host_files(b)
    evil = 'VE_PRIVATE="/../../../etc/evil/$VEID"\nVE_ROOT="/../../../etc/evil-root/$VEID"\n'
    answer = refused(forger.run(forger.hello(), forger.config(evil)), 2)
    assert answer["code"] == 85, answer
    assert "outside" in str(answer["error"])
    for path in ("/etc/evil", "/etc/evil-root"):
        assert not Path(path).exists()
    # The same, with the rest of a real config around it.
    text = re.sub(r"(?m)^VE_PRIVATE=.*$", 'VE_PRIVATE="/../../../etc/evil/$VEID"', forger.conf)
    if "VE_PRIVATE=" not in forger.conf:
        text = forger.conf + 'VE_PRIVATE="/../../../etc/evil/$VEID"\n'
    answer = refused(forger.run(forger.hello(), forger.config(text)), 2)
    assert answer["code"] == 85, answer
    assert not Path("/etc/evil").exists()
    assert state(b, "102") == DELETED
    assert not forger.problems, forger.problems
    assert host_files(b) == before, f"b changed: {sorted(host_files(b) ^ before)}"


def real_stream(a: TestHost, tmp: Path, name: str) -> bytes:
    """A real `btrfs send` stream (protocol 1) of a small subvolume `name` with one file, hello."""
    work = a.root.private_dir / ".forge"
    work.mkdir()
    source = work / "source"
    subprocess.run(["btrfs", "-q", "subvolume", "create", str(source)], check=True)
    (source / "hello").write_text("hello from a\n")
    subprocess.run(["btrfs", "-q", "subvolume", "snapshot", "-r", str(source), str(work / name)], check=True)
    out = tmp / f"{name}.real"
    subprocess.run(["btrfs", "send", "-q", "--proto", "1", "-f", str(out), str(work / name)], check=True)
    for sub in (work / name, source):
        subprocess.run(["btrfs", "-q", "subvolume", "delete", str(sub)], check=True)
    work.rmdir()
    return out.read_bytes()


def rewrite(raw: bytes, change: Callable[[int, list[tuple[int, bytes]]], list[tuple[int, bytes]]]) -> bytes:
    """The stream with each command's attributes passed through `change` (crc32c redone)."""
    out, pos = [raw[:17]], 17
    while pos < len(raw):
        length, cmd, _crc = struct.unpack_from("<IHI", raw, pos)
        body = raw[pos + 10 : pos + 10 + length]
        attrs, at = [], 0
        while at < len(body):
            attr, size = struct.unpack_from("<HH", body, at)
            attrs.append((attr, body[at + 4 : at + 4 + size]))
            at += 4 + size
        out.append(command(cmd, *(tlv(attr, value) for attr, value in change(cmd, attrs))))
        pos += 10 + length
    return b"".join(out)


def no_file_named(name: str, *tops: Path) -> list[str]:
    found = []
    for top in tops:
        for where, _dirs, files in os.walk(top):
            found += [str(Path(where) / f) for f in files if f == name]
    return found


def test_forged_streams_stay_inside(test_hosts: HostFactory, tmp_path: Path) -> None:
    a, b = test_hosts(2)
    only_migration_key(a, b)
    forger = Forger(a, b, tmp_path)
    # Another CT on b, with a snapshot: a stream must not reach it.
    ok(b, "create", "103")
    ok(b, "snapshot", "103", "--id", "31111111-2222-3333-4444-555555555555")
    victim = b.root.private_dir / ".103.snapshots/31111111-2222-3333-4444-555555555555/fs"
    victim_uuid = uuidlib.UUID(_subvolume_field(victim, "UUID"))
    before = host_files(b)

    real = real_stream(a, tmp_path, "round-1")
    # Negative control: the real stream goes in.
    answers = forger.run(forger.hello(), forger.config(), forger.stream("round-1", real))
    assert [answer["op"] for answer in answers] == ["ok", "ok", "ok"], answers

    def escape(cmd: int, attrs: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        return [(t, b"../../escape" if cmd == Cmd.RENAME and v == b"hello" else v) for t, v in attrs]

    forged = rewrite(real, escape)
    assert b"../../escape" in forged
    answer = refused(forger.run(forger.hello(), forger.config(), forger.stream("round-1", forged)), 3)
    assert "escape" in str(answer["error"]) or ".." in str(answer["error"]), answer

    # A path the checker cannot judge, through a symlink the stream makes: --chroot holds it.
    token = f"escape-{os.getpid()}"
    ino = struct.pack("<Q", 300)
    through = stream(
        subvol("round-1", uuidlib.uuid4()),
        command(Cmd.SYMLINK, tlv(15, "up"), tlv(3, ino), tlv(17, "/tmp")),
        command(Cmd.MKFILE, tlv(15, f"up/{token}"), tlv(3, struct.pack("<Q", 301))),
        end(),
    )
    answers = forger.run(forger.hello(), forger.config(), forger.stream("round-1", through))
    assert len(answers) == 3 and answers[-1]["op"] != "ok", answers  # receive fails in its chroot

    # The same through a tar stream (the CRIU images' way): tar defers the symlink, so the file
    # behind it fails, and tar says so when the stream has ended.
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        link = tarfile.TarInfo("up")
        link.type, link.linkname = tarfile.SYMTYPE, "/tmp"
        tar.addfile(link)
        payload = b"out of the dump directory\n"
        member = tarfile.TarInfo(f"up/{token}")
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    dump = forger.stream("dump", archive.getvalue(), kind="tar")
    answers = forger.run(forger.hello(), forger.config(), dump)
    assert len(answers) == 3 and answers[-1]["op"] != "ok", answers

    # A snapshot of another CT's snapshot, by its UUID.
    steal = stream(snapshot(victim_uuid, "round-1", uuidlib.uuid4()), end())
    answer = refused(forger.run(forger.hello(), forger.config(), forger.stream("round-1", steal)), 3)
    assert "not" in str(answer["error"]), answer

    assert no_file_named("escape", b.root.root, Path("/tmp")) == []
    assert no_file_named(token, b.root.root, Path("/tmp")) == []
    assert state(b, "102") == DELETED
    assert not forger.problems, forger.problems
    assert host_files(b) == before, f"b changed: {sorted(host_files(b) ^ before)}"


def _subvolume_field(path: Path, field: str) -> str:
    out = subprocess.run(["btrfs", "subvolume", "show", str(path)], capture_output=True, text=True).stdout
    match = re.search(rf"^\s*{field}:\s*(\S+)", out, re.M)
    assert match, out
    return match[1]


def test_a_stream_cannot_claim_a_uuid_of_the_pool(test_hosts: HostFactory, tmp_path: Path) -> None:
    """A CT that arrived with a snapshot keeps the sender's UUID as its received UUID; a stream
    claiming that UUID would make the next stream's SNAPSHOT find the other CT's files."""
    a, b = test_hosts(2)
    only_migration_key(a, b)
    ok(a, "create", "103")
    ok(a, "mount", "103")
    (a.root.root / "var/lib/vz/root/103/root/secret").write_text("CT 103's secret\n")
    ok(a, "umount", "103")
    ok(a, "snapshot", "103", "--id", "31111111-2222-3333-4444-555555555555")
    done = move(a, b, "103")
    assert done.code == 0, done
    held = b.root.private_dir / ".103.snapshots/31111111-2222-3333-4444-555555555555/fs"
    received = _subvolume_field(held, "Received UUID")
    if received == "-":
        pytest.skip("the snapshot that arrived has no received UUID: nothing to claim")
    forger = Forger(a, b, tmp_path)
    before = host_files(b)
    claim = stream(subvol("round-1", uuidlib.UUID(received)), end())
    answers = forger.run(
        forger.hello(),
        forger.config(),
        forger.stream("round-1", claim),
        forger.stream("round-2", stream(snapshot(uuidlib.UUID(received), "round-2", uuidlib.uuid4()), end())),
        {"message": {"op": "commit", "snapshots": [], "current": "", "files": "round-2", "start": False}},
    )
    stolen = b.root.private_dir / "102/root/secret"
    assert not stolen.exists(), f"CT 102 on {b.name} got CT 103's files: {stolen.read_text()!r}"
    refused(answers, 3)
    assert not forger.problems, forger.problems
    assert host_files(b) == before, f"b changed: {sorted(host_files(b) ^ before)}"


# ---- 6. bad input -----------------------------------------------------------------------------


def snapshot_of(a: TestHost, b: TestHost) -> tuple[set[str], set[str]]:
    """Both hosts' files, but those inside a's running CT 101 (its counter writes)."""
    inside = "var/lib/vz/private/101/"
    return {p for p in host_files(a) if not p.startswith(inside)}, host_files(b)


def unchanged(a: TestHost, b: TestHost, before: tuple[set[str], set[str]]) -> None:
    for host, then, now in zip((a, b), before, snapshot_of(a, b), strict=True):
        assert now == then, f"{host.name} changed: {sorted(now ^ then)[:20]}"


def test_bad_input_changes_nothing(test_hosts: HostFactory) -> None:
    a, b = test_hosts(2)
    trust(a, b)
    pid = running_ct(a)
    before = snapshot_of(a, b)
    nobody = _subnet_address(a, 200)
    started = time.monotonic()
    done = vzmigrate(a, f"--ssh={ssh_options(a)}", nobody, "101", timeout=120)
    print(f"no host at {nobody}: {done.code} after {time.monotonic() - started:.1f} s: {done.err.strip()}")
    assert done.code == 4, done
    one_error(done)
    done = move(a, b, "999")
    assert done.code == 10, done
    one_error(done)
    for what, args in {"unknown": ("--frobnicate",), "bad destination": ("-x;rm",)}.items():
        done = vzmigrate(a, *args, "101")
        assert done.code != 0, (what, done)
    assert counting(a) == pid and state(a) == RUNNING
    unchanged(a, b, before)
    assert leftovers(a) == [] and traces(b) == []


def test_online_without_criu_on_the_source(test_hosts: HostFactory) -> None:
    a, b = test_hosts(2)
    trust(a, b)
    pid = running_ct(a)
    before = snapshot_of(a, b)
    path = ":".join(p for p in a.env["PATH"].split(":") if p not in ("/usr/local/sbin", "/usr/local/bin"))
    assert shutil.which("criu", path=path) is None
    migration = Migration(a, b, "101", "--online", env={**a.env, "PATH": path})
    done = migration.finish()
    assert done.code == 8, done
    assert "criu" in one_error(done).lower()
    assert counting(a) == pid and state(a) == RUNNING  # not frozen, not suspended
    unchanged(a, b, before)
    assert leftovers(a) == [] and traces(b) == []


def test_online_without_criu_on_the_destination(test_hosts: HostFactory) -> None:
    """b's forced command runs the receiver with a PATH that has no criu (as on a host without
    it: the CRIU pyvz needs is in /usr/local/sbin)."""
    a, b = test_hosts(2)
    trust(a, b)
    keys = b.authorized_keys.read_text()
    assert keys.count('command="env ') == 1, keys
    no_criu = 'command="env PATH=/usr/sbin:/usr/bin:/sbin:/bin '
    b.authorized_keys.write_text(keys.replace('command="env ', no_criu))
    pid = running_ct(a)
    before = snapshot_of(a, b)
    done = move(a, b, "101", "--online")
    print(f"{done.code}: {done.err.strip()}")
    assert done.code == 7, done  # VE_START: the destination cannot restore it
    assert "criu" in one_error(done).lower()
    assert counting(a) == pid and state(a) == RUNNING
    assert leftovers(a) == [] and traces(b) == []
    # b had no CT yet: a refused hello leaves nothing there, not even a pool.
    now = snapshot_of(a, b)
    assert now[0] == before[0], f"a changed: {sorted(now[0] ^ before[0])}"
    assert now[1] == before[1], f"the refused hello left {sorted(now[1] ^ before[1])} on {b.name}"
