"""Reading the mount table and mounting/unmounting, the way every driver needs it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from pyvz.errors import ExitCode, VzError
from pyvz.run import run


class Mount(NamedTuple):
    target: str
    fstype: str
    source: str
    options: str = ""  # the mount's own options (not the filesystem's): ro, idmapped, ...


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    return field.encode().decode("unicode_escape") if "\\" in field else field


def mount_table() -> list[Mount]:
    mounts = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            left, _, right = line.partition(" - ")
            fields = left.split()
            rest = right.split()
            mounts.append(Mount(_unescape(fields[4]), rest[0], _unescape(rest[1]), fields[5]))
    return mounts


def is_idmapped(path: Path) -> bool:
    target = os.path.realpath(path)
    return any(m.target == target and "idmapped" in m.options.split(",") for m in mount_table())


def is_mountpoint(path: Path) -> bool:
    target = os.path.realpath(path)
    return any(m.target == target for m in mount_table())


def mount_of(path: Path) -> Mount | None:
    """The mount that holds `path` (its nearest existing ancestor): the longest mount point
    above it. Not st_dev: every btrfs subvolume has its own anonymous device number."""
    probe = Path(os.path.realpath(path))
    while not probe.exists():
        probe = probe.parent
    real = str(probe).rstrip("/") + "/"
    best: Mount | None = None
    for mount in mount_table():
        target = mount.target.rstrip("/") + "/"
        if real.startswith(target) and (best is None or len(target) >= len(best.target.rstrip("/") + "/")):
            best = mount
    return best


def fs_type(path: Path) -> str:
    """The type of the filesystem that holds `path`."""
    mount = mount_of(path)
    return mount.fstype if mount else ""


def bind_mount(source: Path, target: Path, readonly: bool = False) -> None:
    run(["mount", "--bind", str(source), str(target)], error_code=ExitCode.CANT_MOUNT)
    if readonly:
        try:
            run(["mount", "-o", "remount,bind,ro", str(target)], error_code=ExitCode.CANT_MOUNT)
        except BaseException:
            umount(target)
            raise


def umount(target: Path, lazy: bool = False) -> None:
    if not is_mountpoint(target):
        return
    argv = ["umount", *(["-l"] if lazy else []), str(target)]
    run(argv, error_code=ExitCode.CANT_UMOUNT)


def umount_tree(target: Path) -> None:
    """Unmount `target` and anything mounted below it, deepest first."""
    real = os.path.realpath(target)
    below = sorted(
        {m.target for m in mount_table() if m.target == real or m.target.startswith(real + "/")},
        key=len,
        reverse=True,
    )
    for mountpoint in below:
        try:
            run(["umount", mountpoint], error_code=ExitCode.CANT_UMOUNT)
        except VzError:
            run(["umount", "-l", mountpoint], error_code=ExitCode.CANT_UMOUNT)
