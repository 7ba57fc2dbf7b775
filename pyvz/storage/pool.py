"""The storage pool: the btrfs filesystem that holds the private areas.

Where VE_PRIVATE's directory is already on btrfs, that filesystem is the pool. Otherwise
the default private directory gets a sparse loop-file btrfs image mounted on it, so every
host gets snapshots and quotas. The image is created on first use, before anything is
written to the directory, so it never hides files underneath it.
"""

from __future__ import annotations

import os
from pathlib import Path

from pyvz.errors import ExitCode, VzError
from pyvz.paths import Paths
from pyvz.run import run
from pyvz.storage.btrfs import quota_enable
from pyvz.storage.mounts import fs_type, is_mountpoint, mount_table
from pyvz.units import parse_size

MIN_POOL = 1 << 30


def default_private_dir(paths: Paths) -> Path:
    return paths.lib_vz / "private"


def is_btrfs(path: Path) -> bool:
    return fs_type(path) == "btrfs"


def _pool_size(paths: Paths, setting: str | None) -> int:
    if setting and setting != "auto":
        return parse_size(setting, 1, "POOL_SIZE")
    import shutil

    free = shutil.disk_usage(paths.lib_vz).free
    return max(MIN_POOL, int(free * 0.9))  # sparse: costs nothing until used


def mount_existing(paths: Paths) -> None:
    """After a reboot the image is there but not mounted: mount it before anyone looks."""
    directory = default_private_dir(paths)
    if paths.pool_image.exists() and not is_mountpoint(directory):
        directory.mkdir(parents=True, exist_ok=True)
        run(["mount", "-o", "loop", str(paths.pool_image), str(directory)], error_code=ExitCode.CANT_MOUNT)


def prepare(paths: Paths, private_dir: Path, need_btrfs: bool, size_setting: str | None) -> None:
    """Make sure `private_dir` can hold a new private area of the wanted layout."""
    default = default_private_dir(paths)
    if private_dir == default:
        mount_existing(paths)
        if is_btrfs(default):
            return
        if size_setting != "none" and not paths.pool_image.exists():
            _create_pool(paths, default, size_setting)
            return
    if need_btrfs and not is_btrfs(private_dir):
        raise VzError(
            ExitCode.CANT_CREATE_PRIVATE,
            f"{private_dir} is not on btrfs: layout btrfs needs it there (or use --layout dir)",
        )
    private_dir.mkdir(parents=True, exist_ok=True)


def _create_pool(paths: Paths, directory: Path, size_setting: str | None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise VzError(
            ExitCode.CANT_CREATE_PRIVATE,
            f"{directory} is not empty and not on btrfs; move its contents away or set POOL_SIZE=none",
        )
    size = _pool_size(paths, size_setting)
    partial = paths.pool_image.with_name(paths.pool_image.name + ".partial")
    partial.unlink(missing_ok=True)
    with open(partial, "wb") as handle:
        handle.truncate(size)
    run(["mkfs.btrfs", "-q", "-L", "pyvz-pool", str(partial)], error_code=ExitCode.CANT_CREATE_PRIVATE)
    os.replace(partial, paths.pool_image)
    mount_existing(paths)
    quota_enable(directory)


def release(paths: Paths) -> None:
    """Unmount the loop pool (its loop device goes with it). For tests and host shutdown."""
    directory = os.path.realpath(default_private_dir(paths))
    image = os.path.realpath(paths.pool_image)
    for mount in mount_table():
        if mount.target == directory and mount.fstype == "btrfs":
            run(["umount", directory], error_code=ExitCode.CANT_UMOUNT)
            _detach_loops(image)
            return


def _detach_loops(image: str) -> None:
    # mount -o loop sets autoclear; detach explicitly in case something raced with it.
    listing = run(["losetup", "-j", image], check=False).stdout
    for line in listing.splitlines():
        device = line.split(":", 1)[0]
        run(["losetup", "-d", device], check=False)
