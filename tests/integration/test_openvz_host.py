"""A tree laid out like an OpenVZ 4.x host is adopted as it is: vzctl 4.11's stock vz.conf
and samples (their keys and values; the comments are ours), and four CTs: a simfs Debian 12
userland, a simfs busybox with CAPABILITY, FEATURES and DEVNODES, a ploop one (an image
written by tests/ploopimg.py from the format's description: no ploop tool exists here) and
one vzctl destroyed (101.conf.destroyed). Each CT starts (the ploop one after `vzctl
convert`), vzlist lists them, and the simfs CTs' files stay owned on disk as they were."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import VzRoot

pytestmark = pytest.mark.root

# vzctl 4.11's etc/vz.conf.in, @VZDIR@ = /vz: every key and value, our own comments.
STOCK_VZ_CONF = """\
## pyvz test: the keys and values of vzctl 4.11's stock vz.conf
VIRTUOZZO=yes
LOCKDIR=/vz/lock
DUMPDIR=/vz/dump
VE0CPUUNITS=1000
VE_STOP_MODE=suspend

## logging
LOGGING=yes
LOGFILE=/var/log/vzctl.log
LOG_LEVEL=0
VERBOSE=0

## quota
DISK_QUOTA=yes
VZFASTBOOT=no

## network
ERROR_ON_ARPFAIL="no"

## templates
TEMPLATE=/vz/template

## defaults of new CTs
VE_ROOT=/vz/root/$VEID
VE_PRIVATE=/vz/private/$VEID
CONFIGFILE="vswap-256m"
DEF_OSTEMPLATE="centos-6-x86"
NAMESERVER=inherit # the host's resolvers
VE_LAYOUT=ploop

## user namespaces
LOCAL_UID=100000
LOCAL_GID=100000

VZWDOG="no"
IPTABLES_MODULES="{modules}"
IPV6="yes"
""".format(
    modules="ipt_REJECT ipt_tos ipt_limit ipt_multiport iptable_filter iptable_mangle ipt_TCPMSS "
    "ipt_tcpmss ipt_ttl ipt_length ip6_tables ip6table_filter ip6table_mangle ip6t_REJECT"
)

# ve-vswap-256m.conf-sample's keys and values.
VSWAP_256M = """\
# pyvz test: a CT with 256 MB of RAM and 512 MB of swap
PHYSPAGES="0:256M"
SWAPPAGES="0:512M"
DISKSPACE="2G:2.2G"
DISKINODES="131072:144179"
QUOTATIME="0"
CPUUNITS="1000"
NETFILTER="stateless"
"""

# ve-basic.conf-sample's keys and values (the old UBC set).
BASIC = """\
# pyvz test: the UBC set of the stock basic sample
KMEMSIZE="14372700:14790164"
LOCKEDPAGES="2048:2048"
PRIVVMPAGES="65536:69632"
SHMPAGES="21504:21504"
NUMPROC="240:240"
PHYSPAGES="0:unlimited"
VMGUARPAGES="33792:unlimited"
OOMGUARPAGES="26112:unlimited"
NUMTCPSOCK="360:360"
NUMFLOCK="188:206"
NUMPTY="16:16"
NUMSIGINFO="256:256"
TCPSNDBUF="1720320:2703360"
TCPRCVBUF="1720320:2703360"
OTHERSOCKBUF="1126080:2097152"
DGRAMRCVBUF="262144:262144"
NUMOTHERSOCK="360:360"
DCACHESIZE="3409920:3624960"
NUMFILE="9312:9312"
AVNUMPROC="180:180"
NUMIPTENT="128:128"
DISKSPACE="2G:2.2G"
DISKINODES="131072:144179"
QUOTATIME="0"
CPUUNITS="1000"
NETFILTER="stateless"
"""


def ct_conf(layout: str, extra: str = "") -> str:
    """A CTID.conf as vzctl 4.11 writes one: the sample's values, then the CT's own."""
    return (
        VSWAP_256M.replace("# pyvz test: a CT with 256 MB of RAM and 512 MB of swap\n", "")
        + 'VE_ROOT="/vz/root/$VEID"\nVE_PRIVATE="/vz/private/$VEID"\n'
        + f'VE_LAYOUT="{layout}"\nORIGIN_SAMPLE="vswap-256m"\n'
        + extra
    )


def unpack(archive: Path, target: Path) -> None:
    target.mkdir(parents=True)
    subprocess.run(["tar", "--numeric-owner", "-xpf", str(archive), "-C", str(target)], check=True)


def owners(tree: Path, names: list[str]) -> dict[str, tuple[int, int, int]]:
    found = {}
    for name in names:
        st = os.lstat(tree / name)
        found[name] = (st.st_uid, st.st_gid, st.st_mode & 0o7777)
    return found


def test_an_openvz_host_is_adopted_as_it_is(debian_template: Path, vzroot: VzRoot) -> None:
    from tests import ploopimg

    root = vzroot.root
    busybox_tree = root / "busybox-tree"  # a busybox userland, uid 0 on disk, as OpenVZ kept one
    vzroot.ok("create", "199", "--ostemplate", "busybox", "--layout", "simfs")
    subprocess.run(["cp", "-a", str(vzroot.private_dir / "199"), str(busybox_tree)], check=True)
    vzroot.ok("destroy", "199")
    (root / "etc/vz/vz.conf").write_text(STOCK_VZ_CONF)
    conf_dir = root / "etc/vz/conf"
    (conf_dir / "ve-vswap-256m.conf-sample").write_text(VSWAP_256M)
    (conf_dir / "ve-basic.conf-sample").write_text(BASIC)
    for leftover in conf_dir.glob("199.conf*"):
        leftover.unlink()

    # 101: destroyed by vzctl, its config kept aside.
    (conf_dir / "101.conf.destroyed").write_text(ct_conf("simfs", 'HOSTNAME="gone"\n'))
    # 102: a Debian 12 userland, simfs.
    deb = root / "vz/private/102"
    unpack(next(debian_template.glob("debian-12-x86_64-minimal.tar*")), deb)
    os.chown(deb / "etc/shadow", 0, 42)
    (deb / "home/alice").mkdir(parents=True)
    os.chown(deb / "home/alice", 1000, 1000)
    on_disk = owners(deb, ["etc/shadow", "home/alice", "usr/bin/passwd", "var/log"])
    (conf_dir / "102.conf").write_text(
        ct_conf("simfs", 'OSTEMPLATE="debian-12-x86_64-minimal"\nHOSTNAME="deb.example.org"\nONBOOT="yes"\n')
    )
    # 103: busybox, simfs, with devices, a dropped capability and a feature.
    shutil.copytree(busybox_tree, root / "vz/private/103", symlinks=True)
    (conf_dir / "103.conf").write_text(
        ct_conf(
            "simfs",
            'OSTEMPLATE="busybox"\nHOSTNAME="bb"\nCAPABILITY="NET_ADMIN:off"\n'
            'FEATURES="bridge:on nfs:off"\nDEVNODES="net/tun:rw "\nNAME="web"\n',
        )
    )
    (root / "etc/vz/names").mkdir(exist_ok=True)
    os.symlink("/etc/vz/conf/103.conf", root / "etc/vz/names/web")  # vzctl wrote absolute links
    # 104: ploop, an expanded image holding a busybox tree.
    scratch = root / "scratch"
    scratch.mkdir()
    disk = ploopimg.raw_disk(scratch / "disk.raw", 256 * 1024 * 1024, busybox_tree)
    ploopimg.ploop_ct(root / "vz/private/104", disk)
    shutil.rmtree(scratch)
    shutil.rmtree(busybox_tree)
    (conf_dir / "104.conf").write_text(ct_conf("ploop", 'OSTEMPLATE="busybox"\nHOSTNAME="pl"\n'))

    listed = vzroot.vzlist("-a", "-H", "-o", "ctid,status,layout,hostname")
    assert listed.code == 0, listed.err
    rows = [line.split() for line in listed.out.splitlines()]
    assert rows == [
        ["102", "stopped", "simfs", "deb.example.org"],
        ["103", "stopped", "simfs", "bb"],
        ["104", "stopped", "ploop", "pl"],
    ]
    assert vzroot.ok("status", "101").strip() == "CTID 101 deleted unmounted down"
    assert vzroot.ok("status", "web").strip() == "CTID 103 exist unmounted down"
    done = vzroot.run("vzcfgvalidate", str(conf_dir / "102.conf"))
    assert "netfilter stateless" in done.out, done.out + done.err

    # 102 boots under systemd, unprivileged, its files owned on disk as before.
    vzroot.ok("start", "102", "--wait")
    assert vzroot.ok("exec", "102", "systemctl is-system-running").strip() == "running"
    assert vzroot.ok("exec", "102", "stat -c %u:%g /home/alice /etc/shadow") == "1000:1000\n0:42\n"
    uid_map = vzroot.ok("exec", "102", "cat /proc/self/uid_map").split()
    assert uid_map[0] == "0" and int(uid_map[1]) >= 100000
    vzroot.ok("exec", "102", "touch /home/alice/new; chown 1000:1000 /home/alice/new")
    vzroot.ok("stop", "102")
    assert owners(deb, list(on_disk)) == on_disk
    assert os.lstat(deb / "home/alice/new").st_uid == 1000  # stored as the CT sees it

    # 103: what its config gives and takes away.
    vzroot.ok("start", "web")
    assert vzroot.vzctl("exec", "103", "exec 3<>/dev/net/tun").code == 0
    assert vzroot.vzctl("exec", "103", "ip addr add 10.203.0.1/32 dev lo").code != 0
    vzroot.ok("stop", "103")

    # 104 runs once converted: the image is read, never written.
    images = {p: p.read_bytes() for p in (root / "vz/private/104/root.hdd").iterdir()}
    refused = vzroot.vzctl("start", "104")
    assert refused.code == 50 and "vzctl convert 104" in refused.err
    for path, data in images.items():
        assert path.read_bytes() == data
    vzroot.ok("convert", "104")
    vzroot.ok("start", "104")
    assert vzroot.ok("exec", "104", "ls /bin/busybox").strip() == "/bin/busybox"
    vzroot.ok("stop", "104")
    rows = [line.split() for line in vzroot.vzlist("-a", "-H", "-o", "ctid,layout").out.splitlines()]
    assert rows == [["102", "simfs"], ["103", "simfs"], ["104", "btrfs"]]
