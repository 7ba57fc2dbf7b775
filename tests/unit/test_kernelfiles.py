"""pyvz.kernelfiles.read_small: whole files, however the kernel hands them out."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyvz.kernelfiles import read_small


def test_a_small_file_is_read_whole(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("12345\n")
    assert read_small(tmp_path / "f") == "12345\n"
    assert read_small(str(tmp_path / "f")) == "12345\n"


def test_a_file_bigger_than_one_read_is_read_whole(tmp_path: Path) -> None:
    text = "".join(f"line {n}\n" for n in range(40000))  # ~350 KB: several reads
    (tmp_path / "big").write_text(text)
    assert read_small(tmp_path / "big") == text


def test_procfs_seq_files_come_whole() -> None:
    """/proc/PID/mountinfo hands out about a page per read; other tests mount things
    meanwhile, so it is compared with a plain read made while the table holds still."""
    assert read_small("/proc/self/status").startswith("Name:")
    for _ in range(50):
        before = Path("/proc/self/mountinfo").read_text()
        mounts = read_small("/proc/self/mountinfo")
        if before == Path("/proc/self/mountinfo").read_text():
            assert mounts == before
            return
    pytest.fail("the mount table never held still for three reads")


def test_a_missing_file_raises_as_open_does(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_small(tmp_path / "nothing")
