"""Host limits a start runs into (issue 15, item 6), on the real kernel, inside a network
namespace of the test's own so the host's own links are not touched: a full bridge (1023
ports, the kernel's most) refuses a CT in one line, and takes it once a port is free. The
neighbour table's thresholds exist only in the host's own namespace and are shared by all:
tests/unit/test_hostlimits.py checks that decision on a copy of its files."""

from __future__ import annotations

import subprocess

from tests.conftest import VzRoot
from tests.integration.test_network import bridged, in_ns, netns, start_in, vzctl_in

__all__ = ["bridged", "netns"]  # the fixtures, used by name


def test_a_full_bridge_refuses_the_ct_in_one_line(vzroot: VzRoot, bridged: str) -> None:
    netns = bridged
    pair = "link add p{n} type veth peer name q{n}\nlink set p{n} master br0\n"
    ports = "".join(pair.format(n=n) for n in range(1023))
    subprocess.run(["ip", "-n", netns, "-batch", "-"], input=ports, text=True, check=True)
    assert vzctl_in(vzroot, netns, "create", "101", "--netif_add", "eth0,,,,br0").returncode == 0
    refused = vzctl_in(vzroot, netns, "start", "101")
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode != 0 and len(lines) == 1, refused.stderr
    assert "bridge br0 has 1023 ports" in lines[0] and "BR_MAX_PORTS" in lines[0]
    assert "running" not in vzroot.ok("status", "101")
    assert in_ns(netns, "ip", "-o", "link", "show", "master", "br0").stdout.count("\n") == 1023
    # One port free: the same CT starts, on the bridge.
    subprocess.run(["ip", "-n", netns, "link", "del", "p0"], check=True)
    start_in(vzroot, netns, "101")
    assert "running" in vzroot.ok("status", "101")
    vzroot.ok("stop", "--fast", "101")
