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
    there (add-then-delete never fails on a missing one)."""
    script = "".join(f"add table {f} {table}\ndelete table {f} {table}\n" for f in ("inet", "bridge"))
    run([*(prefix or []), "nft", "-f", "-"], input=script, check=False)
