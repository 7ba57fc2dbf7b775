"""vzctl clone: a new CT from a CT or from one of its snapshots, in one command.

It replaces the manual procedure of the seeds (copy the private area, copy the config and
edit it, make the name link): the clone gets its own config, name link, id range, MACs and
host-side interface names, and the hostname and addresses it is given. Addresses are never
copied (two CTs cannot own one address); a clone given none has none.

Like create, the config is written first and the private area appears last under its final
name, so an interrupted clone reads as `deleted` and `vzctl destroy` finishes the cleanup.
"""

from __future__ import annotations

import re
from typing import Any

from pyvz.config import ConfigFile, CtConfig, name_owner
from pyvz.ct.container import Container
from pyvz.ct.freeze import frozen
from pyvz.errors import ExitCode, VzError
from pyvz.host import Host
from pyvz.log import log
from pyvz.params import EPHEMERAL, HOSTNAME, IPADD, NAME, NETIF, parse_options
from pyvz.resources.policy import disk_quota
from pyvz.storage.base import Area
from pyvz.storage.idmap import IdMap


def _moved_path(value: str, source: int, target: int) -> str:
    """VE_PRIVATE/VE_ROOT written with the source's CTID in them name the clone's own."""
    return re.sub(rf"(?<=/){source}(?=/|$)", str(target), value)


def clone(host: Host, source: int, target: int, raw: dict[str, str], snapshot: str | None = None) -> None:
    """Options in `raw` are name, hostname, ipadd and ephemeral, as vzctl create takes them."""
    from pyvz.ct.create import new_ct, taken_uids
    from pyvz.ct.snapshots import Store, parse_uuid, shown
    from pyvz.net import veth
    from pyvz.net.venet import check_free

    values: dict[str, Any] = parse_options(raw)  # syntax first: nothing touched yet
    wanted = parse_uuid(snapshot) if snapshot else None
    if source == target:
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"cannot clone CT {source} onto itself")
    original = Container(host, source)
    copy = Container(host, target)
    with host.ct_lock(source), host.ct_lock(target), host.root_lock():
        source_area = original.require_exists()
        conf_path = host.paths.conf_file(target)
        if conf_path.exists():
            raise VzError(
                ExitCode.PRIVATE_EXISTS, f"CT {target} already exists ({conf_path}); pick another CTID"
            )
        store = Store(source_area)
        if wanted is not None:
            store.get(wanted)
            saved = store.config(wanted)
            text = saved.read_text() if saved.exists() else original.conf_file().render()
            tree = store.files(wanted)
        else:
            text = original.conf_file().render()
            tree = original.driver().own_files(source_area)
        conf = ConfigFile.parse(text, conf_path)
        for key in ("VE_PRIVATE", "VE_ROOT"):
            value = conf.get(key)
            if value:
                conf.set(key, _moved_path(value, source, target))
        name = values.get(NAME.name) or None
        conf.remove("NAME")
        if name is not None:
            owner = name_owner(host.paths, name)
            if owner is not None:
                raise VzError(ExitCode.SET_NAME_ERROR, f"name {name!r} is already used by CT {owner}")
            conf.set("NAME", name)
        # Ephemeral is what this clone is told, not what its source is (a prototype is not).
        conf.remove(EPHEMERAL.key or "")
        if values.get(EPHEMERAL.name):
            conf.set(EPHEMERAL.key or "", EPHEMERAL.fmt(True))
        if HOSTNAME.name in values:
            conf.set(HOSTNAME.key or "", HOSTNAME.fmt(values[HOSTNAME.name]))
        conf.remove(IPADD.key or "")
        if IPADD.name in values:
            check_free(values[IPADD.name], host.addresses(but=target))
            conf.set(IPADD.key or "", IPADD.fmt(values[IPADD.name]))
        netifs = veth.parse_config(conf.get(NETIF.key or "") or "")
        if netifs:
            conf.set(NETIF.key or "", veth.format_config(veth.for_clone(netifs, host.paths.tag, target)))
        cfg = CtConfig.merge(target, host.global_conf.items(), conf.items(), conf_path)
        area = copy.area(cfg)
        if source_area.idmap.privileged:
            idmap = IdMap(0, 0)
        else:
            idmap = host.allocate_ids(taken_uids(host))
            conf.set("LOCAL_UID", str(idmap.uid))
            conf.set("LOCAL_GID", str(idmap.gid))
        area = Area(area.private, area.root, idmap)
        if area.private.exists() or area.private.is_symlink():
            raise VzError(ExitCode.PRIVATE_EXISTS, f"private area {area.private} already exists")
        if area.private.parent != source_area.private.parent:
            raise VzError(
                ExitCode.CANT_CREATE_PRIVATE,
                f"the clone's private area {area.private} must be in the same pool as "
                f"{source_area.private} (its VE_PRIVATE points elsewhere)",
            )
        driver = copy.driver(cfg)
        if driver.layout != original.driver().layout:
            raise VzError(ExitCode.CANT_CREATE_PRIVATE, "a clone keeps its source's layout (VE_LAYOUT)")
        what = f"snapshot {shown(wanted)} of CT {source}" if wanted else f"CT {source}"
        with new_ct(host, target, conf, name, area, driver):
            log.info(f"Cloning {what} to CT {target}")  # once its names are its own
            if driver.copies_data:
                log.info(f"layout {driver.layout}: the clone is a full copy of the CT's files")
            if wanted is None and original.is_running():
                cgroup = host.runtime.cgroups_of(source).container
                with frozen(host.runtime.cgroups, cgroup, f"CT {source}"):
                    driver.clone(tree, source_area, area)
            else:
                driver.clone(tree, source_area, area)
        driver.apply_quota(area, disk_quota(cfg))
        log.info(f"CT {target} is a clone of {what}")
