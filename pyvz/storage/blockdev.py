"""Which block device holds a path: the one I/O limits and priorities must name.

A CT's private area sits on a filesystem (st_dev); mountinfo names that filesystem's source
(/dev/loop0 for our pool, /dev/vda1 on a host disk). cgroup I/O throttling works on whole
disks, so a partition is traded for its disk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from pyvz.storage.mounts import mount_table

_SYS_BLOCK = Path("/sys/class/block")


class BlockDevice(NamedTuple):
    name: str  # loop0, vda
    number: str  # MAJ:MIN, as cgroup files want it

    @property
    def scheduler(self) -> str:
        """The active I/O scheduler ([bfq] in `none mq-deadline [bfq]`), or ''."""
        try:
            text = (_SYS_BLOCK / self.name / "queue/scheduler").read_text()
        except OSError:
            return ""
        start, end = text.find("["), text.find("]")
        return text[start + 1 : end] if 0 <= start < end else ""


def _source_of(path: Path) -> str | None:
    """The source of the mount that holds `path` (longest matching mount point).

    Not st_dev: every btrfs subvolume has its own anonymous device number.
    """
    real = os.path.realpath(path).rstrip("/") + "/"
    best, source = "", None
    for mount in mount_table():
        target = mount.target.rstrip("/") + "/"
        if real.startswith(target) and len(target) >= len(best):
            best, source = target, mount.source
    return source


def _by_name(name: str) -> BlockDevice | None:
    sysdir = _SYS_BLOCK / name
    try:
        if (sysdir / "partition").exists():  # vda1 -> vda
            sysdir = sysdir.resolve().parent
        return BlockDevice(sysdir.name, (sysdir / "dev").read_text().strip())
    except OSError:
        return None


def device_of(path: Path) -> BlockDevice | None:
    """The whole disk holding `path`, or None (tmpfs, overlay, a network filesystem...)."""
    source = _source_of(path)
    if source is None or not source.startswith("/dev/"):
        return None
    return _by_name(Path(os.path.realpath(source)).name)


def backing_device(device: BlockDevice) -> BlockDevice | None:
    """For a loop device, the disk under its backing file; None for anything else."""
    try:
        backing = (_SYS_BLOCK / device.name / "loop/backing_file").read_text().strip()
    except OSError:
        return None
    return device_of(Path(backing))


def io_device(path: Path) -> BlockDevice | None:
    """The device whose cgroup I/O limits govern writes to `path`.

    Measured on 6.18 (docs/resources.md): for a btrfs pool on a loop device, limits on the loop
    device hold (direct and fsync'd writes at 5 MB/s within 2%); limits on the disk under the
    loop file have no effect unless the loop runs in direct-I/O mode. So: the device the
    filesystem is mounted from.
    """
    return device_of(path)


def prefer_bfq(device: BlockDevice) -> bool:
    """Make sure `device` schedules with bfq (what ioprio weights need); True if it does.

    Only our own loop devices are switched: a host disk's scheduler is the admin's choice.
    """
    if device.scheduler == "bfq":
        return True
    if not device.name.startswith("loop"):
        return False
    try:
        (_SYS_BLOCK / device.name / "queue/scheduler").write_text("bfq")
    except OSError:
        return False
    return device.scheduler == "bfq"
