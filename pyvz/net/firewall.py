"""Per-CT nftables rules on the host: no spoofed sources out of a CT, and (with
FIREWALL_ACCEPT) no new inbound connections to it except on the listed ports.

Each running CT with addresses has its own table, `inet <root tag>_ct<CTID>`, so pyvz never
touches the host's other rules, and replacing a CT's rules is one atomic `nft -f`
transaction (add, delete, define). The table lives in the network namespace the CT was
started in and is deleted when the CT stops.
"""

from __future__ import annotations

from pyvz.errors import ExitCode, VzError
from pyvz.net.venet import bare, is_v6
from pyvz.run import run


def table_name(tag: str, ctid: int) -> str:
    return f"{tag.replace('-', '_')}_ct{ctid}"


def _set(values: list[str]) -> str:
    return "{ " + ", ".join(values) + " }"


def render(table: str, ifname: str, addresses: tuple[str, ...], accept: tuple[str, ...]) -> str:
    """The nft script that (re)defines the CT's table."""
    v4 = [bare(a) for a in addresses if not is_v6(a)]
    v6 = ["::", "fe80::/10", *(bare(a) for a in addresses if is_v6(a))]  # DAD and NDP use these
    source_v4 = (
        f'iifname "{ifname}" ip saddr != {_set(v4)} drop'
        if v4
        else f'iifname "{ifname}" meta nfproto ipv4 drop'
    )
    lines = [
        f"add table inet {table}",
        f"delete table inet {table}",
        f"table inet {table} {{",
        "  chain antispoof {",
        "    type filter hook prerouting priority -300; policy accept;",
        f"    {source_v4}",
        f'    iifname "{ifname}" ip6 saddr != {_set(v6)} drop',
        "  }",
    ]
    if accept:
        tcp = [p.split("/")[0] for p in accept if p.endswith("/tcp")]
        udp = [p.split("/")[0] for p in accept if p.endswith("/udp")]
        guard = ["ct state established,related accept", "meta l4proto { icmp, ipv6-icmp } accept"]
        guard += [f"tcp dport {_set(tcp)} accept"] if tcp else []
        guard += [f"udp dport {_set(udp)} accept"] if udp else []
        guard.append("drop")
        lines += ["  chain guard {", *(f"    {rule}" for rule in guard), "  }"]
        for hook in ("forward", "output"):  # from elsewhere, and from the host itself
            lines += [
                f"  chain {hook} {{",
                f"    type filter hook {hook} priority 0; policy accept;",
                f'    oifname "{ifname}" jump guard',
                "  }",
            ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def install(script: str, prefix: list[str] | None = None) -> None:
    done = run([*(prefix or []), "nft", "-f", "-"], input=script, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["nft failed"])[-1]
        raise VzError(ExitCode.SET_IP_ERROR, f"cannot install the CT's firewall rules: {tail}")


def remove(table: str, prefix: list[str] | None = None) -> None:
    """Delete the CT's tables (inet: addresses and ports; bridge: MAC filter) if they are
    there (add-then-delete never fails on a missing one). In our own namespace the kernel
    is asked first, so that a CT with none (every stopped CT's destroy) runs no nft."""
    families: tuple[str, ...] = ("inet", "bridge")
    if not prefix:
        families = tuple(f for f in families if has_table(f, table) is not False)
        if not families:
            return
    script = "".join(f"add table {f} {table}\ndelete table {f} {table}\n" for f in families)
    run([*(prefix or []), "nft", "-f", "-"], input=script, check=False)


_NFPROTO = {"inet": 1, "bridge": 7}
_NETLINK_NETFILTER = 12
_GETTABLE = (10 << 8) | 1  # NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETTABLE
_NLMSG_ERROR = 2
_REQUEST_ACK = 0x1 | 0x4  # NLM_F_REQUEST | NLM_F_ACK
_TABLE_NAME = 1  # NFTA_TABLE_NAME


def has_table(family: str, table: str) -> bool | None:
    """Whether this network namespace has the nftables table (one netlink request, what
    `nft list table` asks, without starting nft: ~1 ms instead of ~30); None if the kernel
    could not be asked, which the caller takes as "maybe"."""
    import errno
    import socket
    import struct

    name = table.encode() + b"\0"
    attribute = struct.pack("=HH", 4 + len(name), _TABLE_NAME) + name
    attribute += b"\0" * (-len(attribute) % 4)
    body = struct.pack("=BBH", _NFPROTO[family], 0, 0) + attribute  # nfgenmsg: family, v0, res_id
    message = struct.pack("=IHHII", 16 + len(body), _GETTABLE, _REQUEST_ACK, 1, 0) + body
    try:
        kind = socket.SOCK_RAW | socket.SOCK_CLOEXEC
        with socket.socket(socket.AF_NETLINK, kind, _NETLINK_NETFILTER) as sock:
            sock.settimeout(2.0)
            sock.send(message)
            found = False
            while True:
                reply = sock.recv(65536)
                offset = 0
                while offset + 16 <= len(reply):
                    length, kind = struct.unpack_from("=IH", reply, offset)
                    if kind == _NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", reply, offset + 16)
                        if code == 0:
                            return found  # the ack after the table, or after nothing
                        return False if -code == errno.ENOENT else None
                    found = True  # NFT_MSG_NEWTABLE: it is there
                    offset += max(length + (-length % 4), 16)
    except OSError:
        return None
