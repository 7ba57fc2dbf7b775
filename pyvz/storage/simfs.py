"""The simfs layout, as OpenVZ left it: the private area is a plain directory holding the
CT's tree with uid-0 owners, on whatever filesystem VE_PRIVATE is on (ext4, xfs, btrfs).

VE_ROOT is a bind mount of it and LXC idmaps the rootfs at start, so an adopted CT runs
unprivileged with no chown and its files stay owned on disk as they were. There are no
instant snapshots: a snapshot or a clone is a full copy (cp -a, reflinked where the
filesystem can). Disk quota: see set_quota."""

from __future__ import annotations

import os
from pathlib import Path

from pyvz.atomic import exchange
from pyvz.errors import ExitCode, VzError
from pyvz.params import Layout
from pyvz.storage.base import Area, remove_path
from pyvz.storage.bindroot import BindRootDriver
from pyvz.storage.copying import copy_tree
from pyvz.units import BarrierLimit


class SimfsDriver(BindRootDriver):
    layout = Layout.SIMFS
    has_quota = False
    snapshots_template = False
    copies_data = True

    def create(self, area: Area, tree: Path) -> None:
        remove_path(area.partial)
        copy_tree(tree, area.partial)
        os.chmod(area.partial, 0o755)
        os.rename(area.partial, area.private)

    def delete_tree(self, path: Path) -> None:
        remove_path(path)

    def snapshot(self, area: Area, target: Path) -> None:
        copy_tree(area.private, target)

    def restore(self, area: Area, snapshot: Path) -> None:
        remove_path(area.partial)
        copy_tree(snapshot, area.partial)
        exchange(area.partial, area.private)  # a crash leaves the old tree or the new one
        remove_path(area.partial)

    def clone(self, source: Path, source_area: Area, target: Area) -> None:
        remove_path(target.partial)
        copy_tree(source, target.partial)  # uid 0 on disk: a new id range costs no chown
        os.rename(target.partial, target.private)

    def delete_snapshot(self, snapshot: Path) -> None:
        remove_path(snapshot)

    def set_quota(self, area: Area, quota: BarrierLimit | None) -> None:
        raise VzError(
            ExitCode.DISKQUOTA_SET,
            f"disk quota is not enforced for simfs CT at {area.private}: pyvz has no directory quota "
            "for it on this filesystem (convert it: vzctl convert CTID --layout btrfs)",
        )
