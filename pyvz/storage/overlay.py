"""The dir layout: overlayfs with the unpacked template as the lower layer.

An overlayfs mount cannot itself be idmapped, but its layers can: the shared template is
bind-mounted shifted into the CT's id range, and the CT's own upper layer is stored with the
CT's host ids. private/CTID holds `fs/` (upper), `work/` and `lower` (a link to the template).
"""

from __future__ import annotations

import os
from pathlib import Path

from pyvz.errors import ExitCode, VzError
from pyvz.params import Layout
from pyvz.run import run
from pyvz.storage.base import Area, StorageDriver, remove_path
from pyvz.storage.idmount import idmapped_bind
from pyvz.storage.mounts import umount
from pyvz.units import BarrierLimit


class OverlayDriver(StorageDriver):
    layout = Layout.DIR
    has_quota = False

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

    def lxc_rootfs_options(self, area: Area) -> str:
        return ""  # the overlay already shows the CT's ids

    def host_owner(self, area: Area) -> tuple[int, int]:
        return (area.idmap.uid, area.idmap.gid)

    def set_quota(self, area: Area, quota: BarrierLimit | None) -> None:
        raise VzError(
            ExitCode.DISKQUOTA_SET,
            "disk quota is not enforced for layout dir (overlayfs has no quota); use --layout btrfs",
        )
