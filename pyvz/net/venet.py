"""venet-style routed addresses: each CT owns a few IPs, the host routes them to it.

A CT gets a veth pair: `venet0` inside holds its addresses as /32 and /128 (as OpenVZ's
venet0 did). IPv4: a default route on the device, answered by proxy ARP on the host side
for anything the host can route; IPv6: a default route via fe80::1, which exists only as a
proxy NDP entry on the host side. The host side (`vz<CTID>`) gets one route per
address. Everything host-side is made in the network namespace the CT was started in, so a
test (or an admin) can keep a whole setup inside a throwaway namespace.

At start an LXC start-host hook written by pyvz creates the pair, with ifindexes drawn at
random so that CRIU can recreate it on any host (the network is up before the CT's init
runs); `set --ipadd/--ipdel` on a running CT changes the same things with `ip`.
"""

from __future__ import annotations

import os
from pathlib import Path

from pyvz.errors import ExitCode, VzError
from pyvz.kernelfiles import read_small
from pyvz.log import log
from pyvz.run import run

VENET = "venet0"
GATEWAY6 = "fe80::1"


def host_ifname(tag: str, ctid: int) -> str:
    """vz101 for the default root; v<3 hex of the root's tag>.101 for other roots (15 chars max)."""
    return f"vz{ctid}" if tag == "pyvz" else f"v{tag[-3:]}.{ctid}"


def bare(address: str) -> str:
    """10.0.0.2/24 -> 10.0.0.2: venet routes single addresses; the prefix is kept, not used."""
    return address.partition("/")[0]


def is_v6(address: str) -> bool:
    return ":" in address


def host_route(address: str) -> str:
    return f"{bare(address)}/{128 if is_v6(address) else 32}"


def random_index() -> int:
    """An ifindex unlikely to be taken on any host. CRIU recreates a CT's venet0 with the
    ifindex it had, first in the host's namespace (CRIU 4.2 with user namespaces): the 2
    that a fresh namespace gives it is eth0 on every host, so the restore would fail."""
    return (1 << 24) + int.from_bytes(os.urandom(4), "big") % (1 << 29)


def up_script(ifname: str, addresses: tuple[str, ...]) -> str:
    """The CT's venet pair, made by an LXC start-host hook (LXC's own veth cannot be given
    its ifindexes), before the CT's init runs; a restored CT brings its own."""
    inside = [f"link set {VENET} up"]
    for address in addresses:
        inside.append(f"address add {host_route(address)} dev {VENET}" + (" nodad" if is_v6(address) else ""))
    if any(not is_v6(a) for a in addresses):
        inside.append(f"route replace default dev {VENET}")
    if any(is_v6(a) for a in addresses):
        inside.append(f"route replace default via {GATEWAY6} dev {VENET}")
    lines = "\n".join(inside)
    return (
        "#!/bin/sh\n"
        "# Written by pyvz at each start (pyvz/net/venet.py): the CT's venet0 pair.\n"
        "set -e\n"
        f"ip link add {ifname} index {random_index()} type veth peer name {VENET} "
        f'index {random_index()} netns "$LXC_PID"\n'
        f"ip link set {ifname} up\n"
        + "".join(f"{line}\n" for line in _sysctl_lines(_proxies(ifname)))
        + f'nsenter --net="/proc/$LXC_PID/ns/net" -- ip -batch - <<EOF\n{lines}\nEOF\n'
    )


def lxc_lines(hook: str, addresses: tuple[str, ...]) -> list[str]:
    """The LXC config of the CT's venet0 (made by `hook`); nothing for a CT without addresses."""
    if not addresses:
        return []
    return [f"lxc.hook.start-host = {hook}"]


def restore_args(ifname: str, addresses: tuple[str, ...]) -> str:
    """CRIU's restore names the host end of the CT's venet0 pair after this."""
    return f"--external veth[{VENET}]:{ifname}" if addresses else ""


def sysctls(prefix: list[str], settings: dict[str, str]) -> None:
    """Set /proc/sys values (slash-separated: an interface name may hold a dot) in the
    network namespace `prefix` enters; written directly when that is ours."""
    if prefix:
        flags = [f"{path}={value}" for path, value in settings.items()]
        run([*prefix, "sysctl", "-qw", *flags], error_code=ExitCode.SET_IP_ERROR)
        return
    for path, value in settings.items():
        target = Path("/proc/sys") / path
        try:
            if target.read_text().strip() != value:
                target.write_text(value)
                if "forward" in path:  # a host-wide change: say it
                    log.info(f"Enabled {path.replace('/', '.')}={value} for routed CTs")
        except OSError as err:
            raise VzError(ExitCode.SET_IP_ERROR, f"cannot set {path} to {value}: {err.strerror}") from None


def forwarding(addresses: tuple[str, ...]) -> dict[str, str]:
    """Routing to CTs needs forwarding in the namespace they run in."""
    found = {}
    if any(not is_v6(a) for a in addresses):
        found["net/ipv4/ip_forward"] = "1"
    if any(is_v6(a) for a in addresses):
        found["net/ipv6/conf/all/forwarding"] = "1"
    return found


def _proxies(ifname: str) -> dict[str, str]:
    # The CT's neighbour requests are answered at once: the kernel would delay a proxy
    # answer to a broadcast by up to proxy_delay (0.8 s), which is for a shared LAN where a
    # real owner may answer first; on the pair nobody else can. Each fresh start and each
    # restore (CRIU does not bring the CT's neighbour table back) begins with such a request.
    return {
        f"net/ipv4/conf/{ifname}/proxy_arp": "1",
        f"net/ipv6/conf/{ifname}/proxy_ndp": "1",
        f"net/ipv4/neigh/{ifname}/proxy_delay": "0",
        f"net/ipv6/neigh/{ifname}/proxy_delay": "0",
    }


def host_commands(ifname: str, addresses: tuple[str, ...], add: bool = True) -> list[str]:
    """`ip -batch` lines for the host side: a route per address."""
    verb = "replace" if add else "del"
    return [f"route {verb} {host_route(a)} dev {ifname}" for a in addresses]


def _host_lines(ifname: str, addresses: tuple[str, ...]) -> list[str]:
    # LXC's hook brings the host end up at start; after a CRIU restore it is still down.
    up = f"link set dev {ifname} up"
    return [up, *host_commands(ifname, addresses), f"neigh replace proxy {GATEWAY6} dev {ifname}"]


def host_setup(ifname: str, addresses: tuple[str, ...]) -> None:
    """After LXC made the pair (in our namespace): routes to the CT, proxy ARP/NDP."""
    if not addresses:
        return
    sysctls([], {**forwarding(addresses), **_proxies(ifname)})
    _batch([], _host_lines(ifname, addresses))
    from pyvz.net.announce import announce

    announce([bare(a) for a in addresses])


def host_setup_script(ifname: str, addresses: tuple[str, ...]) -> str:
    """host_setup() as shell, for a restore to run before the CT's processes go on (see
    criu.ACTION_SCRIPT): the first packet they send finds the way out, and the LAN sends
    the answers here. The host-wide forwarding switch is not in it: sysctls() sets that
    first, and says so."""
    if not addresses:
        return ""
    from shlex import join

    from pyvz.net.announce import proxy_plan

    uplink_settings, uplink_lines, sender = proxy_plan([bare(a) for a in addresses])
    settings = _sysctl_lines({**_proxies(ifname), **uplink_settings})
    lines = _host_lines(ifname, addresses) + uplink_lines
    # The announcement goes out beside the restore (~30 ms), just before the CT goes on.
    announce = [f"{join(sender)} &"] if sender else []
    return "\n".join([*settings, "ip -batch - <<'PYVZ_IP'", *lines, "PYVZ_IP", *announce]) + "\n"


def _sysctl_lines(settings: dict[str, str]) -> list[str]:
    """sysctls() as shell lines, for a script in our namespace."""
    from shlex import quote

    return [f"printf %s {quote(v)} > {quote(f'/proc/sys/{p}')}" for p, v in settings.items()]


def _batch(prefix: list[str], lines: list[str]) -> None:
    if not lines:
        return
    done = run([*prefix, "ip", "-batch", "-"], input="\n".join(lines) + "\n", check=False)
    if done.returncode != 0:
        raise VzError(ExitCode.SET_IP_ERROR, f"network setup failed: {done.stderr.strip().splitlines()[-1]}")


def init_pid(pids: list[int]) -> int | None:
    """The CT's init among its processes: pid 1 in its own pid namespace."""
    for pid in sorted(pids):
        try:
            status = read_small(f"/proc/{pid}/status")
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:") and line.split()[-1] == "1":
                return pid
    return None


def change_live(
    ifname: str,
    pid: int,
    old: tuple[str, ...],
    new: tuple[str, ...],
    host_prefix: list[str],
    has_link: bool = True,
) -> None:
    """Make a running CT's addresses `new` (it had `old`), inside and on the host."""
    added = tuple(a for a in new if bare(a) not in {bare(o) for o in old})
    removed = tuple(a for a in old if bare(a) not in {bare(n) for n in new})
    inside = ["nsenter", f"--net=/proc/{pid}/ns/net", "--"]
    if added and not has_link:
        _create_link(ifname, pid, host_prefix)
    if added:
        sysctls(host_prefix, forwarding(added))
    ct_lines = [f"address del {host_route(a)} dev {VENET}" for a in removed]
    ct_lines += [f"address add {host_route(a)} dev {VENET}" + (" nodad" if is_v6(a) else "") for a in added]
    had4 = has_link and any(not is_v6(a) for a in old)
    had6 = has_link and any(is_v6(a) for a in old)
    if any(not is_v6(a) for a in added) and not had4:
        ct_lines.append(f"route replace default dev {VENET}")
    if any(is_v6(a) for a in added) and not had6:
        ct_lines += [f"route replace default via {GATEWAY6} dev {VENET}"]
    # Host first when removing (the address stops being reachable at once), CT first when adding.
    if removed:
        _batch(host_prefix, host_commands(ifname, removed, add=False))
        _batch(inside, ct_lines)
    else:
        _batch(inside, ct_lines)
    if added:
        _batch(host_prefix, host_commands(ifname, added))
    from pyvz.net.announce import command

    if removed:
        run(command(host_prefix, [bare(a) for a in removed], withdrawing=True), check=False)
    if added:
        run(command(host_prefix, [bare(a) for a in added]), error_code=ExitCode.SET_IP_ERROR)


def _create_link(ifname: str, pid: int, prefix: list[str]) -> None:
    """A CT started without addresses has no venet0 yet: make the pair now."""
    _batch(
        prefix,
        [
            f"link add {ifname} index {random_index()} type veth peer name {VENET} "
            f"index {random_index()} netns {pid}",
            f"link set {ifname} up",
            f"neigh replace proxy {GATEWAY6} dev {ifname}",
        ],
    )
    sysctls(prefix, _proxies(ifname))
    _batch(["nsenter", f"--net=/proc/{pid}/ns/net", "--"], [f"link set {VENET} up"])


def owner_of(address: str, others: dict[int, tuple[str, ...]]) -> int | None:
    """Which CT (of `others`: CTID -> its addresses) already has `address`."""
    import ipaddress

    wanted = ipaddress.ip_address(bare(address))
    for ctid, addresses in others.items():
        if any(ipaddress.ip_address(bare(a)) == wanted for a in addresses):
            return ctid
    return None


def in_use_error(address: str, ctid: int) -> VzError:
    return VzError(ExitCode.IP_INUSE, f"IP address {bare(address)} is already used by CT {ctid}")


def live_addresses(pid: int) -> tuple[str, ...] | None:
    """The addresses a running CT's venet0 has now (set without --save changes only these);
    None when it has no venet0 at all."""
    inside = ["nsenter", f"--net=/proc/{pid}/ns/net", "--"]
    done = run([*inside, "ip", "-o", "address", "show", "dev", VENET], check=False)
    if done.returncode != 0:
        return None
    found = []
    for line in done.stdout.splitlines():
        words = line.split()
        if "inet" in words or "inet6" in words:
            address = words[words.index("inet6" if "inet6" in words else "inet") + 1]
            if "scope" in words and words[words.index("scope") + 1] == "global":
                found.append(bare(address))
    return tuple(found)


def merged_addresses(
    current: tuple[str, ...], add: tuple[str, ...], delete: tuple[str, ...], warn: bool = True
) -> tuple[str, ...]:
    """vzctl's --ipdel then --ipadd: add is incremental; `all` deletes every address."""
    kept = [] if delete == ("all",) else [a for a in current if bare(a) not in {bare(d) for d in delete}]
    missing = [d for d in delete if d != "all" and bare(d) not in {bare(a) for a in current}]
    for address in missing if warn else ():
        log.warning(f"IP address {bare(address)} is not assigned to this CT; nothing to delete")
    for address in add:
        kept = [a for a in kept if bare(a) != bare(address)] + [address]
    return tuple(kept)


def check_free(addresses: tuple[str, ...], others: dict[int, tuple[str, ...]]) -> None:
    """Refuse (exit 78) an address another CT of this host already has."""
    for address in addresses:
        owner = owner_of(address, others)
        if owner is not None:
            raise in_use_error(address, owner)
