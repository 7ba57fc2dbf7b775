"""Tell the LAN where a CT's addresses are, as vzctl's arpsend/ndsend did.

A routed CT address that falls inside a subnet of one of the host's own interfaces is
answered for by the host (a proxy ARP/NDP entry on that interface), and announced there at
once: a gratuitous ARP for IPv4, an unsolicited neighbour advertisement for IPv6, sent from
the interface's MAC. Addresses outside every local subnet need a route on the router
instead, and get neither.

Run as `python3 -m pyvz.net.announce ADDR...` in the namespace the CT runs in.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys
from pathlib import Path

from pyvz.run import run

ETH_P_ARP, ETH_P_IPV6 = 0x0806, 0x86DD


def _subnets() -> list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    """(interface, subnet) for each of the host's own addresses (one `ip` run: each costs
    ~5 ms, and a restore's host side is planned while the CT is down)."""
    found = []
    for line in run(["ip", "-o", "address", "show"]).stdout.splitlines():
        words = line.split()
        name = words[1].split("@")[0]
        if name == "lo" or words[2] not in ("inet", "inet6"):
            continue
        network = ipaddress.ip_interface(words[3]).network
        if network.prefixlen < network.max_prefixlen:
            found.append((name, network))
    return found


def _mac(ifname: str) -> bytes:
    """From the kernel (SIOCGIFHWADDR): /sys shows the host's namespace, not necessarily ours."""
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        answer = fcntl.ioctl(sock.fileno(), 0x8927, struct.pack("256s", ifname.encode()))
    return answer[18:24]


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def garp_frame(mac: bytes, address: str) -> bytes:
    ip = socket.inet_aton(address)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip + b"\0" * 6 + ip
    return b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP) + arp


def unsolicited_na(mac: bytes, address: str) -> bytes:
    source = socket.inet_pton(socket.AF_INET6, address)
    dest = socket.inet_pton(socket.AF_INET6, "ff02::1")
    # Type 136, override flag, target, then the target link-layer address option.
    body = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + source + struct.pack("!BB", 2, 1) + mac
    pseudo = source + dest + struct.pack("!I3xB", len(body), 58)
    body = body[:2] + struct.pack("!H", _checksum(pseudo + body)) + body[4:]
    header = struct.pack("!IHBB", 0x60000000, len(body), 58, 255) + source + dest
    return b"\x33\x33\x00\x00\x00\x01" + mac + struct.pack("!H", ETH_P_IPV6) + header + body


def _on_uplinks(addresses: list[str]) -> list[tuple[str, str]]:
    """(address, uplink) for every uplink that each address is announced on: the host
    interfaces whose subnet holds it (CT veths hold none: only link-local)."""
    if not addresses:
        return []
    subnets = _subnets()
    pairs = set()
    for address in addresses:
        ip = ipaddress.ip_address(address)
        pairs |= {(address, name) for name, net in subnets if net.version == ip.version and ip in net}
    return sorted(pairs, key=lambda pair: (addresses.index(pair[0]), pair[1]))


def proxy_plan(addresses: list[str]) -> tuple[dict[str, str], list[str], list[str]]:
    """The /proc/sys values and `ip -batch` lines that make this host answer for
    `addresses`, and a command that announces them (see send_argv)."""
    pairs = _on_uplinks(addresses)
    settings = {f"net/ipv6/conf/{ifname}/proxy_ndp": "1" for address, ifname in pairs if ":" in address}
    lines = [f"neigh replace proxy {address} dev {ifname}" for address, ifname in pairs]
    return settings, lines, send_argv(pairs)


def _frame(address: str, ifname: str) -> bytes:
    mac = _mac(ifname)
    return unsolicited_na(mac, address) if ":" in address else garp_frame(mac, address)


def _send(ifname: str, frame: bytes) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((ifname, 0))
        sock.send(frame)


def announce(addresses: list[str]) -> list[tuple[str, str]]:
    """Proxy entries and announcements for every address on every matching uplink."""
    done = []
    for address, ifname in _on_uplinks(addresses):
        run(["ip", "neigh", "replace", "proxy", address, "dev", ifname])
        if ":" in address:
            Path(f"/proc/sys/net/ipv6/conf/{ifname}/proxy_ndp").write_text("1")
        _send(ifname, _frame(address, ifname))
        done.append((address, ifname))
    return done


# The sending half of announce(), for a bare interpreter (-I -S starts in ~15 ms, pyvz's
# imports take longer): arguments are pairs of interface and frame in hex.
_SENDER = """\
import socket, sys
for i in range(1, len(sys.argv), 2):
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((sys.argv[i], 0))
        sock.send(bytes.fromhex(sys.argv[i + 1]))
"""


def send_argv(pairs: list[tuple[str, str]]) -> list[str]:
    """A command that sends the announcements of (address, uplink) `pairs` (the frames made
    now, for a restore's action script to send before the CT goes on); [] if there is none
    to send. The proxy entries it needs come with it from proxy_plan()."""
    if not pairs:
        return []
    frames = [part for address, ifname in pairs for part in (ifname, _frame(address, ifname).hex())]
    return [sys.executable, "-I", "-S", "-c", _SENDER, *frames]


def withdraw(addresses: list[str]) -> None:
    """Drop the proxy entries again (the CT stopped or gave the address up)."""
    for address, ifname in _on_uplinks(addresses):
        run(["ip", "neigh", "del", "proxy", address, "dev", ifname], check=False)


def command(prefix: list[str], addresses: list[str], withdrawing: bool = False) -> list[str]:
    """This module as a command, for a namespace other than ours (`prefix` enters it)."""
    return [
        *prefix,
        sys.executable,
        "-m",
        "pyvz.net.announce",
        *(["--withdraw"] if withdrawing else []),
        *addresses,
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--withdraw"]:
        withdraw(sys.argv[2:])
    else:
        announce(sys.argv[1:])
