"""Which LXCFS instance the running CTs were last given the files of, and the check that
commands going into a CT make on their way in: one stat and one readlink, in a module of its
own so that the check costs no import of the rest of pyvz.runtime.lxcfs."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

LXCFS_DIR = Path("/var/lib/lxcfs")
# A symbolic link whose target is the instance (the device number of LXCFS's mount) and the
# pid of the lxcfs serving it: a readlink is the cheapest file there is to read.
HEALED = Path("/run/lock/pyvz-lxcfs.healed")


def healed() -> int | None:
    """The instance last healed for, while the lxcfs that served it lives: a new LXCFS's
    mount may get the device number of the one that died, so the number alone cannot tell."""
    try:
        dev, _, pid = os.readlink(HEALED).partition(":")
        if pid and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return None
        return int(dev)
    except (OSError, ValueError, IndexError):
        return None


def record(current: int, server: int | None = None) -> None:
    """`current` healed for, served by the lxcfs process `server`."""
    HEALED.parent.mkdir(parents=True, exist_ok=True)
    temporary = HEALED.with_name(f".{HEALED.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    os.symlink(f"{current}:{server}" if server else str(current), temporary)
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
