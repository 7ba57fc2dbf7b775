"""`vzctl set`: change parameters, apply them live where the kernel allows, save with --save."""

from __future__ import annotations

from typing import Any

from pyvz.config import ConfigFile, CtConfig, ct_config, name_owner, remove_name_link, set_name_link
from pyvz.ct.container import Container
from pyvz.errors import ExitCode, VzError
from pyvz.host import Host
from pyvz.log import log
from pyvz.net.venet import check_free, merged_addresses
from pyvz.params import (
    APPLYCONFIG,
    APPLYCONFIG_MAP,
    BINDMOUNT,
    BINDMOUNT_DEL,
    BY_KEY,
    BY_NAME,
    DEVICES,
    DEVNODES,
    DISK_QUOTA,
    DISKINODES,
    DISKSPACE,
    FIREWALL_ACCEPT,
    HA_ENABLE,
    HOSTNAME,
    IPADD,
    IPDEL,
    NAME,
    NAMESERVER,
    NETDEV,
    NETDEV_ADD,
    NETDEV_DEL,
    NETIF,
    NETIF_OPTIONS,
    NOT_APPLIED_FROM_SAMPLE,
    PCI_ADD,
    PCI_DEL,
    PRIVATE,
    REPLICATE,
    ROOT,
    SEARCHDOMAIN,
    USERPASSWD,
    Param,
    SetMode,
    Subsystem,
    parse_options,
)
from pyvz.resources.policy import derived_changes, disk_quota, refuse_escapes, warn_not_enforced


def _from_sample(host: Host, sample: str) -> dict[str, str]:
    """The keys of ve-NAME.conf-sample that describe a class of CT (not one CT)."""
    path = host.paths.sample_file(sample)
    conf = ConfigFile.load(path, missing=ExitCode.APPLY_CONFIG_ERROR)
    return {k: v for k, v in conf.items().items() if k not in NOT_APPLIED_FROM_SAMPLE}


def _warn_ha(host: Host, merged: CtConfig) -> None:
    """HA is the cluster's to enforce: where nothing can act on it, the admin is told so."""
    if not merged.get(HA_ENABLE):
        return
    from pyvz.cluster import namespace

    if not namespace.clustered(host.paths):
        log.warning(
            "HA_ENABLE is saved, but nothing acts on it: this host is in no cluster (vzcluster init/join)"
        )
    elif not merged.get(REPLICATE):
        log.warning("HA_ENABLE is saved, but the CT has no standby to start on: give it --replicate HOST")


def set_params(
    host: Host,
    ctid: int,
    raw: dict[str, str],
    save: bool,
    setmode: SetMode | None = None,
    force: bool = False,
) -> None:
    values: dict[str, Any] = parse_options(raw)
    if not values:
        raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, "set: no parameters given (see vzctl --help)")
    if PCI_ADD.name in values or PCI_DEL.name in values:
        raise VzError(
            ExitCode.SET_DEVICES,
            "Unable to configure PCI devices: mainline Linux cannot pass a PCI device through to "
            "an unprivileged container",
        )
    ct = Container(host, ctid)
    with host.ct_lock(ctid):
        if save and not ct.has_config():
            # As vzctl: the parameters go into a new CTID.conf (a later `create` uses it).
            conf = ConfigFile(host.paths.conf_file(ctid))
            log.warning(f"{conf.path} not found: No such file or directory")
            ct.config = ct_config(host.paths, host.global_conf, conf, ctid)
        else:
            conf = ct.conf_file()
        if DISKSPACE.name in values and (why := ct.driver().quota_missing(ct.area())) is not None:
            raise VzError(ExitCode.DISKQUOTA_SET, f"--diskspace cannot be enforced for CT {ctid}: {why}")
        changes: dict[str, str] = {}  # config key -> new text
        if APPLYCONFIG.name in values:
            changes.update(_from_sample(host, values[APPLYCONFIG.name]))
        for name, value in values.items():
            param = BY_NAME[name]
            if param.key and param.merge is not None:
                old_value = ct.config.get(param)
                changes[param.key] = param.fmt(param.merge(old_value, value))
            elif param.key:
                changes[param.key] = param.fmt(value)
        if BINDMOUNT.name in values or BINDMOUNT_DEL.name in values:
            _bindmounts(host, ct, values, changes, force)
        if NETDEV_ADD.name in values or NETDEV_DEL.name in values:
            netdevs = _netdevs(ct.config.get(NETDEV) or (), values)
            changes[NETDEV.key or ""] = NETDEV.fmt(netdevs)
        running = ct.is_running()
        _check_moved_area(ct, values, running)
        old_addresses = tuple((conf.get(IPADD.key or "") or "").split())
        if IPADD.name in values or IPDEL.name in values:
            add, delete = values.get(IPADD.name, ()), values.get(IPDEL.name, ())
            check_free(add, host.addresses(but=ctid))
            # A running CT is told what it does not have (below); a stopped one here.
            merged_list = merged_addresses(old_addresses, add, delete, warn=not running)
            changes[IPADD.key or ""] = " ".join(merged_list)
        netif_options = {p.name: values[p.name] for p in NETIF_OPTIONS if p.name in values}
        old_netifs = ct.config.get(NETIF) or ()
        new_netifs = old_netifs
        if netif_options:
            from pyvz.net import veth

            new_netifs = veth.edit(old_netifs, netif_options, host.paths.tag, ctid)
            # Only a bridge that is new to an interface is looked up (it may live in another netns).
            old_bridges = {n.ifname: n.bridge for n in old_netifs}
            changed_netifs = tuple(n for n in new_netifs if old_bridges.get(n.ifname) != n.bridge)
            prefix = host.runtime.netns_prefix(ctid) if running else []
            veth.require_bridges(changed_netifs, prefix)
            changes[NETIF.key or ""] = veth.format_config(new_netifs)
        if APPLYCONFIG_MAP.name in values:
            _link_config_name(host, ct, conf)
        new_name = values.get(NAME.name)  # '' removes the name
        if new_name:
            owner = name_owner(host.paths, new_name)
            if owner is not None and owner != ctid:
                raise VzError(ExitCode.SET_NAME_ERROR, f"name {new_name!r} is already used by CT {owner}")
        merged = CtConfig.merge(ctid, host.global_conf.items(), {**conf.items(), **changes}, conf.path)
        derived = derived_changes(merged, changes)
        if derived:
            changes.update(derived)
            merged = CtConfig.merge(ctid, host.global_conf.items(), {**conf.items(), **changes}, conf.path)
        for key in changes:
            if key in BY_KEY:
                merged.get(BY_KEY[key])  # a sample's value must parse too
        changed = {k: v for k, v in changes.items() if conf.get(k) != v}

        refuse_escapes(merged)
        warn_not_enforced(merged, changes, host.runtime.cgroups.enforces)
        if HA_ENABLE.key in changes:
            _warn_ha(host, merged)
        # In a cluster, a saved new name or address is reserved before anything changes
        # (a change that is not saved is this run's alone, and reserves nothing).
        from pyvz.cluster import namespace

        old_keys = namespace.of_config(ctid, conf.items())
        new_keys = namespace.of_config(ctid, {**conf.items(), **changes}) if save else old_keys
        added = {key: what for key, what in new_keys.items() if key not in old_keys}
        held = namespace.reserve_keys(host.paths, ctid, added, "renamed or given new addresses")
        try:
            if USERPASSWD.name in values:
                user, password = values[USERPASSWD.name]
                _set_password(ct, user, password)

            if running and new_netifs != old_netifs:
                _apply_netifs(ct, old_netifs, new_netifs)
            if running and (IPADD.name in values or IPDEL.name in values or FIREWALL_ACCEPT.key in changed):
                _apply_network(ct, merged, values.get(IPADD.name, ()), values.get(IPDEL.name, ()))
            if running and (NETDEV_ADD.name in values or NETDEV_DEL.name in values):
                from pyvz.net import netdev

                netdev.move_live(ct, values.get(NETDEV_ADD.name, ()), values.get(NETDEV_DEL.name, ()))
            if running and BINDMOUNT.key in changed:
                from pyvz.ct import bindmounts

                bindmounts.apply_live(ct, ct.config.get(BINDMOUNT) or (), merged.get(BINDMOUNT) or ())
            if running:
                _apply_live(ct, merged, changed, setmode)
            elif save and {DISKSPACE.key, DISKINODES.key, DISK_QUOTA.key} & changed.keys():
                # The quota lives on the private area itself, so a stopped CT gets it now.
                which = next(p for p in (DISKSPACE, DISKINODES, DISK_QUOTA) if p.key in changed)
                _apply_storage(ct, merged, which)
            if save and changes:
                old_name = conf.get("NAME")
                if new_name:
                    set_name_link(host.paths, new_name, ctid)
                for key, value in changes.items():
                    conf.set(key, value)
                conf.write()
                if new_name is not None and old_name and old_name != new_name:
                    remove_name_link(host.paths, old_name, ctid)
                if new_name is not None:
                    log.info(f"Name {new_name} assigned")  # vzctl's words, also for '' ("Name  assigned")
                log.info(f"Saved parameters for CT {ctid}")
            elif changes and not save and not running:
                log.warning(
                    f"CT {ctid} is not running and --save was not given: nothing was changed "
                    "(add --save to store the parameters)"
                )
            if running and save and changed and setmode == SetMode.RESTART and _needs_restart(changed):
                log.info("Restarting container to apply the new parameters")
                ct.reload()
                ct.stop()
                ct.start()

        except BaseException:
            namespace.release_keys(host.paths, ctid, held)
            raise
        namespace.release_keys(host.paths, ctid, [key for key in old_keys if key not in new_keys])


def _check_moved_area(ct: Container, values: dict[str, Any], running: bool) -> None:
    """--private/--root say where a stopped CT's files were moved to (set moves nothing)."""
    for param, key in ((PRIVATE, "VE_PRIVATE"), (ROOT, "VE_ROOT")):
        if param.name not in values:
            continue
        if running:
            raise VzError(ExitCode.RUNNING, f"Unable to change {key} on a running container")
        if ct.has_config() and ct.driver().is_mounted(ct.area()):
            raise VzError(
                ExitCode.MOUNTED,
                f"Unable to change {key} on a mounted container: `vzctl umount {ct.ctid}` first",
            )


def offline_resize(ct: Container, diskspace: bool) -> None:
    """--offline-resize: a ploop image is resized unmounted; no other layout has an image."""
    if not diskspace:
        raise VzError(
            ExitCode.INVALID_PARAMETER_SYNTAX,
            "Error: option --offline-resize can only be used with --diskspace",
        )
    log.info("Warning: option --offline-resize only makes sense for a ploop CT")


def _link_config_name(host: Host, ct: Container, conf: ConfigFile) -> None:
    """--applyconfig_map name: the names/ link for the NAME the config holds."""
    name = conf.get(NAME.key or "")
    if not name:
        raise VzError(ExitCode.APPLY_CONFIG_ERROR, f"CT {ct.ctid}'s config has no NAME to apply")
    owner = name_owner(host.paths, name)
    if owner is not None and owner != ct.ctid:
        raise VzError(ExitCode.SET_NAME_ERROR, f"name {name!r} is already used by CT {owner}")
    set_name_link(host.paths, NAME.parse(name), ct.ctid)
    log.info(f"Name {name} assigned")


def reset_ub(host: Host, ctid: int, other_options: bool) -> None:
    """--reset_ub: the config's resource limits onto the running CT, as after a hand edit."""
    if other_options:
        raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, "--reset_ub cannot be combined with other options")
    ct = Container(host, ctid)
    with host.ct_lock(ctid):
        ct.require_exists()
        if not ct.is_running():
            raise VzError(ExitCode.NOT_RUNNING, f"unable to apply UBC parameters: CT {ctid} is not running")
        runtime = ct.host.runtime
        limits = ct.limits(ct.config, live=True)
        for problem in runtime.cgroups.unenforced(limits):
            log.warning(problem)
        runtime.cgroups.apply(runtime.cgroups_of(ctid).container, limits)
        log.info("UB limits were set successfully")


def _needs_restart(changed: dict[str, str]) -> bool:
    return any(key in BY_KEY and not BY_KEY[key].live for key in changed)


def _apply_live(ct: Container, cfg: CtConfig, changed: dict[str, str], setmode: SetMode | None) -> None:
    """Apply what can change under a running CT; say plainly what cannot."""
    appliers = {
        Subsystem.DISTRO: _apply_distro,
        Subsystem.STORAGE: _apply_storage,
        Subsystem.DEVICES: _apply_devices,
    }
    resources = []
    for key in changed:
        param: Param[Any] | None = BY_KEY.get(key)
        if param is None:
            log.warning(f"{key} is saved but pyvz does not know it; it has no effect")
            continue
        if not param.live:
            if setmode != SetMode.RESTART:
                log.warning(f"{key} takes effect after a restart (use --setmode restart)")
            continue
        if param.subsystem in (Subsystem.NETWORK, Subsystem.NETDEV):
            continue  # applied above, from the old and new lists
        if param.subsystem is Subsystem.RESOURCES:
            resources.append(param)  # the cgroup gets every limit in one pass, below
            continue
        applier = appliers.get(param.subsystem)
        if applier:
            applier(ct, cfg, param)
    if resources:
        _apply_resources(ct, cfg, resources)


def _apply_netifs(ct: Container, old: tuple[Any, ...], new: tuple[Any, ...]) -> None:
    """Running CT: remove what went or changed, add what came or changed, refresh MAC filters."""
    from pyvz.net import firewall, veth

    prefix = ct.host.runtime.netns_prefix(ct.ctid)
    pid = ct.init_pid()

    # A new bridge or MAC filter changes the host side only; new names or MACs need a new pair.
    def device(n: Any) -> Any:
        return n._replace(bridge="", mac_filter="")

    for netif in old:
        if device(netif) not in {device(n) for n in new}:
            veth.delete_live(netif, prefix)
    for netif in new:
        if device(netif) not in {device(n) for n in old}:
            veth.add_live(netif, pid, prefix)
        elif netif.bridge not in {n.bridge for n in old if n.ifname == netif.ifname}:
            veth.host_setup((netif._replace(host_mac=""),), prefix)
    firewall.install(veth.filter_rules(ct.firewall_table(), new), prefix)
    log.info(f"Interfaces of the running CT: {' '.join(n.ifname for n in new) or 'none'}")


def _apply_network(ct: Container, cfg: CtConfig, add: tuple[str, ...], delete: tuple[str, ...]) -> None:
    """Change what the running CT has now (which may differ from its saved config)."""
    from pyvz.net import firewall, venet

    prefix = ct.host.runtime.netns_prefix(ct.ctid)
    pid = ct.init_pid()
    live = venet.live_addresses(pid)
    old = live or ()
    new = venet.merged_addresses(old, add, delete)
    venet.change_live(ct.ifname, pid, old, new, prefix, has_link=live is not None)
    if new:
        accept = cfg.get(FIREWALL_ACCEPT) or ()
        firewall.install(firewall.render(ct.firewall_table(), ct.ifname, new, accept), prefix)
    else:
        firewall.remove(ct.firewall_table(), prefix)
    log.info(f"Network of the running CT: {' '.join(new) or 'no addresses'}")


def _apply_distro(ct: Container, cfg: CtConfig, param: Param[Any]) -> None:
    resolver = param in (NAMESERVER, SEARCHDOMAIN)
    if resolver and ct.distro().set_resolver(
        ct.view(), cfg.get(NAMESERVER) or (), cfg.get(SEARCHDOMAIN) or ()
    ):
        log.info("File resolv.conf was modified")
    if param is HOSTNAME:
        hostname = cfg.get(HOSTNAME)
        if hostname:
            distro = ct.distro()
            distro.set_hostname(ct.view(), hostname)
            from pyvz.run import run

            run(ct.host.runtime.attach_argv(ct.ctid, list(distro.hostname_command(hostname))))
            log.info(f"Set hostname: {hostname}")


def _apply_resources(ct: Container, cfg: CtConfig, params: list[Param[Any]]) -> None:
    runtime = ct.host.runtime
    limits = ct.limits(cfg, live=True)
    for problem in runtime.cgroups.unenforced(limits):
        log.warning(problem)
    runtime.cgroups.apply(runtime.cgroups_of(ct.ctid).container, limits)
    log.info(f"Set {', '.join(p.key or p.name for p in params)} on the running CT")


def _apply_storage(ct: Container, cfg: CtConfig, param: Param[Any]) -> None:
    """DISKSPACE, DISKINODES or DISK_QUOTA changed: the quota the CT now gets (none with
    DISK_QUOTA=no)."""
    driver, area = ct.driver(), ct.area()
    if (why := driver.quota_missing(area)) is not None:
        if param is not DISKSPACE:  # set refuses --diskspace there
            log.warning(f"{param.key} not enforced: {why}")
        return
    quota = disk_quota(cfg)
    driver.set_quota(area, quota)
    log.info("Disk quota was set" if quota is not None else "Disk quota was removed")


def _netdevs(old: tuple[str, ...], values: dict[str, Any]) -> tuple[str, ...]:
    delete = values.get(NETDEV_DEL.name, ())
    for name in delete:
        if name not in old:
            raise VzError(ExitCode.NETDEV_ERROR, f"network device {name} is not in the CT")
    kept = [name for name in old if name not in delete]
    return tuple(kept + [name for name in values.get(NETDEV_ADD.name, ()) if name not in kept])


def _bindmounts(
    host: Host, ct: Container, values: dict[str, Any], changes: dict[str, str], force: bool
) -> None:
    """--bindmount_del first, then --bindmount_add, each source checked against the host."""
    from pyvz.ct.bindmounts import check_sources
    from pyvz.runtime.bindmount import merge, remove

    added = values.get(BINDMOUNT.name, ())
    check_sources(host, added, force)
    kept = remove(ct.config.get(BINDMOUNT) or (), values.get(BINDMOUNT_DEL.name, ()))
    changes[BINDMOUNT.key or ""] = BINDMOUNT.fmt(merge(kept, added))


def _apply_devices(ct: Container, cfg: CtConfig, param: Param[Any]) -> None:
    if param is DEVNODES or param is DEVICES:
        from pyvz.ct import devices

        devices.apply_live(ct, cfg)


def _set_password(ct: Container, user: str, password: str) -> None:
    ct.require_exists()
    mounted_here = ct.mount()
    try:
        created = ct.distro().set_password(ct.view(), user, password)
    except OSError as err:
        raise VzError(ExitCode.CHANGE_PASSWORD, f"cannot change the password of {user}: {err}") from None
    finally:
        if mounted_here:
            ct.umount()
    log.info(f"{'Created user' if created else 'Changed password of user'} {user}")
