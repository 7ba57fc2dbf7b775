"""Host paths bound into a CT: which ones the host refuses to lend, the LXC lines a start
gives the rest, and bind mounts added to or taken from a running CT."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from pyvz.config import CtConfig
from pyvz.errors import ExitCode, VzError
from pyvz.host import Host
from pyvz.log import log
from pyvz.params import BINDMOUNT
from pyvz.runtime.bindmount import BindMount, lxc_lines

if TYPE_CHECKING:
    from pyvz.ct.container import Container

# The host's own trees: lending any of them (or a directory holding one) hands the CT the
# host's configuration, kernel interfaces, devices, boot files, root's home or runtime state.
HOST_TREES = ("/etc", "/proc", "/sys", "/dev", "/boot", "/root", "/run", "/var/lib/vz")


def _inside(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def refused_trees(host: Host) -> list[tuple[str, str]]:
    """(tree, what it is) for every place a bind mount may not reach into or contain."""
    paths = host.paths
    trees = [(tree, f"the host's {tree}") for tree in HOST_TREES]
    if paths.root != paths.root.parent:  # a PYVZ_ROOT other than /: all of it is pyvz's
        trees.append((str(paths.root), "the pyvz root"))
    trees += [
        (str(paths.etc_vz), "pyvz's configuration"),
        (str(paths.lib_vz), "pyvz's data (CTs, templates, dumps)"),
        (str(paths.template_cache), "the template cache"),
        (str(host.lock_dir), "the lock directory"),
    ]
    from pyvz.ct.container import Container

    for ctid in host.ctids():
        try:
            area = Container(host, ctid).area()
        except VzError:
            continue  # a config too broken to name its area cannot be checked against
        trees += [(str(area.private), f"CT {ctid}'s private area"), (str(area.root), f"CT {ctid}'s root")]
    resolved = [(os.path.realpath(tree), what) for tree, what in trees]
    return trees + [r for r in resolved if r not in trees]


def check_sources(host: Host, mounts: Iterable[BindMount], force: bool) -> None:
    """Step two of validation for --bindmount_add: each SRC must exist, and (unless
    --force) must neither be nor hold a place the host keeps to itself, after symlinks."""
    trees: list[tuple[str, str]] | None = None
    for mount in mounts:
        given = f"Bad parameter for --bindmount_add: {mount.text()}"
        real = os.path.realpath(mount.src)
        if not (os.path.isdir(real) or os.path.isfile(real)):
            raise VzError(
                ExitCode.INVALID_PARAMETER_VALUE, f"{given}: {mount.src} is not an existing directory or file"
            )
        if force:
            continue
        if trees is None:
            trees = refused_trees(host)
        shown = mount.src if real == mount.src else f"{mount.src} (= {real})"
        if real == "/":
            raise VzError(
                ExitCode.INVALID_PARAMETER_VALUE, f"{given}: {shown} is the host's / (--force allows it)"
            )
        # The nearest place it is in is the one named; else a place it holds.
        within = sorted((t for t in trees if _inside(real, t[0])), key=lambda t: -len(t[0]))
        holds = [t for t in trees if _inside(t[0], real)]
        for tree, what in within[:1] or holds[:1]:
            where = "is" if real == tree else "is inside" if within else "holds"
            raise VzError(
                ExitCode.INVALID_PARAMETER_VALUE, f"{given}: {shown} {where} {what} (--force allows it)"
            )


def _is_dir(mount: BindMount) -> bool:
    real = os.path.realpath(mount.src)
    if os.path.isdir(real):
        return True
    if os.path.isfile(real):
        return False
    raise VzError(ExitCode.CANT_MOUNT, f"bind mount source {mount.src} (for {mount.dst}) does not exist")


def _staging(ct: Container) -> Path:
    return ct.host.runtime.ct_dir(ct.ctid) / "binds"


def start_lines(ct: Container, cfg: CtConfig) -> list[str]:
    """The CT's bind mounts as LXC lines; a source gone from the host stops the start.

    LXC 5.0 takes `idmap=container` on a mount entry, but opens the source from inside the
    CT's user namespace, so a source below a directory the CT's host uids cannot search
    (0700, as /root or a private tmp dir) fails with EACCES. So pyvz makes each mount here,
    as host root: cloned, idmapped to the CT's range and given its options, on a staging
    point in the CT's runtime directory that LXC binds in; `release` detaches the staging
    points once LXC has started (the CT keeps its copies)."""
    mounts: tuple[BindMount, ...] = cfg.get(BINDMOUNT) or ()
    release(ct)
    if not mounts:
        return []
    from pyvz.storage.idmount import idmapped_bind

    idmap = ct.area(cfg).idmap
    staging = _staging(ct)
    staging.mkdir(parents=True, exist_ok=True)
    staged = []
    kinds = {}
    try:
        for index, mount in enumerate(mounts):
            directory = _is_dir(mount)
            point = staging / str(index)
            if directory:
                point.mkdir()
            else:
                point.touch()
            idmapped_bind(
                Path(os.path.realpath(mount.src)),
                point,
                None if idmap.privileged else idmap,
                attrs=_attrs(mount),
            )
            staged.append(mount._replace(src=str(point)))
            kinds[str(point)] = directory
    except BaseException:
        release(ct)
        raise
    return lxc_lines(tuple(staged), kinds, idmapped=False)


def release(ct: Container) -> None:
    """Detach the staging points (after a start, or what a crashed one left)."""
    staging = _staging(ct)
    if not staging.is_dir():
        return
    for point in staging.iterdir():
        # (ismount cannot tell: a bind from the same filesystem keeps its st_dev)
        for _attempt in range(8):
            if _umount(point) != 0:
                break  # EINVAL: nothing (more) mounted there
        if point.is_dir() and not point.is_symlink():
            point.rmdir()
        else:
            point.unlink()
    staging.rmdir()


def _umount(point: Path) -> int:
    import ctypes

    return int(ctypes.CDLL(None, use_errno=True).umount2(os.fsencode(point), 2))  # MNT_DETACH


def _attrs(mount: BindMount) -> int:
    from pyvz.storage import idmount

    bits = {
        "ro": idmount.MOUNT_ATTR_RDONLY,
        "nosuid": idmount.MOUNT_ATTR_NOSUID,
        "nodev": idmount.MOUNT_ATTR_NODEV,
        "noexec": idmount.MOUNT_ATTR_NOEXEC,
    }
    return sum(bits[flag] for flag in mount.flags)


def apply_live(ct: Container, old: tuple[BindMount, ...], new: tuple[BindMount, ...]) -> None:
    """The running CT's mounts follow the new list: a removed or changed one is detached
    inside the CT, then a new or changed one is cloned, idmapped and moved in."""
    from pyvz.storage.idmount import bind_into_ct, unmount_in_ct

    gone = [m for m in old if m not in new]
    come = [m for m in new if m not in old]
    pid = ct.init_pid()
    if gone:
        unmount_in_ct(pid, [m.dst for m in gone], unlink=False)
        log.info(f"Unmounted from the running CT: {' '.join(m.dst for m in gone)}")
    if come:
        idmap = ct.area().idmap
        binds = [(os.path.realpath(m.src), m.dst, _is_dir(m)) for m in come]
        bind_into_ct(
            pid,
            binds,
            replace=False,
            idmap=None if idmap.privileged else idmap,
            attrs=[_attrs(m) for m in come],
        )
        log.info(f"Mounted in the running CT: {' '.join(m.text() for m in come)}")
