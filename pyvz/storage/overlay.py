"""The dir layout: overlayfs with the unpacked template as the lower layer.

An overlayfs mount cannot itself be idmapped, but its layers can: the shared template is
bind-mounted shifted into the CT's id range, and the CT's own upper layer is stored with the
CT's host ids. private/CTID holds `fs/` (upper), `work/` and `lower` (a link to the template).
"""

from __future__ import annotations

import os
from pathlib import Path

from pyvz.atomic import exchange
from pyvz.errors import ExitCode, VzError
from pyvz.params import Layout
from pyvz.run import run
from pyvz.storage.base import Area, DiskQuota, StorageDriver, remove_path
from pyvz.storage.copying import copy_tree
from pyvz.storage.idmap import IdMap
from pyvz.storage.idmount import idmapped_bind
from pyvz.storage.mounts import umount


def shift_ids(tree: Path, old: IdMap, new: IdMap) -> None:
    """Move every owner in `tree` from one CT id range to another (ids outside it stay)."""
    if old == new:
        return

    def shifted(ident: int, start: int, to: int) -> int:
        return ident - start + to if start <= ident < start + old.size else -1

    for top, dirs, files in os.walk(tree):
        for name in [*dirs, *files, ""]:
            path = os.path.join(top, name) if name else top
            st = os.lstat(path)
            os.lchown(path, shifted(st.st_uid, old.uid, new.uid), shifted(st.st_gid, old.gid, new.gid))
            if not os.path.islink(path) and st.st_mode & 0o6000:
                os.chmod(path, st.st_mode & 0o7777)  # chown clears setuid/setgid bits


class OverlayDriver(StorageDriver):
    layout = Layout.DIR
    has_quota = False
    snapshots_template = False
    copies_data = True

    def create(self, area: Area, tree: Path) -> None:
        if area.partial.exists():
            remove_path(area.partial)
        area.partial.mkdir(mode=0o700)
        for sub in ("fs", "work"):
            (area.partial / sub).mkdir(mode=0o755)
        os.chown(area.partial / "fs", area.idmap.uid, area.idmap.gid)
        os.chmod(area.partial / "fs", 0o755)
        os.symlink(tree, area.partial / "lower")
        os.rename(area.partial, area.private)

    def delete_tree(self, path: Path) -> None:
        remove_path(path)

    def _lower(self, area: Area) -> Path:
        lower = Path(os.readlink(area.private / "lower"))
        if not lower.is_dir():
            raise VzError(
                ExitCode.BAD_TEMPLATE,
                f"the template tree {lower} under CT private area {area.private} is missing",
            )
        return lower

    def mount(self, area: Area) -> None:
        lower = self._lower(area)
        stage = area.private / "stage"
        if area.idmap.privileged:
            self._overlay(lower, area)
            return
        stage.mkdir(exist_ok=True)
        idmapped_bind(lower, stage, area.idmap)
        try:
            self._overlay(stage, area)
        finally:
            # overlayfs keeps private clones of its layers; the staging mount can go.
            umount(stage, lazy=True)

    def _overlay(self, lower: Path, area: Area) -> None:
        options = f"lowerdir={lower},upperdir={area.private / 'fs'},workdir={area.private / 'work'}"
        run(
            ["mount", "-t", "overlay", "overlay", "-o", options, str(area.root)],
            error_code=ExitCode.CANT_MOUNT,
        )

    def own_files(self, area: Area) -> Path:
        return area.private / "fs"  # the upper layer; the template below it is shared

    def snapshot(self, area: Area, target: Path) -> None:
        copy_tree(self.own_files(area), target)

    def restore(self, area: Area, snapshot: Path) -> None:
        upper, staged = area.private / "fs", area.private / ".fs.partial"
        remove_path(staged)
        copy_tree(snapshot, staged)
        exchange(staged, upper)  # a crash leaves the old upper layer or the new one
        remove_path(staged)
        remove_path(area.private / "work")  # overlayfs's scratch space belongs to the old upper
        (area.private / "work").mkdir(mode=0o755)

    def clone(self, source: Path, source_area: Area, target: Area) -> None:
        remove_path(target.partial)
        target.partial.mkdir(mode=0o700)
        copy_tree(source, target.partial / "fs")
        shift_ids(target.partial / "fs", source_area.idmap, target.idmap)
        (target.partial / "work").mkdir(mode=0o755)
        os.symlink(os.readlink(source_area.private / "lower"), target.partial / "lower")
        os.rename(target.partial, target.private)

    def delete_snapshot(self, snapshot: Path) -> None:
        remove_path(snapshot)

    def mount_snapshot(self, area: Area, snapshot: Path, target: Path) -> None:
        # The upper copy is stored with the CT's host ids: shift it back, read-only, then lay
        # it over the (uid-0) template tree.
        lower = self._lower(area)
        if area.idmap.privileged:
            self._readonly_overlay([snapshot, lower], target)
            return
        stage = snapshot.with_name("stage")
        stage.mkdir(exist_ok=True)
        idmapped_bind(snapshot, stage, area.idmap, inverse=True, readonly=True)
        try:
            self._readonly_overlay([stage, lower], target)
        finally:
            umount(stage, lazy=True)
            stage.rmdir()

    def _readonly_overlay(self, layers: list[Path], target: Path) -> None:
        lowers = ":".join(str(layer) for layer in layers)
        run(
            ["mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={lowers}", str(target)],
            error_code=ExitCode.CANT_MOUNT,
        )

    def lxc_rootfs_options(self, area: Area) -> str:
        return ""  # the overlay already shows the CT's ids

    def host_owner(self, area: Area) -> tuple[int, int]:
        return (area.idmap.uid, area.idmap.gid)

    def set_quota(self, area: Area, quota: DiskQuota | None) -> None:
        raise VzError(
            ExitCode.DISKQUOTA_SET,
            "disk quota is not enforced for layout dir (overlayfs has no quota); use --layout btrfs",
        )
