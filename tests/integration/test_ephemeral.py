"""Ephemeral CTs (issue 15, item 3) on real busybox CTs: destroyed when they stop, whoever
stops them: `vzctl stop`, a halt inside the CT, or a host reboot (`vzctl boot` after a
power cut), with their private area, snapshots, config, names, LXC files and cgroups, and
nothing of a bind-mounted host directory lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, VzRoot

pytestmark = pytest.mark.root

GONE_WITHIN = 5.0  # seconds from a halt inside the CT (busybox's own shutdown takes ~2 s of them)


def _cgroups(vzroot: VzRoot, ctid: int) -> tuple[str, str]:
    sys.path.insert(0, str(REPO))
    from pyvz.paths import Paths
    from pyvz.resources.cgroups import CtCgroups

    cgroups = CtCgroups.of(Paths(vzroot.root).tag, ctid)
    return cgroups.container, cgroups.monitor


def leftovers(vzroot: VzRoot, ctid: int) -> list[str]:
    """Everything of the CT that a destroy must remove (its `.destroyed` config is kept, as
    vzctl keeps it)."""
    from pyvz.resources.cgroups import detect

    found = [p.name for p in vzroot.private_dir.iterdir() if p.name.lstrip(".").split(".")[0] == str(ctid)]
    found += [p.name for p in vzroot.conf_dir.glob(f"{ctid}.conf")]
    names = vzroot.root / "etc/vz/names"
    found += [p.name for p in names.iterdir() if os.readlink(p) == f"../conf/{ctid}.conf"]
    if (vzroot.lxc_dir / str(ctid)).exists():
        found.append(f"lxc/{ctid}")
    tree = detect()
    for relative in _cgroups(vzroot, ctid):
        found += [str(d) for d in tree.dirs(relative)]
    root = vzroot.root / "var/lib/vz/root" / str(ctid)
    if root.exists():
        found.append(str(root))
    return found


def wait_gone(vzroot: VzRoot, ctid: int, within: float) -> list[str]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        left = leftovers(vzroot, ctid)
        if not left:
            return []
        time.sleep(0.05)
    return leftovers(vzroot, ctid)


def listed(vzroot: VzRoot, ctid: int) -> str:
    done = vzroot.vzlist("-a", "-H", "-o", "ephemeral", str(ctid))
    assert done.code == 0, done.err
    return done.out.strip()


def test_halt_inside_destroys_it(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--ephemeral", "--name", "scratch")
    assert 'EPHEMERAL="yes"' in (vzroot.conf_dir / "101.conf").read_text()
    assert listed(vzroot, 101) == "yes"
    vzroot.ok("start", "101")
    assert vzroot.ok("exec", "101", "echo alive").strip() == "alive"
    halted = time.monotonic()
    vzroot.vzctl("exec", "101", "halt")  # its exit status is the dying CT's business
    left = wait_gone(vzroot, 101, GONE_WITHIN - (time.monotonic() - halted))
    assert left == [], f"still there {GONE_WITHIN:g} s after the halt: {left}"
    assert vzroot.ok("status", "101").strip() == "CTID 101 deleted unmounted down"
    vzroot.ok("create", "101", "--name", "scratch")  # the id and the name are free again


def test_reboot_inside_is_no_stop(vzroot: VzRoot) -> None:
    from pyvz.resources.cgroups import detect

    vzroot.ok("create", "101", "--ephemeral")
    vzroot.ok("start", "101")
    tree = detect()
    container, _monitor = _cgroups(vzroot, 101)
    first = tree.identity(container)  # a new cgroup (inode) each time LXC starts the CT
    vzroot.vzctl("exec", "101", "reboot")
    deadline = time.monotonic() + 30
    # LXC starts it again: the CT is back, and stays.
    while time.monotonic() < deadline:
        again = tree.identity(container)
        if again is not None and again != first and vzroot.vzctl("exec", "101", "true").code == 0:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the CT did not come back from its reboot within 30 s")
    time.sleep(1.0)  # a reaper (there must be none) would have destroyed it by now
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist mounted running"
    vzroot.ok("stop", "101")
    assert leftovers(vzroot, 101) == []


def test_stop_removes_everything_with_snapshots_and_bind_mounts(vzroot: VzRoot, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "keep.txt").write_text("kept\n")
    vzroot.ok("create", "101", "--ephemeral", "--name", "eph", "--bindmount_add", f"{data}:/data")
    vzroot.ok("start", "101")
    vzroot.ok("exec", "101", "echo from the ct > /data/made.txt")
    vzroot.ok("snapshot", "101", "--id", "7d9b2f3c-1a2b-4c3d-8e9f-0a1b2c3d4e5f")
    view = tmp_path / "view"
    vzroot.ok("snapshot-mount", "101", "--id", "7d9b2f3c-1a2b-4c3d-8e9f-0a1b2c3d4e5f", "--target", str(view))
    assert (vzroot.private_dir / ".101.snapshots").is_dir()
    vzroot.ok("stop", "101")
    assert leftovers(vzroot, 101) == []
    assert not os.path.ismount(view)
    # The host's directory is the user's: what the CT wrote there stays.
    assert (data / "keep.txt").read_text() == "kept\n"
    assert (data / "made.txt").read_text() == "from the ct\n"
    assert vzroot.ok("status", "101").strip() == "CTID 101 deleted unmounted down"


def _power_cut(vzroot: VzRoot, ctid: int) -> None:
    """What a power cut does to a running CT: its monitor and processes end, and no pyvz
    and no LXC hook runs. The monitor goes first, so that it cannot see its CT stop."""
    from pyvz.resources.cgroups import detect

    tree = detect()
    container, monitor = _cgroups(vzroot, ctid)
    for relative in (monitor, container):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = [
                int(pid)
                for directory in tree.dirs(relative)
                for top, _dirs, _files in os.walk(directory)  # the CT's own are one level down
                for pid in (Path(top) / "cgroup.procs").read_text().split()
            ]
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)
    deadline = time.monotonic() + 10
    while tree.nproc(container) and time.monotonic() < deadline:  # a dying init is counted a while
        time.sleep(0.05)


def test_host_reboot_then_boot_sweeps_it(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--ephemeral")
    vzroot.ok("create", "102", "--name", "kept")  # a plain CT, started at boot
    vzroot.ok("set", "102", "--onboot", "yes", "--save")
    vzroot.ok("create", "103", "--ephemeral")  # ephemeral and never started
    vzroot.ok("start", "101")
    _power_cut(vzroot, 101)
    assert (vzroot.conf_dir / "101.conf").exists()  # nobody saw it stop
    vzroot.ok("boot")
    assert leftovers(vzroot, 101) == []
    assert leftovers(vzroot, 103) == []  # every ephemeral CT that is down at boot goes
    assert vzroot.ok("status", "102").strip() == "CTID 102 exist mounted running"
    vzroot.ok("stop", "102")
    assert vzroot.ok("status", "102").strip() == "CTID 102 exist unmounted down"


def test_clone_of_a_prototype(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--name", "proto")
    vzroot.ok("clone", "101", "102", "--ephemeral", "--name", "work")
    assert listed(vzroot, 101) == "no"
    assert listed(vzroot, 102) == "yes"
    vzroot.ok("clone", "102", "103")  # ephemeral is not inherited
    assert listed(vzroot, 103) == "no"
    vzroot.ok("start", "102")
    vzroot.ok("stop", "--fast", "102")
    assert leftovers(vzroot, 102) == []
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist unmounted down"
    assert vzroot.ok("status", "103").strip() == "CTID 103 exist unmounted down"


def test_bad_value_is_refused(vzroot: VzRoot) -> None:
    done = vzroot.vzctl("create", "101", "--ephemeral", "maybe")
    assert done.code == 21, done.err
    assert done.err.strip().splitlines() == ["Bad parameter for --ephemeral: maybe"]
    assert not (vzroot.conf_dir / "101.conf").exists()


def test_killed_stop_leaves_what_boot_removes(vzroot: VzRoot) -> None:
    """kill -9 of `vzctl stop` (which destroys the CT) at points spread over its run, with
    the hook's reaper killed too wherever it got: the next `vzctl boot` removes the rest."""
    vzroot.ok("create", "150", "--ephemeral")
    vzroot.ok("start", "150")
    started = time.monotonic()
    vzroot.ok("stop", "150")
    duration = time.monotonic() - started
    for index in range(5):
        ctid = 101 + index
        vzroot.ok("create", str(ctid), "--ephemeral")
        vzroot.ok("start", str(ctid))
        proc = subprocess.Popen(
            [sys.executable, "-m", "pyvz.cli.vzctl", "stop", "--fast", str(ctid)],
            env=vzroot.env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(duration * (index + 1) / 6)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _kill_reapers(vzroot, ctid)
        if vzroot.ok("status", str(ctid)).strip().endswith(" running"):
            vzroot.ok("stop", str(ctid))  # killed before it stopped the CT: as it was
        else:
            vzroot.ok("boot")
        assert leftovers(vzroot, ctid) == [], f"kill {index}"


def _kill_reapers(vzroot: VzRoot, ctid: int) -> None:
    """A reaper the CT's hook forked (it runs the hook's script) is killed wherever it is."""
    hook = str(vzroot.lxc_dir / str(ctid) / "ephemeral-stop")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if hook.encode() in cmdline:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_set_ephemeral_no_keeps_it(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--ephemeral")
    vzroot.ok("start", "101")
    vzroot.ok("set", "101", "--ephemeral", "no", "--save")  # the scratch CT is worth keeping
    assert listed(vzroot, 101) == "no"
    vzroot.vzctl("exec", "101", "halt")
    deadline = time.monotonic() + 30
    while vzroot.ok("status", "101").strip().endswith(" running") and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # what a reaper would have destroyed by now
    assert vzroot.ok("status", "101").split()[2] == "exist"
    vzroot.ok("boot")
    assert vzroot.ok("status", "101").split()[2] == "exist"
