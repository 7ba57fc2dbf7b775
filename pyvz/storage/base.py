"""The storage driver interface and its registry, keyed by Layout."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, NamedTuple

from pyvz.params import Layout
from pyvz.storage.idmap import IdMap
from pyvz.storage.mounts import is_mountpoint, umount_tree
from pyvz.units import BarrierLimit


class Area(NamedTuple):
    """Where one CT's files are on the host."""

    private: Path
    root: Path
    idmap: IdMap

    @property
    def partial(self) -> Path:
        """Where a private area is built before it is renamed into place."""
        return self.private.with_name(f".{self.private.name}.partial")

    @property
    def snapshots(self) -> Path:
        """Where the CT's snapshots are kept: beside its private area, on the same filesystem."""
        return self.private.with_name(f".{self.private.name}.snapshots")

    @property
    def backups(self) -> Path:
        """What vzdump keeps for the CT (the base snapshot incremental backups are sent against),
        beside its private area and apart from the user's snapshots."""
        return self.private.with_name(f".{self.private.name}.vzdump")

    @property
    def migrating(self) -> Path:
        """What vzmigrate keeps while it sends the CT (its pre-copy rounds)."""
        return self.private.with_name(f".{self.private.name}.migrate")

    @property
    def replicating(self) -> Path:
        """What vzreplicate keeps of the CT: per standby host, the read-only snapshot the
        standby's replica was received from (the parent of the next incremental run)."""
        return self.private.with_name(f".{self.private.name}.replicate")

    @property
    def incoming(self) -> Path:
        """Where a CT being received by vzmigrate is built."""
        return self.private.with_name(f".{self.private.name}.incoming")

    @property
    def doomed(self) -> Path:
        """Where a private area goes the moment destroy starts, so it stops looking alive."""
        return self.private.with_name(f".{self.private.name}.destroying")


class QuotaCounts(NamedTuple):
    """A CT's disk quota as its filesystem keeps it."""

    used: int  # bytes counted against the quota
    limit: int | None  # bytes; None: no limit is set
    inodes: int | None = None  # inodes counted, where the filesystem counts them (project quota)


class DiskQuota(NamedTuple):
    """What a CT's disk quota is to hold: DISKSPACE (1K blocks) and DISKINODES."""

    space: BarrierLimit | None
    inodes: BarrierLimit | None = None

    def names(self) -> str:
        given = (("DISKSPACE", self.space), ("DISKINODES", self.inodes))
        return ", ".join(name for name, value in given if value)


class StorageDriver(ABC):
    layout: ClassVar[Layout]
    has_quota: ClassVar[bool]  # it can have a disk quota (where its filesystem allows: quota_missing)
    # Its disk quota holds DISKSPACE's barrier and DISKINODES too (project quota), not only
    # DISKSPACE's limit (a btrfs qgroup).
    full_quota: ClassVar[bool] = False
    copies_data: ClassVar[bool]  # a snapshot or clone copies every file (it is not O(1))
    snapshots_template: ClassVar[bool]  # a CT is a btrfs snapshot of the unpacked template
    # Its files are stored with uid 0 on disk and idmapped at start, so its id range can
    # change at no cost (btrfs, simfs); dir keeps its upper layer in the CT's host ids.
    ids_free: ClassVar[bool] = False
    # Its private area is the CT's whole tree (btrfs, simfs), so a new one can be built beside
    # it and swapped in with one rename (vzctl rebuild); dir's upper layer sits on the template.
    whole_tree: ClassVar[bool] = False

    @abstractmethod
    def create(self, area: Area, tree: Path) -> None:
        """Make the private area from an unpacked template; leaves it complete or absent."""

    @abstractmethod
    def delete_tree(self, path: Path) -> None:
        """Remove a private area (or a leftover partial one) at `path`."""

    @abstractmethod
    def mount(self, area: Area) -> None:
        """Make the CT's files visible at area.root."""

    @abstractmethod
    def lxc_rootfs_options(self, area: Area) -> str:
        """Extra lxc.rootfs.options for this layout."""

    @abstractmethod
    def host_owner(self, area: Area) -> tuple[int, int]:
        """Host uid/gid a file written through area.root needs to be owned by CT root."""

    def quota_missing(self, area: Area) -> str | None:
        """Why the CT at `area` can have no disk quota here, one phrase; None: it can."""
        return None if self.has_quota else f"layout {self.layout} has no disk quota"

    def set_quota(self, area: Area, quota: DiskQuota | None) -> None:
        """Put `quota` on the CT's files (None: no limit, usage still counted)."""
        raise NotImplementedError

    def apply_quota(self, area: Area, quota: DiskQuota | None) -> None:
        """The quota of a CT whose files were just made or replaced (create, clone, convert,
        restore, migration); where it can have none, that is said by name, once."""
        if quota is None:
            return
        why = self.quota_missing(area)
        if why is None:
            self.set_quota(area, quota)
        else:
            from pyvz.log import log

            log.warning(f"{quota.names()} not enforced: {why}")

    def start_quota(self, area: Area, quota: DiskQuota | None) -> None:
        """What the CT's disk quota needs at start. Limits live on disk, set by create and set,
        so by default nothing (and a quota turned off stays off until quotaon)."""
        return None

    # ---- snapshots and clones ----------------------------------------------------------------
    # A snapshot is kept at a path of its own (`fs` in the snapshot's directory) and holds the
    # CT's own files as stored in its private area: the driver alone knows what that means.

    def own_files(self, area: Area) -> Path:
        """The CT's own files, of the same kind as a snapshot holds (its source for clones)."""
        return area.private

    @abstractmethod
    def snapshot(self, area: Area, target: Path) -> None:
        """Save the CT's files at `target` (which does not exist yet), read-only where possible."""

    @abstractmethod
    def restore(self, area: Area, snapshot: Path) -> None:
        """Make the CT's files what `snapshot` holds, in one step (the CT is not mounted)."""

    @abstractmethod
    def clone(self, source: Path, source_area: Area, target: Area) -> None:
        """Make target's private area from `source` (a private area or a snapshot of
        source_area), owned by target's id range; complete or absent."""

    @abstractmethod
    def delete_snapshot(self, snapshot: Path) -> None:
        """Remove a snapshot and give its space back before returning."""

    @abstractmethod
    def mount_snapshot(self, area: Area, snapshot: Path, target: Path) -> None:
        """Show the snapshot read-only at `target` with owners as the CT sees them."""

    def mount_shifted(self, area: Area) -> None:
        """Mount the CT's files at area.root already showing the CT's host ids, for a CRIU
        restore (LXC's restore ignores lxc.rootfs.options' idmap=container)."""
        self.mount(area)

    def mounted_shifted(self, area: Area) -> bool:
        """Whether area.root is still the shifted mount of a restore (mount_shifted)."""
        return False

    def fingerprint(self, area: Area, quick: bool = False) -> dict[str, str | int]:
        """What identifies the state of the CT's own files, so that a dump made from them is
        never restored over other files. `tree`: sizes and change times of every entry
        (not access times: reading a file is no change). `quick`: only what costs no walk,
        where the layout has it."""
        import hashlib

        digest = hashlib.sha256()
        top = self.own_files(area)
        for directory, dirs, files in os.walk(top):
            dirs.sort()
            for name in ["", *sorted(files), *dirs]:
                path = os.path.join(directory, name) if name else directory
                st = os.lstat(path)
                line = (
                    f"{path[len(str(top)) :]}\0{st.st_size}:{st.st_mode}:{st.st_mtime_ns}:{st.st_ctime_ns}\n"
                )
                digest.update(line.encode())
        return {"tree": digest.hexdigest()}

    def fits(self, area: Area, recorded: dict[str, str | int]) -> bool:
        """Whether the CT's files are still in the state `recorded` names."""
        now = self.fingerprint(area, quick=True)
        if any(key in recorded and recorded[key] == value for key, value in now.items()):
            return True
        if "tree" in recorded and "tree" not in now:
            return recorded["tree"] == self.fingerprint(area)["tree"]
        return False

    def usage(self, area: Area) -> int | None:
        """Bytes counted against the disk quota; None where the layout keeps no count."""
        return None

    def inode_usage(self, area: Area) -> int | None:
        """Inodes counted against DISKINODES; None where the layout keeps no count."""
        return None

    def quota_counts(self, area: Area) -> QuotaCounts | None:
        """The quota's count and limit, with a write a moment ago counted; None where the
        filesystem keeps no count for the CT (no quota in the layout, or accounting is off)."""
        return None

    def recount_quota(self, area: Area, full: bool = False) -> None:
        """Make the quota's count right (accounting turned on, stale numbers recounted; `full`:
        recounted in any case) and wait until it is."""
        raise NotImplementedError

    def is_mounted(self, area: Area) -> bool:
        return is_mountpoint(area.root)

    def umount(self, area: Area) -> None:
        umount_tree(area.root)

    def destroy(self, area: Area) -> None:
        for leftover in (area.private, area.doomed, area.partial):
            if leftover.exists() or leftover.is_symlink():
                self.delete_tree(leftover)
        for leftover in (area.migrating, area.incoming, area.replicating):
            remove_with_subvolumes(leftover)
        self.delete_snapshots(area)
        if area.backups.is_dir():
            self.delete_backups(area)

    def delete_snapshots(self, area: Area) -> None:
        if area.snapshots.is_dir():
            for entry in area.snapshots.iterdir():
                if (entry / "fs").exists():
                    self.delete_snapshot(entry / "fs")
            remove_path(area.snapshots)

    def delete_backups(self, area: Area) -> None:
        """Remove what vzdump keeps or left in area.backups: each entry is a directory with a
        driver snapshot `fs` and maybe something mounted below it."""
        for entry in area.backups.iterdir():
            if entry.is_dir():
                umount_tree(entry)
                if (entry / "fs").exists():
                    self.delete_snapshot(entry / "fs")
        remove_path(area.backups)


def remove_with_subvolumes(path: Path) -> None:
    """Remove a directory that may hold btrfs subvolumes (read-only ones too)."""
    if not path.exists():
        return
    from pyvz.storage.btrfs import delete_subvolume, is_subvolume

    for top, dirs, _files in os.walk(path, topdown=True):
        for name in list(dirs):
            inner = Path(top) / name
            if is_subvolume(inner):
                delete_subvolume(inner)  # the ioctl lets root delete read-only ones
                dirs.remove(name)
    remove_path(path)


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        import shutil

        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# Modules are imported on use, so a command pays only for the driver it needs.
_DRIVERS: dict[Layout, tuple[str, str]] = {
    Layout.BTRFS: ("pyvz.storage.btrfs", "BtrfsDriver"),
    Layout.DIR: ("pyvz.storage.overlay", "OverlayDriver"),
    Layout.SIMFS: ("pyvz.storage.simfs", "SimfsDriver"),
    Layout.PLOOP: ("pyvz.storage.ploopct", "PloopDriver"),
}


def driver_for(layout: Layout) -> StorageDriver:
    import importlib

    module, name = _DRIVERS[layout]
    driver: type[StorageDriver] = getattr(importlib.import_module(module), name)
    return driver()
