"""What a CT may touch and what it sees of itself, tested by what it can and cannot do:
device nodes, capabilities, host interfaces moved in, and LXCFS's view of its limits."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import VzRoot
from tests.integration.test_lxcfs_restart import lxcfs_pids
from tests.integration.test_netns_and_wait import netns  # noqa: F401 - a fixture
from tests.integration.test_network import vzctl_in

pytestmark = pytest.mark.root

OPEN_TUN = "exec 3<>/dev/net/tun && echo opened"


def opens_tun(vzroot: VzRoot, ctid: str) -> bool:
    done = vzroot.vzctl("exec", ctid, OPEN_TUN)
    return done.code == 0 and "opened" in done.out


def conf(vzroot: VzRoot, ctid: str) -> str:
    return (vzroot.conf_dir / f"{ctid}.conf").read_text()


def test_tun_opens_with_devnodes_and_not_without(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--ostemplate", "busybox")
    vzroot.ok("start", "101")
    assert vzroot.vzctl("exec", "101", "test -c /dev/net/tun").code != 0
    assert not opens_tun(vzroot, "101")
    vzroot.ok("set", "101", "--devnodes", "net/tun:rw", "--save")  # live, and saved
    assert 'DEVNODES="net/tun:rw"' in conf(vzroot, "101")
    assert opens_tun(vzroot, "101")
    # Its node is its own root's, not the host's uid 0 (which a CT cannot use).
    assert vzroot.ok("exec", "101", "ls -ln /dev/net/tun").split()[2:4] == ["0", "0"]
    vzroot.ok("set", "101", "--devnodes", "net/tun:r", "--save")
    assert not opens_tun(vzroot, "101")  # read and write: refused by the device cgroup
    assert vzroot.vzctl("exec", "101", "exec 3</dev/net/tun").code == 0
    vzroot.ok("restart", "101")  # and at the next start, from the config
    assert vzroot.vzctl("exec", "101", "exec 3</dev/net/tun").code == 0
    assert not opens_tun(vzroot, "101")
    vzroot.ok("set", "101", "--devnodes", "net/tun:none", "--save")
    assert vzroot.vzctl("exec", "101", "test -c /dev/net/tun").code != 0
    assert 'DEVNODES=""' in conf(vzroot, "101")
    vzroot.ok("set", "101", "--devices", "c:10:200:rw", "--save")  # by number: the same node
    vzroot.ok("restart", "101")
    assert opens_tun(vzroot, "101")
    vzroot.ok("stop", "101")


def test_a_dropped_capability_is_gone_inside(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--ostemplate", "busybox", "--capability", "net_admin:off")
    assert 'CAPABILITY="NET_ADMIN:off"' in conf(vzroot, "101")
    vzroot.ok("start", "101")
    added = vzroot.vzctl("exec", "101", "ip addr add 10.201.0.1/32 dev lo")
    assert added.code != 0
    assert "not permitted" in (added.out + added.err)
    done = vzroot.vzctl("set", "101", "--capability", "chown:off", "--save")  # merged into the old
    assert done.code == 0 and "after a restart" in done.err
    assert 'CAPABILITY="CHOWN:off NET_ADMIN:off"' in conf(vzroot, "101")
    vzroot.ok("set", "101", "--capability", "net_admin:on,chown:on", "--save")
    vzroot.ok("restart", "101")
    vzroot.ok("exec", "101", "ip addr add 10.201.0.1/32 dev lo")
    vzroot.ok("stop", "101")


def test_a_privileged_ct_is_not_given_what_escapes_it(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--ostemplate", "busybox", "--local_uid", "0", "--local_gid", "0")
    before = conf(vzroot, "101")
    done = vzroot.vzctl("set", "101", "--capability", "sys_module:on", "--save")
    assert done.code == 21
    assert "load code into the host's kernel" in done.err
    assert conf(vzroot, "101") == before
    refused = vzroot.vzctl(
        "create", "102", "--local_uid", "0", "--local_gid", "0", "--capability", "sys_rawio:on"
    )
    assert refused.code == 21 and "memory" in refused.err
    assert not (vzroot.conf_dir / "102.conf").exists() and not (vzroot.private_dir / "102").exists()


def links(namespace: str) -> str:
    return subprocess.run(["ip", "-n", namespace, "-o", "link"], capture_output=True, text=True).stdout


def test_netdev_moves_a_host_interface_in_and_back(vzroot: VzRoot, netns: str) -> None:  # noqa: F811
    # No dummy driver on every kernel: one end of a veth pair stands in for a spare NIC.
    subprocess.run(["ip", "-n", netns, "link", "add", "pyvzd0", "type", "veth", "peer", "pyvzd1"], check=True)
    vzroot.ok("create", "101", "--ostemplate", "busybox")
    assert vzctl_in(vzroot, netns, "start", "101").returncode == 0
    done = vzctl_in(vzroot, netns, "set", "101", "--netdev_add", "pyvzd0", "--save")
    assert done.returncode == 0, done.stderr
    assert 'NETDEV="pyvzd0"' in conf(vzroot, "101")
    assert "pyvzd0" in vzroot.ok("exec", "101", "ip -o link")
    assert "pyvzd0" not in links(netns)
    assert vzctl_in(vzroot, netns, "stop", "101").returncode == 0  # given back, not destroyed
    assert "pyvzd0" in links(netns)
    assert vzctl_in(vzroot, netns, "start", "101").returncode == 0  # and moved in at start
    assert "pyvzd0" in vzroot.ok("exec", "101", "ip -o link")
    done = vzctl_in(vzroot, netns, "set", "101", "--netdev_del", "pyvzd0", "--save")
    assert done.returncode == 0, done.stderr
    assert "pyvzd0" in links(netns)
    assert "pyvzd0" not in vzroot.ok("exec", "101", "ip -o link")
    assert vzctl_in(vzroot, netns, "stop", "101").returncode == 0


BAD_INPUT = [
    (("--devnodes", "net/tun:x"), 21),
    (("--devnodes", "no/such/node:rw"), 21),
    (("--devnodes", "../etc/passwd:rw"), 21),
    (("--devices", "c:7:0:rw"), 21),  # loop devices: never
    (("--devices", "x:1:3:rw"), 21),
    (("--devices", "c:10:two:rw"), 21),
    (("--capability", "no_such_cap:on"), 21),
    (("--capability", "net_admin:maybe"), 21),
    (("--features", "warp:on"), 21),
    (("--features", "nfs"), 21),
    (("--netfilter", "partial"), 21),
    (("--meminfo", "pages:0"), 21),
    (("--meminfo", "lots"), 21),
    (("--iptables", "ipt;rm"), 21),
    (("--netdev_del", "eth9"), 104),
    (("--avnumproc", "many"), 21),
    (("--cpuweight", "-1"), 21),
    (("--mount_opts", "a b"), 21),
    (("--diskquota", "perhaps"), 21),
    (("--quotatime", "soon"), 21),
    (("--quotaugidlimit", "-5"), 21),
    (("--applyconfig_map", "ip"), 21),
    (("--physpages", "lots"), 21),
]


def test_bad_input_for_each_new_option_changes_nothing(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--ostemplate", "busybox")
    before = conf(vzroot, "101")
    for args, code in BAD_INPUT:
        done = vzroot.vzctl("set", "101", *args, "--save")
        assert done.code == code, (args, done.code, done.err)
        assert len(done.err.strip().splitlines()) == 1, (args, done.err)
        assert conf(vzroot, "101") == before, args


def meminfo_total_kb(vzroot: VzRoot, ctid: str) -> int:
    line = vzroot.ok("exec", ctid, "head -1 /proc/meminfo").split()
    assert line[0] == "MemTotal:", line
    return int(line[1])


def host_total_kb() -> int:
    return int(Path("/proc/meminfo").read_text().split()[1])


def lxcfs_pid() -> int:
    return lxcfs_pids()[-1]  # not /run/lxcfs.pid: a second lxcfs that fails removes it


@pytest.mark.alone  # it stops the host's LXCFS, which every running CT's /proc files come from
def test_the_ct_sees_its_own_memory_cpus_and_uptime(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--ostemplate", "busybox", "--ram", "256M", "--cpus", "1")
    vzroot.ok("create", "102", "--ostemplate", "busybox", "--ram", "256M", "--meminfo", "none")
    vzroot.ok("start", "101")
    vzroot.ok("start", "102")
    assert meminfo_total_kb(vzroot, "101") == 256 * 1024
    assert vzroot.ok("exec", "101", "grep -c ^processor /proc/cpuinfo").strip() == "1"
    assert vzroot.ok("exec", "101", "nproc").strip() == "1"
    ct_uptime = float(vzroot.ok("exec", "101", "cat /proc/uptime").split()[0])
    host_uptime = float(Path("/proc/uptime").read_text().split()[0])
    assert ct_uptime < 60 < host_uptime or ct_uptime < host_uptime - 5
    assert meminfo_total_kb(vzroot, "102") == host_total_kb()  # --meminfo none: the host's
    assert 'MEMINFO="none"' in conf(vzroot, "102")

    # LXCFS restarts: the running CT's files are bound in again at the next start.
    os.kill(lxcfs_pid(), signal.SIGTERM)
    deadline = time.monotonic() + 10
    while vzroot.vzctl("exec", "101", "head -1 /proc/meminfo").code == 0:
        assert time.monotonic() < deadline, "LXCFS did not go away"
        time.sleep(0.1)
    vzroot.ok("stop", "102")
    vzroot.ok("start", "102")  # finds LXCFS gone: starts it, heals 101
    assert meminfo_total_kb(vzroot, "101") == 256 * 1024
    assert vzroot.ok("exec", "101", "grep -c ^processor /proc/cpuinfo").strip() == "1"
    vzroot.ok("stop", "101")
    vzroot.ok("stop", "102")


def test_a_restored_ct_keeps_its_memory_limit(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--ostemplate", "busybox", "--ram", "192M")
    vzroot.ok("start", "101")
    vzroot.ok("chkpnt", "101")
    vzroot.ok("restore", "101")
    assert meminfo_total_kb(vzroot, "101") == 192 * 1024
    vzroot.ok("stop", "101")
