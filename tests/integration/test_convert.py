"""vzctl convert: a CT's files move between layouts byte for byte (owners, modes, xattrs,
ACLs, holes, hard links), it runs after each move, and a kill -9 at any point of a
conversion leaves it as it was or converted."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import struct
import time
from pathlib import Path

import pytest

from tests.conftest import VzRoot
from tests.faultpoint import stopped_at

pytestmark = pytest.mark.root

HOLE = 256 * 1024 * 1024


def _acl(entries: list[tuple[int, int, int]]) -> bytes:
    """A POSIX ACL as the kernel stores it in system.posix_acl_access (version 2)."""
    return struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in entries
    )


USER_OBJ, USER, GROUP_OBJ, MASK, OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
NO_ID = 0xFFFFFFFF


def populate(tree: Path) -> None:
    """Files of every kind OpenVZ trees hold, owned as a CT's users own them (uid 0 on disk)."""
    data = tree / "srv/data"
    data.mkdir(parents=True)
    (data / "owned").write_text("alice's\n")
    os.chown(data / "owned", 1000, 1001)
    (data / "setuid").write_bytes(b"#!/bin/sh\n")
    os.chmod(data / "setuid", 0o4755)
    (data / "sticky").mkdir()
    os.chmod(data / "sticky", 0o1777)
    (data / "linked").write_text("one inode, two names\n")
    os.link(data / "linked", data / "linked-too")
    with open(data / "sparse", "wb") as handle:
        handle.truncate(HOLE)
        handle.seek(HOLE // 2)
        handle.write(b"middle")
    (data / "xattr").write_text("x\n")
    os.setxattr(data / "xattr", "user.origin", b"openvz")
    (data / "acl").write_text("acl\n")
    os.chmod(data / "acl", 0o640)
    acl = _acl(
        [(USER_OBJ, 6, NO_ID), (USER, 4, 1000), (GROUP_OBJ, 4, NO_ID), (MASK, 4, NO_ID), (OTHER, 0, NO_ID)]
    )
    os.setxattr(data / "acl", "system.posix_acl_access", acl)
    os.symlink("/etc/hostname", data / "symlink")
    os.mkfifo(data / "fifo")


def manifest(tree: Path) -> dict[str, tuple[object, ...]]:
    """Everything cp -a must keep of what populate() made, per path; hard links as groups
    of names. (The rest of the tree changes when the CT runs, and a directory's size is
    its filesystem's business.)"""
    found: dict[str, tuple[object, ...]] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    for top, dirs, files in os.walk(tree / "srv"):
        for name in [*dirs, *files]:
            path = Path(top, name)
            rel = str(path.relative_to(tree))
            st = os.lstat(path)
            xattrs = tuple(
                sorted(
                    (k, os.getxattr(path, k, follow_symlinks=False))
                    for k in os.listxattr(path, follow_symlinks=False)
                )
            )
            content: object = None
            if stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            found[rel] = (
                stat.S_IFMT(st.st_mode),
                st.st_mode & 0o7777,
                st.st_uid,
                st.st_gid,
                st.st_size,
                xattrs,
                content,
            )
    found["<hard links>"] = tuple(sorted(tuple(sorted(group)) for group in inodes.values() if len(group) > 1))
    return found


def private(vzroot: VzRoot, ctid: str) -> Path:
    text = (vzroot.conf_dir / f"{ctid}.conf").read_text()
    line = next((row for row in text.splitlines() if row.startswith("VE_PRIVATE=")), None)
    if line is None:
        return vzroot.private_dir / ctid
    return vzroot.root / line.split("=", 1)[1].strip('"').replace("$VEID", ctid).lstrip("/")


def layout(vzroot: VzRoot, ctid: str) -> str:
    text = (vzroot.conf_dir / f"{ctid}.conf").read_text()
    return next(row for row in text.splitlines() if row.startswith("VE_LAYOUT=")).split("=", 1)[1].strip('"')


def leftovers(vzroot: VzRoot, ctid: str) -> list[str]:
    """What is beside the private area once a convert's background removal of the old tree
    (`.CTID.converted`) is done."""
    parent = private(vzroot, ctid).parent
    deadline = time.monotonic() + 30
    while (parent / f".{ctid}.converted").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{ctid}")]


def tree_of(vzroot: VzRoot, ctid: str) -> Path:
    where = private(vzroot, ctid)
    return where / "fs" if layout(vzroot, ctid) == "dir" else where


def test_convert_keeps_every_byte_and_the_ct_runs(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--ostemplate", "busybox", "--layout", "simfs")
    populate(private(vzroot, "101"))
    before = manifest(private(vzroot, "101"))
    assert before["<hard links>"] == (("srv/data/linked", "srv/data/linked-too"),)

    vzroot.ok("convert", "101")  # btrfs by default
    assert layout(vzroot, "101") == "btrfs"
    where = private(vzroot, "101")
    assert os.lstat(where).st_ino == 256  # a subvolume
    assert manifest(where) == before
    assert os.stat(where / "srv/data/sparse").st_blocks * 512 < 1024 * 1024  # the hole stayed one
    vzroot.ok("start", "101")
    assert vzroot.ok("exec", "101", "stat -c %u:%g /srv/data/owned").strip() == "1000:1001"
    vzroot.ok("stop", "101")

    vzroot.ok("convert", "101", "--layout", "dir")
    assert layout(vzroot, "101") == "dir"
    vzroot.ok("start", "101")
    assert (
        vzroot.ok("exec", "101", "cat /srv/data/owned; stat -c %u:%g /srv/data/owned")
        == "alice's\n1000:1001\n"
    )
    vzroot.ok("stop", "101")

    vzroot.ok("convert", "101", "--layout", "simfs")
    assert layout(vzroot, "101") == "simfs"
    assert manifest(private(vzroot, "101")) == before
    assert leftovers(vzroot, "101") == []


def test_convert_refuses_what_it_cannot_do(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--ostemplate", "busybox")
    before = (vzroot.conf_dir / "101.conf").read_text()
    for args, code in [
        (("--layout", "btrfs"), 21),  # already
        (("--layout", "ploop"), 21),  # pyvz writes no ploop
        (("--layout", "zfs"), 21),
    ]:
        done = vzroot.vzctl("convert", "101", *args)
        assert done.code == code, (args, done.err)
        assert len(done.err.strip().splitlines()) == 1
    vzroot.ok("start", "101")
    assert vzroot.vzctl("convert", "101", "--layout", "simfs").code == 32  # running
    vzroot.ok("stop", "101")
    vzroot.ok("snapshot", "101")
    done = vzroot.vzctl("convert", "101", "--layout", "simfs")
    assert done.code == 21 and "snapshots" in done.err
    assert (vzroot.conf_dir / "101.conf").read_text() == before
    assert vzroot.vzctl("convert", "999").code != 0


@pytest.mark.parametrize("point,converted", [("convert-built", False), ("convert-swapped", True)])
def test_a_killed_convert_leaves_the_ct_as_it_was_or_converted(
    vzroot: VzRoot, point: str, converted: bool
) -> None:
    vzroot.ok("create", "101", "--ostemplate", "busybox", "--layout", "dir")
    vzroot.ok("start", "101")
    vzroot.ok("exec", "101", "echo kept > /root/mark")
    vzroot.ok("stop", "101")
    stopped_at(vzroot, point, signal.SIGKILL, "convert", "101", "--layout", "btrfs")
    vzroot.ok("start", "101")  # finishes or undoes it first
    assert layout(vzroot, "101") == ("btrfs" if converted else "dir")
    assert vzroot.ok("exec", "101", "cat /root/mark") == "kept\n"
    vzroot.ok("stop", "101")
    assert not (vzroot.conf_dir / "101.converting").exists()
    assert leftovers(vzroot, "101") == []
    if not converted:
        vzroot.ok("convert", "101", "--layout", "btrfs")  # and it can be done again
        assert layout(vzroot, "101") == "btrfs"
