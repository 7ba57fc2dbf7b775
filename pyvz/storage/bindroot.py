"""Layouts whose private area is the CT's tree itself, stored with uid 0 on disk (btrfs,
simfs): VE_ROOT is a bind mount of it, and LXC shifts the ids at start with an idmapped
rootfs mount, so a CT gets its own id range without a chown."""

from __future__ import annotations

from pathlib import Path

from pyvz.storage.base import Area, StorageDriver
from pyvz.storage.mounts import bind_mount


class BindRootDriver(StorageDriver):
    ids_free = True
    whole_tree = True

    def mount(self, area: Area) -> None:
        bind_mount(area.private, area.root)

    def mount_snapshot(self, area: Area, snapshot_path: Path, target: Path) -> None:
        bind_mount(snapshot_path, target, readonly=True)  # stored as the CT sees it

    def lxc_rootfs_options(self, area: Area) -> str:
        return "" if area.idmap.privileged else "idmap=container"

    def mount_shifted(self, area: Area) -> None:
        if area.idmap.privileged:
            self.mount(area)
            return
        from pyvz.storage.idmount import idmapped_bind

        idmapped_bind(area.private, area.root, area.idmap)

    def mounted_shifted(self, area: Area) -> bool:
        from pyvz.storage.mounts import is_idmapped

        return not area.idmap.privileged and is_idmapped(area.root)

    def host_owner(self, area: Area) -> tuple[int, int]:
        return (0, 0)  # the bind mount on the host is not shifted; LXC shifts it at start
