"""Project quota on ext4 and xfs: the disk quota of a CT whose private area is a plain
directory (simfs). The kernel counts every inode by its project id; a directory with the
inherit flag passes its id to whatever is made in it, so one id on a tree, set once, holds
for every file the CT makes later.

Everything is done by syscalls, as the btrfs driver does its ioctls: FS_IOC_FSSETXATTR
(fsx_projid + FS_XFLAG_PROJINHERIT) tags a file, quotactl_fd(2) sets and reads the limits.
chattr -p and setquota would do the same through a process per call, and chattr cannot tell
an already tagged tree from one that needs the walk.

The kernel takes a project id only through an open file: symlinks, device nodes, fifos and
sockets that were in a tree before it was tagged keep project 0 (they hold no blocks; they
are not counted as the CT's inodes). Those made later inherit the id like every other file.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import stat
import struct
from pathlib import Path
from typing import NamedTuple

from pyvz.errors import ExitCode, VzError
from pyvz.storage.mounts import mount_of

# <linux/fs.h>: struct fsxattr, 28 bytes (xflags, extsize, nextents, projid, cowextsize, pad).
_FSGETXATTR = 0x801C581F  # _IOR('X', 31, struct fsxattr)
_FSSETXATTR = 0x401C5820  # _IOW('X', 32, struct fsxattr)
_FSXATTR = struct.Struct("=5I8x")
PROJINHERIT = 0x200  # FS_XFLAG_PROJINHERIT

# <linux/quota.h> and <linux/dqblk_xfs.h>
_PRJQUOTA = 2
_Q_GETINFO, _Q_GETQUOTA, _Q_SETQUOTA = 0x800005, 0x800007, 0x800008
_DQINFO_SIZE = 24  # struct if_dqinfo
_Q_XGETQSTATV = 0x5808  # XQM_CMD(8)
_DQBLK = struct.Struct("=8QI4x")  # struct if_dqblk: limits in 1K blocks, space in bytes
_QIF_BLIMITS, _QIF_ILIMITS = 1, 4
_STATV_SIZE = 160  # struct fs_quota_statv
_PDQ_ENFD = 1 << 5  # FS_QUOTA_PDQ_ENFD
_QUOTACTL_FD = 443  # the same number on every architecture (a syscall of 5.14's)

FILESYSTEMS = ("ext4", "xfs")
_ID_MAX = (1 << 32) - 2  # 4294967295 is "no id" to the kernel


class Counts(NamedTuple):
    """One project's usage and limits as the kernel keeps them (0: no limit)."""

    space: int  # bytes
    inodes: int
    block_soft: int  # 1K blocks
    block_hard: int
    inode_soft: int
    inode_hard: int


def _quotactl(path: Path, cmd: int, ident: int, buffer: ctypes.Array[ctypes.c_char]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        result = libc.syscall(
            ctypes.c_long(_QUOTACTL_FD),
            ctypes.c_int(fd),
            ctypes.c_uint((cmd << 8) | _PRJQUOTA),
            ctypes.c_uint(ident),
            buffer,
        )
    finally:
        os.close(fd)
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def state(path: Path) -> tuple[bool, bool]:
    """(counted, enforced): what project quota does on the filesystem holding `path`.
    Q_GETINFO answers ESRCH where project quota is off; Q_XGETQSTATV tells counting from
    enforcing (ext4 with the quota feature counts always and enforces with prjquota; xfs
    counts only with pqnoenforce) where the filesystem answers it."""
    info = ctypes.create_string_buffer(_DQINFO_SIZE)
    try:
        _quotactl(path, _Q_GETINFO, 0, info)
    except OSError as err:
        if err.errno == errno.ESRCH:
            return False, False
        raise
    statv = ctypes.create_string_buffer(_STATV_SIZE)
    statv[0] = b"\x01"  # FS_QSTATV_VERSION1
    try:
        _quotactl(path, _Q_XGETQSTATV, 0, statv)
    except OSError as err:
        if err.errno in (errno.ENOSYS, errno.EINVAL):
            return True, True  # no finer answer: quota on is quota enforced
        raise
    (flags,) = struct.unpack_from("=H", statv.raw, 2)
    return True, bool(flags & _PDQ_ENFD)


def why_not(path: Path) -> str | None:
    """Why the directory `path` (or, not made yet, its nearest existing parent) can have no
    project quota; None: it can. One phrase naming the filesystem, said to the admin as is."""
    probe = Path(os.path.realpath(path))
    while not probe.is_dir():
        probe = probe.parent
    mount = mount_of(probe)
    fstype, where = (mount.fstype, mount.target) if mount else ("an unknown filesystem", str(probe))
    if fstype not in FILESYSTEMS:
        return f"{fstype} at {where} has no project quota (a simfs CT's disk quota needs ext4 or xfs)"
    option = "prjquota, on a filesystem made with -O quota,project" if fstype == "ext4" else "prjquota"
    try:
        counted, enforced = state(probe)
    except OSError as err:
        return f"the kernel gives no project quota for {fstype} at {where} ({err.strerror})"
    if not counted:
        return f"{fstype} at {where} is mounted without project quota (mount it with {option})"
    if not enforced:
        return f"{fstype} at {where} counts project quota but does not enforce it (mount it with {option})"
    return None


# ---- project ids on files ------------------------------------------------------------------


def _xattr(fd: int) -> tuple[int, ...]:
    import fcntl

    buffer = bytearray(_FSXATTR.size)
    fcntl.ioctl(fd, _FSGETXATTR, buffer)
    return _FSXATTR.unpack(bytes(buffer))


def project_of(path: Path) -> tuple[int, bool]:
    """(project id, inherit flag) of the file or directory `path`."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        xflags, _extsize, _nextents, projid, _cow = _xattr(fd)
    finally:
        os.close(fd)
    return projid, bool(xflags & PROJINHERIT)


def _tag(fd: int, projid: int, directory: bool) -> None:
    import fcntl

    xflags, extsize, nextents, old, cow = _xattr(fd)
    wanted = xflags | PROJINHERIT if directory else xflags
    if old == projid and wanted == xflags:
        return
    fcntl.ioctl(fd, _FSSETXATTR, _FSXATTR.pack(wanted, extsize, nextents, projid, cow))


def tag_tree(top: Path, projid: int) -> None:
    """Give every directory and regular file under `top` (on its filesystem) project `projid`,
    directories with the inherit flag. Parents before their children, so a file made meanwhile
    inherits the id; `top` itself last, so a tagged top means a tagged tree (a walk cut short
    is done again)."""
    device = os.lstat(top).st_dev
    pending = [os.fspath(top)]
    while pending:
        directory = pending.pop()
        try:
            if directory != os.fspath(top):
                _tag_one(directory, projid, True)
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue  # removed while walking
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if st.st_dev != device:
                continue
            if stat.S_ISDIR(st.st_mode):
                pending.append(entry.path)
            elif stat.S_ISREG(st.st_mode):
                try:
                    _tag_one(entry.path, projid, False)
                except FileNotFoundError:
                    continue
    _tag_one(os.fspath(top), projid, True)


def _tag_one(path: str, projid: int, directory: bool) -> None:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | (os.O_DIRECTORY if directory else 0)
    fd = os.open(path, flags)
    try:
        _tag(fd, projid, directory)
    except OSError as err:
        raise VzError(
            ExitCode.DISKQUOTA_SET, f"cannot set project {projid} on {path}: {err.strerror}"
        ) from None
    finally:
        os.close(fd)


# ---- limits and usage ----------------------------------------------------------------------


def counts(path: Path, projid: int) -> Counts:
    """What the kernel counts for project `projid` on the filesystem holding `path`."""
    buffer = ctypes.create_string_buffer(_DQBLK.size)
    try:
        _quotactl(path, _Q_GETQUOTA, projid, buffer)
    except FileNotFoundError:
        return Counts(0, 0, 0, 0, 0, 0)  # xfs: no file and no limit ever counted for the id
    bhard, bsoft, space, ihard, isoft, inodes, _btime, _itime, _valid = _DQBLK.unpack(buffer.raw)
    return Counts(space, inodes, bsoft, bhard, isoft, ihard)


def set_limits(path: Path, projid: int, blocks: tuple[int, int], inodes: tuple[int, int]) -> None:
    """Limits of project `projid`: (soft, hard) 1K blocks and (soft, hard) inodes; 0: none."""
    packed = _DQBLK.pack(blocks[1], blocks[0], 0, inodes[1], inodes[0], 0, 0, 0, _QIF_BLIMITS | _QIF_ILIMITS)
    buffer = ctypes.create_string_buffer(packed, _DQBLK.size)
    try:
        _quotactl(path, _Q_SETQUOTA, projid, buffer)
    except OSError as err:
        raise VzError(
            ExitCode.DISKQUOTA_SET, f"cannot set the limits of project {projid} at {path}: {err.strerror}"
        ) from None


# ---- which id a CT gets --------------------------------------------------------------------

_CTID_NAME = re.compile(r"^\.?(\d+)(\.[a-z]+)?$")  # 101, or .101.partial while it is built


def candidate_ids(private: Path) -> list[int]:
    """The project ids a private area may get, first choice first: its CTID (vzquota's quota
    id, so `repquota -P` names the CT), then ids derived from its path, for a second pyvz
    root on the same filesystem whose CT has the same CTID. Never 0 (the default project)."""
    import zlib

    found = _CTID_NAME.match(private.name)
    first = [int(found.group(1))] if found and 0 < int(found.group(1)) <= _ID_MAX else []
    seed = os.fsencode(os.path.realpath(private.parent) + "/" + (found.group(1) if found else private.name))
    derived = []
    for salt in range(8):
        value = zlib.crc32(seed + bytes([salt])) | (1 << 31)  # above every CTID vzctl allows
        derived.append(min(value, _ID_MAX))
    return first + derived


def in_use(path: Path, projid: int) -> bool:
    """Whether some other tree's files are counted under `projid`."""
    return counts(path, projid).inodes > 0


def settle_id(private: Path) -> int:
    """The CT's project id: the one its top directory holds (set by an earlier tag), else the
    first candidate no other tree on the filesystem uses."""
    current, inherit = project_of(private)
    if current and inherit:
        return current
    for ident in candidate_ids(private):
        if not in_use(private, ident):
            return ident
    raise VzError(ExitCode.DISKQUOTA_SET, f"no free project id for {private} on its filesystem")
