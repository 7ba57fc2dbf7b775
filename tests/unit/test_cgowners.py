"""The record of a CT's cgroup owners that a dump carries (pyvz/runtime/cgowners.py): written
by the shell CRIU's post-dump action runs, checked and put back on a fake cgroup tree."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest

from pyvz.runtime import cgowners
from pyvz.storage.idmap import IdMap

IDS = IdMap(100000, 100000)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to other ids needs root")


def _cgroup(directory: Path, owner: tuple[int, int], files: dict[str, int]) -> None:
    """A cgroup directory as the kernel makes it for `owner`: its files are the creator's."""
    directory.mkdir(parents=True)
    os.chown(directory, *owner)
    for name, mode in files.items():
        (directory / name).write_text("")
        os.chown(directory / name, *owner)
        os.chmod(directory / name, mode)


def _source_tree(mount: Path) -> list[Path]:
    """A hybrid host's CT 101 in root tag `pyvz-a`: LXC's inner cgroup, delegated to the CT's
    root by group, and one cgroup systemd made in it (v2), and the v1 freezer."""
    top = mount / "unified/pyvz-a/101"
    _cgroup(top, (0, 0), {"cgroup.procs": 0o644})
    _cgroup(top / "ns", (0, 0), {"cgroup.procs": 0o644, "cgroup.controllers": 0o444})
    os.chown(top / "ns/cgroup.procs", 0, 100000)
    os.chmod(top / "ns/cgroup.procs", 0o664)
    _cgroup(top / "ns/system.slice", (100000, 100000), {"cgroup.procs": 0o644, "cgroup.kill": 0o200})
    freezer = mount / "freezer/pyvz-a/101"
    _cgroup(freezer / "ns", (0, 0), {"freezer.state": 0o644, "tasks": 0o644})
    return [top, freezer]


def _as_criu_leaves_it(mount: Path) -> None:
    """The same tree in root tag `pyvz-b` (another host), every file host root's 0644."""
    for directory in (
        "unified/pyvz-b/101/ns/system.slice",
        "freezer/pyvz-b/101/ns",
    ):
        (mount / directory).mkdir(parents=True)
    for file in (
        "unified/pyvz-b/101/ns/cgroup.procs",
        "unified/pyvz-b/101/ns/system.slice/cgroup.procs",
        "unified/pyvz-b/101/ns/system.slice/cgroup.kill",
        "freezer/pyvz-b/101/ns/freezer.state",
    ):
        (mount / file).write_text("")
        os.chmod(mount / file, 0o644)
    os.chown(mount / "freezer/pyvz-b/101/ns/freezer.state", 1234567, 7654321)  # CRIU's garbage


def _owner(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_uid, stat.st_gid, stat.st_mode & 0o777


@needs_root
def test_a_record_puts_back_what_criu_leaves_to_host_root(tmp_path: Path) -> None:
    mount = tmp_path / "cgroup"
    dirs = _source_tree(mount)
    record = tmp_path / cgowners.RECORD
    subprocess.run(["sh", "-c", cgowners.record_command(dirs, record)], check=True)
    entries = cgowners.parse(record.read_bytes(), [mount / "freezer", mount / "unified"], "pyvz-b/101", IDS)
    # Only what a restore gets wrong: not host root's, and freezer.state.
    assert sorted(str(path.relative_to(mount)) for path, *_ in entries) == [
        "freezer/pyvz-b/101/ns/freezer.state",
        "unified/pyvz-b/101/ns/cgroup.procs",
        "unified/pyvz-b/101/ns/system.slice/cgroup.kill",
        "unified/pyvz-b/101/ns/system.slice/cgroup.procs",
    ]
    _as_criu_leaves_it(mount)
    subprocess.run(["sh", "-c", cgowners.apply_commands(entries)], check=True)
    b = mount / "unified/pyvz-b/101/ns"
    assert _owner(b / "cgroup.procs") == (0, 100000, 0o664)
    assert _owner(b / "system.slice/cgroup.procs") == (100000, 100000, 0o644)
    assert _owner(b / "system.slice/cgroup.kill") == (100000, 100000, 0o200)
    assert _owner(mount / "freezer/pyvz-b/101/ns/freezer.state") == (0, 0, 0o644)


@needs_root
def test_names_with_spaces_quotes_and_newlines_survive(tmp_path: Path) -> None:
    mount = tmp_path / "cgroup"
    odd = "it's a\nslice $(touch pwned)"
    _cgroup(mount / "unified/pyvz-a/101/ns" / odd, (100123, 100456), {"cgroup.procs": 0o644})
    record = tmp_path / cgowners.RECORD
    subprocess.run(["sh", "-c", cgowners.record_command([mount / "unified/pyvz-a/101"], record)], check=True)
    target = mount / "unified/pyvz-b/101/ns" / odd
    target.mkdir(parents=True)
    (target / "cgroup.procs").write_text("")
    entries = cgowners.parse(record.read_bytes(), [mount / "unified"], "pyvz-b/101", IDS)
    subprocess.run(["sh", "-c", cgowners.apply_commands(entries)], check=True, cwd=tmp_path)
    assert _owner(target / "cgroup.procs")[:2] == (100123, 100456)
    assert not (tmp_path / "pwned").exists()


def _entry(start: str, below: str, owner: str) -> bytes:
    return b"".join(field.encode() + b"\0" for field in (start, below, owner))


def test_a_forged_record_reaches_nothing_outside_the_cts_cgroups_or_ids(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mount = Path("/sys/fs/cgroup")
    v1 = [mount / "memory", mount / "unified"]
    good = _entry("/sys/fs/cgroup/memory/pyvz-a/101", "ns/tasks", "100000 100000 644")
    forged = [
        _entry("/sys/fs/cgroup/memory/pyvz-a/101", "../../../../../etc/shadow", "100000 100000 666"),
        _entry("/sys/fs/cgroup/memory/pyvz-a/101", "ns/./tasks", "100000 100000 644"),
        _entry("/etc/pyvz-a/101", "passwd", "100000 100000 666"),
        _entry("/sys/fs/cgroup/../pyvz-a/101", "x", "100000 100000 644"),
        _entry("/sys/fs/cgroup/memory/pyvz-a/101", "ns/tasks", "200000 100000 644"),  # another CT's
        _entry("/sys/fs/cgroup/memory/pyvz-a/101", "ns/tasks", "100000 5 644"),
        _entry("/sys/fs/cgroup/memory/pyvz-a/101", "ns/tasks", "100000 100000 9z"),
        _entry("101", "ns/tasks", "100000 100000 644"),
        _entry("/sys/fs/cgroup/pyvz-a/101", "ns/tasks", "100000 100000 644"),  # not a hierarchy here
        _entry("/sys/fs/cgroup/memory/x/pyvz-a/101", "ns/tasks", "100000 100000 644"),
    ]
    with caplog.at_level(logging.WARNING):
        entries = cgowners.parse(good + b"".join(forged) + b"/cut/short\0", v1, "pyvz-b/101", IDS)
    assert entries == [(mount / "memory/pyvz-b/101/ns/tasks", 100000, 100000, 0o644)]
    assert "left out 11 entries" in caplog.text


def test_v2_paths_are_the_mount_itself_and_modes_keep_permission_bits_only() -> None:
    mount = Path("/sys/fs/cgroup")
    text = _entry("/sys/fs/cgroup/pyvz-a/101", "ns/cgroup.procs", "0 100000 6664")
    assert cgowners.parse(text, [mount], "pyvz-b/7", IDS) == [
        (mount / "pyvz-b/7/ns/cgroup.procs", 0, 100000, 0o664)
    ]


def test_one_command_per_owner_and_per_mode_cut_below_arg_max() -> None:
    paths = [Path(f"/sys/fs/cgroup/unified/pyvz-b/101/ns/s{n}.service/cgroup.procs") for n in range(3000)]
    entries = [(path, 100000, 100000, 0o644) for path in paths]
    commands = cgowners.apply_commands(entries).splitlines()
    assert all(len(line) < 70 * 1024 for line in commands)
    assert len(commands) > 2 and all(
        c.startswith(("chown -f 100000:100000 ", "chmod -f 644 ")) for c in commands
    )
    assert sum(line.count("cgroup.procs") for line in commands) == 6000  # each path twice


def test_a_dump_without_a_record_is_restored_as_criu_leaves_it(tmp_path: Path) -> None:
    assert cgowners.restore_commands(tmp_path, [Path("/sys/fs/cgroup")], "pyvz-b/101", IDS) == ""
