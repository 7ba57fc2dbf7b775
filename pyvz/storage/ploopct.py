"""A ploop CT adopted from an OpenVZ host: private/CTID/root.hdd holds the image.

Mainline Linux has no ploop driver, so such a CT does not run as it is: `vzctl convert`
copies the filesystem inside the image into a btrfs (or simfs) private area, reading the
image only (pyvz/storage/ploop.py). Until then status, vzlist and destroy work on it and
everything that would mount it says what to do."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

from pyvz.errors import ExitCode, VzError
from pyvz.params import Layout
from pyvz.storage.base import Area, DiskQuota, StorageDriver, remove_path


def _convert_first(area: Area) -> NoReturn:
    raise VzError(
        ExitCode.CANT_MOUNT,
        f"{area.private} is a ploop image, which mainline Linux cannot mount: "
        f"`vzctl convert {area.private.name}` copies its files into layout btrfs first",
    )


class PloopDriver(StorageDriver):
    layout = Layout.PLOOP
    has_quota = False
    snapshots_template = False
    copies_data = True

    def create(self, area: Area, tree: Path) -> None:
        _convert_first(area)

    def delete_tree(self, path: Path) -> None:
        remove_path(path)

    def mount(self, area: Area) -> None:
        _convert_first(area)

    def lxc_rootfs_options(self, area: Area) -> str:
        _convert_first(area)

    def host_owner(self, area: Area) -> tuple[int, int]:
        _convert_first(area)

    def set_quota(self, area: Area, quota: DiskQuota | None) -> None:
        _convert_first(area)

    def snapshot(self, area: Area, target: Path) -> None:
        _convert_first(area)

    def restore(self, area: Area, snapshot: Path) -> None:
        _convert_first(area)

    def clone(self, source: Path, source_area: Area, target: Area) -> None:
        _convert_first(source_area)

    def delete_snapshot(self, snapshot: Path) -> None:
        remove_path(snapshot)

    def mount_snapshot(self, area: Area, snapshot: Path, target: Path) -> None:
        _convert_first(area)

    def fingerprint(self, area: Area, quick: bool = False) -> dict[str, str | int]:
        _convert_first(area)
