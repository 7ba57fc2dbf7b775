"""vzrestore of OpenVZ-era and Proxmox-era vzdump archives, made here as those tools made
them: `tar --sparse --numeric-owner` of a busybox private area (uid 0 on disk) with the CT's
OpenVZ config at ./etc/vzdump/vps.conf, plain, gzip and lzop. Hostile variants must be
refused with one line, leaving nothing behind (and nothing written outside the root)."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Done, VzRoot
from tests.integration.test_backup import leftovers, one_line_error

pytestmark = pytest.mark.root

VPS_CONF = """\
# an OpenVZ 4.x config as vzctl wrote it
ONBOOT="yes"
KMEMSIZE="14372700:14790164"
NUMPROC="240:240"
PRIVVMPAGES="65536:69632"
DISKSPACE="2097152:2306867"
DISKINODES="200000:220000"
QUOTATIME="0"
CPUUNITS="1000"
VE_ROOT="/vz/root/$VEID"
VE_PRIVATE="/vz/private/$VEID"
VE_LAYOUT="simfs"
OSTEMPLATE="debian-6.0-x86_64"
ORIGIN_SAMPLE="vswap-256m"
HOSTNAME="old.example.org"
SOME_FUTURE_KEY="kept as it is"
"""


@pytest.fixture(scope="module")
def busybox_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded busybox template, unpacked once (owners as stored: uid 0)."""
    from pyvz.paths import Paths
    from pyvz.templates import busybox

    work = tmp_path_factory.mktemp("bb")
    archive = busybox.build(Paths(work / "build"))
    tree = work / "tree"
    tree.mkdir()
    subprocess.run(["tar", "--zstd", "-xpf", str(archive), "--numeric-owner", "-C", str(tree)], check=True)
    return tree


def private_area(busybox_tree: Path, where: Path) -> Path:
    """A private area as OpenVZ left it, with vzdump's etc/vzdump inside."""
    tree = where / "private"
    subprocess.run(["cp", "-a", str(busybox_tree), str(tree)], check=True)
    data = tree / "data"
    data.mkdir()
    (data / "hello").write_text("from openvz\n")
    os.chown(data / "hello", 1000, 1001)
    (data / "suid").write_bytes(b"#!/bin/sh\n")
    os.chmod(data / "suid", 0o4755)
    with open(data / "sparse", "wb") as handle:
        handle.seek(32 << 20)
        handle.write(b"tail")
    os.symlink("/data/hello", data / "absolute-link")  # inside the CT it means its own file
    os.link(data / "hello", data / "hard")
    (tree / "dev").mkdir(exist_ok=True)
    for name, major, minor in (("null", 1, 3), ("ttyp0", 3, 0)):
        node = tree / "dev" / name
        if node.exists() or node.is_symlink():
            node.unlink()
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
    meta = tree / "etc/vzdump"
    meta.mkdir(parents=True)
    (meta / "vps.conf").write_text(VPS_CONF)
    (meta / "vps.mount").write_text("#!/bin/sh\necho mounted >/dev/null\n")
    return tree


def old_archive(tree: Path, target: Path, compressor: str | None) -> Path:
    """tar of the tree as old vzdump wrote it, piped through `compressor`."""
    with open(target, "wb") as out:
        tar = subprocess.Popen(
            ["tar", "-cpf", "-", "--sparse", "--numeric-owner", "-C", str(tree), "."], stdout=subprocess.PIPE
        )
        assert tar.stdout is not None
        if compressor is None:
            shutil.copyfileobj(tar.stdout, out)
        else:
            subprocess.run([compressor, "-c"], stdin=tar.stdout, stdout=out, check=True)
        tar.stdout.close()
        assert tar.wait() == 0
    return target


def vzrestore(vzroot: VzRoot, *args: str) -> Done:
    return vzroot.run("vzrestore", *args)


@pytest.mark.parametrize(
    ("compressor", "name"),
    [
        ("gzip", "vzdump-openvz-101-2012_01_01-00_00_00.tar.gz"),
        ("lzop", "vzdump-openvz-101-2012_01_01-00_00_00.tar.lzo"),
        (None, "vzdump-101.tar"),
    ],
)
def test_old_archive_restores_and_starts(
    vzroot: VzRoot, busybox_tree: Path, tmp_path: Path, compressor: str | None, name: str
) -> None:
    archive = old_archive(private_area(busybox_tree, tmp_path), tmp_path / name, compressor)
    if compressor is None:  # the same archive onto layout dir: owners through the idmapped mount
        assert vzrestore(vzroot, str(archive), "151", "--layout", "dir").code == 0
        assert 'VE_LAYOUT="dir"' in (vzroot.conf_dir / "151.conf").read_text()
        vzroot.ok("start", "151")
        try:
            assert vzroot.ok("exec", "151", "stat -c %u:%g /data/hello").strip() == "1000:1001"
            assert vzroot.ok("exec", "151", "stat -c %u /bin").strip() == "0"
            assert vzroot.vzctl("exec", "151", "test -e /etc/vzdump").code != 0
        finally:
            vzroot.ok("stop", "151")
    done = vzrestore(vzroot, str(archive), "150")
    assert done.code == 0, done.err
    assert "device node(s) under /dev are left out" in done.err and "/dev/ttyp0" in done.err

    conf = (vzroot.conf_dir / "150.conf").read_text()
    assert 'HOSTNAME="old.example.org"' in conf
    assert 'SOME_FUTURE_KEY="kept as it is"' in conf and 'ORIGIN_SAMPLE="vswap-256m"' in conf
    assert "/vz/private" not in conf and "/vz/root" not in conf  # this host's places
    assert 'VE_LAYOUT="btrfs"' in conf
    assert (vzroot.conf_dir / "150.mount").read_text().startswith("#!/bin/sh")

    private = vzroot.private_dir / "150"
    assert not (private / "etc/vzdump").exists()
    assert not (private / "dev/ttyp0").exists()
    assert stat.S_ISCHR(os.lstat(private / "dev/null").st_mode)
    hello = os.lstat(private / "data/hello")
    assert (hello.st_uid, hello.st_gid) == (1000, 1001)  # on disk as in the archive
    assert os.lstat(private / "bin").st_uid == 0
    assert os.lstat(private / "data/hard").st_ino == hello.st_ino
    assert os.lstat(private / "data/suid").st_mode & 0o7777 == 0o4755
    assert os.readlink(private / "data/absolute-link") == "/data/hello"
    sparse = os.lstat(private / "data/sparse")
    assert sparse.st_size == (32 << 20) + 4 and sparse.st_blocks * 512 < 1 << 20

    vzroot.ok("start", "150")
    try:
        assert vzroot.ok("exec", "150", "cat /data/absolute-link") == "from openvz\n"
        assert vzroot.ok("exec", "150", "stat -c %u:%g /data/hello").strip() == "1000:1001"
        assert vzroot.ok("exec", "150", "hostname").strip() == "old.example.org"
    finally:
        vzroot.ok("stop", "150")


# ---- hostile archives --------------------------------------------------------------------------


def _file(name: str, data: bytes = b"x\n") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, **fields: object) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info, None


def _conf() -> tuple[tarfile.TarInfo, bytes | None]:
    return _file("./etc/vzdump/vps.conf", VPS_CONF.encode())


def _dirs() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return [_special(name, tarfile.DIRTYPE, mode=0o755) for name in (".", "./etc", "./etc/vzdump")]


HOSTILE: dict[str, Callable[[Path], list[tuple[tarfile.TarInfo, bytes | None]]]] = {
    "dotdot": lambda out: [*_dirs(), _conf(), _file(f"./../../../../../..{out}/dotdot")],
    "absolute": lambda out: [*_dirs(), _conf(), _file(f"{out}/absolute")],
    "through-symlink": lambda out: [
        *_dirs(),
        _conf(),
        _special("./escape", tarfile.SYMTYPE, linkname=str(out)),
        _file("./escape/through-symlink"),
    ],
    "hardlink-out": lambda out: [
        *_dirs(),
        _conf(),
        _special("./shadow", tarfile.LNKTYPE, linkname="../../../../../../../etc/shadow"),
    ],
    "block-device": lambda out: [
        *_dirs(),
        _conf(),
        _special("./data-disk", tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o666),
    ],
    "char-device": lambda out: [
        *_dirs(),
        _conf(),
        _special("./kmem", tarfile.CHRTYPE, devmajor=1, devminor=2, mode=0o666),
    ],
    "no-config": lambda out: [*_dirs(), _file("./hello")],
}


@pytest.fixture
def outside() -> Iterator[Path]:
    """A directory outside the root that a hostile archive aims at: it must stay empty."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="pyvz-outside-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("variant", sorted(HOSTILE))
def test_hostile_archive_is_refused_leaving_nothing(
    vzroot: VzRoot, tmp_path: Path, outside: Path, variant: str
) -> None:
    archive = tmp_path / "vzdump-openvz-160-2012_01_01-00_00_00.tgz"
    with tarfile.open(archive, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        for info, data in HOSTILE[variant](outside):
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    line = one_line_error(vzrestore(vzroot, str(archive), "160"), 17)
    assert archive.name in line, line
    assert not vzroot.private_dir.exists() or leftovers(vzroot, "160") == []
    assert list(outside.iterdir()) == []
    assert not (vzroot.conf_dir / "160.mount").exists()


# ---- vzdump's old flags ----------------------------------------------------------------------------


def fake_sendmail(vzroot: VzRoot, where: Path) -> Path:
    """SENDMAIL in vz.conf: a script recording its arguments and the message it is given."""
    script = where / "sendmail"
    script.write_text(f'#!/bin/sh\necho "$@" > {where}/args\ncat > {where}/message\n')
    script.chmod(0o755)
    conf = vzroot.root / "etc/vz/vz.conf"
    conf.write_text(conf.read_text() + f'SENDMAIL="{script}"\n')
    return where / "message"


def test_old_vzdump_flags(vzroot: VzRoot, tmp_path: Path) -> None:
    vzroot.ok("create", "101")
    vzroot.ok("start", "101")
    message = fake_sendmail(vzroot, tmp_path)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    dumps = vzroot.root / "var/lib/vz/dump"
    done = vzroot.run(
        "vzdump", "--stop", "--compress", "--mailto", "admin@example.invalid", "--tmpdir", str(tmpdir),
        "--stopwait", "1", "--lockwait", "1", "--size", "1024", "101",
    )  # fmt: skip
    assert done.code == 0, done.err
    archives = sorted(p.name for p in dumps.iterdir() if p.name.startswith("vzdump-101-"))
    assert len(archives) == 2 and archives[1].endswith(".tar.gz"), archives  # bare --compress: gzip
    assert (done.out + done.err).count("--size 1024") == 1
    assert list(tmpdir.iterdir()) == []  # its temporary files went there and are gone
    assert "running" in vzroot.ok("status", "101")  # stop mode started it again
    mail = message.read_text()
    assert "To: admin@example.invalid" in mail and "backup successful" in mail
    assert archives[1] in mail and "Detailed log of CT 101" in mail
    assert (tmp_path / "args").read_text().split() == ["-i", "--", "admin@example.invalid"]

    # The pyvz form still works, and a bare --compress before the CT list is gzip too.
    assert vzroot.run("vzdump", "--compress", "none", "101").code == 0
    assert vzroot.run("vzdump", "--compress", "101").code == 0
    names = sorted(p.name for p in dumps.iterdir() if p.name.startswith("vzdump-101-"))
    assert [n.rsplit("-", 1)[1].split(".", 1)[1] for n in names if not n.endswith(".log")][-2:] == [
        "tar",
        "tar.gz",
    ]


def test_vzdump_compress_lzo_writes_lzop_and_restores(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101")
    vzroot.ok("start", "101")
    vzroot.ok("exec", "101", "echo kept > /root/note")
    done = vzroot.run("vzdump", "--compress", "lzo", "101")  # Proxmox-era vzdump's form
    assert done.code == 0, done.err
    dumps = vzroot.root / "var/lib/vz/dump"
    archives = [p for p in dumps.glob("vzdump-101-*") if not p.name.endswith(".log")]
    assert len(archives) == 1 and archives[0].name.endswith(".tar.lzo"), archives
    assert archives[0].read_bytes()[:9] == b"\x89LZO\x00\r\n\x1a\n"  # lzop's own format
    subprocess.run(["lzop", "-t", str(archives[0])], check=True)
    assert vzroot.run("vzdump", "--verify", str(archives[0])).code == 0
    done = vzrestore(vzroot, str(archives[0]), "102")
    assert done.code == 0, done.err
    vzroot.ok("start", "102")
    try:
        assert vzroot.ok("exec", "102", "cat /root/note") == "kept\n"
    finally:
        vzroot.ok("stop", "102")
        vzroot.ok("stop", "101")


def test_vzdump_lockwait_waits_for_the_lock_and_mail_without_sendmail(vzroot: VzRoot) -> None:
    import subprocess
    import sys
    import time

    from pyvz.lock import Lock
    from pyvz.paths import Paths
    from tests.conftest import REPO

    vzroot.ok("create", "101")
    conf = vzroot.root / "etc/vz/vz.conf"
    conf.write_text(conf.read_text() + 'SENDMAIL="/nonexistent/sendmail"\n')
    lock = Lock(Paths(vzroot.root).lock_dir / "101.lck", "CT 101")
    with lock:
        done = vzroot.run("vzdump", "101")
        assert done.code == 9 and "locked" in done.err  # no wait by default: vzctl's "locked"
        started = time.monotonic()
        waiting = subprocess.Popen(
            [sys.executable, "-m", "pyvz.cli.vzdump", "--lockwait", "1", "--mailto", "a@example.invalid",
             "101"],
            env=vzroot.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(1.5)
        assert waiting.poll() is None  # still waiting for the lock
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert time.monotonic() - started >= 1.5
    lines = [line for line in err.splitlines() if "not sent" in line]
    assert len(lines) == 1 and "/nonexistent/sendmail" in lines[0], err
