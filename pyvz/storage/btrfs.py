"""The btrfs layout: a CT is a subvolume snapshot of the unpacked template.

Creating is O(1) in template size, snapshots are instant, and the qgroup limit on the
subvolume is the disk quota. LXC shifts ids at start with an idmapped rootfs mount.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from pyvz.atomic import exchange
from pyvz.errors import ExitCode, VzError
from pyvz.kernelfiles import read_small
from pyvz.log import log
from pyvz.params import Layout
from pyvz.run import run
from pyvz.storage.base import Area, DiskQuota, QuotaCounts, remove_path
from pyvz.storage.bindroot import BindRootDriver
from pyvz.units import UNLIMITED, format_size

_SUBVOLUME_INODE = 256  # every btrfs subvolume root has this inode number


def is_subvolume(path: Path) -> bool:
    try:
        return os.lstat(path).st_ino == _SUBVOLUME_INODE
    except FileNotFoundError:
        return False


def dir_ioctl(path: Path, request: int, args: bytearray | None = None) -> None:
    """One btrfs ioctl on the directory `path` (args, when given, are read and written back).
    pyvz talks to btrfs this way where running the btrfs tool would cost more than the call."""
    import fcntl

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if args is None:
            fcntl.ioctl(fd, request)
        else:
            fcntl.ioctl(fd, request, args)
    finally:
        os.close(fd)


_SNAP_CREATE_V2 = 0x50009417  # BTRFS_IOC_SNAP_CREATE_V2: _IOW(0x94, 23, 4096-byte args)
_SUBVOL_RDONLY = 1 << 1


def snapshot(source: Path, target: Path, readonly: bool = False) -> None:
    """What `btrfs subvolume snapshot [-r]` does, by the ioctl itself: a snapshot is the one
    O(1) step of snapshot and clone, and running the tool would cost more than the step."""
    import struct

    name = os.fsencode(target.name)
    args = bytearray(4096)  # fd, transid, flags, a 32-byte union, then the new name
    try:
        source_fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
        try:
            struct.pack_into("qQQ", args, 0, source_fd, 0, _SUBVOL_RDONLY if readonly else 0)
            args[56 : 56 + len(name)] = name
            dir_ioctl(target.parent, _SNAP_CREATE_V2, args)
        finally:
            os.close(source_fd)
    except OSError as err:
        raise VzError(
            ExitCode.CANT_CREATE_PRIVATE, f"cannot snapshot {source} as {target}: {err.strerror}"
        ) from None


def create_subvolume(path: Path) -> None:
    run(["btrfs", "-q", "subvolume", "create", str(path)], error_code=ExitCode.CANT_CREATE_PRIVATE)


def set_readonly(path: Path, readonly: bool) -> None:
    run(["btrfs", "property", "set", "-ts", str(path), "ro", "true" if readonly else "false"])


_SNAP_DESTROY = 0x5000940F  # BTRFS_IOC_SNAP_DESTROY: _IOW(0x94, 15, 4096-byte args)


def delete_subvolume(path: Path) -> None:
    if not is_subvolume(path):
        remove_path(path)
        return
    try:
        _destroy(path)
        return
    except OSError as err:
        if err.errno != errno.ENOTEMPTY:
            raise VzError(ExitCode.CANT_DELETE_PRIVATE, f"cannot delete {path}: {err.strerror}") from None
    # Subvolumes the CT made inside its own tree have to go first. Only then is the tree
    # walked: a snapshot never holds nested subvolumes, so deleting one stays O(1).
    for inner in sorted(_nested_subvolumes(path), key=lambda p: len(p.parts), reverse=True):
        set_readonly(inner, False)
        _destroy(inner)
    _destroy(path)


def _destroy(path: Path) -> None:
    """What `btrfs subvolume delete` does, by the ioctl on the parent directory."""
    name = os.fsencode(path.name)
    args = bytearray(4096)  # fd (unused here), then the name
    args[8 : 8 + len(name)] = name
    dir_ioctl(path.parent, _SNAP_DESTROY, args)


def _nested_subvolumes(path: Path) -> list[Path]:
    found = []
    for top, dirs, _files in os.walk(path):
        for name in dirs:
            candidate = Path(top) / name
            if is_subvolume(candidate):
                found.append(candidate)
    return found


_INO_LOOKUP = 0xD0009412  # BTRFS_IOC_INO_LOOKUP: _IOWR(0x94, 18, 4096-byte args)


def subvolume_id(path: Path) -> int:
    """The subvolume's id (its qgroup is 0/id), from the kernel, without running btrfs."""
    import struct

    args = bytearray(struct.pack("QQ", 0, 256) + bytes(4080))
    dir_ioctl(path, _INO_LOOKUP, args)
    return int(struct.unpack_from("Q", args)[0])


_FS_INFO = 0x8400941F  # BTRFS_IOC_FS_INFO: _IOR(0x94, 31, 1024-byte args); fsid at byte 16


def filesystem_uuid(path: Path) -> str:
    """The btrfs filesystem's UUID, the name of its directory in /sys/fs/btrfs."""
    import uuid

    args = bytearray(1024)
    dir_ioctl(path, _FS_INFO, args)
    return str(uuid.UUID(bytes=bytes(args[16:32])))


def qgroup_dir(path: Path) -> Path | None:
    """/sys/fs/btrfs/FSID/qgroups/0_ID for the subvolume at `path` (None: quotas are off).
    Two ioctls, no mount table: vzlist and the API ask this for every CT."""
    try:
        qgroup = Path("/sys/fs/btrfs") / filesystem_uuid(path) / "qgroups" / f"0_{subvolume_id(path)}"
    except OSError:
        return None
    return qgroup if qgroup.is_dir() else None


_LIMIT_MAX_RFER = 1  # BTRFS_QGROUP_LIMIT_MAX_RFER in a qgroup's limit_flags


# BTRFS_IOC_QGROUP_LIMIT: _IOR(0x94, 43, struct btrfs_ioctl_qgroup_limit_args), 48 bytes: the
# qgroup id (0: the subvolume the fd is in), then struct btrfs_qgroup_limit's flags, max_rfer,
# max_excl, rsv_rfer, rsv_excl. A max of all ones with the flag set clears the limit.
_IOC_QGROUP_LIMIT = 0x8030942B
_CLEAR_LIMIT = 2**64 - 1


def qgroup_limit(path: Path, limit: int | None) -> None:
    """What `btrfs qgroup limit SIZE|none PATH` does on the subvolume's own qgroup, by the
    ioctl (clone and create set one; the tool would cost a process). OSError as the kernel
    says it (ENOTCONN: quotas are off)."""
    import struct

    args = bytearray(
        struct.pack("=QQQQQQ", 0, _LIMIT_MAX_RFER, _CLEAR_LIMIT if limit is None else limit, 0, 0, 0)
    )
    dir_ioctl(path, _IOC_QGROUP_LIMIT, args)


def quota_enable(path: Path) -> None:
    run(["btrfs", "quota", "enable", str(path)], error_code=ExitCode.DISKQUOTA_SET)


def delete_and_reclaim(path: Path) -> None:
    """Delete a subvolume and wait until the kernel's cleaner has freed its blocks, so the
    filesystem's free space is back when this returns (plain delete frees them later)."""
    if not is_subvolume(path):
        remove_path(path)
        return
    ident = subvolume_id(path)
    parent = path.parent
    only_its_root = holds_only_its_root_node(path)
    delete_subvolume(path)
    if only_its_root:
        return  # every other block is shared: the cleaner's work frees no space to wait for
    # The cleaner thread wakes every 30 s (the commit interval); BTRFS_IOC_SYNC commits and
    # pokes it, so the wait below is the cleaning itself, not the timer (30 s -> ~0.2 s).
    dir_ioctl(parent, _IOC_SYNC)
    if not wait_cleaned(parent, ident):
        wait_cleaned_by_progs(parent, ident)


def holds_only_its_root_node(path: Path) -> bool:
    """Whether the subvolume's qgroup says it holds nothing of its own but its root node
    (one nodesize of exclusive bytes: what every snapshot holds, its tree's root being its
    own copy), so deleting it frees no more than that. The cleaner still walks the whole
    tree to drop the shared references (about a second for 20,000 files here), but no block
    of data comes free by it. False whenever the numbers cannot be trusted: quotas off,
    qgroups inconsistent, or anything unreadable."""
    try:
        dir_ioctl(path, _IOC_SYNC)  # qgroup numbers are brought up to date at a commit
        qgroups = qgroup_dir(path)
        if qgroups is None:
            return False
        fs = qgroups.parent.parent
        if read_small(f"{fs}/qgroups/inconsistent").strip() != "0":
            return False
        return int(read_small(f"{qgroups}/exclusive")) == int(read_small(f"{fs}/nodesize"))
    except (OSError, ValueError):
        return False


def wait_cleaned_by_progs(parent: Path, ident: int) -> None:
    """wait_cleaned on a kernel before 6.13: btrfs-progs looks once a second."""
    run(["btrfs", "subvolume", "sync", str(parent), str(ident)], error_code=ExitCode.CANT_DELETE_PRIVATE)


_IOC_SYNC = 0x9408  # BTRFS_IOC_SYNC: _IO(0x94, 8)
# BTRFS_IOC_SUBVOL_SYNC_WAIT (Linux 6.13, include/uapi/linux/btrfs.h): _IOW(0x94, 65, struct
# btrfs_ioctl_subvol_wait { __u64 subvolid; __u32 mode; __u32 count; }), 16 bytes.
_IOC_SUBVOL_SYNC_WAIT = 0x40109441
_SYNC_WAIT_FOR_ONE = 0
_TICK = 0.005  # seconds between the kernel's looks while it waits (its own: one second)


def wait_cleaned(parent: Path, ident: int) -> bool:
    """Wait until the cleaner has dropped the deleted subvolume `ident` (on the filesystem
    of `parent`) and its space is free; False if the kernel has no ioctl for that (< 6.13).

    The kernel's wait looks once and then sleeps a second at a time (interruptibly), while
    a small snapshot is cleaned in a few milliseconds: an interval timer interrupts each
    sleep so that the ioctl is made again, and the second call finds the subvolume gone
    (ENOENT: not there at its first look) the moment it is. Where signals cannot be had
    (not the main thread) the kernel waits on its own, in whole seconds."""
    import fcntl
    import signal
    import struct
    import threading

    args = bytearray(struct.pack("=QII", ident, _SYNC_WAIT_FOR_ONE, 0))
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    ticking = threading.current_thread() is threading.main_thread()
    if ticking:
        previous = signal.signal(signal.SIGALRM, lambda _signum, _frame: None)
        timer = signal.setitimer(signal.ITIMER_REAL, _TICK, _TICK)
    try:
        while True:
            try:
                fcntl.ioctl(fd, _IOC_SUBVOL_SYNC_WAIT, args)
                return True  # waited, and it is gone
            except InterruptedError:
                continue  # a tick: look again
            except OSError as err:
                if err.errno == errno.ENOENT:
                    return True  # gone already
                if err.errno in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
                    return False  # no such ioctl here
                raise VzError(
                    ExitCode.CANT_DELETE_PRIVATE,
                    f"cannot wait for subvolume {ident} under {parent} to be cleaned: {err.strerror}",
                ) from None
    finally:
        if ticking:
            signal.setitimer(signal.ITIMER_REAL, *timer)  # whatever timer ran before (none)
            signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)
        os.close(fd)


GET_SUBVOL_INFO = 0x81F8943C  # _IOR(0x94, 60, struct btrfs_ioctl_get_subvol_info_args)
SUBVOL_INFO_SIZE = 504
_SUBVOL_INFO_CTRANSID = 344  # after treeid, name, ids, generation, flags and three uuids


class BtrfsDriver(BindRootDriver):
    layout = Layout.BTRFS
    has_quota = True
    snapshots_template = True
    copies_data = False

    def create(self, area: Area, tree: Path) -> None:
        if area.partial.exists():
            delete_subvolume(area.partial)
        snapshot(tree, area.partial)
        os.rename(area.partial, area.private)

    def delete_tree(self, path: Path) -> None:
        delete_subvolume(path)

    def snapshot(self, area: Area, target: Path) -> None:
        snapshot(area.private, target, readonly=True)

    def restore(self, area: Area, snapshot_path: Path) -> None:
        if area.partial.exists():
            delete_subvolume(area.partial)
        snapshot(snapshot_path, area.partial)
        exchange(area.partial, area.private)  # a crash leaves the old tree or the new one
        delete_subvolume(area.partial)

    def clone(self, source: Path, source_area: Area, target: Area) -> None:
        # Files stay uid-0 on disk (LXC shifts them at start), so a new id range costs nothing.
        if target.partial.exists():
            delete_subvolume(target.partial)
        snapshot(source, target.partial)
        os.rename(target.partial, target.private)

    def delete_snapshot(self, snapshot_path: Path) -> None:
        delete_and_reclaim(snapshot_path)

    def fingerprint(self, area: Area, quick: bool = False) -> dict[str, str | int]:
        """The subvolume's ctransid (the last transaction that changed a file in it; a
        snapshot of it is no change), committed first so a write a moment ago counts. An
        access time update counts too, so the tree walk is kept as the second opinion."""
        import struct

        dir_ioctl(area.private, _IOC_SYNC)
        args = bytearray(SUBVOL_INFO_SIZE)
        dir_ioctl(area.private, GET_SUBVOL_INFO, args)
        (ctransid,) = struct.unpack_from("=Q", args, _SUBVOL_INFO_CTRANSID)
        found: dict[str, str | int] = {"ctransid": f"{subvolume_id(area.private)}:{ctransid}"}
        return found if quick else {**found, **super().fingerprint(area)}

    def usage(self, area: Area) -> int | None:
        """Bytes the CT's quota counts (its qgroup's referenced bytes), read from sysfs."""
        try:  # no qgroup directory (quotas off) is an OSError too
            qgroup = f"/sys/fs/btrfs/{filesystem_uuid(area.private)}/qgroups/0_{subvolume_id(area.private)}"
            return int(read_small(f"{qgroup}/referenced"))
        except (OSError, ValueError):
            return None

    def set_quota(self, area: Area, quota: DiskQuota | None) -> None:
        # btrfs has one hard limit per qgroup: OpenVZ's limit is enforced, the barrier is not
        # (nor DISKINODES: policy names it as not enforced).
        space = quota.space if quota is not None else None
        limit = "none" if space is None or space.limit >= UNLIMITED else str(space.limit * 1024)
        if space is not None and space.barrier < space.limit:
            log.warning(
                f"DISKSPACE barrier {format_size(space.barrier, 1024)} is not enforced (btrfs has one "
                f"hard limit per subvolume); the limit {format_size(space.limit, 1024)} is"
            )
        try:
            try:
                qgroup_limit(area.private, None if limit == "none" else int(limit))
            except OSError as err:
                if err.errno != errno.ENOTCONN:  # ENOTCONN: quotas are off on this filesystem
                    raise
                quota_enable(area.private)
                qgroup_limit(area.private, None if limit == "none" else int(limit))
        except OSError as err:
            raise VzError(
                ExitCode.DISKQUOTA_SET, f"cannot set disk quota on {area.private}: {err.strerror}"
            ) from None

    def quota_counts(self, area: Area) -> QuotaCounts | None:
        """The qgroup's referenced bytes and its limit on them, read from sysfs after a commit
        (BTRFS_IOC_SYNC), which is when btrfs brings its qgroup numbers up to date."""
        try:
            dir_ioctl(area.private, _IOC_SYNC)
            qgroup = qgroup_dir(area.private)
            if qgroup is None:
                return None
            used = int((qgroup / "referenced").read_text())
            limited = int((qgroup / "limit_flags").read_text()) & _LIMIT_MAX_RFER
            limit = int((qgroup / "max_referenced").read_text()) if limited else None
        except (OSError, ValueError):
            return None
        return QuotaCounts(used, limit)

    def recount_quota(self, area: Area, full: bool = False) -> None:
        # A rescan recounts the whole filesystem (btrfs has no per-subvolume one): it runs only
        # where quotas were just turned on or btrfs marked its numbers inconsistent.
        path = str(area.private)
        qgroup = qgroup_dir(area.private)
        if qgroup is None:
            quota_enable(area.private)  # which starts a rescan of its own
            run(["btrfs", "quota", "rescan", "-W", path], error_code=ExitCode.DISKQUOTA_SET)
        elif full or (qgroup.parent / "inconsistent").read_text().strip() != "0":
            run(["btrfs", "quota", "rescan", "-w", path], error_code=ExitCode.DISKQUOTA_SET)
