"""`vzctl rebuild CT [--ostemplate T | --recipe R] [--keep PATH]...`: a fresh system for a CT
that stays the same CT.

The CT keeps its CTID, name, config (addresses, MACs, limits, id range, bind mounts: only
OSTEMPLATE and OSRECIPE change) and the paths given with --keep; its system files are made
anew from the template, or from its recipe built now, by the one path create uses
(create.make_private). A CT made from a recipe remembers it (OSRECIPE), so `rebuild` alone
builds the same recipe again.

The order: the new tree is built beside the old one (`.CTID.rebuild`) while the CT still
runs; the CT is stopped cleanly; its old system is saved as a regular snapshot named
`pre-rebuild` (files and config); the kept paths are copied from that snapshot into the new
tree; one RENAME_EXCHANGE swaps the trees; then the config names the new template, the old
tree goes (the snapshot holds it) and the CT is started again if it ran. `vzctl
snapshot-switch CT --id UUID` to the snapshot brings the old system back; the next rebuild
deletes it once its own swap is done, so one old system is kept, never a pile of them.

A journal (`CTID.rebuilding` beside the config, written atomically) names the new tree, the
snapshot and the template. A kill -9 or a Ctrl-C at any point leaves the old system or the
new one whole: before the swap the next command (start, destroy, snapshot commands, rebuild,
`vzctl boot`) removes the new tree and the snapshot and the CT is as it was; after it, the
same commands finish the job (config, old tree, quota). A CT a killed rebuild had stopped
stays stopped.
"""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path
from typing import Any

from pyvz import faults
from pyvz.atomic import exchange, read_journal, signals_held, write_atomic
from pyvz.ct import snapshots
from pyvz.ct.container import Container
from pyvz.ct.snapshots import Store
from pyvz.errors import ExitCode, VzError
from pyvz.host import Host
from pyvz.log import log
from pyvz.params import LAYOUT, OSRECIPE, OSTEMPLATE, Layout, parse_options
from pyvz.resources.policy import disk_quota
from pyvz.rootview import RootView
from pyvz.storage.base import Area, StorageDriver
from pyvz.storage.btrfs import delete_subvolume, is_subvolume, subvolume_id

SNAPSHOT_NAME = "pre-rebuild"
_GLOB = frozenset("*?[")


def parse_keep(text: str) -> str:
    """A --keep path: absolute inside the CT, no `..`, shell wildcards in its last part only."""
    parts = [p for p in text.split("/") if p not in ("", ".")]
    bad = None
    if not text.startswith("/"):
        bad = "it must be an absolute path inside the CT"
    elif any(ord(char) < 32 for char in text):
        bad = "control characters are not allowed"
    elif ".." in parts:
        bad = "`..` is not allowed"
    elif not parts:
        bad = "the CT's whole / cannot be kept (that is no rebuild)"
    elif any(_GLOB & set(p) for p in parts[:-1]):
        bad = "wildcards are allowed in the last part only"
    if bad is not None:
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"Bad parameter for --keep: {text}: {bad}")
    return "/" + "/".join(parts)


def _journal(ct: Container) -> Path:
    return ct.paths.conf_dir / f"{ct.ctid}.rebuilding"


def _staging(area: Area) -> Area:
    return area._replace(private=area.private.with_name(f".{area.private.name}.rebuild"))


def _identity(path: Path) -> str:
    """What tells the new tree from the old after a swap and a reboot: a subvolume's id, or
    the inode of a plain directory (both trees are in one directory, on one filesystem)."""
    return f"subvol:{subvolume_id(path)}" if is_subvolume(path) else f"ino:{os.lstat(path).st_ino}"


def _remove_tree(path: Path) -> None:
    for leftover in (path, path.with_name(f".{path.name}.partial")):  # driver.create's partial
        if leftover.exists() or leftover.is_symlink():
            delete_subvolume(leftover)  # removes a plain tree too


def rebuild(host: Host, ctid: int, raw: dict[str, str], keep: list[str]) -> None:
    """`raw`: ostemplate and recipe as given (at most one); `keep`: the --keep paths."""
    from pyvz.ct.create import make_private, recipe_of, template_archive

    keeps = [parse_keep(k) for k in keep]  # syntax first: nothing touched yet
    values: dict[str, Any] = parse_options(raw)
    if OSRECIPE.name in values and OSTEMPLATE.name in values:
        recipe_of(host, values, True)  # which says why not
    ct = Container(host, ctid)
    with host.ct_lock(ctid):
        finish_interrupted(ct)
        area = ct.require_exists()
        driver = ct.driver()
        if not driver.whole_tree:
            layout = ct.config.get(LAYOUT) or Layout.BTRFS
            raise VzError(
                ExitCode.INVALID_PARAMETER_VALUE,
                f"CT {ctid} has layout {layout}, whose files sit on the template they were made from: "
                f"`vzctl convert {ctid} --layout btrfs` it first",
            )
        if (ct.paths.conf_dir / f"{ctid}.migrating").exists():
            raise VzError(ExitCode.LOCKED, f"CT {ctid} is being migrated: rebuild it when that is settled")
        conf = ct.conf_file()
        recipe_text: str | None = values.get(OSRECIPE.name)
        if recipe_text is None and OSTEMPLATE.name not in values:
            recipe_text = conf.get(OSRECIPE.key or "")  # rebuild alone: the recipe it came from
        recipe = None
        if recipe_text:
            recipe = recipe_of(host, {OSRECIPE.name: recipe_text}, OSTEMPLATE.name in values)
        template = (
            recipe.name
            if recipe is not None
            else values.get(OSTEMPLATE.name) or conf.get("OSTEMPLATE") or host.setting("DEF_OSTEMPLATE")
        )
        if not template:
            raise VzError(ExitCode.OSTEMPLATE_NOTSET, f"CT {ctid} names no OSTEMPLATE: give --ostemplate")
        store = Store(area)
        store.sweep(driver)
        uuid = snapshots.new_uuid()
        new = _staging(area)
        journal: dict[str, Any] = {
            "staging": str(new.private),
            "snapshot": uuid,
            "template": template,
            "recipe": recipe_text or "",
        }
        with host.root_lock():  # the template cache and the unpacked trees are shared
            archive = template_archive(host, template, recipe, fresh=True)
            log.info(f"Building CT {ctid}'s new system from {template}")
            write_atomic(_journal(ct), json.dumps(journal) + "\n")
            try:
                _remove_tree(new.private)
                make_private(new, driver, archive)
                journal["new"] = _identity(new.private)
                write_atomic(_journal(ct), json.dumps(journal) + "\n")
            except BaseException:
                _undo(ct, journal, driver, store)
                raise
        running = swapped = False
        try:
            faults.point(host.paths, "rebuild-built")
            running = ct.is_running()
            if running:
                ct.stop()
            elif driver.is_mounted(area):
                ct.umount()
            snapshots.take_locked(
                ct, area, driver, store, uuid, SNAPSHOT_NAME, f"the system before a rebuild from {template}"
            )
            faults.point(host.paths, "rebuild-snapshotted")
            _copy_kept(store.files(uuid), new.private, keeps)
            with signals_held():  # from the swap on, a Ctrl-C lands once the CT is complete
                exchange(new.private, area.private)  # a crash leaves one tree or the other
                swapped = True
                faults.point(host.paths, "rebuild-swapped")
                _complete(ct, journal, driver)
        except BaseException:
            if not swapped:  # back to the old system, as it was (else: the journal finishes it)
                _undo(ct, journal, driver, store)
                if running and not ct.is_running():
                    ct.start()
            raise
        for old in store.all():  # superseded by the snapshot just taken
            if old.name == SNAPSHOT_NAME and old.uuid != uuid:
                try:
                    snapshots.delete_locked(driver, store, old.uuid)
                except VzError as err:
                    log.warning(f"the older pre-rebuild snapshot stays: {err.message}")
        back = f"`vzctl snapshot-switch {ctid} --id {uuid}`"
        log.info(f"CT {ctid} was rebuilt from {template}; {back} brings the old system back")
        if running:
            try:
                ct.start()
            except VzError as err:
                raise VzError(
                    err.code, f"{err.message} (the new system; {back} brings the old one back)"
                ) from None


def _copy_kept(old_root: Path, new_root: Path, keeps: list[str]) -> None:
    """Each --keep path from the old system (the snapshot) into the new tree, as it is: owners,
    modes, links. Both trees are stored with the CT's own ids (uid 0 = its root), so a copy
    keeps ownership as the CT sees it. Paths resolve inside each tree (a symlink never leads
    out of it)."""
    from pyvz.storage.base import remove_path
    from pyvz.storage.copying import copy_tree

    old_view, new_view = RootView(old_root), RootView(new_root)
    for keep in keeps:
        parent, _, pattern = keep.rpartition("/")
        try:
            source_dir = old_view.host_dir(parent or "/")
            names = sorted(n for n in os.listdir(source_dir) if fnmatch.fnmatchcase(n, pattern))
        except (FileNotFoundError, NotADirectoryError):
            names = []
        if not names:
            log.warning(f"--keep {keep}: not in the old system, nothing kept")
            continue
        target_dir = new_view.host_dir(parent or "/", create=True)
        for name in names:
            target = target_dir / name
            if target.exists() or target.is_symlink():
                remove_path(target)
            copy_tree(source_dir / name, target)
            log.info(f"Kept {parent}/{name}")


def _complete(ct: Container, journal: dict[str, Any], driver: StorageDriver) -> None:
    """The new tree is in place: the config names its template, the old tree goes (its
    snapshot holds it), the disk quota is put on the new tree; then the journal goes."""
    conf = ct.conf_file()
    conf.set(OSTEMPLATE.key or "", journal["template"])
    if journal["recipe"]:
        conf.set(OSRECIPE.key or "", journal["recipe"])
    else:
        conf.remove(OSRECIPE.key or "")
    conf.write()
    ct.reload()
    _remove_tree(Path(journal["staging"]))
    driver.apply_quota(ct.area(), disk_quota(ct.config))
    _journal(ct).unlink(missing_ok=True)


def _undo(ct: Container, journal: dict[str, Any], driver: StorageDriver, store: Store) -> None:
    """Not swapped: the new tree and the snapshot go; the CT's files were never touched."""
    _remove_tree(Path(journal["staging"]))
    if any(s.uuid == journal["snapshot"] for s in store.all()):
        snapshots.delete_locked(driver, store, journal["snapshot"])
    store.sweep(driver)  # a snapshot a kill left half-taken
    _journal(ct).unlink(missing_ok=True)


def finish_interrupted(ct: Container) -> None:
    """A rebuild killed half-way (the caller holds the CT lock): finished if the new tree was
    swapped in, else undone."""
    path = _journal(ct)
    journal = read_journal(path)
    if journal is None:
        return
    area = ct.area()
    driver = ct.driver()
    try:
        swapped = "new" in journal and _identity(area.private) == journal["new"]
    except OSError:
        swapped = False
    if swapped:
        log.info(f"Finishing CT {ct.ctid}'s interrupted rebuild from {journal['template']}")
        _complete(ct, journal, driver)
    else:
        log.info(f"Undoing CT {ct.ctid}'s interrupted rebuild: its old system stays")
        _undo(ct, journal, driver, Store(area))


def sweep(host: Host) -> None:
    """`vzctl boot`: every rebuild a crash or a power cut cut short, finished or undone."""
    for journal in sorted(host.paths.conf_dir.glob("*.rebuilding")):
        ctid = journal.name.split(".")[0]
        if not ctid.isdigit():
            continue
        ct = Container(host, int(ctid))
        try:
            with host.ct_lock(ct.ctid):
                finish_interrupted(ct)
        except VzError as err:
            log.warning(f"CT {ctid}: {err.message}")
