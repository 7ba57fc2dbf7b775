"""vzmigrate between test hosts (network namespaces with their own root and sshd, see
tests/testhosts.py) against OpenVZ's rsync way and a bare `btrfs send | ssh btrfs receive`.
Three hosts a, b, c; each move goes the other way from the one before.

online    `vzmigrate --online` of a busybox CT with an IP and `nc -ll -e cat` in it, while a
          client in c sends a numbered line every 10 ms: the longest gap between echoes, and
          vzmigrate's own "was down for" line; no peer.
systemd   the same for a Debian 12 CT (systemd) holding a 256 MB resident process; no client,
          vzmigrate's line only. Where CRIU cannot move it, the row says FAILED and its notes
          hold the error and CRIU's log lines.
restart   `vzmigrate` (no --online) of a running busybox CT holding 1 GB while a writer in it
          writes 20 MB, in two shapes: 20 files of 50 MB and 20 MB appended to a new one;
          one 1 GB file (a database's table) with 20 MB rewritten in place. vzmigrate's
          "was down for" vs OpenVZ's way
          between the same hosts: `rsync -aH --numeric-ids --delete` of the private area into
          a fresh CT on the other host while the CT runs, `vzctl stop`, the same rsync again,
          `vzctl start` there; its downtime is stop start .. start end.
stopped   total time of `vzmigrate` of that CT, stopped, vs a read-only snapshot of its private
          subvolume plus `btrfs send SNAP | ssh root@OTHER btrfs receive POOL` (both timed).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from bench.harness import COMMAND_TIMEOUT, CommandFailed, Row, alternate, log

if TYPE_CHECKING:
    from bench.cases import Context
    from tests.testhosts import TestHost

ONLINE_CT, SYSTEMD_CT, BIG_CT, DB_CT = "101", "102", "103", "104"
HOST_POOL = "10G"  # testhosts' 4G is tight for two 1 GB copies and btrfs's lazy cleanup
BIG_FILES, BIG_FILE = 20, 50 << 20
WRITE_MB = 20
HOG_MB = 256
PORT = "5000"
_DOWN = re.compile(r"was down for ([0-9.]+) s")
_PHASE = re.compile(r"^(\S.*?)\s+(\d+\.\d{3})$", re.M)

# 20 MB appended in 1 MB steps, 0.1 s apart: it goes on through the first copy of either side.
WRITER = (
    f"sh -c 'i=0; while [ $i -lt {WRITE_MB} ]; do head -c 1048576 /dev/urandom >> /srv/bench-data/written; "
    "i=$((i+1)); sleep 0.1; done' </dev/null >/dev/null 2>&1 &"
)
# A database's way of writing: 20 MB rewritten in place, 1 MB every 50 MB of its 1 GB file.
DB_WRITER = (
    f"sh -c 'i=0; while [ $i -lt {WRITE_MB} ]; do "
    "dd if=/dev/urandom of=/srv/bench-data/table.ibd bs=1M count=1 seek=$((i * 50)) "
    "conv=notrunc 2>/dev/null; "
    "i=$((i+1)); sleep 0.1; done' </dev/null >/dev/null 2>&1 &"
)
HOG = {
    "python3": (
        "python3 -c 'import os, time; b = bytearray({mb} << 20); "
        "[b.__setitem__(i, 1) for i in range(0, len(b), 4096)]; "
        'open("/tmp/hog.pid", "w").write(str(os.getpid())); time.sleep(1e9)\''
    ),
    # Debian's minbase has perl-base but no python3. In 1 MB steps: `$x = "a" x N` would
    # hold the string twice (the repetition's result, then its copy in $x).
    "perl": (
        'perl -e \'$x .= "a" x 1048576 for 1 .. {mb}; '
        # sleep in a loop: a checkpoint interrupts the sleep, and a lone sleep would return.
        'open(F, ">/tmp/hog.pid"); print F $$; close F; sleep 1e6 while 1\''
    ),
}


# ---- migration between test hosts -----------------------------------------------------------


@dataclass
class Moved:
    seconds: float  # vzmigrate's wall time
    downtime: float | None  # its own "was down for"
    phases: dict[str, float] = field(default_factory=dict)


def _ok(host: TestHost, argv: list[str], timeout: float = COMMAND_TIMEOUT) -> str:
    done = host.run(argv, timeout=timeout)
    if done.code != 0:
        raise CommandFailed([*host.enter, *argv], done.code, done.out, done.err)
    return done.out + done.err


def _vzctl(host: TestHost, *args: str, timeout: float = COMMAND_TIMEOUT) -> str:
    return _ok(host, [sys.executable, "-m", "pyvz.cli.vzctl", *args], timeout=timeout)


def _vzmigrate(host: TestHost, *args: str) -> str:
    return _ok(host, [sys.executable, "-m", "pyvz.cli.vzmigrate", *args])


def _trust(sender: TestHost, receiver: TestHost) -> None:
    line = _vzmigrate(sender, "--pubkey").strip()
    _vzmigrate(receiver, "--authorize", line, "--authorized-keys", str(receiver.authorized_keys))


def _move(src: TestHost, dst: TestHost, ctid: str, *args: str) -> Moved:
    from tests.integration.test_migrate import ssh_options

    start = time.perf_counter()
    # The run's ssh options without its client key: vzmigrate gets in with its own key.
    out = _vzmigrate(src, f"--ssh={ssh_options(src)}", "--times", *args, dst.address, ctid)
    elapsed = time.perf_counter() - start
    down = _DOWN.search(out)
    phases = {name.strip(): float(value) for name, value in _PHASE.findall(out)}
    log(f"  vzmigrate {' '.join(args)} {src.name}->{dst.name} CT {ctid}: {elapsed:.2f} s, {phases}")
    return Moved(elapsed, float(down[1]) if down else None, phases)


def _address(host: TestHost, last: int) -> str:
    return ".".join(host.address.split(".")[:3] + [str(last)])


@contextmanager
def _hosts() -> Iterator[list[TestHost]]:
    from tests.testhosts import host_network

    with host_network(3) as hosts:
        for host in hosts:
            conf = host.root.root / "etc/vz/vz.conf"  # read at the first create, which makes the pool
            conf.write_text(
                re.sub(r"^POOL_SIZE=.*$", f'POOL_SIZE="{HOST_POOL}"', conf.read_text(), flags=re.M)
            )
        _trust(hosts[0], hosts[1])
        _trust(hosts[1], hosts[0])
        yield hosts


def _with_client(client_host: TestHost, address: str, action: Callable[[], Moved]) -> tuple[float, Moved]:
    """Run `action` while a client in `client_host` echoes lines through the CT; the longest
    gap between two echoes it saw, and the action's result."""
    from tests.integration.test_migrate import echo_client

    with echo_client(client_host, address, PORT) as client:
        time.sleep(1.0)  # a steady stream first, so the gap is the migration's
        moved = action()
        time.sleep(0.5)
        result, said = client.finish()
    if result["code"] != 0 or "longest_gap" not in result or result["sent"] != result["received"]:
        raise RuntimeError(f"the TCP client lost its connection through the migration: {said}")
    return float(result["longest_gap"]), moved


def _online_busybox(hosts: list[TestHost], count: int) -> list[Row]:
    a, b, c = hosts
    address = _address(a, 50)
    _vzctl(a, "create", ONLINE_CT, "--ipadd", address, "--hostname", "live")
    _vzctl(a, "start", ONLINE_CT)
    _vzctl(a, "exec", ONLINE_CT, f"nc -ll -p {PORT} -e cat </dev/null >/dev/null 2>&1 &")
    time.sleep(0.5)
    gaps: list[float] = []
    moves: list[Moved] = []
    here, there = a, b
    for index in range(count):
        gap, moved = _with_client(c, address, partial(_move, here, there, ONLINE_CT, "--online"))
        gaps.append(gap)
        moves.append(moved)
        log(f"online {index + 1}/{count}: client gap {gap * 1000:.0f} ms, vzmigrate says {moved.downtime} s")
        here, there = there, here
    _gone(hosts[:2], ONLINE_CT)
    downs = [m.downtime for m in moves if m.downtime is not None]
    notes = {
        "client": "a line every 10 ms from host c to nc -ll -e cat in the CT; longest gap between echoes",
        "client_gaps": gaps,
        "vzmigrate_downtimes": [m.downtime for m in moves],
        "vzmigrate_seconds": [m.seconds for m in moves],
        "phases": [m.phases for m in moves],
    }
    return [
        Row(
            "downtime of vzmigrate --online, busybox CT with a TCP client (client-observed longest gap)",
            "abs",
            "≤ 0.5 s",
            gaps,
            limit=0.5,
            notes=notes,
        ),
        Row(
            "downtime of vzmigrate --online, busybox CT (vzmigrate's own 'was down for')",
            "abs",
            "≤ 0.5 s",
            downs or [float("inf")],
            limit=0.5,
        ),
    ]


def _hog_rss(host: TestHost) -> int:
    """VmRSS in kB of the CT's resident process, 0 if it is gone."""
    out = host.vzctl("exec", SYSTEMD_CT, "grep VmRSS /proc/$(cat /tmp/hog.pid)/status").out.split()
    return int(out[1]) if len(out) > 1 and out[1].isdigit() else 0


def _boot(host: TestHost) -> tuple[str, str]:
    """Wait for systemd in the CT to settle, then start the resident process; (systemd's
    state, the tool that holds the memory)."""
    deadline = time.monotonic() + 60
    state = ""
    while state not in ("running", "degraded"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"systemd in CT {SYSTEMD_CT} did not come up: {state!r}")
        time.sleep(0.3)  # right after start even `--wait` fails: no bus yet
        state = host.vzctl("exec", SYSTEMD_CT, "systemctl is-system-running --wait").out.strip()
    tool = host.vzctl("exec", SYSTEMD_CT, "command -v python3 || command -v perl").out.strip()
    tool = tool.rsplit("/", 1)[-1]
    if tool not in HOG:
        raise RuntimeError(f"CT {SYSTEMD_CT} has neither python3 nor perl for its {HOG_MB} MB process")
    _vzctl(host, "exec", SYSTEMD_CT, HOG[tool].format(mb=HOG_MB) + " </dev/null >/dev/null 2>&1 &")
    while _hog_rss(host) < HOG_MB * 1000:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the CT's {HOG_MB} MB process did not come up ({_hog_rss(host)} kB)")
        time.sleep(0.2)
    return state, tool


def _criu_logs(hosts: list[TestHost], ctid: str) -> dict[str, str]:
    """CRIU's errors from the logs of a failed dump or restore that pyvz keeps beside LXC's:
    pyvz's own message quotes only the first, and on restore that one is noise."""
    found = {}
    for host in hosts:
        for path in sorted((host.root.lxc_dir / ctid).glob("criu-*.log")):
            lines = path.read_text(errors="replace").splitlines()
            noise = ("tables", "RLIMIT_NOFILE", "ddress already assigned", "cgroupd: recv req error")
            errors = [line.strip() for line in lines if "Error" in line and not any(n in line for n in noise)]
            found[f"{host.name}:{path.name}"] = "\n".join(errors[:6])
    return found


def _gone(hosts: list[TestHost], ctid: str) -> None:
    """The CT stopped and destroyed wherever it is, and nothing of it left running: after a
    failed CRIU restore its processes take a moment to die, and while they hold the pool
    the test hosts' cleanup cannot unmount it."""
    from pyvz.paths import Paths
    from pyvz.resources.cgroups import CtCgroups, detect

    for host in hosts:
        status = host.vzctl("status", ctid).out
        if " running" in status:
            host.vzctl("stop", "--fast", ctid)
        if " exist" in status:
            host.vzctl("destroy", ctid)
        cgroup = CtCgroups.of(Paths(host.root.root).tag, int(ctid)).container
        deadline = time.monotonic() + 10
        while detect().procs(cgroup) and time.monotonic() < deadline:
            time.sleep(0.05)


def _online_systemd(ctx: Context, hosts: list[TestHost], count: int) -> list[Row]:
    from bench.templates import RECIPE, _ensure_built

    a, b, _c = hosts
    archive = _ensure_built(ctx)  # once per bench root, shared with the template benchmarks
    for host in (a, b):
        done = host.root.run("vztmpl", "import", str(archive), "--no-gpg-check")
        if done.code != 0:
            raise CommandFailed(["vztmpl", "import", str(archive)], done.code, done.out, done.err)
    _vzctl(a, "create", SYSTEMD_CT, "--ostemplate", RECIPE, "--ipadd", _address(a, 51), "--hostname", "deb")
    _vzctl(a, "start", SYSTEMD_CT)
    state, tool = _boot(a)
    log(f"systemd: CT {SYSTEMD_CT} is {state}; {tool} holds {_hog_rss(a) // 1024} MB")
    what = f"downtime of vzmigrate --online, Debian 12 systemd CT, {HOG_MB} MB resident"
    notes: dict[str, Any] = {"system_state": state, "resident_process": HOG[tool].format(mb=HOG_MB)}
    rows: list[Row] = []
    moves: list[Moved] = []
    rss: list[int] = []
    here, there = a, b
    # As built first; if CRIU cannot dump that, once more with /etc/localtime a plain file:
    # systemd (PID 1) watches that symlink with inotify, CRIU cannot open the watch's file
    # handle ("Can't dump that handle"), and with a plain file there the dump goes through.
    # A CT CRIU cannot move is a result too: the row carries its words.
    for variant in ("as built", "/etc/localtime a plain file"):
        label = f"{what} ({variant})"
        try:
            for index in range(count):
                moves.append(_move(here, there, SYSTEMD_CT, "--online"))
                rss.append(_hog_rss(there))
                log(f"systemd {index + 1}/{count}: vzmigrate says {moves[-1].downtime} s; RSS {rss[-1]} kB")
                here, there = there, here
        except CommandFailed as err:
            log(f"systemd ({variant}): vzmigrate --online failed: {err}")
            failed = Row(label + " — FAILED (error in notes)", "abs", "≤ 1 s", [float("inf")], limit=1.0)
            failed.notes = {**notes, "error": str(err), "criu_logs": _criu_logs(hosts[:2], SYSTEMD_CT)}
            rows.append(failed)
            if variant != "as built" or " running" not in here.vzctl("status", SYSTEMD_CT).out:
                break  # not the dump that failed: the CT is not running anywhere now
            fix = 'cp --remove-destination "$(readlink -f /etc/localtime)" /etc/localtime'
            _vzctl(here, "exec", SYSTEMD_CT, fix)
            _vzctl(here, "restart", SYSTEMD_CT)
            _boot(here)
            moves.clear()
            rss.clear()
            continue
        downs = [m.downtime for m in moves if m.downtime is not None]
        notes |= {"rss_kb_after_each_move": rss, "vzmigrate_seconds": [m.seconds for m in moves]}
        notes["phases"] = [m.phases for m in moves]
        rows.append(Row(label, "abs", "≤ 1 s", downs or [float("inf")], limit=1.0, notes=notes))
        break
    _gone(hosts[:2], SYSTEMD_CT)
    return rows


def _fill(host: TestHost, ctid: str, files: int, size: int) -> int:
    data = host.root.private_dir / ctid / "srv/bench-data"
    data.mkdir(parents=True)
    for index in range(files):
        name = f"blob{index:02d}.bin" if files > 1 else "table.ibd"
        with open(data / name, "wb") as handle:
            for _ in range(size >> 20):
                handle.write(os.urandom(1 << 20))
    os.sync()
    return files * size


@dataclass
class Shape:
    """What the restart migration's CT holds and how its writer writes."""

    ctid: str
    label: str
    files: int
    size: int
    writer: str


def _unwritten(host: TestHost, ctid: str) -> None:
    (host.root.private_dir / ctid / "srv/bench-data/written").unlink(missing_ok=True)


def _rsync(src: TestHost, dst: TestHost, ctid: str) -> list[str]:
    """OpenVZ's vzmigrate copy, from src's netns to dst's private area over the run's ssh."""
    ssh = shlex.join(["ssh", *src.ssh_options])
    source = f"{src.root.private_dir / ctid}/"
    return [
        "rsync",
        "-aH",
        "--numeric-ids",
        "--delete",
        "-e",
        ssh,
        source,
        f"root@{dst.address}:{dst.root.private_dir / ctid}/",
    ]


class Other:
    """Which host the CT is on; each move, pyvz's or the peer's, takes it to the other one."""

    def __init__(self, hosts: list[TestHost]) -> None:
        self.here, self.there = hosts[0], hosts[1]

    def swap(self) -> None:
        self.here, self.there = self.there, self.here


SHAPES = (
    Shape(BIG_CT, f"1 GB in 20 files, {WRITE_MB} MB appended to a new one", BIG_FILES, BIG_FILE, WRITER),
    Shape(DB_CT, f"1 GB in one file, {WRITE_MB} MB rewritten in place (a database)", 1, 1 << 30, DB_WRITER),
)


def _restart(hosts: list[TestHost], count: int, shape: Shape) -> tuple[list[Row], Other]:
    where = Other(hosts)
    ct = shape.ctid
    _vzctl(where.here, "create", ct)
    size = _fill(where.here, ct, shape.files, shape.size)
    log(f"restart: {size >> 20} MB written into CT {ct} ({shape.label})")
    _vzctl(where.here, "start", ct)
    ours: list[Moved] = []
    peer_steps: list[dict[str, float]] = []

    def pyvz() -> float:
        _unwritten(where.here, ct)
        os.sync()  # each side starts with nothing dirty
        _vzctl(where.here, "exec", ct, shape.writer)
        ours.append(_move(where.here, where.there, ct))
        where.swap()
        if ours[-1].downtime is None:
            raise RuntimeError(f"vzmigrate said no downtime for the running CT {ct}")
        return ours[-1].downtime

    def openvz() -> float:
        src, dst = where.here, where.there
        _vzctl(dst, "create", ct)  # the same config as the source's: both plain `create`
        _unwritten(src, ct)
        os.sync()
        _vzctl(src, "exec", ct, shape.writer)
        started = time.perf_counter()
        _ok(src, _rsync(src, dst, ct))
        copied = time.perf_counter()
        # Untimed: the test hosts share one disk. rsync leaves the 1 GB it wrote dirty, and
        # its writeback made `vzctl stop` on the source (its fsyncs) 2.5-3 s slower; on two
        # machines the source would not wait for the destination's disk.
        os.sync()
        stopping = time.perf_counter()
        _vzctl(src, "stop", ct)
        stopped = time.perf_counter()
        _ok(src, _rsync(src, dst, ct))
        synced = time.perf_counter()
        _vzctl(dst, "start", ct)
        running = time.perf_counter()
        _vzctl(src, "destroy", ct)
        where.swap()
        steps = {"rsync_running": copied - started, "sync_untimed": stopping - copied}
        steps |= {"stop": stopped - stopping, "rsync_stopped": synced - stopped, "start": running - synced}
        peer_steps.append(steps)
        log(f"  openvz way {src.name}->{dst.name}: {steps}")
        return running - stopping

    a, b = alternate(count, pyvz, openvz, "restart migration downtime")
    rows = [
        Row(
            f"downtime of restart migration, running CT with {shape.label} during the copy "
            "vs rsync, stop, rsync, start",
            "ratio",
            "≤ 0.2× (1/5 of the peer's)",
            a,
            b,
            limit=0.2,
            notes={
                "pyvz": f"vzmigrate DEST {ct} (no --online); its 'was down for' line",
                "peer": "rsync -aH --numeric-ids --delete (CT running); sync (untimed); vzctl stop; "
                "the same rsync; vzctl start on the destination; downtime = stop start .. start end",
                "writer": shape.writer,
                "vzmigrate_seconds": [m.seconds for m in ours],
                "phases": [m.phases for m in ours],
                "peer_steps": peer_steps,
            },
        )
    ]
    return rows, where


def _stopped(where: Other, count: int) -> list[Row]:
    ct = BIG_CT
    _vzctl(where.here, "stop", "--fast", ct)
    _unwritten(where.here, ct)

    flushes: list[float] = []
    phases: list[dict[str, float]] = []

    def pyvz() -> float:
        os.sync()
        moved = _move(where.here, where.there, ct)
        phases.append(moved.phases)
        where.swap()
        return moved.seconds

    def send_receive() -> float:
        src, dst = where.here, where.there
        snap = src.root.private_dir / ".bench-send"
        received = dst.root.private_dir / snap.name
        ssh = shlex.join(src.ssh_argv(dst)[len(src.enter) :])
        pool = shlex.quote(str(dst.root.private_dir))
        line = f"btrfs send -q {shlex.quote(str(snap))} | {ssh} btrfs receive -q {pool}"
        os.sync()
        start = time.perf_counter()
        _ok(src, ["btrfs", "subvolume", "snapshot", "-r", str(src.root.private_dir / ct), str(snap)])
        _ok(src, ["bash", "-o", "pipefail", "-c", line])
        received_at = time.perf_counter()
        # Timed too: vzmigrate returns with the CT on the destination's disk (its commit
        # snapshots the received subvolume, which writes it out); so must the peer.
        os.sync()
        elapsed = time.perf_counter() - start
        flushes.append(elapsed - (received_at - start))
        _ok(src, ["btrfs", "subvolume", "delete", str(snap)])
        _ok(dst, ["btrfs", "subvolume", "delete", str(received)])
        return elapsed

    a, b = alternate(count, pyvz, send_receive, "stopped CT move")
    return [
        Row(
            "total time to move a stopped 1 GB CT vs btrfs send \\| ssh btrfs receive; sync",
            "ratio",
            "≤ 1.2×",
            a,
            b,
            limit=1.2,
            notes={
                "pyvz": f"vzmigrate DEST {ct} (CT stopped), wall time",
                "peer": "btrfs subvolume snapshot -r private/CT SNAP; btrfs send -q SNAP | ssh root@DEST "
                "btrfs receive -q DEST_POOL; sync (all timed: both end with the CT on disk)",
                "sync_part_of_peer": flushes,
                "phases": phases,
            },
        )
    ]


def bench_migrate(ctx: Context) -> list[Row]:
    quick = ctx.n.create < 10
    rows: list[Row] = []
    with _hosts() as hosts:
        log("migrate: online, busybox CT with a TCP client")
        rows += _online_busybox(hosts, 2 if quick else 5)
        log("migrate: online, Debian 12 systemd CT")
        rows += _online_systemd(ctx, hosts, 1 if quick else 3)
        big: Other | None = None
        for shape in SHAPES:
            log(f"migrate: restart migration of a running CT with {shape.label}")
            restart, where = _restart(hosts, 1 if quick else 3, shape)
            rows += restart
            if shape.ctid == BIG_CT:
                big = where  # moved once more, stopped, below
            else:
                _gone(hosts[:2], shape.ctid)
        assert big is not None
        log("migrate: stopped 1 GB CT")
        rows += _stopped(big, 1 if quick else 3)
    return rows
