"""Idmapped mounts (mount_setattr(MOUNT_ATTR_IDMAP)).

util-linux 2.38 (Debian 12) cannot make idmapped mounts yet, so this talks to the kernel's
new mount API directly. An idmapped mount shows files owned by on-disk uid 0 as owned by the
CT's host uid range, so templates and snapshots can stay uid-0 on disk and every CT still
gets its own range with no chown.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from pyvz.errors import ExitCode, VzError
from pyvz.storage.idmap import IdMap

_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_OPEN_TREE_CLONE = 1
_OPEN_TREE_CLOEXEC = os.O_CLOEXEC
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_MOUNT_ATTR_RDONLY = 0x1
_MOUNT_ATTR_IDMAP = 0x00100000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_CLONE_NEWUSER = 0x10000000


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise VzError(ExitCode.CANT_MOUNT, f"{what}: {os.strerror(err)}")
    return result


def _userns_fd(idmap: IdMap, inverse: bool = False) -> int:
    """An fd for a user namespace with the CT's mapping (or its inverse: the CT's host range
    back onto 0), made by a short-lived child."""
    libc = _libc()
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: enter a new user namespace, report, wait to be released
        try:
            os.close(ready_r)
            os.close(done_w)
            ok = libc.unshare(_CLONE_NEWUSER) == 0
            os.write(ready_w, b"1" if ok else b"0")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise VzError(ExitCode.CANT_MOUNT, "cannot create a user namespace for an idmapped mount")
        with open(f"/proc/{pid}/uid_map", "w") as handle:
            handle.write(f"{idmap.uid} 0 {idmap.size}\n" if inverse else f"0 {idmap.uid} {idmap.size}\n")
        with open(f"/proc/{pid}/setgroups", "w") as handle:
            handle.write("deny\n")
        with open(f"/proc/{pid}/gid_map", "w") as handle:
            handle.write(f"{idmap.gid} 0 {idmap.size}\n" if inverse else f"0 {idmap.gid} {idmap.size}\n")
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(done_w)
        os.waitpid(pid, 0)


def idmapped_bind(
    source: Path, target: Path, idmap: IdMap, inverse: bool = False, readonly: bool = False
) -> None:
    """Bind-mount `source` on `target`, shifting on-disk ids by the CT's range; `inverse`
    shifts files stored with the CT's host ids back to what the CT sees."""

    class MountAttr(ctypes.Structure):
        _fields_ = [
            ("attr_set", ctypes.c_uint64),
            ("attr_clr", ctypes.c_uint64),
            ("propagation", ctypes.c_uint64),
            ("userns_fd", ctypes.c_uint64),
        ]

    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    nsfd = _userns_fd(idmap, inverse)
    try:
        tree = _check(
            libc.syscall(
                _SYS_OPEN_TREE, _AT_FDCWD, os.fsencode(source), _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC
            ),
            f"open_tree({source})",
        )
        try:
            attr = MountAttr(_MOUNT_ATTR_IDMAP | (_MOUNT_ATTR_RDONLY if readonly else 0), 0, 0, nsfd)
            _check(
                libc.syscall(
                    _SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr)
                ),
                f"idmapping {source} (needs a kernel and filesystem with idmapped mounts)",
            )
            _check(
                libc.syscall(
                    _SYS_MOVE_MOUNT, tree, b"", _AT_FDCWD, os.fsencode(target), _MOVE_MOUNT_F_EMPTY_PATH
                ),
                f"move_mount({target})",
            )
        finally:
            os.close(tree)
    finally:
        os.close(nsfd)
