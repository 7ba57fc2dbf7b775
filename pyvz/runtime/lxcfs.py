"""LXCFS: the CT's own /proc/meminfo, cpuinfo, stat, uptime, loadavg, swaps, diskstats and
/sys/devices/system/cpu, so `free`, `top`, `nproc` and `uptime` inside show its limits.

One LXCFS serves the whole host (every PYVZ_ROOT) at /var/lib/lxcfs. pyvz bind-mounts its
files over the CT's own at start through LXC mount entries (instead of the hook Debian's
package drops into LXC's common.conf.d, which is a shell script per start and would give
every CT every file, `--meminfo none` or not), and starts LXCFS when it is not running.

LXCFS restarting breaks the CTs' binds: they hold the old FUSE connection, whose reads fail
with ENOTCONN, and nothing in the kernel moves them to the new one. So whoever sees a new
LXCFS instance binds its files into every running pyvz CT of every root again (`heal`):
ensure() right after it starts one, the `pyvz-lxcfs-heal` command that lxcfs.service runs
once LXCFS is up (tools/lxcfs-pyvz.conf), and, lazily, each command that goes into a
running CT (`refresh`). The instance healed for last is recorded, so the check on the way
in is one stat and one readlink. lxcfs's own reload (SIGUSR1, `systemctl reload lxcfs`)
keeps its mount and connection: nothing breaks and nothing is healed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import signal
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from pyvz.errors import ExitCode, VzError
from pyvz.log import log
from pyvz.run import daemon, run
from pyvz.runtime import lxcfsmark
from pyvz.runtime.lxcfsmark import LXCFS_DIR as LXCFS_DIR

LOG_FILE = Path("/var/log/lxcfs.log")
_LOCK = Path("/run/lock/pyvz-lxcfs.lock")
_PROC_FILES = ("cpuinfo", "diskstats", "loadavg", "meminfo", "slabinfo", "stat", "swaps", "uptime")
_CPU_DIR = "sys/devices/system/cpu"
_START_WAIT = 5.0


class View(NamedTuple):
    source: Path  # under LXCFS_DIR
    target: str  # relative to the CT's root
    directory: bool


def views(meminfo: bool) -> list[View]:
    """What a CT gets; `meminfo=False` (`--meminfo none`) leaves it the host's /proc/meminfo."""
    chosen = [View(LXCFS_DIR / "proc" / name, f"proc/{name}", False) for name in _PROC_FILES]
    if not meminfo:
        chosen = [view for view in chosen if view.target != "proc/meminfo"]
    chosen.append(View(LXCFS_DIR / _CPU_DIR, _CPU_DIR, True))
    return chosen


# Empty hook keys clear the lxcfs package's hooks that common.conf pulled in: pyvz binds
# LXCFS's files itself, or (LXCFS=no) not at all.
CLEAR_PACKAGE_HOOKS = ("lxc.hook.mount =", "lxc.hook.post-stop =")


def lxc_lines(chosen: Iterable[View]) -> list[str]:
    lines: list[str] = []
    for view in chosen:
        # optional: with LXCFS absent (not installed) the CT still starts, seeing the host.
        create = "create=dir" if view.directory else "create=file"
        lines.append(f"lxc.mount.entry = {view.source} {view.target} none bind,optional,{create} 0 0")
    return lines


def instance() -> int | None:
    """The running LXCFS's mount (its device number), or None when none answers."""
    try:
        mounted = os.stat(LXCFS_DIR).st_dev
        if mounted == os.stat(LXCFS_DIR.parent).st_dev:
            return None
        os.stat(LXCFS_DIR / "proc/meminfo")
    except OSError:
        return None
    return mounted


def _stale_mount() -> bool:
    """A dead LXCFS's mount: its files answer ENOTCONN (its root may still stat, cached)."""
    for probe in (LXCFS_DIR, LXCFS_DIR / "proc/meminfo"):
        try:
            os.stat(probe)
        except OSError as err:
            if err.errno == errno.ENOTCONN:
                return True
    return False


_warned = False


def ensure(quiet: bool = False) -> int | None:
    """Start LXCFS if it is not running, and give the running CTs its files if it is new to
    them; its instance, or None (said once, unless `quiet`) when it cannot be had."""
    global _warned
    current = instance()
    if current is not None and lxcfsmark.healed() == current:
        return current
    if current is None and shutil.which("lxcfs") is None:
        if not _warned and not quiet:
            _warned = True
            log.warning(
                "LXCFS is not installed (apt install lxcfs): CTs see the host's memory, CPUs and uptime"
            )
        return None
    with _locked():  # two at once start one LXCFS, and heal once
        current = instance()
        if current is None:
            current = _start()
        if lxcfsmark.healed() != current:
            heal()
            lxcfsmark.record(current, next(iter(processes()), None))
    return current


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    _LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _start() -> int:
    current = _settle()
    if current is not None:
        return current
    # An LXCFS that died left its mount behind; several crashes leave them stacked.
    for _ in range(16):
        if not _stale_mount():
            break
        run(["umount", "-l", str(LXCFS_DIR)], check=False)
    LXCFS_DIR.mkdir(parents=True, exist_ok=True)
    log.info("Starting LXCFS")
    daemon(["lxcfs", "--enable-loadavg", "--enable-pidfd", str(LXCFS_DIR)], LOG_FILE)
    current = wait_up(_START_WAIT)
    if current is None:
        raise VzError(ExitCode.SYSTEM_ERROR, f"LXCFS did not come up at {LXCFS_DIR}; see {LOG_FILE}")
    return current


def wait_up(seconds: float) -> int | None:
    """The instance once LXCFS answers, waiting up to `seconds` for it."""
    deadline = time.monotonic() + seconds
    while (current := instance()) is None:
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)
    return current


def refresh() -> None:
    """On the way into a running CT: if LXCFS came back as a new instance since the CTs
    were last healed, heal them now. The usual case costs one stat and one readlink; an
    LXCFS that is down is left to vzctl start, `make install` or the service manager."""
    if lxcfsmark.unchanged():
        return
    current = instance()
    if current is not None:
        heal_now(current)


def heal_now(current: int) -> int:
    """Heal the running CTs, and record `current` as the instance they now have; how many
    CTs it healed."""
    with _locked():
        count = heal()
        lxcfsmark.record(current, next(iter(processes()), None))
    return count


def _settle() -> int | None:
    """lxcfs processes that live on while none answers are dying (told to stop, winding
    down) or starting (a service manager's, not mounted yet). Either holds lxcfs's pid
    file, and a new lxcfs would exit at once, removing that file as it goes (lxcfs 5 does
    so even when the file was not its own). So: a moment for them to come up or to end,
    then what is left is ended (it serves nothing). The instance, if one came up."""
    pids = processes()
    deadline = time.monotonic() + 2.0
    while pids and time.monotonic() < deadline:
        current = instance()
        if current is not None:
            return current
        time.sleep(0.02)
        pids = [pid for pid in pids if _alive(pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return instance()


def processes() -> list[int]:
    """The live lxcfs processes that serve (or are to serve) LXCFS_DIR, found in /proc
    rather than from lxcfs's pid file, which a failed second lxcfs removes."""
    found = []
    want = os.fsencode(LXCFS_DIR)
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                    argv = handle.read(4096).split(b"\0")
            except OSError:
                continue
            if argv and os.path.basename(argv[0]) == b"lxcfs" and want in argv and _alive(int(entry.name)):
                found.append(int(entry.name))
    return sorted(found)


def _alive(pid: int) -> bool:
    """Running, not a zombie (a zombie's pid file lock went with it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class Running(NamedTuple):
    """A running pyvz CT of some root, found from its LXC monitor."""

    lxcpath: str
    name: str
    init_pid: int

    def __str__(self) -> str:
        root = self.lxcpath.removesuffix("/" + _PYVZ_LXC)
        return f"CT {self.name}" + ("" if root == "" else f" of {root}")


_PYVZ_LXC = "var/lib/vz/lxc"  # Paths.lxc_dir below any root
_MONITOR = b"[lxc monitor] "


def running() -> list[Running]:
    """Every running pyvz CT on the machine, whatever its root: each is an `lxc-start`
    monitor titled "[lxc monitor] LXCPATH NAME" whose child is the CT's init. pyvz keeps no
    list of its roots; the monitors are the list of those that have CTs running."""
    monitors: dict[int, tuple[str, str]] = {}
    parents: dict[int, list[int]] = {}
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                with open(f"/proc/{pid}/stat", "rb") as handle:
                    stat = handle.read()
                title = _title(pid)
                if title is not None:
                    monitors[pid] = title
                parent = int(stat[stat.rindex(b")") + 2 :].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(parent, []).append(pid)
    found = []
    for pid, (lxcpath, name) in monitors.items():
        init = next((child for child in parents.get(pid, []) if _is_init(child)), None)
        if init is not None:
            found.append(Running(lxcpath, name, init))
    return sorted(found)


def _is_init(pid: int) -> bool:
    """Pid 1 of its own pid namespace (not a hook the monitor runs meanwhile)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return any(line.startswith("NSpid:") and line.split()[-1] == "1" for line in status.splitlines())


def _title(pid: int) -> tuple[str, str] | None:
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return monitor_of(handle.read(4096))


def monitor_of(cmdline: bytes) -> tuple[str, str] | None:
    """(lxcpath, name) of a pyvz CT's LXC monitor, from its /proc/PID/cmdline."""
    data = cmdline.split(b"\0")[0]
    if not data.startswith(_MONITOR):
        return None
    lxcpath, _, name = data[len(_MONITOR) :].decode(errors="replace").rpartition(" ")
    if not (lxcpath == "/" + _PYVZ_LXC or lxcpath.endswith("/" + _PYVZ_LXC)) or not name:
        return None  # an LXC container that is not pyvz's
    return lxcpath, name


def stale(init_pid: int) -> list[View]:
    """The CT's LXCFS files that belong to an LXCFS that is gone (reads fail: ENOTCONN)."""
    found = []
    for view in views(True):
        path = f"/proc/{init_pid}/root/{view.target}"
        try:
            # Not a stat: a dead FUSE mount may still answer those from its cache.
            if view.directory:
                with os.scandir(path) as entries:
                    next(entries, None)
            else:
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                try:
                    os.read(fd, 1)
                finally:
                    os.close(fd)
        except OSError as err:
            if err.errno == errno.ENOTCONN:
                found.append(view)
    return found


def heal() -> int:
    """Bind the running LXCFS's files over the stale ones in every running pyvz CT; only
    those stale are replaced, so `--meminfo none` (the CT's own /proc/meminfo) stays so.
    Returns how many CTs it healed."""
    from pyvz.storage.idmount import bind_into_ct  # here: `refresh` must stay cheap to import

    count = 0
    for ct in running():
        chosen = stale(ct.init_pid)
        if not chosen:
            continue
        try:
            bind_into_ct(ct.init_pid, [(str(v.source), "/" + v.target, v.directory) for v in chosen])
        except VzError as err:
            log.warning(f"{ct}: {err.message}")
            continue
        # The log only: this may run on the way into a CT, whose output is the command's.
        log.debug(f"{ct}: bound the restarted LXCFS's files in again")
        count += 1
    return count
