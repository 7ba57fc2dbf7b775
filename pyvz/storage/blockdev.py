"""Which block device holds a path: the one I/O limits and priorities must name.

A CT's private area sits on a filesystem (st_dev); mountinfo names that filesystem's source
(/dev/loop0 for our pool, /dev/vda1 on a host disk). cgroup I/O throttling works on whole
disks, so a partition is traded for its disk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from pyvz.storage.mounts import mount_of

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
    mount = mount_of(path)
    if mount is None or not mount.source.startswith("/dev/"):
        return None
    return _by_name(Path(os.path.realpath(mount.source)).name)


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
