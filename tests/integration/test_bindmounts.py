"""Bind mounts (OpenVZ 7's --bindmount_add/--bindmount_del) on real busybox CTs: a host
directory owned by host root, usable by the CT's unprivileged root through an idmapped
mount, live changes on a running CT, and the host paths that are refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import VzRoot

pytestmark = pytest.mark.root


def conf(vzroot: VzRoot, ctid: str = "101") -> bytes:
    return (vzroot.conf_dir / f"{ctid}.conf").read_bytes()


def inside(vzroot: VzRoot, command: str, ctid: str = "101") -> str:
    return vzroot.ok("exec", ctid, command)


def mounted_inside(vzroot: VzRoot, target: str, ctid: str = "101") -> bool:
    mounts = vzroot.ok("exec", ctid, "cat /proc/self/mounts")
    return any(line.split()[1] == target for line in mounts.splitlines() if len(line.split()) > 1)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A host directory owned by host root, with a file in it."""
    directory = tmp_path / "data"
    directory.mkdir()
    (directory / "hello.txt").write_text("from the host\n")
    os.chown(directory, 0, 0)
    directory.chmod(0o755)
    return directory


def test_rw_ro_live_and_restart(vzroot: VzRoot, data: Path, tmp_path: Path) -> None:
    vzroot.ok("create", "101", "--bindmount_add", f"{data}:/data")
    assert f'BINDMOUNT="{data}:/data"' in conf(vzroot).decode()
    vzroot.ok("start", "101")
    # The CT's root (an unprivileged host range) sees the host-root-owned tree as its own.
    assert inside(vzroot, "cat /data/hello.txt") == "from the host\n"
    assert inside(vzroot, "stat -c %u:%g /data/hello.txt").strip() == "0:0"
    inside(vzroot, "echo from the ct > /data/new.txt")
    made = data / "new.txt"
    assert made.read_text() == "from the ct\n"
    assert (made.stat().st_uid, made.stat().st_gid) == (0, 0)  # shifted back to host root

    # Live add, read-only: writes are refused inside, the host file stays.
    other = tmp_path / "ro"
    other.mkdir()
    (other / "keep.txt").write_text("keep\n")
    vzroot.ok("set", "101", "--bindmount_add", f"{other}:/srv/ro,ro,nosuid", "--save")
    assert mounted_inside(vzroot, "/srv/ro")
    assert inside(vzroot, "cat /srv/ro/keep.txt") == "keep\n"
    done = vzroot.vzctl("exec", "101", "echo x > /srv/ro/keep.txt")
    assert done.code != 0
    assert (other / "keep.txt").read_text() == "keep\n"
    assert f"{other}:/srv/ro,ro,nosuid" in conf(vzroot).decode()

    # Live del: gone inside at once, and from the config.
    vzroot.ok("set", "101", "--bindmount_del", "/srv/ro", "--save")
    assert not mounted_inside(vzroot, "/srv/ro")
    assert "/srv/ro" not in conf(vzroot).decode()

    # After a restart the saved one is there again, and ro is ro at start too.
    vzroot.ok("set", "101", "--bindmount_add", f"{other}:/srv/ro2,ro", "--save")
    vzroot.ok("restart", "101")
    assert inside(vzroot, "cat /data/new.txt") == "from the ct\n"
    assert inside(vzroot, "cat /srv/ro2/keep.txt") == "keep\n"
    assert vzroot.vzctl("exec", "101", "touch /srv/ro2/no").code != 0
    assert not (other / "no").exists()
    listed = vzroot.vzlist("-H", "-o", "bindmount", "101")
    assert listed.out.split() == [f"{data}:/data", f"{other}:/srv/ro2,ro"]
    entry = json.loads(vzroot.vzlist("-j", "-o", "bindmount", "101").out)[0]
    assert entry["bindmount"] == [f"{data}:/data", f"{other}:/srv/ro2,ro"]
    # The staging points LXC bound from are gone from the host once the CT runs.
    staging = str(vzroot.lxc_dir / "101" / "binds")
    assert not [line for line in Path("/proc/self/mounts").read_text().splitlines() if staging in line]
    assert not Path(staging).exists()

    vzroot.ok("set", "101", "--bindmount_del", "all", "--save")
    assert "BINDMOUNT" not in conf(vzroot).decode() or 'BINDMOUNT=""' in conf(vzroot).decode()
    assert not mounted_inside(vzroot, "/data")
    vzroot.ok("stop", "101")


def test_refused_paths_change_nothing(vzroot: VzRoot, tmp_path: Path, data: Path) -> None:
    vzroot.ok("create", "101")
    vzroot.ok("create", "102")
    link = tmp_path / "etc-link"
    link.symlink_to("/etc")
    refused = [
        "/",
        "/etc",
        "/proc",
        str(link),
        str(vzroot.private_dir / "102"),
        str(vzroot.root / "var/lib/vz"),
        str(vzroot.root),
        "/var",  # holds /var/lib/vz
        str(tmp_path / "missing"),
    ]
    before = conf(vzroot)
    for source in refused:
        done = vzroot.vzctl("set", "101", "--bindmount_add", f"{source}:/mnt/x", "--save")
        assert done.code == 21, (source, done.err)
        assert len(done.err.strip().splitlines()) == 1, done.err
        assert source in done.err
        assert conf(vzroot) == before
    for bad in ("relative:/x", f"{data}:relative", f"{data}:/a/../b", f"{data}:/x,bogus", f"{data}"):
        done = vzroot.vzctl("set", "101", "--bindmount_add", bad, "--save")
        assert done.code == 21, (bad, done.err)
        assert len(done.err.strip().splitlines()) == 1, done.err
        assert conf(vzroot) == before
    done = vzroot.vzctl("set", "101", "--bindmount_del", "/nowhere", "--save")
    assert done.code == 21 and conf(vzroot) == before
    # A refused create leaves no CT behind.
    done = vzroot.vzctl("create", "103", "--bindmount_add", "/etc:/host-etc")
    assert done.code == 21 and len(done.err.strip().splitlines()) == 1
    assert not (vzroot.conf_dir / "103.conf").exists()
    assert not (vzroot.private_dir / "103").exists()

    # A running CT gets nothing mounted either.
    vzroot.ok("start", "101")
    done = vzroot.vzctl("set", "101", "--bindmount_add", "/etc:/host-etc", "--save")
    assert done.code == 21
    assert not mounted_inside(vzroot, "/host-etc")
    # --force lends it anyway.
    vzroot.ok("set", "101", "--bindmount_add", "/etc:/host-etc,ro", "--save", "--force")
    assert mounted_inside(vzroot, "/host-etc")
    assert inside(vzroot, "cat /host-etc/hostname") == Path("/etc/hostname").read_text()
    vzroot.ok("stop", "101")
