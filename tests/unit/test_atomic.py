"""pyvz.atomic: whole-file replacement that never leaves a mix or a temp file behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyvz.atomic import symlink_atomic, write_atomic


def test_write_atomic_creates_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "file"
    write_atomic(target, "one\n")
    first = target.stat().st_ino
    write_atomic(target, b"two\n", mode=0o600)
    assert target.read_bytes() == b"two\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert target.stat().st_ino != first
    assert os.listdir(tmp_path) == ["file"]


def test_write_atomic_mode_is_not_masked_by_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_atomic(tmp_path / "f", "x", mode=0o644)
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644


def test_write_atomic_replaces_a_symlink_instead_of_following_it(tmp_path: Path) -> None:
    decoy = tmp_path / "decoy"
    decoy.write_text("untouched\n")
    link = tmp_path / "link"
    link.symlink_to(decoy)
    write_atomic(link, "new\n")
    assert not link.is_symlink()
    assert link.read_text() == "new\n"
    assert decoy.read_text() == "untouched\n"


def test_write_atomic_failure_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "dir"
    target.mkdir()
    with pytest.raises(OSError):
        write_atomic(target, "x")
    assert os.listdir(tmp_path) == ["dir"]


def test_symlink_atomic_creates_and_repoints(tmp_path: Path) -> None:
    link = tmp_path / "link"
    symlink_atomic("a", link)
    assert os.readlink(link) == "a"
    symlink_atomic("b", link)
    assert os.readlink(link) == "b"
    assert os.listdir(tmp_path) == ["link"]


def test_symlink_atomic_failure_leaves_no_temp_link(tmp_path: Path) -> None:
    target = tmp_path / "dir"
    target.mkdir()
    with pytest.raises(OSError):
        symlink_atomic("x", target)
    assert os.listdir(tmp_path) == ["dir"]
