"""Bad input: one line on stderr, vzctl's exit code, and nothing left behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import VzRoot

pytestmark = pytest.mark.root


def snapshot(vzroot: VzRoot) -> dict[str, object]:
    """Everything a command could leave behind in (or for) this root."""
    root = vzroot.root
    real = os.path.realpath(root)

    def listing(path: Path) -> list[str]:
        return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []

    mounts = sorted(line.split()[1] for line in Path("/proc/mounts").read_text().splitlines() if real in line)
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    lxc = subprocess.run(["lxc-ls", "-P", str(vzroot.lxc_dir)], capture_output=True, text=True).stdout.split()
    private = sorted(p.name for p in vzroot.private_dir.iterdir()) if vzroot.private_dir.exists() else []
    return {
        "etc": listing(root / "etc/vz"),
        "private": private,
        "root": listing(root / "var/lib/vz/root"),
        "lxc": lxc,
        "mounts": mounts,
        "loops": sorted(line for line in loops.splitlines() if real in line),
    }


def settled(vzroot: VzRoot) -> None:
    """Wait until a freshly started CT's init has written its files (syslog, pid files):
    what the CT itself writes must not look like something a rejected command left."""
    import time

    previous, deadline = snapshot(vzroot), time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.5)
        current = snapshot(vzroot)
        if current == previous:
            return
        previous = current
    raise AssertionError("the CT's files kept changing for 10 s")


def rejected(vzroot: VzRoot, code: int, *args: str) -> str:
    before = snapshot(vzroot)
    done = vzroot.vzctl(*args)
    assert done.code == code, f"vzctl {' '.join(args)}: exit {done.code}, wanted {code}: {done.err}"
    lines = done.err.strip().splitlines()
    # One line. vzctl's logger adds no "Error: " (some of vzctl's own texts begin with it).
    assert len(lines) == 1 and not lines[0].startswith("Error: Error"), done.err
    assert snapshot(vzroot) == before, f"vzctl {' '.join(args)} left something behind"
    return lines[0]


def test_syntax_errors_touch_nothing(vzroot: VzRoot) -> None:
    assert "--bogus" in rejected(vzroot, 21, "create", "101", "--bogus", "1")  # vzctl's getopt: 21
    assert "reserved" in rejected(vzroot, 21, "create", "100")
    rejected(vzroot, 21, "create", "0")
    rejected(vzroot, 21, "create", "abc")
    rejected(vzroot, 21, "create", "10a")
    assert (
        rejected(vzroot, 21, "create", "101", "--diskspace", "2G:1G")
        == "Bad parameter for --diskspace: 2G:1G"
    )
    assert "hostname" in rejected(vzroot, 70, "create", "101", "--hostname", "bad_host!")
    rejected(vzroot, 21, "create", "101", "--name", "123")  # vzctl's check_name: a bad parameter
    rejected(vzroot, 20, "frobnicate", "101")
    rejected(vzroot, 21, "create", "101", "--layout")  # getopt: a missing value is 21 too
    rejected(vzroot, 21, "create", "101", "--layout", "zfs")  # (ploop is made as btrfs, and said)
    # None of these made the storage pool either.
    assert not (vzroot.root / "var/lib/vz/pool.img").exists()


def test_unknown_template(vzroot: VzRoot) -> None:
    message = rejected(vzroot, 91, "create", "101", "--ostemplate", "no-such-os")
    assert "no-such-os" in message and "busybox" in message  # says what is available


def test_existing_ct_and_names(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--name", "web")
    rejected(vzroot, 44, "create", "101")
    assert "already used by CT 101" in rejected(vzroot, 131, "create", "102", "--name", "web")
    vzroot.ok("create", "102")
    rejected(vzroot, 131, "set", "102", "--name", "web", "--save")
    assert rejected(vzroot, 21, "start", "nosuchname") == "Bad CT ID nosuchname"
    rejected(vzroot, 14, "start", "103")
    conf = (vzroot.conf_dir / "101.conf").read_text()
    rejected(vzroot, 21, "set", "101", "--diskspace", "2G:1G", "--save")
    assert (vzroot.conf_dir / "101.conf").read_text() == conf


def test_malformed_config_lines(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101")
    conf = vzroot.conf_dir / "101.conf"
    conf.write_text(conf.read_text() + "this is not a config line\n")
    message = rejected(vzroot, 85, "start", "101")
    assert "101.conf" in message and "malformed" in message
    rejected(vzroot, 85, "set", "101", "--hostname", "x", "--save")
    vz_conf = vzroot.root / "etc/vz/vz.conf"
    vz_conf.write_text(vz_conf.read_text() + 'DEF_OSTEMPLATE="unterminated\n')
    assert "vz.conf" in rejected(vzroot, 85, "create", "102")
    sample = vzroot.conf_dir / "ve-broken.conf-sample"
    sample.write_text('ONBOOT="yes\n')
    vz_conf.write_text(vz_conf.read_text().replace('DEF_OSTEMPLATE="unterminated\n', ""))
    assert "ve-broken" in rejected(vzroot, 85, "create", "102", "--config", "broken")
    rejected(vzroot, 82, "create", "102", "--config", "nosuchsample")


def test_start_running_and_stop_stopped(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101")
    stopped = vzroot.vzctl("stop", "101")  # vzctl 4.11: its words on stderr, and success
    assert (stopped.code, stopped.err) == (0, "Unable to stop: container is not running\n"), stopped
    rejected(vzroot, 8, "exec", "101", "true")  # vzctl's exec: 8 for any failure
    vzroot.ok("start", "101")
    settled(vzroot)
    try:
        assert "already running" in rejected(vzroot, 32, "start", "101")
        destroy = vzroot.vzctl("destroy", "101")  # vzctl says this one on stdout
        assert (destroy.code, destroy.out, destroy.err) == (
            32,
            "Container is currently running. Stop it first.\n",
            "",
        )
        mount = vzroot.vzctl("mount", "101")  # vzctl: its words, and success
        assert (mount.code, mount.err) == (0, "Container is already mounted\n")
    finally:
        vzroot.ok("stop", "--fast", "101")


def test_options_mainline_cannot_honour_are_refused_in_one_line(vzroot: VzRoot) -> None:
    """vzctl 4.11's options that pyvz takes only to refuse: one line, a code, config unchanged."""
    vzroot.ok("create", "101")
    conf = (vzroot.conf_dir / "101.conf").read_text()
    pci = rejected(vzroot, 86, "set", "101", "--pci_add", "0000:01:00.0", "--save")
    assert pci == (
        "Unable to configure PCI devices: mainline Linux cannot pass a PCI device through to "
        "an unprivileged container"
    )
    rejected(vzroot, 86, "set", "101", "--pci_del", "01:00.0", "--save")
    assert (
        rejected(vzroot, 21, "set", "101", "--pci_add", "01:00", "--save")
        == "Bad parameter for --pci_add: 01:00"
    )
    assert "CRIU" in rejected(vzroot, 16, "chkpnt", "101", "--flags", "0x1")
    assert "context" in rejected(vzroot, 17, "restore", "101", "--context", "7")
    offline = rejected(vzroot, 20, "set", "101", "--offline-resize", "--save")
    assert offline == "Error: option --offline-resize can only be used with --diskspace"  # vzctl's words
    vzroot.ok("mount", "101")
    try:
        assert "umount" in rejected(vzroot, 41, "set", "101", "--root", "/srv/ct101", "--save")
    finally:
        vzroot.ok("umount", "101")
    assert (vzroot.conf_dir / "101.conf").read_text() == conf


def test_set_root_and_private_of_a_stopped_ct(vzroot: VzRoot) -> None:
    """vzctl's set --root/--private: the config says where the moved files are now."""
    vzroot.ok("create", "101")
    old = vzroot.private_dir / "101"
    new = vzroot.private_dir / "moved-101"
    old.rename(new)
    assert vzroot.vzctl("start", "101").code == 43  # the files are not where the config says
    # Paths in the config are the host's as PYVZ_ROOT shows it.
    vzroot.ok("set", "101", "--private", "/var/lib/vz/private/moved-101", "--root", "/srv/ct101", "--save")
    conf = (vzroot.conf_dir / "101.conf").read_text()
    assert 'VE_PRIVATE="/var/lib/vz/private/moved-101"' in conf and 'VE_ROOT="/srv/ct101"' in conf
    vzroot.ok("start", "101")
    try:
        assert vzroot.vzctl("exec2", "101", "true").code == 0
        assert (vzroot.root / "srv/ct101/bin").exists()  # mounted where VE_ROOT now says
    finally:
        vzroot.ok("stop", "--fast", "101")
