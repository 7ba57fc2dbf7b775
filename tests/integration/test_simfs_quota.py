"""A simfs CT's disk quota is the project quota of the filesystem its private area is on:
enforced on ext4 (and xfs) mounted with project quota, said by name everywhere else.

The filesystems are made here on loop devices; the enforcement tests need a kernel that can
mount ext4 with the quota feature (CONFIG_QFMT_V2) or xfs with pquota (CONFIG_XFS_QUOTA) and
are skipped, saying which, on one that cannot."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Done, VzRoot

pytestmark = pytest.mark.root

Make = Callable[..., Path]


@pytest.fixture
def filesystem(vzroot: VzRoot) -> Iterator[Make]:
    """make(kind, mkfs options, mount options) -> a filesystem mounted at ROOT/<kind><n> on a
    loop device of its own; CTs on it are stopped, and it is unmounted and its loop device
    detached, whatever the test did."""
    made: list[tuple[Path, str]] = []

    def make(kind: str, mkfs: tuple[str, ...] = (), options: str = "") -> Path:
        image = vzroot.root / f"{kind}{len(made)}.img"
        mount = vzroot.root / f"{kind}{len(made)}"
        if kind == "tmpfs":
            mount.mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64M", "tmpfs", str(mount)], check=True)
            made.append((mount, ""))
            return mount
        with open(image, "wb") as handle:
            handle.truncate(300 << 20)
        tool = {"ext4": ["mkfs.ext4", "-q", "-F", "-E", "nodiscard"], "xfs": ["mkfs.xfs", "-q", "-f"]}[kind]
        subprocess.run([*tool, *mkfs, str(image)], check=True, capture_output=True)
        loop = subprocess.run(
            ["losetup", "-f", "--show", str(image)], check=True, capture_output=True, text=True
        ).stdout.strip()
        mount.mkdir()
        made.append((mount, loop))
        argv = ["mount", *(["-o", options] if options else []), loop, str(mount)]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"this kernel cannot mount {kind} with {options or 'no options'}: {_kernel_says()}")
        return mount

    try:
        yield make
    finally:
        for entry in vzroot.conf_dir.glob("*.conf"):
            vzroot.vzctl("stop", entry.stem, "--fast")
            vzroot.vzctl("umount", entry.stem)
        for mount, loop in reversed(made):
            subprocess.run(["umount", str(mount)], capture_output=True)
            if loop:
                subprocess.run(["losetup", "-d", loop], capture_output=True)


def _kernel_says() -> str:
    lines = subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()
    return lines[-1].split("] ", 1)[-1] if lines else "no reason given"


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def simfs_ct(vzroot: VzRoot, mount: Path) -> None:
    vzroot.ok(
        "create", "101", "--ostemplate", "busybox", "--layout", "simfs", "--private", f"/{mount.name}/$VEID"
    )


def add_to_conf(vzroot: VzRoot, ctid: str, text: str) -> None:
    conf = vzroot.conf_dir / f"{ctid}.conf"
    conf.write_text(conf.read_text() + text)


# ---- where there is no project quota: said by name -------------------------------------------


def test_ext4_without_prjquota_says_disk_quota_is_not_enforced(vzroot: VzRoot, filesystem: Make) -> None:
    mount = filesystem("ext4")
    where = f"ext4 at {mount} is mounted without project quota (mount it with prjquota"
    private = f"/{mount.name}/$VEID"
    refused = vzroot.vzctl(
        "create",
        "101",
        "--ostemplate",
        "busybox",
        "--layout",
        "simfs",
        "--private",
        private,
        "--diskspace",
        "10M",
    )
    assert refused.code == 62 and len(lines(refused.err)) == 1 and where in refused.err, refused
    assert not (vzroot.conf_dir / "101.conf").exists() and not (mount / "101").exists()

    vzroot.ok("create", "101", "--ostemplate", "busybox", "--layout", "simfs", "--private", private)
    conf = (vzroot.conf_dir / "101.conf").read_text()
    refused = vzroot.vzctl("set", "101", "--diskspace", "10M", "--save")
    assert refused.code == 62 and len(lines(refused.err)) == 1 and where in refused.err, refused
    assert (vzroot.conf_dir / "101.conf").read_text() == conf

    # A CT adopted with OpenVZ's quota keys: start says, once, what is not enforced, and why.
    add_to_conf(vzroot, "101", 'DISKSPACE="2G:2.2G"\nDISKINODES="131072:144179"\n')
    started = vzroot.vzctl("start", "101")
    assert started.code == 0, started
    said = [line for line in lines(started.err) if "not enforced" in line]
    assert said == [
        f"WARNING: DISKSPACE, DISKINODES not enforced: {where}, on a filesystem made with "
        "-O quota,project)"
    ], started.err
    stat = vzroot.run("vzquota", "stat", "101")
    assert stat.code == 6 and lines(stat.err) == [
        f"vzquota : (error) Quota accounting is not available for id 101: {where}, on a filesystem "
        "made with -O quota,project)"
    ]
    on = vzroot.vzctl("quotaon", "101")
    assert on.code == 60 and len(lines(on.err)) == 1 and where in on.err, on
    listed = vzroot.vzlist("-H", "-o", "diskspace,diskinodes", "101").out.split()
    assert listed == ["-", "-"]  # nothing counts for it
    vzroot.ok("stop", "101", "--fast")


def test_tmpfs_has_no_project_quota_and_says_so(vzroot: VzRoot, filesystem: Make) -> None:
    mount = filesystem("tmpfs")
    vzroot.ok(
        "create", "101", "--ostemplate", "busybox", "--layout", "simfs", "--private", f"/{mount.name}/$VEID"
    )
    add_to_conf(vzroot, "101", 'DISKINODES="1000:2000"\n')
    started = vzroot.vzctl("start", "101")
    assert started.code == 0, started
    assert (
        f"WARNING: DISKSPACE, DISKINODES not enforced: tmpfs at {mount} has no project quota" in started.err
    )
    vzroot.ok("stop", "101", "--fast")


# ---- what an unprivileged CT cannot do -------------------------------------------------------

_QUOTACTL = """
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(sys.argv[1], os.O_RDONLY)
limits = ctypes.create_string_buffer(struct.pack("=8QI4x", 100, 50, 0, 0, 0, 0, 0, 0, 1), 72)
for kind in (0, 1, 2):  # user, group, project quota: Q_SETQUOTA of id 1000
    result = libc.syscall(443, fd, (0x800008 << 8) | kind, 1000, limits)
    print(os.strerror(ctypes.get_errno()) if result else "ok")
"""


def test_a_user_namespace_may_not_set_quotas(vzroot: VzRoot, filesystem: Make) -> None:
    """What QUOTAUGIDLIMIT on simfs would need: an unprivileged CT's root (root of a user
    namespace) setting quotas on its filesystem. The kernel refuses it before it looks at the
    filesystem's quota state (capable(CAP_SYS_ADMIN) is asked of the host's namespace)."""
    mount = filesystem("ext4")
    as_root = subprocess.run([sys.executable, "-c", _QUOTACTL, str(mount)], capture_output=True, text=True)
    assert as_root.stdout.split("\n")[:3] == ["No such process"] * 3  # root: quota is off here
    in_userns = subprocess.run(
        ["unshare", "--user", "--map-root-user", sys.executable, "-c", _QUOTACTL, str(mount)],
        capture_output=True,
        text=True,
    )
    assert in_userns.stdout.split("\n")[:3] == ["Operation not permitted"] * 3, in_userns
    vzroot.ok(
        "create", "101", "--ostemplate", "busybox", "--layout", "simfs", "--private", f"/{mount.name}/$VEID"
    )
    done = vzroot.run("vzcfgvalidate", str(vzroot.conf_dir / "101.conf"))
    assert "Note: quotaugidlimit" not in done.out  # not set: nothing to say
    add_to_conf(vzroot, "101", 'QUOTAUGIDLIMIT="100"\n')
    done = vzroot.run("vzcfgvalidate", str(vzroot.conf_dir / "101.conf"))
    assert "Note: quotaugidlimit: saved, but not enforced (an unprivileged CT cannot set quotas" in done.out
    started = vzroot.vzctl("start", "101")
    assert [line for line in lines(started.err) if "quotaugidlimit" in line] == [
        line.replace("Note: ", "WARNING: ") for line in lines(done.out) if "quotaugidlimit" in line
    ]
    vzroot.ok("stop", "101", "--fast")


# ---- where there is: enforced ----------------------------------------------------------------


def project_of(path: Path) -> int:
    """The project id as e2fsprogs' lsattr reads it (ioctl FS_IOC_FSGETXATTR, its own code)."""
    out = subprocess.run(["lsattr", "-pd", str(path)], check=True, capture_output=True, text=True).stdout
    return int(out.split()[0])


def write(vzroot: VzRoot, megabytes: int) -> Done:
    vzroot.vzctl("exec", "101", "rm -f /root/big; sync")
    return vzroot.vzctl("exec2", "101", f"dd if=/dev/zero of=/root/big bs=1M count={megabytes} 2>&1 && sync")


def enforced(vzroot: VzRoot, mount: Path) -> None:
    private = mount / "101"
    vzroot.ok(
        "create",
        "101",
        "--ostemplate",
        "busybox",
        "--layout",
        "simfs",
        "--private",
        f"/{mount.name}/$VEID",
        "--diskspace",
        "20M:30M",
        "--diskinodes",
        "5000:6000",
    )
    assert project_of(private) == 101 and project_of(private / "bin") == 101
    vzroot.ok("start", "101")
    full = write(vzroot, 40)
    # ext4 says EDQUOT; xfs refuses a project's write past its hard limit with ENOSPC
    refused = ("Disk quota exceeded", "No space left on device")
    assert full.code != 0 and any(r in full.out for r in refused), full
    assert write(vzroot, 10).code == 0  # under the soft limit: fine
    assert project_of(private / "root/big") == 101  # a new file inherits the project

    stat = vzroot.run("vzquota", "stat", "101")
    assert stat.code == 0, stat
    header, blocks, inodes = stat.out.splitlines()
    du = int(
        subprocess.run(["du", "-sk", "-x", str(private)], capture_output=True, text=True).stdout.split()[0]
    )
    used, du = int(blocks.split()[1]), int(du)
    assert abs(used - du) <= 64 and used >= 10 * 1024, (stat.out, du)
    assert blocks.split()[2:4] == ["20480", "30720"] and inodes.split()[2:4] == ["5000", "6000"]
    listed = vzroot.vzlist("-H", "-o", "diskspace,diskspace.s,diskspace.h,diskinodes,diskinodes.h", "101")
    space, soft, hard, files, files_hard = listed.out.split()
    assert abs(int(space) - used) <= 64 and (soft, hard, files_hard) == ("20480", "30720", "6000")
    assert int(files) == int(inodes.split()[1]) > 100

    vzroot.ok("set", "101", "--diskspace", "50M:60M", "--save")  # live, on the running CT
    assert write(vzroot, 40).code == 0
    vzroot.ok("set", "101", "--diskquota", "no", "--save")
    assert write(vzroot, 70).code == 0  # no limit at all
    vzroot.ok("stop", "101", "--fast")
    vzroot.ok("destroy", "101")
    assert not private.exists()


def test_ext4_with_prjquota_enforces_diskspace_and_diskinodes(vzroot: VzRoot, filesystem: Make) -> None:
    mount = filesystem("ext4", ("-O", "quota,project", "-E", "nodiscard,quotatype=prjquota"), "prjquota")
    enforced(vzroot, mount)


def test_xfs_with_pquota_enforces_diskspace_and_diskinodes(vzroot: VzRoot, filesystem: Make) -> None:
    if shutil.which("mkfs.xfs") is None:
        pytest.skip("mkfs.xfs is not installed (Debian package xfsprogs)")
    enforced(vzroot, filesystem("xfs", (), "prjquota"))
