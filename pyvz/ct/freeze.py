"""Freezing a running CT for the few milliseconds a consistent snapshot needs.

The cgroup freezer stops every task at a syscall boundary, so a file the CT was appending to
holds whole writes only. A CT must never stay frozen because pyvz died: before freezing, a
guard process is started that thaws the CT if pyvz dies, kill -9 included (run.if_we_die).
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pyvz.errors import ExitCode, VzError
from pyvz.log import log
from pyvz.resources.cgroups import CgroupTree
from pyvz.run import if_we_die

if TYPE_CHECKING:
    from pyvz.ct.container import Container

FREEZE_TIMEOUT = 10.0


@contextmanager
def frozen(cgroups: CgroupTree, relative: str, what: str) -> Iterator[None]:
    """Keep the cgroup `relative` frozen inside the block; log how long it was."""
    path, freeze, thaw = cgroups.freezer(relative)
    if not path.exists():
        raise VzError(ExitCode.SYSTEM_ERROR, f"cannot freeze {what}: no freezer at {path}")
    with if_we_die(["sh", "-c", 'printf %s "$1" > "$2"', "sh", thaw, str(path)]):
        started = time.monotonic()
        try:
            path.write_text(freeze)
            deadline = started + FREEZE_TIMEOUT
            while not cgroups.is_frozen(relative):
                if time.monotonic() > deadline:
                    raise VzError(ExitCode.SYSTEM_ERROR, f"{what} did not freeze within {FREEZE_TIMEOUT:g} s")
                time.sleep(0.001)
            yield
        finally:
            try:
                path.write_text(thaw)
            except OSError as err:
                # ENOENT, or ENODEV from a v1 cgroup removed while open: the block stopped
                # the CT and LXC removed its cgroups (snapshot-switch).
                if err.errno not in (errno.ENOENT, errno.ENODEV):
                    raise
            log.info(f"{what} was frozen for {(time.monotonic() - started) * 1000:.0f} ms")


def freeze_and_kill(ct: Container) -> None:
    """Stop a running CT at once and for good, as vzctl 4.11's snapshot switch does (and a
    host that fences itself): frozen first, so that it does nothing more (no write lands
    after the decision, no stop script runs), then killed. A clean shutdown would cost its
    init's seconds (busybox's: two). The caller holds the CT's lock."""
    cgroup = ct.host.runtime.cgroups_of(ct.ctid).container
    with frozen(ct.host.runtime.cgroups, cgroup, f"CT {ct.ctid}"):
        ct.stop(fast=True)  # the runtime kills a frozen CT's tasks before it thaws them
