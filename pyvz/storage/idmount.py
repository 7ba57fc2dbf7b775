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
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR_RDONLY = _MOUNT_ATTR_RDONLY
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
    source: Path,
    target: Path,
    idmap: IdMap | None,
    inverse: bool = False,
    readonly: bool = False,
    attrs: int = 0,
) -> None:
    """Bind-mount `source` on `target`, shifting on-disk ids by the CT's range (no shift
    with no `idmap`); `inverse` shifts files stored with the CT's host ids back to what the
    CT sees. `attrs` are more MOUNT_ATTR_* flags (nosuid, ...)."""
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    nsfd = _userns_fd(idmap, inverse) if idmap is not None else None
    try:
        tree = _check(
            libc.syscall(
                _SYS_OPEN_TREE, _AT_FDCWD, os.fsencode(source), _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC
            ),
            f"open_tree({source})",
        )
        try:
            flags = attrs | (_MOUNT_ATTR_RDONLY if readonly else 0)
            if nsfd is not None or flags:
                _set_attrs(libc, tree, flags, nsfd, str(source))
            _check(
                libc.syscall(
                    _SYS_MOVE_MOUNT, tree, b"", _AT_FDCWD, os.fsencode(target), _MOVE_MOUNT_F_EMPTY_PATH
                ),
                f"move_mount({target})",
            )
        finally:
            os.close(tree)
    finally:
        if nsfd is not None:
            os.close(nsfd)


_MNT_DETACH = 2
_CLONE_NEWNS = 0x00020000


def bind_into_ct(
    init_pid: int,
    binds: list[tuple[str, str, bool]],
    replace: bool = True,
    idmap: IdMap | None = None,
    attrs: list[int] | None = None,
) -> None:
    """Bind host paths into a running CT: (host source, absolute target in the CT, whether
    it is a directory). The mounts are cloned here (open_tree), in the host's tree, and a
    child that has entered the CT's mount namespace puts them in place, making the target
    first if needed and, with `replace`, detaching what was mounted there. With `idmap`,
    each is idmapped to the CT's range first; `attrs` are MOUNT_ATTR_* flags per bind."""
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    trees: list[tuple[int, str, bool]] = []
    nsfd = _userns_fd(idmap) if idmap is not None else None
    try:
        for index, (source, target, directory) in enumerate(binds):
            tree = _check(
                libc.syscall(
                    _SYS_OPEN_TREE, _AT_FDCWD, os.fsencode(source), _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC
                ),
                f"open_tree({source})",
            )
            trees.append((tree, target, directory))
            flags = attrs[index] if attrs else 0
            if nsfd is not None or flags:
                _set_attrs(libc, tree, flags, nsfd, source)
        owner = _ct_root(init_pid)
        namespace = os.open(f"/proc/{init_pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # child: in the CT's mount namespace
            code = 1
            try:
                if libc.setns(namespace, _CLONE_NEWNS) == 0:
                    # What it makes must belong to the CT's root: the CT's own filesystems
                    # (its /dev is a tmpfs of its user namespace) cannot hold host uid 0.
                    libc.setfsgid(owner[1])
                    libc.setfsuid(owner[0])
                    code = 0
                    for tree, target, directory in trees:
                        code |= _place(libc, tree, target, directory, replace)
            finally:
                os._exit(code)
        os.close(namespace)
        _pid, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            names = ", ".join(target for _tree, target, _d in trees)
            raise VzError(ExitCode.CANT_MOUNT, f"cannot bind {names} into the running CT (pid {init_pid})")
    finally:
        for tree, _target, _directory in trees:
            os.close(tree)
        if nsfd is not None:
            os.close(nsfd)


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _set_attrs(libc: ctypes.CDLL, tree: int, flags: int, nsfd: int | None, source: str) -> None:
    attr = _MountAttr(flags | (_MOUNT_ATTR_IDMAP if nsfd is not None else 0), 0, 0, nsfd or 0)
    _check(
        libc.syscall(_SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr)),
        f"idmapping {source} (needs a kernel and filesystem with idmapped mounts)"
        if nsfd is not None
        else f"mount options of {source}",
    )


def _ct_root(init_pid: int) -> tuple[int, int]:
    """The host uid and gid the running CT's root is (0, 0 for a privileged CT)."""
    found = []
    for name in ("uid_map", "gid_map"):
        first = Path(f"/proc/{init_pid}/{name}").read_text().split()
        found.append(int(first[1]) if len(first) >= 3 and first[0] == "0" else 0)
    return found[0], found[1]


def _place(libc: ctypes.CDLL, tree: int, target: str, directory: bool, replace: bool) -> int:
    try:
        if directory:
            os.makedirs(target, exist_ok=True)
        elif not os.path.lexists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
    except OSError:
        pass  # an LXCFS file that is stale cannot be stat'ed, but can be mounted over
    if replace:
        libc.umount2(os.fsencode(target), _MNT_DETACH)  # may hold nothing: that is fine
    moved = libc.syscall(_SYS_MOVE_MOUNT, tree, b"", _AT_FDCWD, os.fsencode(target), _MOVE_MOUNT_F_EMPTY_PATH)
    return 0 if moved >= 0 else 2


def unmount_in_ct(init_pid: int, targets: list[str], unlink: bool = True) -> None:
    """Detach mounts from a running CT's tree (a device taken away with `none`); with
    `unlink`, the node under it goes too."""
    libc = _libc()
    namespace = os.open(f"/proc/{init_pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if libc.setns(namespace, _CLONE_NEWNS) == 0:
                code = 0
                for target in targets:
                    libc.umount2(os.fsencode(target), _MNT_DETACH)
                    if not unlink:
                        continue
                    try:
                        os.unlink(target)
                    except OSError:
                        pass
        finally:
            os._exit(code)
    os.close(namespace)
    os.waitpid(pid, 0)
