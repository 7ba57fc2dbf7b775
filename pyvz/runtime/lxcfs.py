"""LXCFS: the CT's own /proc/meminfo, cpuinfo, stat, uptime, loadavg, swaps, diskstats and
/sys/devices/system/cpu, so `free`, `top`, `nproc` and `uptime` inside show its limits.

One LXCFS serves the whole host (every PYVZ_ROOT) at /var/lib/lxcfs. pyvz bind-mounts its
files over the CT's own at start through LXC mount entries (instead of the hook Debian's
package drops into LXC's common.conf.d, which is a shell script per start and would give
every CT every file, `--meminfo none` or not), and starts LXCFS when it is not running.

LXCFS restarting breaks the CTs' binds (reads fail with ENOTCONN): each pyvz start notices
a new LXCFS instance and binds the new files into every running CT of its root again.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import signal
import time
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from pyvz.atomic import write_atomic
from pyvz.errors import ExitCode, VzError
from pyvz.log import log
from pyvz.run import daemon, run
from pyvz.storage.idmount import bind_into_ct

LXCFS_DIR = Path("/var/lib/lxcfs")
LOG_FILE = Path("/var/log/lxcfs.log")
PID_FILE = Path("/run/lxcfs.pid")  # lxcfs's default
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
    try:
        os.stat(LXCFS_DIR)
    except OSError as err:
        return err.errno == errno.ENOTCONN
    return False


_warned = False


def ensure() -> int | None:
    """Start LXCFS if it is not running; its instance, or None (said once) when it cannot."""
    global _warned
    current = instance()
    if current is not None:
        return current
    if shutil.which("lxcfs") is None:
        if not _warned:
            _warned = True
            log.warning(
                "LXCFS is not installed (apt install lxcfs): CTs see the host's memory, CPUs and uptime"
            )
        return None
    _LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two starts at once start one LXCFS
        current = instance()
        if current is not None:
            return current
        _end_dying()
        if _stale_mount():  # an LXCFS that died left its mount behind
            run(["umount", "-l", str(LXCFS_DIR)], check=False)
        LXCFS_DIR.mkdir(parents=True, exist_ok=True)
        log.info("Starting LXCFS")
        daemon(["lxcfs", "--enable-loadavg", "--enable-pidfd", str(LXCFS_DIR)], LOG_FILE)
        deadline = time.monotonic() + _START_WAIT
        while (current := instance()) is None:
            if time.monotonic() > deadline:
                raise VzError(ExitCode.SYSTEM_ERROR, f"LXCFS did not come up at {LXCFS_DIR}; see {LOG_FILE}")
            time.sleep(0.02)
    return current


def _end_dying() -> None:
    """An LXCFS whose mount no longer answers but whose process lives on (it was told to
    stop and is winding down) still holds its pid file, and a new one would exit at once:
    give it a moment, then end it (it serves nothing)."""
    try:
        pid = int(PID_FILE.read_text().split()[0])
        if Path(f"/proc/{pid}/comm").read_text().strip() != "lxcfs":
            return
    except (OSError, ValueError, IndexError):
        return
    for signum in (0, signal.SIGKILL):  # a moment to finish, then the end
        if signum:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                return
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                    return  # gone, not yet reaped: its pid file lock went with it
            except OSError:
                return
            time.sleep(0.02)


def stale_in(init_pid: int) -> bool:
    """Whether the running CT's LXCFS files are those of an LXCFS that is gone."""
    try:
        os.stat(f"/proc/{init_pid}/root/proc/cpuinfo")
    except OSError as err:
        return err.errno == errno.ENOTCONN
    return False


def rebind(init_pid: int, chosen: Iterable[View]) -> None:
    """Put the current LXCFS's files over the stale ones in a running CT."""
    bind_into_ct(init_pid, [(str(v.source), "/" + v.target, v.directory) for v in chosen])


def heal_if_restarted(state_file: Path, current: int, running: Iterable[tuple[int, int, bool]]) -> None:
    """After an LXCFS restart, rebind the running CTs of this root; `running` gives each
    one's (ctid, init pid, whether it shows LXCFS's meminfo)."""
    try:
        recorded = int(state_file.read_text())
    except (OSError, ValueError):
        recorded = None
    if recorded == current:
        return
    for ctid, init_pid, meminfo in running:
        if stale_in(init_pid):
            try:
                rebind(init_pid, views(meminfo))
                log.info(f"CT {ctid}: bound the restarted LXCFS's files in again")
            except VzError as err:
                log.warning(f"CT {ctid}: {err.message}")
    write_atomic(state_file, f"{current}\n", durable=False)
