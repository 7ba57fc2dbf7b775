"""Which LXCFS instance the running CTs were last given the files of, and the check that
commands going into a CT make on their way in: one stat and one readlink, in a module of its
own so that the check costs no import of the rest of pyvz.runtime.lxcfs."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

LXCFS_DIR = Path("/var/lib/lxcfs")
# A symbolic link whose target is the instance (the device number of LXCFS's mount): a
# readlink is the cheapest file there is to read.
HEALED = Path("/run/lock/pyvz-lxcfs.healed")


def healed() -> int | None:
    try:
        return int(os.readlink(HEALED))
    except (OSError, ValueError):
        return None


def record(current: int) -> None:
    HEALED.parent.mkdir(parents=True, exist_ok=True)
    temporary = HEALED.with_name(f".{HEALED.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    os.symlink(str(current), temporary)
    os.replace(temporary, HEALED)


def unchanged() -> bool:
    """Whether there is nothing to heal with: the LXCFS mounted is the instance last healed
    for, or none answers (down, dead, never installed: nothing to bind in). One stat, and a
    second one only when the first does not match."""
    try:
        mounted = os.stat(LXCFS_DIR).st_dev
        if mounted == healed():
            return True
        return mounted == os.stat(LXCFS_DIR.parent).st_dev  # not a mount: no LXCFS up
    except OSError:
        return True  # missing, or a dead LXCFS's mount (ENOTCONN)
