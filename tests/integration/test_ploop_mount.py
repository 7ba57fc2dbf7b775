"""ploop CTs mounted read-only: the files come out as they went in, the images are not
touched, and nothing (mount, loop, dm, FUSE, directory) stays behind, whatever happens."""

from __future__ import annotations

import glob
import hashlib
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyvz.errors import ExitCode, VzError
from pyvz.storage import ploop
from tests import ploopimg as pi
from tests.conftest import REPO

pytestmark = pytest.mark.root

DISK = 64 * pi.MiB
VIEWS = [
    ploop.View.FUSE,
    pytest.param(
        ploop.View.DM,
        marks=pytest.mark.skipif(not ploop.dm_available(), reason="this kernel has no device-mapper"),
    ),
]


def facts(root: Path) -> dict[str, tuple[object, ...]]:
    """What a copy must keep of every file: type, mode, owner, size, content, target,
    device number, xattrs, and which names are one inode."""
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, list[str]] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if name.startswith("lost+found"):
            continue
        st = path.lstat()
        content: object = None
        if stat.S_ISREG(st.st_mode):
            content = hashlib.sha256(path.read_bytes()).hexdigest()
            inodes.setdefault(st.st_ino, []).append(name)
        elif stat.S_ISLNK(st.st_mode):
            content = os.readlink(path)
        xattrs = {} if stat.S_ISLNK(st.st_mode) else {k: os.getxattr(path, k) for k in os.listxattr(path)}
        rdev = st.st_rdev if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else 0
        out[name] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size,
                     content, rdev, tuple(sorted(xattrs.items())))  # fmt: skip
    out["<hard links>"] = tuple(sorted(tuple(sorted(n)) for n in inodes.values() if len(n) > 1))
    return out


def image_state(private: Path) -> dict[str, tuple[str, int, int]]:
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns, p.stat().st_ctime_ns)
        for p in (private / "root.hdd").iterdir()
    }


def leftovers(private: Path, holder: int | None = None) -> list[str]:
    """What ploop mounts of this test left: mounts and directories in its own temporary
    directory (own_tmpdir: the test's tmp_path), loop devices of its files, device-mapper devices named after
    this process (or `holder`). Other tests' mounts, in other workers, are none of its business."""
    scratch = tempfile.gettempdir()
    found = [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if f" {scratch}/" in line]
    loops = subprocess.run(
        ["losetup", "--list", "--noheadings", "-O", "NAME,BACK-FILE"], capture_output=True, text=True
    )
    found += [line for line in loops.stdout.splitlines() if f" {scratch}/" in line or str(private) in line]
    if ploop.dm_available():
        listing = subprocess.run(["dmsetup", "ls"], capture_output=True, text=True).stdout
        ours = tuple(f"pyvz-ploop-{pid}-" for pid in (os.getpid(), holder) if pid is not None)
        found += [line for line in listing.splitlines() if line.startswith(ours)]
    found += glob.glob(os.path.join(scratch, "pyvz-ploop-*"))
    return found


@pytest.fixture(autouse=True)
def own_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ploop's work directories (tempfile's, here and in the processes a test starts) go in
    this test's own directory, where leftovers() looks."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tree of files of every kind and a raw disk (GPT + ext4 made by mkfs.ext4 -d) of it."""
    base = tmp_path_factory.mktemp("ploopsrc")
    pi.populate(base / "tree", as_root=True)
    pi.raw_disk(base / "disk.raw", DISK, base / "tree")
    return base


@pytest.fixture(scope="module")
def changed(source: Path) -> Path:
    """The same filesystem after the CT ran a while: made in a scratch copy of its image
    (mounted read-write; the scratch copy is not an image under test), and the same changes
    made to a copy of the tree, which is what the top snapshot must show."""
    base = source / "changed"
    base.mkdir()
    tree = base / "tree"
    tree.mkdir()
    pi.copy_tree(source / "tree", tree)
    scratch = base / "fs.raw"
    subprocess.run(["cp", "--sparse=always", str(source / "disk.fs"), str(scratch)], check=True)
    mnt = base / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(scratch), str(mnt)], check=True)
    try:
        for root in (mnt, tree):
            (root / "etc/hostname").write_text("renamed\n")
            (root / "etc/shadow").unlink()
            (root / "srv").mkdir()
            (root / "srv/big").write_bytes(bytes(range(256)) * 12000)
            os.chown(root / "srv/big", 33, 33)
            (root / "home/user/notes.txt").chmod(0o600)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    pi.embed(base / "disk.raw", DISK, scratch)
    return base


@pytest.fixture
def clean() -> Iterator[None]:
    before = leftovers(Path("/nonexistent"))
    yield
    assert leftovers(Path("/nonexistent")) == before


def check_mount(private: Path, expected_tree: Path, view: ploop.View) -> None:
    before = image_state(private)
    want = facts(expected_tree)
    with ploop.mounted(private, view=view) as root:
        options = next(
            line for line in Path("/proc/self/mountinfo").read_text().splitlines() if f" {root} " in line
        )
        assert " ro," in options and "ext4" in options
        got = facts(root)
        sparse = root / "var/lib/sparse.img"
        assert sparse.stat().st_blocks * 512 < 1 * pi.MiB  # the 20 MB hole stayed a hole
        with pytest.raises(OSError):
            (root / "etc/new").write_text("x")
    assert got == want
    assert image_state(private) == before
    assert not root.exists()
    assert leftovers(private) == []


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize(
    "variant", [{}, {"preallocated": True}, {"version": 1}], ids=["expanded", "preallocated", "v1"]
)
def test_mounts_each_variant(
    source: Path, tmp_path: Path, view: ploop.View, variant: dict[str, object]
) -> None:
    ct = pi.ploop_ct(tmp_path / "101", source / "disk.raw", **variant)  # type: ignore[arg-type]
    check_mount(ct.private, source / "tree", view)


@pytest.mark.parametrize("view", VIEWS)
def test_mounts_the_top_of_a_snapshot_chain(
    source: Path, changed: Path, tmp_path: Path, view: ploop.View
) -> None:
    ct = pi.ploop_ct(tmp_path / "102", changed / "disk.raw", base=source / "disk.raw")
    assert len(ct.images()) == 3  # descriptor, base, top delta
    check_mount(ct.private, changed / "tree", view)
    # The base alone still reads as the CT was when the snapshot was taken.
    hdd = ct.hdd
    (hdd / "DiskDescriptor.xml").write_text(pi.descriptor([(pi.TOP_GUID, "root.hdd")], size=DISK))
    check_mount(ct.private, source / "tree", view)


def test_an_error_or_ctrl_c_in_the_block_leaves_nothing(source: Path, tmp_path: Path, clean: None) -> None:
    ct = pi.ploop_ct(tmp_path / "103", source / "disk.raw")
    before = image_state(ct.private)
    for failure in (RuntimeError("copy failed"), KeyboardInterrupt()):
        with pytest.raises(type(failure)), ploop.mounted(ct.private) as root:
            assert (root / "etc/hostname").read_text() == "ploopct\n"
            raise failure
        assert leftovers(ct.private) == []
    target = tmp_path / "target"
    target.mkdir()
    with ploop.mounted(ct.private, target=target) as root:
        assert root == target and (root / "bin/hello").exists()
    assert target.is_dir() and not any(target.iterdir())  # the caller's directory stays, empty
    assert image_state(ct.private) == before


def test_damaged_images_fail_cleanly(source: Path, tmp_path: Path, clean: None) -> None:
    ct = pi.ploop_ct(tmp_path / "104", source / "disk.raw")
    os.truncate(ct.hdd / "root.hdd", 3 * pi.MiB)
    with pytest.raises(VzError) as caught, ploop.mounted(ct.private):
        pass
    assert caught.value.code == ExitCode.MOUNT_IMAGE and "beyond the end of the file" in caught.value.message
    # A filesystem that needs journal recovery: refused, or read as it is when asked to.
    fs_image = tmp_path / "dirty.fs"
    subprocess.run(["cp", "--sparse=always", str(source / "disk.fs"), str(fs_image)], check=True)
    subprocess.run(
        ["debugfs", "-w", "-R", "feature needs_recovery", str(fs_image)], check=True, capture_output=True
    )
    pi.embed(tmp_path / "dirty.raw", DISK, fs_image)
    ct = pi.ploop_ct(tmp_path / "105", tmp_path / "dirty.raw")
    with pytest.raises(VzError, match="journal needs recovery"), ploop.mounted(ct.private):
        pass
    assert leftovers(ct.private) == []
    # Asked to, it is read as it is: no journal replay (a read-only device could not take one).
    before = image_state(ct.private)
    with ploop.mounted(ct.private, allow_dirty=True) as root:
        assert (root / "etc/hostname").read_text() == "ploopct\n"
    assert image_state(ct.private) == before
    assert leftovers(ct.private) == []


def test_a_filesystem_that_fails_to_mount_leaves_nothing(source: Path, tmp_path: Path, clean: None) -> None:
    broken = bytearray((source / "disk.raw").read_bytes())
    broken[pi.MiB + 1024 + 0x60 + 3] |= 0x40  # an incompat feature no kernel knows
    (tmp_path / "broken.raw").write_bytes(broken)
    ct = pi.ploop_ct(tmp_path / "106", tmp_path / "broken.raw")
    with pytest.raises(VzError) as caught, ploop.mounted(ct.private):
        pass
    assert caught.value.code == ExitCode.MOUNT_IMAGE and "mount" in caught.value.message
    assert leftovers(ct.private) == []


HOLDER = """
import sys, time
from pathlib import Path
from pyvz.storage import ploop
with ploop.mounted(Path(sys.argv[1])) as root:
    print(root, flush=True)
    time.sleep(600)
"""


def test_kill_9_while_mounted_leaves_nothing(source: Path, tmp_path: Path, clean: None) -> None:
    ct = pi.ploop_ct(tmp_path / "107", source / "disk.raw")
    before = image_state(ct.private)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(ct.private)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    root = Path(proc.stdout.readline().strip())
    assert (root / "etc/hostname").read_text() == "ploopct\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while leftovers(ct.private, proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftovers(ct.private, proc.pid) == []
    assert image_state(ct.private) == before
