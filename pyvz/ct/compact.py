"""`vzctl compact`: give a ploop image's unused blocks back to the host.

Only a ploop image has blocks to give back; pyvz's own layouts (btrfs, simfs, dir) are
files on the host filesystem that shrink as they are deleted. pyvz reads ploop images but
never writes one, so a ploop CT is compacted by converting it (vzctl convert)."""

from __future__ import annotations

from pyvz.ct.container import Container
from pyvz.errors import ExitCode, VzError
from pyvz.log import log
from pyvz.params import LAYOUT, PRIVATE, ROOT, Layout


def compact(ct: Container) -> None:
    cfg = ct.config
    if not cfg.get(ROOT):
        raise VzError(ExitCode.VE_ROOT_NOTSET, "VE_ROOT is not set")
    if not cfg.get(PRIVATE):
        raise VzError(ExitCode.VE_PRIVATE_NOTSET, "VE_PRIVATE is not set")
    ct.require_exists()
    if cfg.get(LAYOUT) is not Layout.PLOOP:
        log.info("Compact only makes sense for ploop containers")  # and 0, as vzctl
        return
    raise VzError(
        ExitCode.COMPACT_IMAGE,
        f"pyvz does not write ploop images: `vzctl convert {ct.ctid}` moves the CT's files out "
        "of the image into a layout that needs no compacting",
    )
