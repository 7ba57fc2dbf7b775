"""Routed (venet) networking on real CTs, all inside a throwaway network namespace with no
route out: the namespace plays the host's part (its lo holds the "host" address 10.9.255.1),
so no packet of these tests can ever leave the machine."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, VzRoot
from tests.parallel import unique_name

pytestmark = pytest.mark.root

HOST = "10.9.255.1"
SNIFFER = r"""
import json, socket, sys, time
ETH_P_ALL, SOL_PACKET, PACKET_ADD_MEMBERSHIP, PACKET_MR_PROMISC = 3, 263, 1, 1
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
s.bind((sys.argv[1], 0))
index = socket.if_nametoindex(sys.argv[1])
mreq = index.to_bytes(4, "little") + PACKET_MR_PROMISC.to_bytes(2, "little") + bytes(10)
s.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
s.settimeout(0.2)
seen, end = {}, time.monotonic() + float(sys.argv[2])
print("ready", flush=True)
while time.monotonic() < end:
    try:
        frame = s.recv(65535)
    except socket.timeout:
        continue
    if len(frame) >= 34 and frame[12:14] == b"\x08\x00":
        key = socket.inet_ntoa(frame[26:30]) + ">" + socket.inet_ntoa(frame[30:34])
        seen[key] = seen.get(key, 0) + 1
print(json.dumps(seen), flush=True)
"""
ECHO_SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(); print("ready", flush=True)
while True:
    c, _ = s.accept(); c.sendall(c.recv(100)); c.close()
"""


@pytest.fixture
def netns() -> Iterator[str]:
    name = unique_name("pyvz-net")
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "-n", name, "addr", "add", f"{HOST}/32", "dev", "lo"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def in_ns(netns: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", f"--net=/run/netns/{netns}", *argv], capture_output=True, text=True, timeout=timeout
    )


def vzctl_in(vzroot: VzRoot, netns: str, *args: str) -> subprocess.CompletedProcess[str]:
    """vzctl run in the namespace: where the CT's host side (and its bridge) lives."""
    return subprocess.run(
        ["nsenter", f"--net=/run/netns/{netns}", sys.executable, "-m", "pyvz.cli.vzctl", *args],
        env=vzroot.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def start_in(vzroot: VzRoot, netns: str, ctid: str) -> None:
    done = vzctl_in(vzroot, netns, "start", ctid)
    assert done.returncode == 0, done.stderr


def ping(vzroot: VzRoot, ctid: str, address: str, source: str | None = None, count: int = 1) -> bool:
    """True if any of `count` echo requests is answered."""
    option = f"-I {source} " if source else ""
    return vzroot.vzctl("exec", ctid, f"ping -c{count} -W2 {option}{address} >/dev/null 2>&1").code == 0


def ping_from_host(netns: str, address: str) -> bool:
    return in_ns(netns, "busybox", "ping", "-c1", "-W2", address).returncode == 0


def ct_pid(vzroot: VzRoot, ctid: str) -> int:
    sys.path.insert(0, str(REPO))
    from pyvz.net.venet import init_pid
    from pyvz.paths import Paths
    from pyvz.resources.cgroups import CtCgroups, detect

    pid = init_pid(detect().procs(CtCgroups.of(Paths(vzroot.root).tag, int(ctid)).container))
    assert pid is not None
    return pid


def sniff(vzroot: VzRoot, ctid: str, seconds: float) -> subprocess.Popen[str]:
    """A packet capture on the CT's own interface, from inside its network namespace."""
    sniffer = subprocess.Popen(
        [
            "nsenter",
            f"--net=/proc/{ct_pid(vzroot, ctid)}/ns/net",
            sys.executable,
            "-c",
            SNIFFER,
            "venet0",
            str(seconds),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sniffer.stdout is not None and sniffer.stdout.readline().strip() == "ready"
    return sniffer


def sniffed(sniffer: subprocess.Popen[str]) -> dict[str, int]:
    out, _ = sniffer.communicate(timeout=30)
    result: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return result


def conf(vzroot: VzRoot, ctid: str) -> str:
    return (vzroot.conf_dir / f"{ctid}.conf").read_text()


def test_routed_cts_reach_each_other_and_the_host(vzroot: VzRoot, netns: str) -> None:
    vzroot.ok("create", "101", "--ipadd", "10.9.0.2", "--ipadd", "fd00:9::2")
    vzroot.ok("create", "102", "--ipadd", "10.9.0.3")
    start_in(vzroot, netns, "101")
    start_in(vzroot, netns, "102")
    # Inside, venet0 holds exactly the configured addresses.
    shown = vzroot.ok("exec", "101", "ip addr show venet0 | awk '/scope global/ {print $2}'").split()
    assert shown == ["10.9.0.2/32", "fd00:9::2/128"]
    assert ping(vzroot, "101", "10.9.0.3") and ping(vzroot, "102", "10.9.0.2")
    assert ping(vzroot, "101", HOST) and ping_from_host(netns, "10.9.0.3")
    # TCP: a CT to an echo server on the host, and CT to CT.
    server = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{netns}", sys.executable, "-c", ECHO_SERVER, HOST, "7007"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        assert vzroot.ok("exec", "101", f"echo hello | nc -w3 {HOST} 7007").strip() == "hello"
    finally:
        server.kill()
        server.wait()
    vzroot.ok("exec", "102", "(nc -ll -p 7 -e cat >/dev/null 2>&1 &)")
    time.sleep(0.3)
    assert vzroot.ok("exec", "101", "echo between | nc -w3 10.9.0.3 7").strip() == "between"
    vzroot.ok("stop", "--fast", "101")
    vzroot.ok("stop", "--fast", "102")
    assert "_ct10" not in in_ns(netns, "nft", "list", "tables").stdout  # rules go with the CT


def test_ipadd_and_ipdel_take_effect_live(vzroot: VzRoot, netns: str) -> None:
    vzroot.ok("create", "101", "--ipadd", "10.9.0.2")
    start_in(vzroot, netns, "101")
    started = time.monotonic()
    vzroot.ok("set", "101", "--ipadd", "10.9.0.4", "--save")  # from outside the namespace
    assert time.monotonic() - started < 5
    assert ping_from_host(netns, "10.9.0.4")
    assert 'IP_ADDRESS="10.9.0.2 10.9.0.4"' in conf(vzroot, "101")  # --ipadd adds
    vzroot.ok("set", "101", "--ipdel", "10.9.0.2", "--save")
    assert not ping_from_host(netns, "10.9.0.2")  # unreachable at once
    assert ping_from_host(netns, "10.9.0.4")
    shown = vzroot.ok("exec", "101", "ip addr show venet0 | awk '/scope global/ {print $2}'").split()
    assert shown == ["10.9.0.4/32"]
    vzroot.ok("set", "101", "--ipdel", "all", "--save")
    assert "IP_ADDRESS" not in conf(vzroot, "101") or 'IP_ADDRESS=""' in conf(vzroot, "101")
    assert not ping_from_host(netns, "10.9.0.4")
    # After --ipdel all the device stays, and the next address uses it.
    vzroot.ok("set", "101", "--ipadd", "10.9.0.6", "--save")
    assert ping_from_host(netns, "10.9.0.6")
    # Without --save only the running CT changes, and the next set starts from what it has.
    saved = conf(vzroot, "101")
    vzroot.ok("set", "101", "--ipadd", "10.9.0.7")
    assert ping_from_host(netns, "10.9.0.7") and conf(vzroot, "101") == saved
    vzroot.ok("set", "101", "--ipdel", "10.9.0.7")
    assert not ping_from_host(netns, "10.9.0.7") and ping_from_host(netns, "10.9.0.6")
    # A CT started without addresses gets its venet0 when the first one comes.
    vzroot.ok("create", "102")
    start_in(vzroot, netns, "102")
    vzroot.ok("set", "102", "--ipadd", "10.9.0.5", "--save")
    assert ping_from_host(netns, "10.9.0.5")
    vzroot.ok("stop", "--fast", "101")
    vzroot.ok("stop", "--fast", "102")


def test_a_restart_from_another_namespace_keeps_the_ct_where_it_ran(vzroot: VzRoot, netns: str) -> None:
    """restart, snapshot-switch and set --setmode restart stop a CT and start it again: it
    comes back in the namespace it ran in, not in the one the command was typed in."""
    sys.path.insert(0, str(REPO))
    from pyvz.net.venet import host_ifname
    from pyvz.paths import Paths

    ifname = host_ifname(Paths(vzroot.root.resolve()).tag, 101)
    vzroot.ok("create", "101", "--ipadd", "10.9.0.2")
    start_in(vzroot, netns, "101")
    uuid = re.findall(r"\{([0-9a-f-]{36})\}", vzroot.ok("snapshot", "101"))[0]
    for args in (("restart", "101"), ("snapshot-switch", "101", "--id", uuid)):
        vzroot.ok(*args)  # typed in the root namespace
        assert in_ns(netns, "ip", "link", "show", ifname).returncode == 0, args
        assert subprocess.run(["ip", "link", "show", ifname], capture_output=True).returncode != 0, args
        assert ping(vzroot, "101", HOST), args
    vzctl_in(vzroot, netns, "stop", "--fast", "101")


def test_a_ct_cannot_send_from_an_address_it_was_not_given(vzroot: VzRoot, netns: str) -> None:
    vzroot.ok("create", "101", "--ipadd", "10.9.0.2")
    vzroot.ok("create", "102", "--ipadd", "10.9.0.3")
    start_in(vzroot, netns, "101")
    start_in(vzroot, netns, "102")
    vzroot.ok("exec", "101", "ip addr add 10.9.0.99/32 dev venet0")  # root in the CT may try
    sniffer = sniff(vzroot, "102", 4)
    ping(vzroot, "101", "10.9.0.3", source="10.9.0.99")
    ping(vzroot, "101", "10.9.0.3")  # the control: its own address gets through
    seen = sniffed(sniffer)
    assert seen.get("10.9.0.2>10.9.0.3", 0) > 0, seen
    assert seen.get("10.9.0.99>10.9.0.3", 0) == 0, seen
    vzroot.ok("stop", "--fast", "101")
    vzroot.ok("stop", "--fast", "102")


def test_a_ct_cannot_see_other_cts_traffic(vzroot: VzRoot, netns: str) -> None:
    for ctid, address in (("101", "10.9.0.2"), ("102", "10.9.0.3"), ("103", "10.9.0.4")):
        vzroot.ok("create", ctid, "--ipadd", address)
        start_in(vzroot, netns, ctid)
    sniffer = sniff(vzroot, "103", 4)  # promiscuous, on its own interface
    for _ in range(3):
        assert ping(vzroot, "101", "10.9.0.3") and ping(vzroot, "102", "10.9.0.2")
    assert ping_from_host(netns, "10.9.0.4")  # the control: it does see its own traffic
    seen = sniffed(sniffer)
    assert seen.get(f"{HOST}>10.9.0.4", 0) > 0, seen
    others = {"10.9.0.2", "10.9.0.3"}
    assert not [key for key in seen if set(key.split(">")) <= others], seen
    for ctid in ("101", "102", "103"):
        vzroot.ok("stop", "--fast", ctid)


def connects(netns: str, address: str, port: int) -> bool:
    probe = f"import socket; socket.create_connection(({address!r}, {port}), timeout=2).close()"
    return in_ns(netns, sys.executable, "-c", probe).returncode == 0


def test_firewall_accept_opens_only_the_listed_ports(vzroot: VzRoot, netns: str) -> None:
    vzroot.ok("create", "101", "--ipadd", "10.9.0.2", "--firewall-accept", "22/tcp")
    vzroot.ok("create", "102", "--ipadd", "10.9.0.3")
    start_in(vzroot, netns, "101")
    start_in(vzroot, netns, "102")
    for port in (22, 80):
        vzroot.ok("exec", "101", f"(nc -ll -p {port} -e cat >/dev/null 2>&1 &)")
    time.sleep(0.3)
    assert connects(netns, "10.9.0.2", 22)
    assert not connects(netns, "10.9.0.2", 80)
    # From another CT too (the forward path), and ping still works.
    assert vzroot.ok("exec", "102", "echo x | nc -w2 10.9.0.2 22").strip() == "x"
    assert vzroot.vzctl("exec", "102", "echo x | nc -w2 10.9.0.2 80").out.strip() != "x"
    assert ping(vzroot, "102", "10.9.0.2")
    # Live: opening 80 and then lifting the filter.
    vzroot.ok("set", "101", "--firewall-accept", "22/tcp 80/tcp", "--save")
    assert connects(netns, "10.9.0.2", 80)
    # An empty value means no filtering.
    vzroot.ok("set", "101", "--firewall-accept", "", "--save")
    vzroot.ok("exec", "101", "(nc -ll -p 8080 -e cat >/dev/null 2>&1 &)")
    time.sleep(0.3)
    assert connects(netns, "10.9.0.2", 8080)
    vzroot.ok("stop", "--fast", "101")
    vzroot.ok("stop", "--fast", "102")


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("--ipadd", "10.9.0"), 21),  # vzctl: "Bad parameter for --ipadd"
        (("--ipadd", "10.9.0.300"), 21),  # vzctl: "Bad parameter for --ipadd"
        (("--ipadd", "10.9.0.2/33"), 21),  # vzctl: "Bad parameter for --ipadd"
        (("--ipadd", "10.9.0.255/24"), 21),  # broadcast
        (("--ipadd", "10.9.0.0/24"), 21),  # network
        (("--ipadd", "fd00::zz"), 21),  # vzctl: "Bad parameter for --ipadd"
        (("--ipadd", "10.9.0.3"), 78),  # CT 102 has it
        (("--firewall-accept", "22/icmp"), 21),
    ],
)
def test_bad_network_input_changes_nothing(
    vzroot: VzRoot, netns: str, args: tuple[str, ...], code: int
) -> None:
    vzroot.ok("create", "101", "--ipadd", "10.9.0.2")
    vzroot.ok("create", "102", "--ipadd", "10.9.0.3")
    start_in(vzroot, netns, "101")
    before = conf(vzroot, "101")
    routes = in_ns(netns, "ip", "route").stdout
    done = vzroot.vzctl("set", "101", *args, "--save")
    assert done.code == code, done.err
    assert len(done.err.strip().splitlines()) == 1
    assert conf(vzroot, "101") == before
    assert in_ns(netns, "ip", "route").stdout == routes
    created = vzroot.vzctl("create", "103", *args)
    assert created.code == code and not (vzroot.conf_dir / "103.conf").exists()
    vzroot.ok("stop", "--fast", "101")


def test_nameserver_inherit_copies_the_hosts_resolvers(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--nameserver", "inherit")
    vzroot.ok("start", "101")
    host = [
        line.split()[1]
        for line in Path("/etc/resolv.conf").read_text().splitlines()
        if line.startswith("nameserver")
    ]
    inside = vzroot.ok("exec", "101", "cat /etc/resolv.conf").splitlines()
    assert [line.split()[1] for line in inside if line.startswith("nameserver")] == host
    listed = json.loads(vzroot.vzlist("-j", "-o", "ctid,nameserver", "101").out)[0]
    assert listed["nameserver"] == ["inherit"]
    vzroot.ok("stop", "--fast", "101")


@pytest.fixture
def bridged(netns: str) -> str:
    """A bridge br0 in the namespace, with the "host" at 10.8.0.1/24 on it."""
    for argv in (
        ["link", "add", "br0", "type", "bridge"],
        ["addr", "add", "10.8.0.1/24", "dev", "br0"],
        ["link", "set", "br0", "up"],
    ):
        subprocess.run(["ip", "-n", netns, *argv], check=True)
    return netns


def ct_mac(vzroot: VzRoot, ctid: str, ifname: str) -> str:
    return vzroot.ok("exec", ctid, f"cat /sys/class/net/{ifname}/address").strip().upper()


def test_bridged_veth_with_a_stable_mac(vzroot: VzRoot, bridged: str) -> None:
    assert vzctl_in(vzroot, bridged, "create", "101", "--netif_add", "eth0,,,,br0").returncode == 0
    netif = re.search(r'NETIF="([^"]*)"', conf(vzroot, "101"))
    assert netif, conf(vzroot, "101")
    fields = dict(pair.split("=") for pair in netif.group(1).split(","))
    assert fields["ifname"] == "eth0" and fields["bridge"] == "br0"
    assert re.fullmatch(r"00:18:51(:[0-9A-F]{2}){3}", fields["mac"])
    start_in(vzroot, bridged, "101")
    assert ct_mac(vzroot, "101", "eth0") == fields["mac"]
    vzroot.ok("exec", "101", "ip addr add 10.8.0.2/24 dev eth0")
    assert ping(vzroot, "101", "10.8.0.1")
    master = in_ns(bridged, "ip", "-o", "link", "show", "master", "br0").stdout
    assert fields["host_ifname"] in master
    # The same MAC after a restart (it is saved, not made up again).
    vzroot.ok("stop", "--fast", "101")
    start_in(vzroot, bridged, "101")
    assert ct_mac(vzroot, "101", "eth0") == fields["mac"]
    # Live: a second interface, then the first one gone.
    vzroot.ok("set", "101", "--netif_add", "eth1,00:18:51:12:34:56,,,br0", "--save")
    assert ct_mac(vzroot, "101", "eth1") == "00:18:51:12:34:56"
    vzroot.ok("set", "101", "--netif_del", "eth0", "--save")
    assert vzroot.vzctl("exec", "101", "test -e /sys/class/net/eth0").code != 0
    assert "ifname=eth0" not in conf(vzroot, "101") and "ifname=eth1" in conf(vzroot, "101")
    vzroot.ok("stop", "--fast", "101")


def test_mac_filter_drops_frames_from_a_changed_mac(vzroot: VzRoot, bridged: str) -> None:
    assert (
        vzctl_in(vzroot, bridged, "create", "101", "--netif_add", "eth0,00:18:51:00:00:01,,,br0").returncode
        == 0
    )
    vzroot.ok("set", "101", "--ifname", "eth0", "--mac_filter", "on", "--save")
    start_in(vzroot, bridged, "101")
    vzroot.ok("exec", "101", "ip addr add 10.8.0.2/24 dev eth0")
    assert ping(vzroot, "101", "10.8.0.1")
    vzroot.ok(
        "exec",
        "101",
        "ip link set eth0 down; ip link set eth0 address 00:18:51:00:00:99; ip link set eth0 up",
    )
    subprocess.run(["ip", "-n", bridged, "neigh", "flush", "dev", "br0"], check=True)  # the host must ask
    assert not ping(vzroot, "101", "10.8.0.1", count=3)
    # The control: without the filter the same frames get through.
    vzroot.ok("set", "101", "--ifname", "eth0", "--mac_filter", "off", "--save")
    assert ping(vzroot, "101", "10.8.0.1", count=3)  # the host's ARP entry needs a moment
    vzroot.ok("stop", "--fast", "101")
    assert "bridge" not in in_ns(bridged, "nft", "list", "tables").stdout


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("--netif_add", "eth0,00:18:51:00:01"), 21),  # five octets
        (("--netif_add", "eth0,00:18:51:00:00:01:02"), 21),  # seven
        (("--netif_add", "eth0,,,,nosuchbr"), 71),  # unknown bridge
        (("--netif_add", "this-name-is-far-too-long"), 21),
        (("--mac", "00:18:51:00:00:01"), 20),  # needs --ifname
    ],
)
def test_bad_veth_input_changes_nothing(vzroot: VzRoot, args: tuple[str, ...], code: int) -> None:
    vzroot.ok("create", "101")
    before = conf(vzroot, "101")
    done = vzroot.vzctl("set", "101", *args, "--save")
    assert done.code == code, done.err
    assert len(done.err.strip().splitlines()) == 1
    assert conf(vzroot, "101") == before


def test_start_announces_addresses_on_the_lan(vzroot: VzRoot, netns: str) -> None:
    # A "LAN" namespace behind the host's uplink, which holds 10.7.0.1/24.
    lan = f"{netns}-lan"
    subprocess.run(["ip", "netns", "add", lan], check=True)
    try:
        for argv in (
            ["ip", "-n", netns, "link", "add", "up0", "type", "veth", "peer", "name", "lan0", "netns", lan],
            ["ip", "-n", netns, "addr", "add", "10.7.0.1/24", "dev", "up0"],
            ["ip", "-n", netns, "link", "set", "up0", "up"],
            ["ip", "-n", lan, "addr", "add", "10.7.0.254/24", "dev", "lan0"],
            ["ip", "-n", lan, "link", "set", "lan0", "up"],
            ["ip", "netns", "exec", lan, "sysctl", "-qw", "net.ipv4.conf.lan0.arp_accept=1"],
        ):
            subprocess.run(argv, check=True)
        vzroot.ok("create", "101", "--ipadd", "10.7.0.50")
        start_in(vzroot, netns, "101")
        link = in_ns(netns, "ip", "-o", "link", "show", "up0").stdout.split()
        up0 = link[link.index("link/ether") + 1]
        learned = subprocess.run(
            ["ip", "-n", lan, "neigh", "show", "10.7.0.50"], capture_output=True, text=True
        )
        assert up0 in learned.stdout, learned.stdout  # the gratuitous ARP arrived
        reply = subprocess.run(
            ["nsenter", f"--net=/run/netns/{lan}", "busybox", "ping", "-c1", "-W2", "10.7.0.50"],
            capture_output=True,
        )
        assert reply.returncode == 0  # the host answers for the CT on the LAN and routes to it
        vzroot.ok("stop", "--fast", "101")
        assert "10.7.0.50" not in in_ns(netns, "ip", "neigh", "show", "proxy").stdout
    finally:
        subprocess.run(["ip", "netns", "delete", lan], check=False)
