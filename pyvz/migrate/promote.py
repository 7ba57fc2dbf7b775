"""Promote a replica: the newest replica of a CT whose host is gone becomes a real CT here
(`vzctl recover CT` on a standby; the HA leader calls promote() after its fencing wait).

The caller vouches that the CT runs nowhere else: without a cluster pyvz cannot know
whether the source host is down for good, which is why `vzctl recover` wants --force.

The CT comes into being in create's order (config and name link, then the private area
last, by one rename): the config is the replica's, checked again against this host (its
own VE_PRIVATE/VE_ROOT, an id range free here, the name and addresses free here), the
files a writable snapshot of the replica (O(1)). A marker in the replica's directory says a
promote is under way, so that after a kill the next `vzctl recover` sweeps the half-made CT
and starts over; once the CT is complete the replica goes (the CT holds its files now).
"""

from __future__ import annotations

import os
import socket

from pyvz.atomic import write_atomic
from pyvz.config import ConfigFile, CtConfig, name_owner
from pyvz.ct.container import Container
from pyvz.errors import ExitCode, VzError
from pyvz.host import Host
from pyvz.log import log
from pyvz.migrate.receiver import CT_ACTIONS, HOST_ACTIONS
from pyvz.migrate.replica_receiver import check_config
from pyvz.migrate.replicas import Replica, ReplicaStore
from pyvz.params import IPADD, PRIVATE, ROOT, Layout
from pyvz.resources.policy import disk_quota
from pyvz.storage import pool
from pyvz.storage.base import Area, driver_for
from pyvz.storage.idmap import IdMap


def promote(
    host: Host, ctid: int, start: bool = True, reserve: bool = True, came_from: str = ""
) -> Container:
    """Make the newest replica of `ctid` a CT of this host and start it (unless `start` is
    False); the CT. Refuses (PRIVATE_EXISTS) if CT `ctid` exists here, NO_PRIVATE if there
    is no replica. The replica is gone afterwards.

    In a cluster the CT's CTID, name and addresses are reserved for this host as for a
    created CT (`reserve`), which fails while the CT's old host holds them: the HA leader
    hands them over first and passes reserve=False, as a migration's receiver does.

    `came_from`: the CT's old host (as ssh reaches it), which becomes one of its standbys
    in place of this one (the replicas run the other way from now on)."""
    store = ReplicaStore(host)
    with host.ct_lock(ctid):
        pool.mount_existing(host.paths)
        replica = store.get(ctid)
        if replica is None:
            raise VzError(ExitCode.NO_PRIVATE, f"this host holds no replica of CT {ctid}")
        _sweep_interrupted(host, store, ctid)
        conf_path = host.paths.conf_file(ctid)
        defaults = CtConfig.merge(ctid, host.global_conf.items(), {}, host.paths.vz_conf)
        private = host.paths.host(defaults.require(PRIVATE, ExitCode.VE_PRIVATE_NOTSET))
        if conf_path.exists() or private.exists():
            raise VzError(ExitCode.PRIVATE_EXISTS, f"CT {ctid} already exists on this host")
        conf, area, name = _prepare(host, ctid, replica, defaults)
        _replicate_back(host, conf, came_from or replica.source)
        driver = driver_for(Layout.BTRFS)
        from pyvz.ct.create import new_ct
        from pyvz.storage.btrfs import snapshot

        write_atomic(store.promoting(ctid), f"{os.getpid()}\n", mode=0o600)
        try:
            with new_ct(host, ctid, conf, name, area, driver, reserve=reserve):
                _install_scripts(host, ctid, replica)
                snapshot(replica.files, area.partial)  # writable, and no received UUID
                cfg = CtConfig.merge(ctid, host.global_conf.items(), conf.items(), conf.path)
                driver.apply_quota(area._replace(private=area.partial), disk_quota(cfg))
                os.rename(area.partial, area.private)  # the commit point: the CT is here
        except BaseException:
            _remove_scripts(host, ctid)
            store.promoting(ctid).unlink(missing_ok=True)
            raise
        store.remove(ctid)
        age = max(0.0, replica.received - replica.taken)
        log.info(
            f"CT {ctid} was made from its replica of {_when(replica.taken)} (from {replica.source}; "
            f"received {age:.0f} s after it was taken)"
        )
        ct = Container(host, ctid)
        if start:
            ct.start()
        return ct


def _replicate_back(host: Host, conf: ConfigFile, old_host: str) -> None:
    """REPLICATE named this host: it names the old host instead (if it named any)."""
    targets = (conf.get("REPLICATE") or "").replace(",", " ").split()
    if not targets:
        return
    me = set(_cluster_identity(host)) | {socket.gethostname()}
    kept = [t for t in targets if t.removeprefix("root@") not in me]
    if len(kept) != len(targets) and old_host and old_host not in kept:
        kept.append(old_host)
    conf.set("REPLICATE", ",".join(kept))


def _cluster_identity(host: Host) -> tuple[str, ...]:
    """This host's cluster name and address (what another host's REPLICATE calls it)."""
    from pyvz.cluster import namespace

    if not namespace.clustered(host.paths):
        return ()
    from pyvz.cluster.settings import load

    settings = load(host.paths)
    return (settings.name, settings.address)


def _when(epoch: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _sweep_interrupted(host: Host, store: ReplicaStore, ctid: int) -> None:
    """A promote killed before its commit point left a config and no private area (the CT
    reads `deleted`): it goes, and this promote starts over."""
    marker = store.promoting(ctid)
    if not marker.exists():
        return
    conf_path = host.paths.conf_file(ctid)
    if conf_path.exists():
        area = Container(host, ctid).area()
        if not area.private.exists():
            from pyvz.ct.create import destroy

            destroy(host, ctid, lock=False)
            _remove_scripts(host, ctid)
    marker.unlink(missing_ok=True)


def _remove_scripts(host: Host, ctid: int) -> None:
    for action in HOST_ACTIONS + CT_ACTIONS:
        for suffix in ("", ".migrated"):
            path = host.paths.action_script(ctid, action)
            path.with_name(path.name + suffix).unlink(missing_ok=True)


def _prepare(
    host: Host, ctid: int, replica: Replica, defaults: CtConfig
) -> tuple[ConfigFile, Area, str | None]:
    """The CT's config for this host, and where its files go: checked against this host now."""
    from pyvz.ct.create import taken_uids
    from pyvz.net.venet import check_free

    checked = check_config(host, ctid, replica.config_text)
    conf = ConfigFile.parse(checked.render(), host.paths.conf_file(ctid))
    conf.set("VE_PRIVATE", host.setting("VE_PRIVATE") or str(defaults.raw("VE_PRIVATE")))
    conf.set("VE_ROOT", host.setting("VE_ROOT") or str(defaults.raw("VE_ROOT")))
    name = conf.get("NAME") or None
    if name is not None:
        owner = name_owner(host.paths, name)
        if owner is not None and owner != ctid:
            raise VzError(ExitCode.SET_NAME_ERROR, f"name {name!r} is used by CT {owner} here")
    cfg = CtConfig.merge(ctid, host.global_conf.items(), conf.items(), conf.path)
    check_free(cfg.get(IPADD) or (), host.addresses(but=ctid))
    sent_uid = int(conf.get("LOCAL_UID") or "0")
    # A privileged CT stays one (check_config refused it unless vz.conf allows them); btrfs
    # keeps uid 0 on disk, so any free id range here will do for the others.
    idmap = IdMap(0, 0) if sent_uid == 0 else host.allocate_ids(taken_uids(host))
    conf.set("LOCAL_UID", str(idmap.uid))
    conf.set("LOCAL_GID", str(idmap.gid))
    cfg = CtConfig.merge(ctid, host.global_conf.items(), conf.items(), conf.path)
    private = host.paths.host(cfg.require(PRIVATE, ExitCode.VE_PRIVATE_NOTSET))
    root = host.paths.host(cfg.require(ROOT, ExitCode.VE_ROOT_NOTSET))
    pool.prepare(host.paths, private.parent, True, host.setting("POOL_SIZE"))
    return conf, Area(private, root, idmap), name


def _install_scripts(host: Host, ctid: int, replica: Replica) -> None:
    """The CT's own action scripts; host-side ones are kept aside (not run) unless vz.conf's
    MIGRATE_HOST_SCRIPTS=yes, as for a migrated CT."""
    allow_host = (host.setting("MIGRATE_HOST_SCRIPTS") or "no").lower() == "yes"
    kept = []
    for action, body in replica.scripts.items():
        if action not in HOST_ACTIONS + CT_ACTIONS:
            continue
        target = host.paths.action_script(ctid, action)
        aside = action in HOST_ACTIONS and not allow_host
        if aside:
            target = target.with_name(target.name + ".migrated")
            kept.append(action)
        write_atomic(target, body, mode=0o600 if aside else 0o755)
    if kept:
        log.warning(
            f"CT {ctid}'s host-side scripts are kept aside (not run): {', '.join(kept)} "
            "(MIGRATE_HOST_SCRIPTS=yes in vz.conf allows them)"
        )
