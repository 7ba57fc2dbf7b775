"""What a CT may touch: device nodes, capabilities, features and netfilter, in vzctl's
config forms (DEVNODES, DEVICES, CAPABILITY, FEATURES, NETFILTER), turned into LXC lines.

On mainline Linux a pyvz CT runs in its own user namespace: it cannot mknod, its
capabilities count inside that namespace only, and its network namespace has the whole of
netfilter. So a device reaches it as a bind mount of the host's node plus a device-cgroup
rule; `capability X:off` drops X from its bounding set; a feature is what the host must give
(a device node, a kernel module the CT cannot load) or one line saying what mainline cannot.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from pyvz.errors import VzError
from pyvz.units import bad_value

DEV = Path("/dev")

# ---- device nodes --------------------------------------------------------------------------


class Device(NamedTuple):
    """A device the CT may use: by name (--devnodes) or by number (--devices)."""

    kind: str  # "c" or "b"
    major: int
    minor: int | None  # None: every minor (--devices c:MAJOR:all:PERM)
    perm: str  # "r", "w", "rw" (with "q" kept for vzctl's quota bit); "" is none
    name: str = ""  # path under /dev for --devnodes

    def rule(self) -> str:
        minor = "*" if self.minor is None else str(self.minor)
        return f"{self.kind} {self.major}:{minor} {self.perm.replace('q', '')}"

    def node(self) -> str:
        """The host's node to bind into the CT ('' if there is none to bind)."""
        if self.name:
            return str(DEV / self.name)
        if self.minor is None:
            return ""
        kind = "char" if self.kind == "c" else "block"
        try:
            uevent = Path(f"/sys/dev/{kind}/{self.major}:{self.minor}/uevent").read_text()
        except OSError:
            return ""
        found = re.search(r"^DEVNAME=(.+)$", uevent, re.M)
        return str(DEV / found.group(1)) if found else ""


_PERM_ORDER = "rwq"
_LOOP_MAJOR = 7  # loop devices let a CT mount any image as any filesystem: never given


def _perm(text: str, what: str, whole: str) -> str:
    if text == "none":
        return ""
    if not text or any(c not in _PERM_ORDER for c in text):
        raise bad_value(what, whole, "the access must be r, w, rw or none")
    return "".join(c for c in _PERM_ORDER if c in text)


def _fmt_perm(perm: str) -> str:
    return perm or "none"


_NODE_NAME = re.compile(r"[A-Za-z0-9_+.-]+(/[A-Za-z0-9_+.-]+)*")


def parse_devnodes(text: str) -> tuple[Device, ...]:
    """DEVNODES: `net/tun:rw fuse:r`, syntax only (a config must load on any host)."""
    found: dict[str, Device] = {}
    for word in text.split():
        name, sep, perm = word.rpartition(":")
        name = name.removeprefix("/dev/")
        if not sep or not _NODE_NAME.fullmatch(name) or ".." in name.split("/"):
            raise bad_value("devnodes", word, "expected NAME:r|w|rw|none, NAME a device under /dev")
        found[name] = Device("c", 0, 0, _perm(perm, "devnodes", word), name)
    return tuple(found.values())


def check_devnodes(devices: tuple[Device, ...]) -> tuple[Device, ...]:
    """--devnodes: the node must be a device on this host, as vzctl checks; numbers filled in."""
    checked = []
    for device in devices:
        path = DEV / device.name
        try:
            info = os.stat(path)
        except OSError as err:
            raise bad_value(
                "devnodes", device.name, f"incorrect device name {path}: {err.strerror}"
            ) from None
        if not (stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)):
            raise bad_value("devnodes", device.name, f"{path} is not a block or character device")
        if os.major(info.st_rdev) == _LOOP_MAJOR:
            raise bad_value("devnodes", device.name, "loop devices are not given to CTs")
        kind = "c" if stat.S_ISCHR(info.st_mode) else "b"
        checked.append(device._replace(kind=kind, major=os.major(info.st_rdev), minor=os.minor(info.st_rdev)))
    return tuple(checked)


def resolved(device: Device) -> Device | None:
    """A DEVNODES entry with its numbers from this host, or None where the node is gone."""
    try:
        return check_devnodes((device,))[0]
    except VzError:  # a node gone from the host: the start says so and goes on without it
        return None


def format_devnodes(devices: tuple[Device, ...]) -> str:
    return " ".join(f"{d.name}:{_fmt_perm(d.perm)}" for d in devices if d.perm)


def parse_devices(text: str) -> tuple[Device, ...]:
    """DEVICES: `c:10:200:rw b:8:all:r`."""
    found: dict[tuple[str, int, int | None], Device] = {}
    for word in text.split():
        parts = word.split(":")
        if len(parts) != 4 or parts[0] not in ("b", "c") or not parts[1].isdigit():
            raise bad_value("devices", word, "expected b|c:MAJOR:MINOR|all:r|w|rw|none")
        major = int(parts[1])
        if parts[2] != "all" and not parts[2].isdigit():
            raise bad_value("devices", word, "the minor must be a number or all")
        if major == _LOOP_MAJOR:
            raise bad_value("devices", word, "loop devices are not given to CTs")
        if major > 4095 or (parts[2] != "all" and int(parts[2]) > 1048575):
            raise bad_value("devices", word, "no such device number")
        minor = None if parts[2] == "all" else int(parts[2])
        found[(parts[0], major, minor)] = Device(parts[0], major, minor, _perm(parts[3], "devices", word))
    return tuple(found.values())


def format_devices(devices: tuple[Device, ...]) -> str:
    return " ".join(
        f"{d.kind}:{d.major}:{'all' if d.minor is None else d.minor}:{_fmt_perm(d.perm)}"
        for d in devices
        if d.perm
    )


def merge_devices(old: tuple[Device, ...], new: tuple[Device, ...]) -> tuple[Device, ...]:
    """vzctl's merge: a new entry replaces the old one for the same node; `none` removes it."""

    def key(d: Device) -> tuple[str, int, int | None] | str:
        return d.name or (d.kind, d.major, d.minor)

    merged = {key(d): d for d in old}
    merged.update({key(d): d for d in new})
    return tuple(d for d in merged.values() if d.perm)


# What LXC's common.conf allows (pyvz CTs are unprivileged, and userns.conf drops the list
# because an unprivileged *user* cannot set it; pyvz starts CTs as root and can).
_BASE_RULES = (
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
)


def device_lines(devices: Iterable[Device], cgroup_key: str, nodes: Mapping[Device, Path]) -> list[str]:
    """The CT's device cgroup: deny all, allow the base set and its own devices; `nodes`
    are the CT's own copies of the host's nodes to bind in (a CT in a user namespace
    cannot mknod, and the host's are owned by a uid it does not have)."""
    lines = [f"{cgroup_key}.devices.deny = a"]
    lines += [f"{cgroup_key}.devices.allow = {rule}" for rule in _BASE_RULES]
    mounts = []
    for device in devices:
        if not device.perm:
            continue
        lines.append(f"{cgroup_key}.devices.allow = {device.rule()}")
        if device in nodes:
            target = device.node().lstrip("/")
            mounts.append(f"lxc.mount.entry = {nodes[device]} {target} none bind,optional,create=file 0 0")
    return lines + mounts


def make_node(device: Device, directory: Path, owner: tuple[int, int]) -> Path | None:
    """A copy of the host's node for `device`, owned by the CT's root, in `directory`."""
    host_node = device.node()
    if not host_node:
        return None
    try:
        info = os.stat(host_node)
    except OSError:
        return None
    kind = stat.S_IFCHR if device.kind == "c" else stat.S_IFBLK
    if stat.S_IFMT(info.st_mode) != kind or info.st_rdev != os.makedev(device.major, device.minor or 0):
        return None
    path = directory / f"{device.kind}{device.major}:{device.minor}"
    directory.mkdir(mode=0o711, parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    os.mknod(path, kind | 0o600, info.st_rdev)
    os.chown(path, *owner)
    return path


# ---- capabilities --------------------------------------------------------------------------

# vzctl's names (its cap.c order); the kernel's numbers are the same for these.
CAPABILITIES = (
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "VE_ADMIN",
    "SETFCAP",
)
# A privileged CT (LOCAL_UID=0) holding one of these could reach past itself: load kernel
# code, write raw memory and ports, set the host's clock, change the host's MAC policy.
ESCAPES = {
    "SYS_MODULE": "would let it load code into the host's kernel",
    "SYS_RAWIO": "would let it write the host's memory and I/O ports",
    "SYS_TIME": "would let it set the host's clock",
}
# In a user namespace the kernel checks these against the host's namespace: no effect.
HOST_ONLY = frozenset({"SYS_MODULE", "SYS_RAWIO", "SYS_TIME", "SYS_PACCT"})


def parse_capabilities(text: str) -> tuple[tuple[str, bool], ...]:
    """CAPABILITY: `NET_ADMIN:off chown:on` (names in any case, `,` or blanks between)."""
    found: dict[str, bool] = {}
    for word in text.replace(",", " ").split():
        name, sep, state = word.rpartition(":")
        name = name.upper().removeprefix("CAP_")
        if not sep or state not in ("on", "off"):
            raise bad_value("capability", word, "expected NAME:on|off")
        if name not in CAPABILITIES:
            raise bad_value("capability", word, f"capability {name.lower()} is unknown")
        found[name] = state == "on"
    return tuple((name, found[name]) for name in CAPABILITIES if name in found)


def _format_switches(value: tuple[tuple[str, bool], ...], order: Iterable[str]) -> str:
    """NAME:on|off words, in vzctl's order of the names."""
    states = dict(value)
    return " ".join(f"{n}:{'on' if states[n] else 'off'}" for n in order if n in states)


def format_capabilities(value: tuple[tuple[str, bool], ...]) -> str:
    return _format_switches(value, CAPABILITIES)


def merge_switches(
    old: tuple[tuple[str, bool], ...], new: tuple[tuple[str, bool], ...]
) -> tuple[tuple[str, bool], ...]:
    merged = dict(old)
    merged.update(new)
    order = CAPABILITIES if all(name in CAPABILITIES for name in merged) else tuple(FEATURES)
    return tuple((name, merged[name]) for name in order if name in merged)


def capability_lines(value: tuple[tuple[str, bool], ...]) -> list[str]:
    dropped = [n.lower() for n, on in value if not on and n != "VE_ADMIN"]
    return [f"lxc.cap.drop = {' '.join(dropped)}"] if dropped else []


def capability_problems(value: tuple[tuple[str, bool], ...], privileged: bool) -> tuple[list[str], list[str]]:
    """(refused, notes): what must not be given, and what is saved with no effect here."""
    refused, notes = [], []
    for name, on in value:
        if name == "VE_ADMIN":
            notes.append("capability ve_admin exists only in OpenVZ kernels")
        elif on and privileged and name in ESCAPES:
            refused.append(
                f"capability {name.lower()}:on {ESCAPES[name]} (the CT is privileged: LOCAL_UID=0)"
            )
        elif on and not privileged and name in HOST_ONLY:
            notes.append(f"capability {name.lower()}:on has no effect in an unprivileged CT")
    return refused, notes


# ---- features ------------------------------------------------------------------------------


class Feature(NamedTuple):
    devices: tuple[Device, ...]  # nodes the CT needs
    kernel: str  # a /sys/module or /proc/filesystems name the host must have ('' none)
    mainline: str  # '' or why mainline cannot give it to an unprivileged CT


FEATURES: Mapping[str, Feature] = {
    "sysfs": Feature((), "", ""),  # every CT has its own /sys
    "nfs": Feature(
        (), "", "the kernel does not let a user namespace mount NFS: mount it on the host and bind it in"
    ),
    "sit": Feature((), "sit", ""),
    "ipip": Feature((), "ipip", ""),
    "ppp": Feature((Device("c", 108, 0, "rw", "ppp"),), "ppp_generic", ""),
    "ipgre": Feature((), "ip_gre", ""),
    "bridge": Feature((), "bridge", ""),
    "nfsd": Feature((), "", "the kernel NFS server does not run in a user namespace"),
    "fuse": Feature((Device("c", 10, 229, "rw", "fuse"),), "fuse", ""),
}


def parse_features(text: str) -> tuple[tuple[str, bool], ...]:
    found: dict[str, bool] = {}
    for word in text.replace(",", " ").split():
        name, sep, state = word.partition(":")
        if not sep or state not in ("on", "off") or name not in FEATURES:
            raise bad_value("features", word, f"expected NAME:on|off, NAME one of {', '.join(FEATURES)}")
        found[name] = state == "on"
    return tuple((name, found[name]) for name in FEATURES if name in found)


def format_features(value: tuple[tuple[str, bool], ...]) -> str:
    return _format_switches(value, FEATURES)


def host_has(kernel: str) -> bool:
    if not kernel:
        return True
    if Path("/sys/module", kernel).exists():
        return True
    try:
        return any(line.split()[-1] == kernel for line in Path("/proc/filesystems").read_text().splitlines())
    except OSError:
        return False


def feature_devices(value: tuple[tuple[str, bool], ...]) -> tuple[Device, ...]:
    """The nodes the features that are on need, where the host has them."""
    found: list[Device] = []
    for name, on in value:
        if on:
            found += [d for d in FEATURES[name].devices if Path(d.node()).exists()]
    return tuple(found)


def feature_problems(value: tuple[tuple[str, bool], ...]) -> list[str]:
    notes = []
    for name, on in value:
        feature = FEATURES[name]
        if on and feature.mainline:
            notes.append(f"feature {name}: {feature.mainline}")
        elif on and not host_has(feature.kernel):
            notes.append(f"feature {name}: this host's kernel has no {feature.kernel}")
        elif on and any(not Path(d.node()).exists() for d in feature.devices):
            notes.append(f"feature {name}: this host has no {' '.join(d.node() for d in feature.devices)}")
        elif not on and name in ("sysfs", "bridge", "sit", "ipip", "ipgre"):
            notes.append(
                f"feature {name}:off cannot be enforced: the CT's network namespace and /sys allow it"
            )
    return notes


# ---- netfilter -----------------------------------------------------------------------------

NETFILTER_MODES = ("disabled", "stateless", "stateful", "full")


def parse_netfilter(text: str) -> str:
    if text not in NETFILTER_MODES:
        raise bad_value("netfilter", text, f"incorrect netfilter value (one of {', '.join(NETFILTER_MODES)})")
    return text


def netfilter_problem(mode: str | None) -> str:
    if mode in ("stateless", "stateful"):
        return (
            f"netfilter {mode}: a CT's own network namespace has the whole of netfilter on mainline "
            "(conntrack and NAT included); it acts as full"
        )
    return ""


# socket(AF_NETLINK, *, NETLINK_NETFILTER) is how nft and iptables-nft program netfilter;
# setsockopt(IPT_SO_SET_REPLACE) how legacy iptables does (for IPv4, IPv6 and ARP alike).
_NETFILTER_DENIED = (
    "socket errno 1 [0,16,SCMP_CMP_EQ][2,12,SCMP_CMP_EQ]",
    "setsockopt errno 1 [1,0,SCMP_CMP_EQ][2,64,SCMP_CMP_EQ]",
    "setsockopt errno 1 [1,41,SCMP_CMP_EQ][2,64,SCMP_CMP_EQ]",
    "setsockopt errno 1 [1,0,SCMP_CMP_EQ][2,96,SCMP_CMP_EQ]",
)
LXC_SECCOMP = Path("/usr/share/lxc/config/common.seccomp")


def seccomp_profile(netfilter: str | None) -> str:
    """The CT's seccomp policy: LXC's own, plus no netfilter for `--netfilter disabled`."""
    base = LXC_SECCOMP.read_text() if LXC_SECCOMP.exists() else "2\ndenylist\n[all]\n"
    if netfilter != "disabled":
        return base
    return base.rstrip("\n") + "\n" + "\n".join(_NETFILTER_DENIED) + "\n"
