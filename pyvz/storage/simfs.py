"""The simfs layout, as OpenVZ left it: the private area is a plain directory holding the
CT's tree with uid-0 owners, on whatever filesystem VE_PRIVATE is on (ext4, xfs, btrfs).

VE_ROOT is a bind mount of it and LXC idmaps the rootfs at start, so an adopted CT runs
unprivileged with no chown and its files stay owned on disk as they were. There are no
instant snapshots: a snapshot or a clone is a full copy (cp -a, reflinked where the
filesystem can).

Disk quota is the filesystem's project quota (pyvz.storage.prjquota), where VE_PRIVATE is on
ext4 or xfs mounted with it: the CT's tree holds one project id (its CTID where free), and
DISKSPACE (barrier:limit as soft:hard 1K blocks) and DISKINODES are that project's limits.
Elsewhere (ext4 without prjquota, tmpfs, a btrfs directory) there is none, said by name."""

from __future__ import annotations

import os
from pathlib import Path

from pyvz.atomic import exchange
from pyvz.errors import ExitCode, VzError
from pyvz.log import log
from pyvz.params import Layout
from pyvz.storage import prjquota
from pyvz.storage.base import Area, DiskQuota, QuotaCounts, remove_path
from pyvz.storage.bindroot import BindRootDriver
from pyvz.storage.copying import copy_tree
from pyvz.units import UNLIMITED, BarrierLimit


class SimfsDriver(BindRootDriver):
    layout = Layout.SIMFS
    has_quota = True
    full_quota = True
    snapshots_template = False
    copies_data = True

    def create(self, area: Area, tree: Path) -> None:
        remove_path(area.partial)
        copy_tree(tree, area.partial)
        os.chmod(area.partial, 0o755)
        os.rename(area.partial, area.private)

    def snapshot(self, area: Area, target: Path) -> None:
        copy_tree(area.private, target)

    def restore(self, area: Area, snapshot: Path) -> None:
        remove_path(area.partial)
        copy_tree(snapshot, area.partial)
        ident = self._project(area.private)
        if ident is not None:  # the copy is made outside the project: it joins it, limits kept
            now = prjquota.counts(area.private, ident)
            _tag(area.partial, ident, (now.block_soft, now.block_hard), (now.inode_soft, now.inode_hard))
        exchange(area.partial, area.private)  # a crash leaves the old tree or the new one
        remove_path(area.partial)

    def clone(self, source: Path, source_area: Area, target: Area) -> None:
        remove_path(target.partial)
        copy_tree(source, target.partial)  # uid 0 on disk: a new id range costs no chown
        os.rename(target.partial, target.private)

    def delete_snapshot(self, snapshot: Path) -> None:
        remove_path(snapshot)

    def delete_tree(self, path: Path) -> None:
        ident = self._project(path)
        remove_path(path)
        if ident is not None:  # its files are gone; its limits must not wait for a new tree
            prjquota.set_limits(path.parent, ident, (0, 0), (0, 0))

    # ---- disk quota: the project quota of VE_PRIVATE's filesystem ------------------------------

    def quota_missing(self, area: Area) -> str | None:
        return prjquota.why_not(area.private)

    def set_quota(self, area: Area, quota: DiskQuota | None) -> None:
        why = self.quota_missing(area)
        if why is not None:
            raise VzError(ExitCode.DISKQUOTA_SET, f"disk quota is not enforced for {area.private}: {why}")
        ident = prjquota.settle_id(area.private)
        blocks, inodes = _pair(quota.space if quota else None), _pair(quota.inodes if quota else None)
        if self._project(area.private) != ident:
            _tag(area.private, ident, blocks, inodes)
        else:
            prjquota.set_limits(area.private, ident, blocks, inodes)

    def start_quota(self, area: Area, quota: DiskQuota | None) -> None:
        """A CT adopted with DISKSPACE/DISKINODES, or whose filesystem got project quota since,
        gets its project at its first start; where there can be none, that is said."""
        if quota is None:
            return
        why = self.quota_missing(area)
        if why is not None:
            log.warning(f"{quota.names()} not enforced: {why}")
            return
        if self._project(area.private) is None:
            self.set_quota(area, quota)
            log.info(f"Disk quota was set up (project {self._project(area.private)})")

    def _project(self, path: Path) -> int | None:
        """The tree's project id, once it is tagged (its top holds the id and the inherit flag,
        set last); None: not tagged, or not on a filesystem with project ids."""
        try:
            ident, inherit = prjquota.project_of(path)
        except OSError:
            return None
        return ident if ident and inherit else None

    def quota_counts(self, area: Area) -> QuotaCounts | None:
        ident = self._project(area.private)
        if ident is None or self.quota_missing(area) is not None:
            return None
        found = prjquota.counts(area.private, ident)
        return QuotaCounts(found.space, found.block_hard * 1024 or None, found.inodes)

    def usage(self, area: Area) -> int | None:
        counts = self.quota_counts(area)
        return None if counts is None else counts.used

    def inode_usage(self, area: Area) -> int | None:
        counts = self.quota_counts(area)
        return None if counts is None else counts.inodes

    def recount_quota(self, area: Area, full: bool = False) -> None:
        """The kernel counts a project as its files change, so there is nothing to recount once
        the tree is tagged; untagged, it is tagged now (with no limits yet)."""
        if self._project(area.private) is None:
            self.set_quota(area, None)


def _tag(tree: Path, ident: int, blocks: tuple[int, int], inodes: tuple[int, int]) -> None:
    """Put `tree` into project `ident` with these limits. A file moved into a project is
    checked against its limits, so they are lifted while the tree is tagged."""
    prjquota.set_limits(tree, ident, (0, 0), (0, 0))
    prjquota.tag_tree(tree, ident)
    prjquota.set_limits(tree, ident, blocks, inodes)


def _pair(value: BarrierLimit | None) -> tuple[int, int]:
    """A quota pair as the kernel takes it: (soft, hard), 0 for unlimited."""
    if value is None:
        return (0, 0)
    return (_kernel(value.barrier), _kernel(value.limit))


def _kernel(value: int) -> int:
    return 0 if value >= UNLIMITED else value
