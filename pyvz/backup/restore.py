"""vzrestore: a CT from a backup, full or a whole incremental chain, onto either layout.

Like create, the config is written first and the private area is built under its partial
name and renamed into place last; a failure or Ctrl-C takes back everything this command
wrote, so no CT is ever left half-restored. Replacing an existing CT (--force, stopped CTs
only) builds the new private area completely before the old one is swapped out.

The restored CT is a new CT: a fresh id range, new veth MACs, its name only if no other CT
has it, and none of the IP addresses another CT already uses (they are dropped with a
warning, so a copy of a running CT can be restored beside it). It lives where vz.conf puts
CTs (VE_PRIVATE, VE_ROOT), with the layout given or vz.conf's VE_LAYOUT.

An incremental chain (btrfs send streams) is restored in a scratch area of the pool: the
full archive is unpacked into a subvolume that is then marked as received from the base
snapshot it stands for, so `btrfs receive` applies each incremental on top of the one
before; the CT gets a writable snapshot of the last (layout dir: a copy of it).

An archive that is not pyvz's (its first member is not pyvz.json) is taken for one of
OpenVZ's or Proxmox's old vzdump: legacy.py reads it through once as untrusted input, takes
its vps.conf and scripts, and unpacks it. Its config is adopted like ours: VE_PRIVATE and
VE_ROOT go (this host's vz.conf says where CTs live), VE_LAYOUT is this restore's, keys
pyvz does not know are kept as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pyvz.atomic import exchange, write_atomic
from pyvz.backup import legacy, stream, subvol
from pyvz.backup.layouts import Fill, for_layout
from pyvz.backup.metadata import CONFIG, META, STREAM, Metadata, script_member
from pyvz.config import (
    ConfigFile,
    CtConfig,
    name_owner,
    remove_name_links_to,
    set_name_link,
)
from pyvz.ct.container import Container
from pyvz.ct.create import new_ct, taken_uids
from pyvz.errors import ExitCode, VzError
from pyvz.host import Host
from pyvz.log import log
from pyvz.net.venet import bare, owner_of
from pyvz.params import IPADD, LAYOUT, NETIF, Layout
from pyvz.resources.policy import disk_quota
from pyvz.run import pipeline, run
from pyvz.scripts import CT_ACTIONS, HOST_ACTIONS
from pyvz.storage import pool
from pyvz.storage.base import Area, StorageDriver, driver_for, remove_path
from pyvz.storage.btrfs import create_subvolume, is_subvolume, set_readonly

Build = Callable[[Area, Layout], None]  # makes a complete private area at area.partial


def scratch_dir(area: Area) -> Path:
    """Where an incremental chain is received, beside the private area (same pool)."""
    return area.private.with_name(f".{area.private.name}.restoring")


def vzrestore(
    host: Host, archive: Path, ctid: int, force: bool = False, layout: Layout | None = None
) -> None:
    archive = archive.resolve()
    build: Build
    if legacy.is_pyvz(archive, META):
        links = stream.chain(archive)  # every archive present and matching: before anything is touched
        last_path, last = links[-1]
        conf_text = stream.read_member(last_path, CONFIG)
        scripts = {action: stream.read_member(last_path, script_member(action)) for action in last.scripts}
        kind = f"an incremental chain of {len(links)} archives" if len(links) > 1 else "a full backup"

        def build(area: Area, layout: Layout) -> None:
            _build(area, layout, links)

    else:  # OpenVZ's or Proxmox's vzdump: untrusted until read through once
        vetted = legacy.vet(archive)
        conf_text, scripts = vetted.config, vetted.scripts
        kind = f"an OpenVZ vzdump archive, {vetted.packing.name}"

        def build(area: Area, layout: Layout) -> None:
            for_layout(layout).build(area, lambda target: legacy.extract(archive, vetted, target))

    if layout is None:
        layout = LAYOUT.parse(host.setting("VE_LAYOUT") or "btrfs")
    ct = Container(host, ctid)
    with host.ct_lock(ctid), host.root_lock():
        conf_path = host.paths.conf_file(ctid)
        existing = conf_path.exists()
        if existing and not force:
            raise VzError(
                ExitCode.PRIVATE_EXISTS, f"CT {ctid} already exists ({conf_path}); use --force to replace it"
            )
        if existing and ct.is_running():
            raise VzError(ExitCode.RUNNING, f"CT {ctid} is running; stop it before restoring over it")
        conf, name = _new_config(host, ctid, conf_text, conf_path, layout)
        cfg = CtConfig.merge(ctid, host.global_conf.items(), conf.items(), conf_path)
        area = ct.area(cfg)
        driver = driver_for(layout)
        pool.prepare(host.paths, area.private.parent, layout == Layout.BTRFS, host.setting("POOL_SIZE"))
        old = (ct.area(), ct.driver()) if existing else None
        if (area.private.exists() or area.private.is_symlink()) and (
            old is None or old[0].private != area.private
        ):
            raise VzError(ExitCode.PRIVATE_EXISTS, f"private area {area.private} already exists")
        log.info(f"Restoring CT {ctid} from {archive.name} ({kind}, layout {layout})")
        if old is None:
            _restore_new(host, ctid, conf, name, scripts, area, driver, build)
        else:
            _replace(host, ct, conf, name, scripts, area, driver.layout, build, old)
        driver.apply_quota(area, disk_quota(cfg))
        log.info(f"CT {ctid} was restored from {archive.name}")


def _new_config(
    host: Host, ctid: int, text: str, conf_path: Path, layout: Layout
) -> tuple[ConfigFile, str | None]:
    from pyvz.net import veth

    conf = ConfigFile.parse(text, conf_path)
    for key in ("VE_PRIVATE", "VE_ROOT"):  # where this host keeps CTs, not where the archive's did
        conf.remove(key)
    conf.set("VE_LAYOUT", str(layout))
    name = conf.get("NAME")
    if name:
        owner = name_owner(host.paths, name)
        if owner not in (None, ctid):
            log.warning(f"name {name!r} is used by CT {owner}: the restored CT gets no name")
            conf.remove("NAME")
            name = None
    addresses = (conf.get(IPADD.key or "") or "").split()
    if addresses:
        others = host.addresses(but=ctid)
        kept = []
        for address in addresses:
            owner = owner_of(address, others)
            if owner is None:
                kept.append(address)
            else:
                log.warning(f"IP address {bare(address)} is used by CT {owner}: not given to CT {ctid}")
        conf.set(IPADD.key or "", " ".join(kept))
    netifs = veth.parse_config(conf.get(NETIF.key or "") or "")
    if netifs:
        conf.set(NETIF.key or "", veth.format_config(veth.for_clone(netifs, host.paths.tag, ctid)))
    idmap = host.allocate_ids(taken_uids(host) - _own_uid(conf_path))
    conf.set("LOCAL_UID", str(idmap.uid))
    conf.set("LOCAL_GID", str(idmap.gid))
    return conf, name or None


def _own_uid(conf_path: Path) -> set[int]:
    """A CT being replaced gives up its id range: its files go with it."""
    if not conf_path.exists():
        return set()
    value = ConfigFile.load(conf_path).get("LOCAL_UID")
    return {int(value)} if value and value.isdigit() else set()


def _write_scripts(host: Host, ctid: int, scripts: dict[str, str]) -> None:
    for action in (*HOST_ACTIONS, *CT_ACTIONS):
        path = host.paths.action_script(ctid, action)
        if action in scripts:
            write_atomic(path, scripts[action], mode=0o755)
        else:
            path.unlink(missing_ok=True)


def _restore_new(
    host: Host,
    ctid: int,
    conf: ConfigFile,
    name: str | None,
    scripts: dict[str, str],
    area: Area,
    driver: StorageDriver,
    build: Build,
) -> None:
    with new_ct(host, ctid, conf, name, area, driver):
        _write_scripts(host, ctid, scripts)
        try:
            build(area, driver.layout)
            area.partial.rename(area.private)
        except BaseException:
            _write_scripts(host, ctid, {})
            raise


def _replace(
    host: Host,
    ct: Container,
    conf: ConfigFile,
    name: str | None,
    scripts: dict[str, str],
    area: Area,
    layout: Layout,
    build: Build,
    old: tuple[Area, StorageDriver],
) -> None:
    old_area, old_driver = old
    try:
        build(area, layout)
    except BaseException:
        from pyvz.backup.layouts import clear

        clear(area.partial)
        raise
    if old_driver.is_mounted(old_area):
        ct.umount(area=old_area)
    from pyvz.ct.snapshots import release_mounts

    release_mounts(old_area)
    conf.write()
    remove_name_links_to(host.paths, ct.ctid)
    if name is not None:
        set_name_link(host.paths, name, ct.ctid)
    _write_scripts(host, ct.ctid, scripts)
    if old_area.private == area.private:
        exchange(area.partial, area.private)  # a crash leaves the old tree or the new one in place
        area.partial.rename(old_area.doomed)
    else:
        area.partial.rename(area.private)
        if old_area.private.exists():
            old_area.private.rename(old_area.doomed)
    old_driver.delete_tree(old_area.doomed)
    old_driver.delete_snapshots(old_area)
    if old_area.backups.is_dir():
        old_driver.delete_backups(old_area)
    host.runtime.forget(ct.ctid)
    log.info(f"The old CT {ct.ctid} was replaced")


def _build(area: Area, layout: Layout, links: list[tuple[Path, Metadata]]) -> None:
    """A complete private area at area.partial from the chain (a lone full archive, or a full
    archive and its incrementals)."""
    target = for_layout(layout)
    full_path = links[0][0]
    if len(links) == 1:
        target.build(area, _extracting(full_path))
        return
    scratch = scratch_dir(area)
    _clear_scratch(scratch)
    if not pool.is_btrfs(area.private.parent):
        raise VzError(
            ExitCode.RESTORE_ERROR,
            f"an incremental chain is received with btrfs: {area.private.parent} is not on btrfs",
        )
    scratch.mkdir(mode=0o700)
    try:
        received = scratch / "0"
        create_subvolume(received)
        _extracting(full_path)(received)
        base = links[0][1].base
        if base is None:
            raise VzError(ExitCode.RESTORE_ERROR, f"{full_path.name} records no base snapshot to build on")
        subvol.set_received(received, base)
        set_readonly(received, True)
        for step, (path, _meta) in enumerate(links[1:], 1):
            into = scratch / f"step{step}"
            into.mkdir()
            try:
                pipeline(
                    [stream.member_argv(path, STREAM), ["btrfs", "receive", str(into)]],
                    error_code=ExitCode.RESTORE_ERROR,
                )
            except VzError as err:
                raise VzError(err.code, f"cannot apply {path.name}: {err.message}") from None
            made = [entry for entry in into.iterdir() if is_subvolume(entry)]
            if len(made) != 1:
                raise VzError(ExitCode.RESTORE_ERROR, f"{path.name}: the send stream made no subvolume")
            received = made[0]
        target.adopt(area, received)
    finally:
        _clear_scratch(scratch)


def _extracting(archive: Path) -> Fill:
    def fill(target: Path) -> None:
        try:
            stream.extract(archive, target)
        except VzError as err:
            raise VzError(err.code, f"{archive.name} is damaged or truncated: {err.message}") from None

    return fill


def _clear_scratch(scratch: Path) -> None:
    """Received subvolumes are read-only and carry a received UUID: delete them as they are."""
    if not scratch.exists():
        return
    found = [scratch / "0"] + [sub for step in scratch.glob("step*") for sub in step.iterdir()]
    for subvolume in (p for p in found if is_subvolume(p)):
        run(["btrfs", "-q", "subvolume", "delete", str(subvolume)], error_code=ExitCode.CANT_DELETE_PRIVATE)
    remove_path(scratch)
