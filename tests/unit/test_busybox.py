"""pyvz.templates.busybox: the embedded template built from busybox-static."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from pyvz.distro.registry import Busybox, detect
from pyvz.errors import ExitCode, VzError
from pyvz.paths import Paths
from pyvz.rootview import RootView
from pyvz.templates.busybox import BUSYBOX, INITTAB, _is_static, build, populate

PT_LOAD, PT_INTERP, PT_NOTE, PT_PHDR = 1, 3, 4, 6


def fake_elf(path: Path, segment_types: list[int], elf_class: int = 2) -> Path:
    """A minimal little-endian ELF header followed by a program header table."""
    header = bytearray(64)
    header[:4] = b"\x7fELF"
    header[4] = elf_class
    header[5] = 1
    struct.pack_into("<Q", header, 32, 64)  # e_phoff: right after the header
    struct.pack_into("<HH", header, 54, 56, len(segment_types))  # e_phentsize, e_phnum
    table = b"".join(struct.pack("<I", kind) + bytes(52) for kind in segment_types)
    path.write_bytes(bytes(header) + table)
    return path


def ldd_says_static(binary: Path) -> bool:
    """An independent opinion, from the C library's own tool."""
    if shutil.which("ldd") is None:
        return False
    done = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=10)
    return "not a dynamic executable" in done.stdout + done.stderr or "statically linked" in done.stdout


def test_is_static_on_fake_static_elf(tmp_path: Path) -> None:
    assert _is_static(fake_elf(tmp_path / "static", [PT_LOAD, PT_LOAD, PT_NOTE])) is True


def test_is_static_on_fake_dynamic_elf(tmp_path: Path) -> None:
    assert _is_static(fake_elf(tmp_path / "dynamic", [PT_PHDR, PT_INTERP, PT_LOAD])) is False
    assert _is_static(fake_elf(tmp_path / "late", [PT_LOAD, PT_LOAD, PT_NOTE, PT_INTERP])) is False


def test_is_static_rejects_non_elf_and_32_bit(tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho hi\n")
    assert _is_static(script) is False
    assert _is_static(fake_elf(tmp_path / "elf32", [PT_LOAD], elf_class=1)) is False


def test_is_static_on_a_dynamic_host_binary() -> None:
    ls = Path("/bin/ls")
    if not ls.exists() or ldd_says_static(ls):
        pytest.skip("/bin/ls missing or static here")
    assert _is_static(ls) is False


def test_is_static_on_busybox_static() -> None:
    if not BUSYBOX.exists():
        pytest.skip(f"{BUSYBOX} missing (install busybox-static)")
    if not ldd_says_static(BUSYBOX):
        pytest.skip(f"{BUSYBOX} is not the static build")
    assert _is_static(BUSYBOX) is True


def test_build_refuses_a_dynamic_busybox(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    with pytest.raises(VzError) as caught:
        build(paths, fake_elf(tmp_path / "busybox", [PT_INTERP, PT_LOAD]))
    assert caught.value.code == ExitCode.BAD_TEMPLATE
    assert "busybox-static" in caught.value.message
    with pytest.raises(VzError) as caught:
        build(paths, tmp_path / "no-busybox")
    assert caught.value.code == ExitCode.OSTEMPLATE_NOT_FOUND
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busybox"]  # no cache dir made


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    if not BUSYBOX.exists():
        pytest.skip(f"{BUSYBOX} missing (install busybox-static)")
    if os.geteuid() != 0:
        pytest.skip("populate chowns etc/shadow to root:shadow")
    tree = tmp_path / "root"
    tree.mkdir()
    populate(tree)
    return tree


def test_populate_makes_init(tree: Path) -> None:
    init = tree / "sbin/init"
    assert init.is_symlink()
    assert os.readlink(init) == "../bin/busybox"
    assert init.resolve() == (tree / "bin/busybox").resolve()
    assert (tree / "bin/busybox").read_bytes() == BUSYBOX.read_bytes()
    assert os.access(tree / "bin/busybox", os.X_OK)
    assert os.readlink(tree / "bin/sh") == "busybox"


def test_populate_writes_inittab_and_rc(tree: Path) -> None:
    assert (tree / "etc/inittab").read_text() == INITTAB
    assert "::sysinit:/etc/init.d/rcS" in INITTAB
    rcs = tree / "etc/init.d/rcS"
    assert rcs.read_text().startswith("#!/bin/sh\n")
    assert rcs.stat().st_mode & 0o777 == 0o755
    assert "/run/boot-complete" in rcs.read_text()


def test_populate_os_release_is_busybox(tree: Path) -> None:
    lines = (tree / "etc/os-release").read_text().splitlines()
    assert "ID=busybox" in lines
    assert any(line.startswith("VERSION_ID=") for line in lines)
    assert type(detect(RootView(tree))) is Busybox


def test_populate_locks_root_password(tree: Path) -> None:
    shadow = tree / "etc/shadow"
    assert shadow.read_text().splitlines()[0].startswith("root:!:")
    st = shadow.stat()
    assert st.st_mode & 0o777 == 0o640
    assert (st.st_uid, st.st_gid) == (0, 42)
    assert "shadow:x:42:" in (tree / "etc/group").read_text().splitlines()
    assert (tree / "etc/passwd").read_text().startswith("root:x:0:0:root:/root:/bin/sh\n")


def test_populate_directory_modes(tree: Path) -> None:
    assert (tree / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert (tree / "root").stat().st_mode & 0o777 == 0o700
    assert (tree / "proc").stat().st_mode & 0o777 == 0o555
    assert (tree / "etc/hostname").read_text() == "localhost\n"
