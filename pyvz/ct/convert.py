"""`vzctl convert CT [--layout btrfs|simfs|dir]`: move a stopped CT's files into another
layout in place, byte for byte (owners, modes, xattrs, ACLs, holes, hard links: cp -a).

The new private area is built beside the old one (`.CTID.partial`) and swapped in with one
rename (RENAME_EXCHANGE where both are in one directory), then the config is written, then
the old tree goes. A kill at any point leaves the CT runnable: before the swap as it was;
between the swap and the config, its new tree under the old layout's name, which both
bind-mounted layouts (btrfs, simfs) run; after, converted. A btrfs target needs btrfs under
it: a private area elsewhere (an OpenVZ host's /vz/private on ext4) moves into the pool.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pyvz import faults
from pyvz.atomic import exchange, read_journal, write_atomic
from pyvz.ct.container import Container
from pyvz.errors import ExitCode, VzError
from pyvz.host import Host
from pyvz.log import log
from pyvz.params import LAYOUT, PRIVATE, Layout
from pyvz.resources.policy import disk_quota
from pyvz.storage import pool
from pyvz.storage.base import Area, driver_for
from pyvz.storage.copying import copy_into
from pyvz.storage.idmap import IdMap

_TARGETS = (Layout.BTRFS, Layout.SIMFS, Layout.DIR)


def parse_target(text: str) -> Layout:
    layout = LAYOUT.parse(text)
    if layout not in _TARGETS:
        raise VzError(
            ExitCode.INVALID_PARAMETER_VALUE,
            f"cannot convert to layout {layout}: pyvz writes btrfs, simfs or dir (mainline has no ploop)",
        )
    return layout


@contextmanager
def _source_tree(ct: Container, area: Area, layout: Layout) -> Iterator[tuple[Path, IdMap | None]]:
    """The CT's whole tree to copy from, and the id range its owners are in (None: uid 0)."""
    if layout in (Layout.BTRFS, Layout.SIMFS):
        yield area.private, None
    elif layout is Layout.PLOOP:
        from pyvz.storage import ploop

        with ploop.mounted(area.private) as tree:
            yield tree, None
    else:  # dir: the merged overlay, which shows the CT's host ids
        driver = driver_for(layout)
        area.root.mkdir(parents=True, exist_ok=True)
        driver.mount(area)
        try:
            yield area.root, None if area.idmap.privileged else area.idmap
        finally:
            driver.umount(area)


def _build(target: Layout, staging: Path, final: Path, tree: Path, ids: IdMap | None, idmap: IdMap) -> None:
    from pyvz.storage.overlay import shift_ids

    if target is Layout.BTRFS:
        from pyvz.storage.btrfs import create_subvolume

        create_subvolume(staging)
        files = staging
    elif target is Layout.SIMFS:
        staging.mkdir(mode=0o755)
        files = staging
    else:  # dir: the whole tree as the upper layer over an empty lower one
        staging.mkdir(mode=0o700)
        for sub in ("fs", "work", "base"):
            (staging / sub).mkdir(mode=0o755)
        os.symlink(final / "base", staging / "lower")
        files = staging / "fs"
    copy_into(tree, files)
    os.chmod(files, os.stat(tree).st_mode & 0o7777)
    uid0 = IdMap(0, 0, idmap.size)
    if ids is not None and target is not Layout.DIR:
        shift_ids(files, ids, uid0)  # btrfs and simfs keep uid 0 on disk
    elif ids is None and target is Layout.DIR and not idmap.privileged:
        shift_ids(files, uid0, idmap)  # dir keeps its upper layer in the CT's host ids


def _journal(ct: Container) -> Path:
    return ct.paths.conf_dir / f"{ct.ctid}.converting"


def convert(host: Host, ctid: int, target: Layout) -> None:
    ct = Container(host, ctid)
    with host.ct_lock(ctid):
        finish_interrupted(ct)
        area = ct.require_exists()
        sweep(area)
        source = ct.config.get(LAYOUT) or Layout.BTRFS
        if source is target:
            raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"CT {ctid} already has layout {target}")
        if ct.is_running():
            raise VzError(ExitCode.RUNNING, f"CT {ctid} is running: stop it before converting it")
        if area.snapshots.is_dir() and any(area.snapshots.iterdir()):
            raise VzError(
                ExitCode.INVALID_PARAMETER_VALUE,
                f"CT {ctid} has snapshots, which belong to layout {source}: delete them first",
            )
        old_driver = ct.driver()
        if old_driver.is_mounted(area):
            old_driver.umount(area)
        moved = target is Layout.BTRFS and not pool.is_btrfs(area.private.parent)
        private_text = ""
        if moved:  # into the pool, the one btrfs pyvz has
            parent = pool.default_private_dir(host.paths)
            pool.prepare(host.paths, parent, True, host.setting("POOL_SIZE"))
            final = Area(parent / str(ctid), area.root, area.idmap)
            private_text = f"/{parent.relative_to(host.paths.root)}/$VEID"  # as configs name paths
            if final.private.exists():
                raise VzError(ExitCode.PRIVATE_EXISTS, f"{final.private} already exists; move it away first")
        else:
            final = area
        staging = final.partial
        _remove(staging)
        log.info(f"Converting CT {ctid} from layout {source} to {target}")
        try:
            with _source_tree(ct, area, source) as (tree, ids):
                _build(target, staging, final.private, tree, ids, area.idmap)
            built = os.stat(staging)
            journal = {
                "layout": str(target),
                "private": private_text,
                "new": str(final.private),
                "staging": str(staging),
                "old": str(area.private) if moved else str(staging),
                "tree": [built.st_dev, built.st_ino],
            }
            write_atomic(_journal(ct), json.dumps(journal) + "\n")
        except BaseException:
            _remove(staging)
            _journal(ct).unlink(missing_ok=True)
            raise
        faults.point(host.paths, "convert-built")
        if moved:
            os.rename(staging, final.private)
        else:
            exchange(staging, area.private)  # the old tree is at `staging` now
        faults.point(host.paths, "convert-swapped")
        _complete(ct, journal)
        driver_for(target).apply_quota(final, disk_quota(ct.config))
        log.info(f"Container was converted to layout {target}")


def _complete(ct: Container, journal: dict[str, Any]) -> None:
    """The new tree is in place: the config names it, then the old tree goes."""
    conf = ct.conf_file()
    conf.set(LAYOUT.key or "", journal["layout"])
    if journal["private"]:
        conf.set(PRIVATE.key or "", journal["private"])
    conf.write()
    ct.reload()
    _discard(Path(journal["old"]))
    _journal(ct).unlink(missing_ok=True)


def _discard(old: Path) -> None:
    """The old tree goes. A btrfs subvolume goes at once; a plain tree is renamed aside and
    removed by a detached `rm -rf`, so the convert returns when the CT is ready (deleting
    20,000 written files took 5 s on this ext4 with online discard, longer than copying
    them). A removal cut short leaves `.CTID.converted`, which the next convert or destroy
    of the CT sweeps."""
    if not (old.exists() or old.is_symlink()):
        return
    from pyvz.storage.btrfs import is_subvolume

    if is_subvolume(old):
        _remove(old)
        return
    aside = _aside(old)
    _remove(aside)  # an earlier one's, cut short
    os.rename(old, aside)
    from pyvz.run import daemon

    daemon(["ionice", "-c", "3", "rm", "-rf", "--one-file-system", str(aside)], Path(os.devnull))


def _aside(old: Path) -> Path:
    name = old.name.removeprefix(".").split(".")[0]  # CTID, from CTID or .CTID.partial
    return old.with_name(f".{name}.converted")


def sweep(area: Area) -> None:
    """What an interrupted background removal left beside the CT's private area."""
    _remove(_aside(area.private))


def finish_interrupted(ct: Container) -> None:
    """A convert killed half-way: finished if its new tree was swapped in, else undone."""
    path = _journal(ct)
    journal = read_journal(path)
    if journal is None:
        return
    try:
        now = os.stat(journal["new"])
        swapped = [now.st_dev, now.st_ino] == journal["tree"]
    except OSError:
        swapped = False
    if swapped:
        log.info(f"Finishing CT {ct.ctid}'s interrupted conversion to layout {journal['layout']}")
        _complete(ct, journal)
    else:
        log.info(f"Undoing CT {ct.ctid}'s interrupted conversion to layout {journal['layout']}")
        _remove(Path(journal["staging"]))
        path.unlink()


def _remove(path: Path) -> None:
    """A tree of either kind, if it is there (delete_subvolume removes a plain one too)."""
    if path.exists() or path.is_symlink():
        from pyvz.storage.btrfs import delete_subvolume

        delete_subvolume(path)
