"""What `vzmigrate --from` reads from an OpenVZ host, parsed like user input: vzctl's status
line, paths from its configs, and the tree that arrived (no root needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyvz.errors import MigrateExit, VzError
from pyvz.migrate.openvz import Status, check_host, parse_status, plain_path
from pyvz.migrate.pull import check_tree


def test_vzctl_status_lines_as_vzctl_4_11_prints_them() -> None:
    assert parse_status("h", 101, "CTID 101 exist mounted running\n") == Status(True, True, True, False)
    assert parse_status("h", 101, "CTID 101 deleted unmounted down") == Status(False, False, False, False)
    suspended = parse_status("h", 101, "warning\nCTID 101 exist unmounted down suspended\n")
    assert suspended == Status(True, False, False, True)


@pytest.mark.parametrize(
    "text",
    ["", "CTID 102 exist mounted running", "CTID 101 exist mounted",
     "CTID 101 exist mounted running; rm -rf /", "CTID 101 exists mounted running",
     "CTID 101 exist mounted running extra"],
)  # fmt: skip
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(VzError) as caught:
        parse_status("h", 101, text)
    assert caught.value.code == MigrateExit.CANT_READ_REMOTE_CONFIG


def test_paths_from_the_remote_config() -> None:
    assert plain_path("h", "VE_PRIVATE", "/vz/private/$VEID", 101) == "/vz/private/101"
    assert plain_path("h", "VE_PRIVATE", "/home/vz/private/${VEID}", 7) == "/home/vz/private/7"
    for bad in ("../../etc", "/vz/private/../../etc", "/", "/vz", "vz/private/101", "/vz/private/1 01",
                "/vz/$(reboot)", "/vz/private/101/", "/vz//private"):  # fmt: skip
        with pytest.raises(VzError) as caught:
            plain_path("h", "VE_PRIVATE", bad, 101)
        assert caught.value.code == MigrateExit.APPLY_CONFIG, bad
        assert "not a plain absolute path" in caught.value.message


def test_source_host_names() -> None:
    assert check_host("root@ovz1.example") == "ovz1.example"
    assert check_host("198.18.0.1") == "198.18.0.1"
    for bad in ("-oProxyCommand=x", "user@host", "a b", ""):
        with pytest.raises(VzError):
            check_host(bad)


def test_an_image_directory_holds_files_only(tmp_path: Path) -> None:
    (tmp_path / "root.hdd").mkdir()
    (tmp_path / "root.hdd/DiskDescriptor.xml").write_text("<x/>")
    check_tree(tmp_path, "h", 101, image=True)
    os.symlink("/dev/sda", tmp_path / "root.hdd/root.hdd")
    with pytest.raises(VzError) as caught:
        check_tree(tmp_path, "h", 101, image=True)
    assert "root.hdd/root.hdd, which is not a file" in caught.value.message
    check_tree(tmp_path, "h", 101, image=False)  # in a CT's own tree a link is a link
    os.mkfifo(tmp_path / "fifo")
    check_tree(tmp_path, "h", 101, image=False)
