"""Bind mounts without root: the SRC:DST[,opts] syntax, the config's text, merging and
deleting, the LXC lines, and which host paths are refused (in a throwaway root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyvz.ct.bindmounts import check_sources
from pyvz.errors import ExitCode, VzError
from pyvz.host import Host
from pyvz.params import BINDMOUNT, BINDMOUNT_DEL, parse_options, reaches_host
from pyvz.paths import Paths
from pyvz.rootinit import init_root
from pyvz.runtime.bindmount import (
    BindMount,
    format_bindmounts,
    lxc_lines,
    merge,
    parse_bindmounts,
    parse_one,
    parse_targets,
    remove,
)


def test_parse_and_format_round_trip() -> None:
    mount = parse_one("/srv/data/:/data//x,nodev,ro,nosuid")
    assert mount == BindMount("/srv/data", "/data/x", frozenset({"ro", "nosuid", "nodev"}))
    assert mount.text() == "/srv/data:/data/x,ro,nosuid,nodev"
    assert parse_one("/a:/b,ro,rw").flags == frozenset()  # the last of ro/rw wins
    text = "/a:/b /c:/d,ro,noexec"
    assert format_bindmounts(parse_bindmounts(text)) == text
    assert parse_bindmounts("") == ()
    # A later entry for the same DST replaces the earlier one.
    assert format_bindmounts(parse_bindmounts("/a:/x /b:/x,ro")) == "/b:/x,ro"


@pytest.mark.parametrize(
    "text",
    [
        "/a",  # no DST
        "a:/b",  # relative SRC
        "/a:b",  # relative DST
        "/a:/",  # the CT's root
        "/a:/b/../c",
        "/../a:/b",
        "/a:/b,bogus",
        "/a:/b:/c",
        '/a":/b',
        ":/b",
    ],
)
def test_bad_syntax_is_code_21(text: str) -> None:
    with pytest.raises(VzError) as caught:
        parse_options({BINDMOUNT.name: text})
    assert caught.value.code is ExitCode.INVALID_PARAMETER_VALUE
    assert caught.value.message == f"Bad parameter for --bindmount_add: {text}"


def test_merge_and_remove() -> None:
    old = parse_bindmounts("/a:/x /b:/y")
    assert format_bindmounts(merge(old, parse_bindmounts("/c:/y,ro /d:/z"))) == "/a:/x /c:/y,ro /d:/z"
    assert format_bindmounts(remove(old, ("/x",))) == "/b:/y"
    assert remove(old, ("all",)) == ()
    with pytest.raises(VzError) as caught:
        remove(old, ("/nowhere",))
    assert caught.value.code is ExitCode.INVALID_PARAMETER_VALUE
    assert parse_targets("/x/ /x all") == ("/x", "all")
    assert BINDMOUNT.merge is not None and BINDMOUNT.merge(None, old) == old
    assert reaches_host(BINDMOUNT) and reaches_host(BINDMOUNT_DEL)  # the API gives it to host admins only


def test_lxc_lines() -> None:
    mounts = parse_bindmounts("/d:/data,ro,nodev /f:/etc/f")
    assert lxc_lines(mounts, {"/d": True, "/f": False}, idmapped=True) == [
        "lxc.mount.entry = /d data none bind,create=dir,ro,nodev,idmap=container 0 0",
        "lxc.mount.entry = /f etc/f none bind,create=file,idmap=container 0 0",
    ]
    assert lxc_lines(mounts[1:], {"/f": False}, idmapped=False) == [
        "lxc.mount.entry = /f etc/f none bind,create=file 0 0"
    ]


@pytest.fixture
def host(tmp_path: Path) -> Host:
    root = tmp_path / "root"
    paths = Paths(root)
    init_root(paths)
    (paths.lib_vz / "private/101").mkdir(parents=True)
    (paths.conf_dir / "101.conf").write_text('VE_PRIVATE="/var/lib/vz/private/$VEID"\nVE_ROOT="/x/101"\n')
    return Host(paths)


def _refused(host: Host, source: str, force: bool = False) -> str:
    with pytest.raises(VzError) as caught:
        check_sources(host, [parse_one(f"{source}:/mnt")], force)
    assert caught.value.code is ExitCode.INVALID_PARAMETER_VALUE
    assert "\n" not in caught.value.message
    assert caught.value.message.startswith(f"Bad parameter for --bindmount_add: {source}:/mnt: {source}")
    return caught.value.message


def test_host_paths_are_refused(host: Host, tmp_path: Path) -> None:
    root = host.paths.root
    assert "the host's /" in _refused(host, "/")
    assert "is the host's /etc" in _refused(host, "/etc")
    assert "is inside the host's /etc" in _refused(host, "/etc/ssh")
    assert "the host's /proc" in _refused(host, "/proc")
    assert "holds the host's /var/lib/vz" in _refused(host, "/var")
    link = tmp_path / "to-etc"
    link.symlink_to("/etc")
    assert "(= /etc)" in _refused(host, str(link))
    assert "CT 101's private area" in _refused(host, str(root / "var/lib/vz/private/101"))
    assert "pyvz's data" in _refused(host, str(root / "var/lib/vz"))
    assert "the pyvz root" in _refused(host, str(root))
    assert "holds the pyvz root" in _refused(host, str(tmp_path))
    assert "not an existing directory or file" in _refused(host, str(tmp_path / "missing"))
    assert "not an existing directory or file" in _refused(host, str(tmp_path / "missing"), force=True)


def test_ordinary_and_forced_paths_pass(host: Host, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "file").write_text("x")
    check_sources(host, [parse_one(f"{data}:/data"), parse_one(f"{data}/file:/f")], force=False)
    check_sources(host, [parse_one("/etc:/host-etc,ro")], force=True)
