"""Ephemeral CTs (EPHEMERAL=yes): destroyed when they stop, whoever stops them.

Three ways a CT stops, three places that destroy it:
- `vzctl stop`: the command destroys it after the stop, under the lock it already holds.
- a halt or poweroff inside it: no pyvz command runs, but LXC's monitor does, and runs the
  CT's post-stop hook (written at each start, see `lxc_lines`). The hook leaves the
  monitor's cgroups, forks a reaper that outlives the monitor and returns at once; the
  reaper waits for the CT's lock (a `vzctl stop` or `restart` may hold it: the hook never
  takes it, so nothing waits on the monitor while it waits on them) and for the monitor to
  be gone, and destroys the CT if it is still ephemeral and still down.
- a host reboot or a power cut: nothing runs at all, so `vzctl boot` destroys every
  ephemeral CT that is not running before it starts the ONBOOT ones.

A reaper or stop killed with -9 half-way leaves a CT that destroy finishes: its config is
the last thing destroy removes (ct/create.py), so the next `vzctl boot` still finds it
ephemeral and down, and `vzctl destroy` finds it at all.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

from pyvz.errors import VzError
from pyvz.host import Host
from pyvz.log import log, set_ctid
from pyvz.params import EPHEMERAL

if TYPE_CHECKING:
    from pyvz.config import CtConfig
    from pyvz.ct.container import Container

HOOK = "ephemeral-stop"  # in the CT's LXC directory
LOCK_WAIT = 300.0  # seconds the reaper waits for a command holding the CT's lock
MONITOR_WAIT = 10.0  # seconds for LXC's monitor to finish after the CT's last process


def is_ephemeral(cfg: CtConfig) -> bool:
    try:
        value = cfg.get(EPHEMERAL)
    except VzError:
        return False  # a bad value: not told to destroy it
    return value is True


def lxc_lines(ct: Container, cfg: CtConfig) -> tuple[str, ...]:
    """The post-stop hook of an ephemeral CT, written for this start; none for the others."""
    if not is_ephemeral(cfg):
        return ()
    from pyvz.atomic import write_atomic

    hook = ct.host.runtime.ct_dir(ct.ctid) / HOOK
    hook.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(hook, hook_script(str(ct.paths.root), ct.ctid), mode=0o755, durable=False)
    return (f"lxc.hook.post-stop = {hook}",)


def hook_script(root: str, ctid: int) -> str:
    """The hook: this Python, this pyvz and this root, whatever the monitor's environment.
    A reboot inside the CT (LXC_TARGET=reboot) is no stop: LXC starts the CT again."""
    path = [entry for entry in sys.path if entry]
    return (
        f"#!{sys.executable} -IS\n"
        f"# Written by pyvz at each start of ephemeral CT {ctid}; LXC's monitor runs it\n"
        "# when the CT has stopped. Edits here are lost.\n"
        "import os, sys\n"
        f"sys.path[0:0] = {path!r}\n"
        f"os.environ['PYVZ_ROOT'] = {root!r}\n"
        "if os.environ.get('LXC_TARGET') != 'reboot':\n"
        "    from pyvz.ct.ephemeral import after_stop\n"
        f"    after_stop({ctid})\n"
    )


def after_stop(ctid: int) -> None:
    """The hook's work, in LXC's monitor: hand the CT to a reaper and return."""
    from pyvz.paths import Paths

    host = Host(Paths.from_env())
    _leave_cgroups(host)
    if os.fork() != 0:
        return  # the monitor goes on: it removes its cgroups and exits
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        from pyvz.log import setup

        setup("vzctl", host.paths.log_file, quiet=True)
        set_ctid(ctid)
        try:
            reap(host, ctid)
        except VzError as err:
            log.error(f"ephemeral CT {ctid} stopped but was not destroyed: {err.message}")
    finally:
        os._exit(0)


def _leave_cgroups(host: Host) -> None:
    """Into the root cgroup of each hierarchy: the monitor's must be empty for LXC to remove
    it when the monitor exits, and a process left in them would outlive it there."""
    pid = str(os.getpid())
    for top in host.runtime.cgroups.dirs(""):
        try:
            (top / "cgroup.procs").write_text(pid)
        except OSError:
            pass  # a hierarchy that takes no processes at its root (none on v1 or v2 hosts)


def reap(host: Host, ctid: int) -> None:
    """Destroy the CT if it is ephemeral and down (the reaper's work, and boot's)."""
    with host.ct_lock(ctid, wait=LOCK_WAIT):
        destroy_if_down(host, ctid)


def destroy_if_down(host: Host, ctid: int) -> bool:
    """Under the CT's lock: destroy it if it is ephemeral and not running. True if it was."""
    from pyvz.ct.container import Container

    ct = Container(host, ctid)
    if not ct.has_config() or not is_ephemeral(ct.config) or ct.is_running():
        return False  # gone already, made permanent, or started again meanwhile
    if (host.paths.conf_dir / f"{ctid}.migrating").exists():
        return False  # stopped to be moved: `vzmigrate --resolve` settles where it lives
    from pyvz.ct.checkpoint import default_dump, resumable

    if resumable(default_dump(host, ctid)):
        return False  # suspended (vzctl chkpnt), not stopped: `vzctl start` resumes it
    wait_monitor_gone(host, ctid)
    if ct.is_running():
        return False
    log.info(f"CT {ctid} is ephemeral and has stopped: destroying it")
    _withdraw_addresses(ct)
    from pyvz.ct.create import destroy

    destroy(host, ctid, lock=False)
    return True


def _withdraw_addresses(ct: Container) -> None:
    """What `vzctl stop` does for the network before the CT stops, for one that stopped by
    itself (its venet pair went with it; its addresses may still be announced here)."""
    from pyvz.params import IPADD

    try:
        if ct.config.get(IPADD):
            ct.network_down(prefix=[], keep_firewall=True)  # destroy removes the table
    except VzError as err:
        log.warning(f"CT {ct.ctid}: {err.message}")


def wait_monitor_gone(host: Host, ctid: int) -> None:
    """LXC's monitor runs the post-stop hook and removes its cgroups after the CT's last
    process has gone; destroy must not remove its directory under it."""
    runtime = host.runtime
    monitor = runtime.cgroups_of(ctid).monitor
    deadline = time.monotonic() + MONITOR_WAIT
    while runtime.cgroups.procs(monitor) and time.monotonic() < deadline:
        time.sleep(0.01)


def sweep(host: Host) -> list[int]:
    """`vzctl boot`: destroy every ephemeral CT that is not running (a host reboot stopped
    them all; a CT whose lock is held is someone's now and is left to them)."""
    from pyvz.config import ConfigFile

    swept = []
    for ctid in host.ctids():
        value = ConfigFile.load(host.paths.conf_file(ctid)).get(EPHEMERAL.key or "")
        if not value:
            continue  # the cheap look first: most CTs say nothing about it
        set_ctid(ctid)
        try:
            with host.ct_lock(ctid):
                if destroy_if_down(host, ctid):
                    swept.append(ctid)
        except VzError as err:
            log.warning(f"ephemeral CT {ctid} was not destroyed: {err.message}")
    set_ctid(None)
    return swept
