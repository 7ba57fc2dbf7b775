"""Bridged veth interfaces (vzctl's NETIF): a CT's own Ethernet device on a host bridge.

Stored as vzctl stores them: NETIF="ifname=eth0,mac=..,host_ifname=..,host_mac=..,bridge=..;..."
A MAC that is not given is generated once (OpenVZ's 00:18:51 prefix) and saved, so it stays
the CT's. mac_filter=on drops frames whose source MAC is not the CT's, in a bridge-family
nftables table of its own.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

from pyvz.errors import ExitCode, VzError
from pyvz.run import run

_MAC_RE = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_IFNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
FIELDS = ("ifname", "mac", "host_ifname", "host_mac", "bridge", "mac_filter")


class Netif(NamedTuple):
    ifname: str
    mac: str = ""
    host_ifname: str = ""
    host_mac: str = ""
    bridge: str = ""
    mac_filter: str = ""  # "on" | "off" | "" (off)

    def text(self) -> str:
        return ",".join(f"{name}={value}" for name, value in zip(FIELDS, self, strict=True) if value)


def bad(what: str, text: str, why: str) -> VzError:
    return VzError(ExitCode.INVALID_IP, f"invalid {what} {text!r}: {why}")


def check_mac(text: str) -> str:
    if not _MAC_RE.fullmatch(text):
        raise bad("MAC address", text, "expected six hex octets, e.g. 00:18:51:12:34:56")
    if int(text[:2], 16) & 1:
        raise bad("MAC address", text, "a multicast address cannot be an interface's")
    return text.upper()


def check_ifname(text: str, what: str = "interface name") -> str:
    if not _IFNAME_RE.fullmatch(text):
        raise bad(what, text, "letters, digits, '_', '-', '.', up to 15 characters")
    return text


def check_mac_filter(text: str) -> str:
    if text.lower() not in ("on", "off"):
        raise bad("mac_filter", text, "expected on or off")
    return text.lower()


def parse_add(text: str) -> Netif:
    """--netif_add ifname[,mac,host_ifname,host_mac,bridge]; empty fields are defaults."""
    parts = text.split(",")
    if len(parts) > 5 or not parts[0]:
        raise bad("--netif_add", text, "expected ifname[,mac,host_ifname,host_mac,bridge]")
    parts += [""] * (5 - len(parts))
    ifname, mac, host_ifname, host_mac, bridge = parts
    return Netif(
        check_ifname(ifname),
        check_mac(mac) if mac else "",
        check_ifname(host_ifname, "host interface name") if host_ifname else "",
        check_mac(host_mac) if host_mac else "",
        check_ifname(bridge, "bridge name") if bridge else "",
    )


def parse_config(text: str) -> tuple[Netif, ...]:
    netifs = []
    for item in filter(None, text.split(";")):
        values = dict(pair.partition("=")[::2] for pair in item.split(","))
        unknown = set(values) - set(FIELDS)
        if unknown or "ifname" not in values:
            raise VzError(ExitCode.INVALID_CONFIG, f"malformed NETIF entry {item!r}")
        netif = Netif(*(values.get(name, "") for name in FIELDS))
        check_ifname(netif.ifname)
        for mac in (netif.mac, netif.host_mac):
            if mac:
                check_mac(mac)
        netifs.append(netif)
    return tuple(netifs)


def format_config(netifs: tuple[Netif, ...]) -> str:
    return ";".join(n.text() for n in netifs)


def new_mac() -> str:
    return "00:18:51:" + ":".join(f"{b:02X}" for b in os.urandom(3))


def host_default(tag: str, ctid: int, index: int) -> str:
    """vzctl's veth101.0 for the default root; other roots get their tag in the name."""
    name = f"veth{ctid}.{index}" if tag == "pyvz" else f"v{tag[-3:]}.{ctid}.{index}"
    return name if len(name) <= 15 else f"v{ctid:x}.{index}"[:15]


def complete(netif: Netif, tag: str, ctid: int, index: int) -> Netif:
    """Fill in what was not given: MACs (generated once, then saved) and the host name."""
    return netif._replace(
        mac=netif.mac or new_mac(),
        host_mac=netif.host_mac or new_mac(),
        host_ifname=netif.host_ifname or host_default(tag, ctid, index),
    )


def bridge_exists(bridge: str, prefix: list[str]) -> bool:
    done = run([*prefix, "ip", "-o", "link", "show", "dev", bridge, "type", "bridge"], check=False)
    return done.returncode == 0 and bool(done.stdout.strip())


def require_bridges(netifs: tuple[Netif, ...], prefix: list[str]) -> None:
    for netif in netifs:
        if netif.bridge and not bridge_exists(netif.bridge, prefix):
            raise bad("bridge", netif.bridge, "no such bridge on the host")


def lxc_lines(netifs: tuple[Netif, ...], first: int) -> list[str]:
    lines = []
    for offset, netif in enumerate(netifs):
        key = f"lxc.net.{first + offset}"
        lines += [
            f"{key}.type = veth",
            f"{key}.name = {netif.ifname}",
            f"{key}.hwaddr = {netif.mac}",
            f"{key}.veth.pair = {netif.host_ifname}",
            f"{key}.flags = up",
        ]
    return lines


def host_setup(netifs: tuple[Netif, ...], prefix: list[str]) -> None:
    """After LXC made the pairs: the host-side MACs (LXC has no key for them) and the bridge.

    pyvz, not LXC, puts the port on its bridge: LXC looks the bridge up in /sys, which shows
    the host's namespace even when the CT starts in another one.
    """
    lines = [f"link set dev {n.host_ifname} address {n.host_mac}" for n in netifs if n.host_mac]
    lines += [f"link set dev {n.host_ifname} master {n.bridge} up" for n in netifs if n.bridge]
    # LXC brings the host ends up at start; after a CRIU restore they are still down.
    lines += [f"link set dev {n.host_ifname} up" for n in netifs if not n.bridge]
    if lines:
        run([*prefix, "ip", "-batch", "-"], input="\n".join(lines) + "\n", error_code=ExitCode.SET_IP_ERROR)


def add_live(netif: Netif, pid: int, prefix: list[str]) -> None:
    lines = [
        f"link add {netif.host_ifname} address {netif.host_mac} type veth "
        f"peer name {netif.ifname} address {netif.mac} netns {pid}",
        f"link set {netif.host_ifname} up",
    ]
    if netif.bridge:
        lines.append(f"link set {netif.host_ifname} master {netif.bridge}")
    run([*prefix, "ip", "-batch", "-"], input="\n".join(lines) + "\n", error_code=ExitCode.SET_IP_ERROR)
    run(["nsenter", f"--net=/proc/{pid}/ns/net", "--", "ip", "link", "set", netif.ifname, "up"])


def delete_live(netif: Netif, prefix: list[str]) -> None:
    run([*prefix, "ip", "link", "del", netif.host_ifname], check=False)  # takes the CT's end too


def filter_rules(table: str, netifs: tuple[Netif, ...]) -> str:
    """The bridge-family table that drops frames a CT sends with a MAC that is not its own."""
    rules = [
        f'    iifname "{n.host_ifname}" ether saddr != {n.mac} drop' for n in netifs if n.mac_filter == "on"
    ]
    lines = [f"add table bridge {table}", f"delete table bridge {table}"]
    if rules:
        lines += [
            f"table bridge {table} {{",
            "  chain macfilter {",
            "    type filter hook prerouting priority -300; policy accept;",
            *rules,
            "  }",
            "}",
        ]
    return "\n".join(lines) + "\n"


def edit(current: tuple[Netif, ...], options: dict[str, str], tag: str, ctid: int) -> tuple[Netif, ...]:
    """Apply --netif_del, --netif_add and --ifname with its --mac/--host_*/--bridge/--mac_filter."""
    netifs = list(current)
    names = [n.ifname for n in netifs]
    gone = options.get("netif_del")
    if gone == "all":
        netifs = []
    elif gone:
        if gone not in names:
            raise bad("--netif_del", gone, "the CT has no such interface")
        netifs = [n for n in netifs if n.ifname != gone]
    added = options.get("netif_add")
    if added:
        netif = parse_add(added)
        if netif.ifname in [n.ifname for n in netifs]:
            raise bad("--netif_add", added, f"the CT already has {netif.ifname}")
        used = {n.host_ifname for n in netifs}
        index = next(i for i in range(len(netifs) + 1) if host_default(tag, ctid, i) not in used)
        netifs.append(complete(netif, tag, ctid, index))
    fields = {k: options[k] for k in FIELDS[1:] if k in options}
    target = options.get("ifname")
    if fields and not target:
        raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, f"--{next(iter(fields))} needs --ifname IFNAME")
    if target:
        if target not in [n.ifname for n in netifs]:
            raise bad("--ifname", target, "the CT has no such interface (add it with --netif_add)")
        netifs = [n._replace(**fields) if n.ifname == target else n for n in netifs]
    return tuple(netifs)


def for_clone(netifs: tuple[Netif, ...], tag: str, ctid: int) -> tuple[Netif, ...]:
    """The interfaces a clone (CT `ctid`) gets: the same devices and bridges, new MACs and
    host-side names, so the clone and its source can share a bridge."""
    return tuple(
        complete(n._replace(mac="", host_mac="", host_ifname=""), tag, ctid, index)
        for index, n in enumerate(netifs)
    )
