"""Who owns a `vzctl run` CT, so that one whose owner was killed outlives it only until the
next `vzctl run` or `vzctl boot`.

The record is conf/CTID.run, "PID START-TIME rm|keep": the process of the `vzctl run`
that made the CT and its start time (/proc/PID/stat), so that a PID the kernel has given to
another process since, or a reboot, reads as gone. It is written under the root lock before
the CT exists, which also reserves the CTID (two runs at once never pick the same one),
and removed after everything else: a `vzctl run` killed at any point (kill -9, or the host's
power) leaves a record whose owner is gone, and `sweep` then stops the CT and, for
`--rm`, destroys what there is of it; a kept CT (no --rm) is left stopped. `vzctl destroy`
removes the record with the CT.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from pyvz.errors import ExitCode, VzError
from pyvz.host import Host
from pyvz.log import log, set_ctid
from pyvz.paths import Paths

SUFFIX = ".run"
# The CTIDs `vzctl run` picks from, lowest free first: above what people number by hand,
# far below MAX_CTID, and six digits fit every interface name pyvz makes from a CTID.
FIRST_CTID = 900000
LAST_CTID = 999999


class Owner(NamedTuple):
    pid: int
    started: str
    remove: bool  # --rm: the CT goes when its owner is done or gone

    def text(self) -> str:
        return f"{self.pid} {self.started} {'rm' if self.remove else 'keep'}\n"


def record(paths: Paths, ctid: int) -> Path:
    return paths.conf_dir / f"{ctid}{SUFFIX}"


def me(remove: bool) -> Owner:
    from pyvz.lock import process_start_time

    pid = os.getpid()
    return Owner(pid, process_start_time(pid) or "?", remove)


def read(path: Path) -> Owner | None:
    """None: no record, or one that does not parse (a torn write cannot happen: atomic)."""
    try:
        words = path.read_text().split()
    except OSError:
        return None
    if len(words) != 3 or not words[0].isdigit():
        return None
    return Owner(int(words[0]), words[1], words[2] == "rm")


def alive(owner: Owner) -> bool:
    from pyvz.lock import process_start_time

    return process_start_time(owner.pid) == owner.started


def _free(host: Host, ctid: int) -> bool:
    paths = host.paths
    taken = (
        paths.conf_file(ctid),
        record(paths, ctid),
        host.lock_dir / f"{ctid}.lck",
        host.runtime.ct_dir(ctid),
        paths.lib_vz / "private" / str(ctid),
    )
    return not any(p.exists() or p.is_symlink() for p in taken)


def claim(host: Host, remove: bool) -> int:
    """The lowest free CTID of the run range, recorded as ours before anything is made."""
    from pyvz.atomic import write_atomic

    with host.root_lock():
        host.paths.conf_dir.mkdir(parents=True, exist_ok=True)
        for ctid in range(FIRST_CTID, LAST_CTID + 1):
            if _free(host, ctid):
                write_atomic(record(host.paths, ctid), me(remove).text())
                return ctid
    raise VzError(
        ExitCode.RESOURCE_ERROR,
        f"no free CTID left for vzctl run in {FIRST_CTID}-{LAST_CTID} (vzlist -a lists the kept ones)",
    )


def release(paths: Paths, ctid: int) -> None:
    record(paths, ctid).unlink(missing_ok=True)


def records(paths: Paths) -> list[int]:
    try:
        names = os.listdir(paths.conf_dir)
    except FileNotFoundError:
        return []
    return sorted(int(n[: -len(SUFFIX)]) for n in names if n.endswith(SUFFIX) and n[: -len(SUFFIX)].isdigit())


def sweep(host: Host) -> list[int]:
    """Stop (and, for --rm, destroy) the run CTs whose owner is gone; a CT whose lock is held
    is someone's at the moment and is left to the next sweep. Returns the CTIDs settled."""
    settled = []
    for ctid in records(host.paths):
        owner = read(record(host.paths, ctid))
        if owner is not None and alive(owner):
            continue
        set_ctid(ctid)
        try:
            with host.ct_lock(ctid):
                finish(host, ctid, owner is None or owner.remove, "its vzctl run is gone")
            settled.append(ctid)
        except VzError as err:
            log.warning(f"CT {ctid} of a vzctl run that is gone was not cleaned up: {err.message}")
    set_ctid(None)
    return settled


def finish(host: Host, ctid: int, remove: bool, why: str, fast: bool = True) -> None:
    """Under the CT's lock: stop it (`fast`: killed), destroy it if `remove`, then drop the
    record."""
    from pyvz.ct.container import Container

    ct = Container(host, ctid)
    if ct.has_config() and ct.is_running():
        log.info(f"CT {ctid}: {why}: stopping it")
        ct.stop(fast=fast)
    if remove:
        from pyvz.ct.create import destroy

        try:
            destroy(host, ctid, lock=False)
        except VzError as err:
            if err.code is not ExitCode.NO_CT_CONFIG:
                raise  # NO_CT_CONFIG: nothing of it was made, or it was destroyed already
        # The config vzctl destroy keeps as CTID.conf.destroyed: --rm leaves nothing at all.
        host.paths.conf_file(ctid).with_suffix(".conf.destroyed").unlink(missing_ok=True)
    release(host.paths, ctid)
