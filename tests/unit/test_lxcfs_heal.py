"""LXCFS's restart heal: the lxcfs.service drop-in that runs it, and what it reads of /proc."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from pyvz.runtime import lxcfs, lxcfsmark

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"


def _entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of a systemd unit file, in order (keys may repeat)."""
    section, found = "", []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key, value))
    return found


def test_the_drop_in_restarts_lxcfs_with_loadavg_and_heals_after_each_start() -> None:
    entries = _entries((TOOLS / "lxcfs-pyvz.conf").read_text())
    assert {section for section, _k, _v in entries} == {"Service"}
    starts = [value for _s, key, value in entries if key == "ExecStart"]
    assert starts[0] == ""  # clears the package's ExecStart before giving its own
    assert len(starts) == 2
    argv = starts[1].split()
    assert argv[0] == "/usr/bin/lxcfs" and argv[-1] == str(lxcfs.LXCFS_DIR)
    assert "--enable-loadavg" in argv
    posts = [value for _s, key, value in entries if key == "ExecStartPost"]
    assert len(posts) == 1
    assert posts[0].startswith("-")  # a failed heal must not fail LXCFS itself
    heal = posts[0][1:].split()
    assert heal[0] == "/usr/local/sbin/pyvz-lxcfs-heal"
    # the launcher exists: install-launchers writes one per tool into /usr/local/sbin ...
    launchers = (TOOLS / "install-launchers").read_text()
    tools = re.search(r"for tool in ([^;]*); do", launchers, re.S)
    assert tools is not None and "pyvz-lxcfs-heal" in tools.group(1).replace("\\\n", " ").split()
    assert "/usr/local/sbin" in launchers
    # ... running the module of the same name, which takes the drop-in's arguments.
    module = importlib.import_module("pyvz.cli.pyvz_lxcfs_heal")
    assert callable(module.main)
    setup = (TOOLS / "setup-lxcfs").read_text()
    assert "lxcfs-pyvz.conf" in setup and "/etc/systemd/system/lxcfs.service.d/" in setup


def test_make_install_puts_the_launchers_in_before_lxcfs_starts_with_the_drop_in() -> None:
    recipe = (REPO / "Makefile").read_text().split("\ninstall:", 1)[1].split("\n\n", 1)[0]
    assert recipe.index("tools/install-launchers") < recipe.index("tools/setup-lxcfs")


def test_monitor_titles_name_pyvz_cts_of_any_root_only() -> None:
    title = b"[lxc monitor] /tmp/root/var/lib/vz/lxc 101\0\0\0"
    assert lxcfs.monitor_of(title) == ("/tmp/root/var/lib/vz/lxc", "101")
    assert lxcfs.monitor_of(b"[lxc monitor] /var/lib/vz/lxc 7\0") == ("/var/lib/vz/lxc", "7")
    assert lxcfs.monitor_of(b"[lxc monitor] /var/lib/lxc web\0") is None  # plain LXC's
    assert lxcfs.monitor_of(b"lxc-start\0-P\0/var/lib/vz/lxc\0") is None
    assert str(lxcfs.Running("/var/lib/vz/lxc", "101", 5)) == "CT 101"
    assert str(lxcfs.Running("/tmp/r/var/lib/vz/lxc", "101", 5)) == "CT 101 of /tmp/r"


def test_the_healed_instance_is_recorded_as_a_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lxcfsmark, "HEALED", tmp_path / "lock/healed")
    monkeypatch.setattr(lxcfsmark, "LXCFS_DIR", Path("/proc"))  # a mount of its own
    assert lxcfsmark.healed() is None and not lxcfsmark.unchanged()
    lxcfsmark.record(54)
    assert lxcfsmark.healed() == 54 and not lxcfsmark.unchanged()
    lxcfsmark.record(Path("/proc").stat().st_dev)
    assert lxcfsmark.unchanged()
    monkeypatch.setattr(lxcfsmark, "LXCFS_DIR", tmp_path / "absent")
    lxcfsmark.record(61)
    assert lxcfsmark.unchanged()  # no LXCFS at all: nothing to heal with
    monkeypatch.setattr(lxcfsmark, "LXCFS_DIR", tmp_path / "lock")
    assert lxcfsmark.unchanged()  # a plain directory: LXCFS is down
    assert lxcfsmark.healed() == 61 and (tmp_path / "lock/healed").is_symlink()
    assert [p.name for p in (tmp_path / "lock").iterdir()] == ["healed"]  # no temporary left
