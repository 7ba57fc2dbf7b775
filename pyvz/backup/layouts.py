"""What backups do differently per layout, behind one small class and a registry.

btrfs: a restored tree is stored as the CT sees it (LXC shifts ids at start), so it is
unpacked straight into a new subvolume; every backup's read-only snapshot is kept as the
base the next incremental is sent against.

dir: the restored tree becomes the overlay's upper layer over an empty lower directory (not
the template: files the CT had deleted from the template would show through again). It is
stored with the CT's host ids, so it is written through an inverse idmapped mount: what
tar chowns to CT uid N lands on disk as the CT's host uid + N. Incremental backups are not
offered (no send streams; see docs/backup.md).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from pyvz.errors import ExitCode
from pyvz.params import Layout
from pyvz.storage.base import Area, StorageDriver, remove_path
from pyvz.storage.btrfs import create_subvolume, delete_subvolume, is_subvolume, snapshot
from pyvz.storage.copying import copy_into
from pyvz.storage.idmount import idmapped_bind
from pyvz.storage.mounts import umount
from pyvz.storage.trees import TREES_DIR

Fill = Callable[[Path], None]  # writes the CT's tree, owners as the CT sees them, into a directory


def copy_of(tree: Path) -> Fill:
    def fill(target: Path) -> None:
        copy_into(tree, target, error_code=ExitCode.RESTORE_ERROR)

    return fill


def clear(path: Path) -> None:
    """Remove a leftover partial area, whatever it is."""
    if is_subvolume(path):
        delete_subvolume(path)
    elif path.exists() or path.is_symlink():
        remove_path(path)


class LayoutBackup(ABC):
    keeps_base: ClassVar[bool]  # keeps each backup's snapshot for incrementals

    def unique_inodes(self, area: Area) -> bool:
        """Whether (st_dev, st_ino) tells files apart in the snapshot mount. An overlay whose
        layers are different btrfs subvolumes of one filesystem passes their inode numbers
        through, and those collide: tar would store unrelated files as hard links to each other."""
        return True

    # Whether the private area holds the files as the CT sees them, so a stopped, unmounted CT
    # can be archived in place: its pages are in the cache, a fresh snapshot's are not.
    in_place: ClassVar[bool]

    @abstractmethod
    def build(self, area: Area, fill: Fill) -> None:
        """Make a complete private area at area.partial (not renamed) with fill's tree."""

    def adopt(self, area: Area, tree: Path) -> None:
        """Make area.partial from a tree on the same pool (a received subvolume)."""
        self.build(area, copy_of(tree))

    def drop(self, driver: StorageDriver, snapshot: Path) -> None:
        """Delete a backup snapshot; its space may come back later (no one waits for it)."""
        driver.delete_snapshot(snapshot)


class BtrfsBackup(LayoutBackup):
    keeps_base = True
    in_place = True

    def build(self, area: Area, fill: Fill) -> None:
        clear(area.partial)
        create_subvolume(area.partial)
        fill(area.partial)

    def adopt(self, area: Area, tree: Path) -> None:
        clear(area.partial)
        snapshot(tree, area.partial)  # writable, O(1)

    def drop(self, driver: StorageDriver, snapshot: Path) -> None:
        # The driver's delete waits for the cleaner to free the blocks (up to a commit
        # interval, 30 s); a backup need not wait for that.
        delete_subvolume(snapshot)


class DirBackup(LayoutBackup):
    keeps_base = False
    in_place = False  # stored with host ids: read through the snapshot mount

    def unique_inodes(self, area: Area) -> bool:
        # CTs made before lower trees became plain directories (storage/trees.py) have a
        # subvolume below them: their hard links are archived as copies.
        return not is_subvolume(Path(os.readlink(area.private / "lower")))

    def build(self, area: Area, fill: Fill) -> None:
        clear(area.partial)
        empty = area.private.parent / TREES_DIR / "empty"
        empty.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(empty.parent, 0o755)  # unprivileged CTs traverse to their lower tree
        area.partial.mkdir(mode=0o700)
        upper = area.partial / "fs"
        for sub in (upper, area.partial / "work"):
            sub.mkdir(mode=0o755)
        os.symlink(empty, area.partial / "lower")
        if area.idmap.privileged:
            fill(upper)
            return
        os.chown(upper, area.idmap.uid, area.idmap.gid)
        stage = area.partial / "stage"
        stage.mkdir()
        idmapped_bind(upper, stage, area.idmap, inverse=True)
        try:
            fill(stage)
        finally:
            umount(stage)
            stage.rmdir()


_BY_LAYOUT: dict[Layout, type[LayoutBackup]] = {Layout.BTRFS: BtrfsBackup, Layout.DIR: DirBackup}


def for_layout(layout: Layout) -> LayoutBackup:
    return _BY_LAYOUT[layout]()
