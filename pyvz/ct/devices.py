"""A CT's view of the host beyond its files: LXCFS's /proc and /sys files, its devices, its
capabilities and its seccomp policy, as LXC lines for a start, and devices changed live."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pyvz.atomic import write_atomic
from pyvz.config import CtConfig
from pyvz.log import log
from pyvz.params import CAPABILITY, DEVICES, DEVNODES, FEATURES, MEMINFO, NETFILTER
from pyvz.runtime import access, lxcfs
from pyvz.runtime.access import Device

if TYPE_CHECKING:
    from pyvz.ct.container import Container


def wanted_devices(cfg: CtConfig) -> list[Device]:
    """DEVNODES (numbers from this host; a node gone from it is said and skipped), DEVICES,
    and what the features that are on need."""
    found: list[Device] = []
    for node in cfg.get(DEVNODES) or ():
        device = access.resolved(node)
        if device is None:
            log.warning(f"/dev/{node.name} is not a device on this host: the CT does not get it")
        else:
            found.append(device)
    found += [d for d in cfg.get(DEVICES) or () if isinstance(d, Device)]
    found += list(access.feature_devices(cfg.get(FEATURES) or ()))
    return found


def own_nodes(ct: Container, wanted: list[Device]) -> dict[Device, Path]:
    """The CT's own copies of its devices' nodes (ct_dir/dev), made anew at each start."""
    area = ct.area()
    owner = (area.idmap.uid, area.idmap.gid)
    directory = ct.host.runtime.ct_dir(ct.ctid) / "dev"
    nodes = {}
    for device in wanted:
        if device.perm:
            node = access.make_node(device, directory, owner)
            if node is not None:
                nodes[device] = node
    return nodes


def shows_meminfo(cfg: CtConfig) -> bool:
    return cfg.get(MEMINFO) != "none"


def start_lines(ct: Container, cfg: CtConfig) -> tuple[str, ...]:
    """Everything of this module a start (or restore) gives LXC."""
    lines: list[str] = list(lxcfs.CLEAR_PACKAGE_HOOKS)
    use_lxcfs = ct.host.setting("LXCFS", "yes") != "no"  # vz.conf LXCFS=no: CTs see the host's
    # ensure() also heals the running CTs (of every root) if LXCFS is new to them.
    if use_lxcfs and lxcfs.ensure() is not None:
        lines += lxcfs.lxc_lines(lxcfs.views(shows_meminfo(cfg)))
    cgroup_key = ct.host.runtime.cgroups.lxc_key("devices").rsplit(".", 1)[0]
    wanted = wanted_devices(cfg)
    lines += access.device_lines(wanted, cgroup_key, own_nodes(ct, wanted))
    lines += access.capability_lines(cfg.get(CAPABILITY) or ())
    profile = ct.host.runtime.ct_dir(ct.ctid) / "seccomp"
    profile.parent.mkdir(parents=True, exist_ok=True)
    text = access.seccomp_profile(cfg.get(NETFILTER))
    if not profile.exists() or profile.read_text() != text:
        write_atomic(profile, text, durable=False)
    lines.append(f"lxc.seccomp.profile = {profile}")
    return tuple(lines)


def apply_live(ct: Container, cfg: CtConfig) -> None:
    """A running CT gets its new device list now: cgroup rules first (so a node it is
    given can be opened at once), then the nodes bound in or taken away."""
    old = {(d.kind, d.major, d.minor): d for d in wanted_devices(ct.config)}
    new = {(d.kind, d.major, d.minor): d for d in wanted_devices(cfg)}
    runtime = ct.host.runtime
    relative = runtime.cgroups_of(ct.ctid).container
    rules = [
        (False, d._replace(perm="rw").rule()) for k, d in old.items() if k not in new or new[k].perm != d.perm
    ]
    rules += [(True, d.rule()) for d in new.values()]
    for allow, rule in rules:
        if not runtime.cgroups.write_device_rule(relative, allow, rule):
            log.warning("the device list takes effect after a restart (cgroup v2 cannot change it live)")
            return
    pid = ct.init_pid()
    from pyvz.storage.idmount import bind_into_ct, unmount_in_ct

    gone = [d.node() for k, d in old.items() if k not in new and d.node()]
    if gone:
        unmount_in_ct(pid, gone)
    nodes = own_nodes(ct, [d for k, d in new.items() if k not in old])
    if nodes:
        bind_into_ct(pid, [(str(node), d.node(), False) for d, node in nodes.items()], replace=True)
    log.info(f"Devices of the running CT: {' '.join(d.rule() for d in new.values()) or 'the base set'}")
