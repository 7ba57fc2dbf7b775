"""An OpenVZ ploop CT's files, mounted read-only: `with ploop.mounted(private) as tree: ...`.

The top snapshot's view of the disk is put together without copying it and without writing
to any image:

- device-mapper (preferred): every image on a read-only loop device, and a dm table that
  maps each cluster of the filesystem's partition to the image holding it, zeros elsewhere;
- FUSE (where the kernel has no device-mapper): the same mapping served by pyvz as one
  read-only file, with a read-only loop device over the partition's bytes in it.

The filesystem is then mounted read-only without journal replay (ext4 `noload`, xfs
`norecovery`), so even the mount writes nothing. Everything is taken down when the block
ends, however it ends, and by a guard process if this one is killed.
"""

from __future__ import annotations

import os
import secrets
import shlex
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from enum import StrEnum
from pathlib import Path

from pyvz.errors import ExitCode, VzError
from pyvz.run import if_we_die, run
from pyvz.storage import fusefile
from pyvz.storage.mounts import is_mountpoint
from pyvz.storage.partition import Filesystem, find_filesystem
from pyvz.storage.ploopdisk import Disk, open_private
from pyvz.storage.ploopfmt import SECTOR

MOUNT_OPTIONS = {"ext4": "ro,noload,nosuid,nodev,noexec", "xfs": "ro,norecovery,nosuid,nodev,noexec"}


class View(StrEnum):
    """How the disk is presented as a block device."""

    AUTO = "auto"
    DM = "dm"
    FUSE = "fuse"


Undo = list[list[str]]  # commands that take down what is up, for the guard of a killed process


def dm_available() -> bool:
    try:
        return run(["dmsetup", "version"], check=False, timeout=10).returncode == 0
    except VzError:  # dmsetup is not installed
        return False


def _loops_of(path: Path) -> set[str]:
    listing = run(["losetup", "--associated", str(path)], check=False).stdout
    return {line.split(":", 1)[0] for line in listing.splitlines() if line.startswith("/dev/")}


def _detach(device: str) -> None:
    run(["losetup", "--detach", device], check=False)
    # A device someone still has open (udev's probe) is detached when they close it.
    backing = Path("/sys/block") / Path(device).name / "loop/backing_file"
    deadline = time.monotonic() + 10
    while backing.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


@contextmanager
def loop_device(path: Path, undo: Undo, offset: int = 0, size: int | None = None) -> Iterator[str]:
    """A read-only loop device over `path` (from `offset`, `size` bytes) while the block runs."""
    argv = ["losetup", "--read-only", "--find", "--show", "--offset", str(offset)]
    if size is not None:
        argv += ["--sizelimit", str(size)]
    before = _loops_of(path)
    try:
        device = run([*argv, str(path)], error_code=ExitCode.MOUNT_IMAGE).stdout.strip()
    except BaseException:
        for made in _loops_of(path) - before:  # interrupted after the kernel made it
            _detach(made)
        raise
    undo.append(["losetup", "--detach", device])
    try:
        yield device
    finally:
        _detach(device)


def dm_table(disk: Disk, fs: Filesystem, devices: dict[int, str]) -> Iterator[str]:
    """The dm table of the filesystem's partition: one line per run of the virtual disk
    (sectors from the partition's start), `linear` to the loop device of the image that
    holds it or `zero` where no image does."""
    for extent in disk.extents(fs.offset, fs.offset + fs.size):
        start, length = (extent.start - fs.offset) // SECTOR, extent.length // SECTOR
        if extent.delta is None:
            yield f"{start} {length} zero"
        else:
            yield f"{start} {length} linear {devices[extent.delta]} {extent.offset // SECTOR}"


def _dm_remove(name: str) -> None:
    for _attempt in range(50):
        if run(["dmsetup", "remove", name], check=False).returncode == 0:
            return
        if run(["dmsetup", "info", name], check=False).returncode != 0:
            return  # not there (any more)
        time.sleep(0.1)
    raise VzError(ExitCode.UMOUNT_IMAGE, f"cannot remove device-mapper device {name}: it is busy")


@contextmanager
def _dm_view(disk: Disk, fs: Filesystem, work: Path, undo: Undo) -> Iterator[str]:
    used = sorted({e.delta for e in disk.extents(fs.offset, fs.offset + fs.size) if e.delta is not None})
    with ExitStack() as stack:
        devices = {index: stack.enter_context(loop_device(disk.deltas[index].path, undo)) for index in used}
        table = work / "table"
        with open(table, "w") as handle:
            for line in dm_table(disk, fs, devices):
                handle.write(line + "\n")
        name = f"pyvz-ploop-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            run(["dmsetup", "create", "--readonly", name, str(table)], error_code=ExitCode.MOUNT_IMAGE)
        except BaseException:
            run(["dmsetup", "remove", name], check=False)
            raise
        finally:
            table.unlink()
        undo.append(["dmsetup", "remove", name])
        stack.callback(_dm_remove, name)
        yield f"/dev/mapper/{name}"


@contextmanager
def _fuse_view(disk: Disk, fs: Filesystem, work: Path, undo: Undo) -> Iterator[str]:
    directory = work / "disk"
    directory.mkdir()
    undo.append(["rmdir", str(directory)])
    with ExitStack() as stack:
        stack.callback(directory.rmdir)
        file = stack.enter_context(fusefile.served(directory, disk.size, disk.read))
        undo.append(["umount", "-l", str(directory)])
        yield stack.enter_context(loop_device(file, undo, fs.offset, fs.size))


_VIEWS: dict[View, Callable[[Disk, Filesystem, Path, Undo], AbstractContextManager[str]]] = {
    View.DM: _dm_view,
    View.FUSE: _fuse_view,
}


def _mount(fs: Filesystem, device: str, target: Path) -> None:
    argv = ["mount", "-t", fs.fstype, "-o", MOUNT_OPTIONS[fs.fstype], device, str(target)]
    try:
        run(argv, error_code=ExitCode.MOUNT_IMAGE)
    except BaseException:
        if is_mountpoint(target):  # interrupted after the mount was made
            _umount(target)
        raise


def _umount(target: Path) -> None:
    deadline = time.monotonic() + 5
    while is_mountpoint(target):
        done = run(["umount", str(target)], check=False)
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            # Something still uses it (a shell's cwd): detach it from the tree so nothing new
            # can reach it; the kernel lets go of the devices when the last user does.
            run(["umount", "--lazy", str(target)], check=False)
            raise VzError(ExitCode.UMOUNT_IMAGE, f"cannot unmount {target}: {done.stderr.strip()}")
        time.sleep(0.1)


def _choose(view: View) -> View:
    if view is not View.AUTO:
        return view
    return View.DM if dm_available() else View.FUSE


@contextmanager
def mounted(
    private: Path, *, target: Path | None = None, view: View = View.AUTO, allow_dirty: bool = False
) -> Iterator[Path]:
    """Mount the filesystem of the ploop CT whose private area is `private` read-only, and
    yield where it is (`target`, an empty directory, or a fresh one that goes afterwards).

    `allow_dirty` reads an image that was not closed cleanly, or a filesystem whose journal
    was not replayed, as it is (the CT's last writes may be missing). Raises VzError:
    NO_PRIVATE (no ploop disk there), MOUNT_IMAGE (damaged, or the mount failed),
    PLOOP_UNSUP (a feature pyvz does not read), UMOUNT_IMAGE (something held the mount)."""
    undo: Undo = []
    with ExitStack() as stack:
        disk = stack.enter_context(open_private(private, allow_dirty=allow_dirty))
        fs = find_filesystem(disk.read, disk.size, private)
        if fs.dirty and not allow_dirty:
            raise VzError(
                ExitCode.MOUNT_IMAGE,
                f"the filesystem of {private} was not unmounted cleanly (its journal needs recovery): "
                "stop the CT cleanly on its OpenVZ host, or run e2fsck there, first",
            )
        work = Path(tempfile.mkdtemp(prefix="pyvz-ploop-"))
        stack.callback(work.rmdir)
        undo.append(["rmdir", str(work)])
        device = stack.enter_context(_VIEWS[_choose(view)](disk, fs, work, undo))
        if target is None:
            target = work / "root"
            target.mkdir()
            stack.callback(target.rmdir)
            undo.append(["rmdir", str(target)])
        _mount(fs, device, target)
        stack.callback(_umount, target)
        undo.append(["umount", "--lazy", str(target)])
        # kill -9 runs no finally: a guard process undoes it all then, in reverse order.
        stack.enter_context(if_we_die(["sh", "-c", "; ".join(shlex.join(c) for c in reversed(undo))]))
        yield target
