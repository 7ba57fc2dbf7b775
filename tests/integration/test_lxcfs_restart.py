"""LXCFS restarting under running CTs: their /proc/meminfo etc. come back with no vzctl start.

A restarted LXCFS is a new FUSE connection, and the binds in the running CTs still hold the
dead one (reads fail with ENOTCONN). Each test makes LXCFS go away and come back as one kind
of host does it, then reads the CT's files through `vzctl exec` only. LXCFS is machine-wide
and other tests need it: whatever happens, the fixture leaves one running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, VzRoot

# Every test here kills the host's LXCFS, which every running CT's /proc files come from.
pytestmark = [pytest.mark.root, pytest.mark.alone]

LXCFS_DIR = Path("/var/lib/lxcfs")
DROPIN = REPO / "tools/lxcfs-pyvz.conf"


def dropin(key: str) -> list[str]:
    """The command of the drop-in's last `key=` line, without systemd's "-" prefix."""
    lines = [line.split("=", 1)[1] for line in DROPIN.read_text().splitlines() if line.startswith(f"{key}=")]
    assert lines and lines[-1], key
    return lines[-1].removeprefix("-").split()


def lxcfs_pids() -> list[int]:
    """The live lxcfs processes serving /var/lib/lxcfs, oldest first (their pid file can be
    missing: an lxcfs removes it as it exits, even when a new one has started meanwhile)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if (
            stat.split(" (", 1)[1].startswith("lxcfs)")
            and fields[0] != "Z"
            and str(LXCFS_DIR).encode() in argv
        ):
            found.append((int(fields[19]), int(proc.name)))  # start time, pid
    assert found, "no LXCFS runs"
    return [pid for _start, pid in sorted(found)]


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def end_lxcfs(signum: int) -> None:
    pids = lxcfs_pids()
    for pid in pids:
        os.kill(pid, signum)
    deadline = time.monotonic() + 10
    while not all(gone(pid) for pid in pids):
        assert time.monotonic() < deadline, "LXCFS did not end"
        time.sleep(0.05)


def start_as_the_service(log: Path) -> None:
    """The drop-in's ExecStart, as systemd runs it: in the background, not waited for."""
    with open(log, "ab") as out:
        subprocess.run(
            ["setsid", "-f", *dropin("ExecStart")], stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )


def mounted() -> bool:
    return any(line.split()[1] == str(LXCFS_DIR) for line in Path("/proc/mounts").read_text().splitlines())


@pytest.fixture
def lxcfs_kept(vzroot: VzRoot) -> Iterator[VzRoot]:
    from pyvz.runtime import lxcfs

    if lxcfs.ensure() is None:
        pytest.skip("LXCFS is not installed")
    try:
        yield vzroot
    finally:
        if lxcfs.wait_up(2.0) is None:
            lxcfs.ensure()  # starts it (clearing a dead one's mount) and heals what runs
        assert lxcfs.instance() is not None


def meminfo_kb(vzroot: VzRoot, ctid: str) -> int:
    line = vzroot.ok("exec", ctid, "head -1 /proc/meminfo").split()
    assert line[0] == "MemTotal:", line
    return int(line[1])


def host_kb() -> int:
    return int(Path("/proc/meminfo").read_text().split()[1])


def two_cts(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--ostemplate", "busybox", "--ram", "256M", "--cpus", "1")
    vzroot.ok("create", "102", "--ostemplate", "busybox", "--ram", "256M", "--meminfo", "none")
    vzroot.ok("start", "101")
    vzroot.ok("start", "102")
    assert meminfo_kb(vzroot, "101") == 256 * 1024
    assert meminfo_kb(vzroot, "102") == host_kb()


def sees_itself_again(vzroot: VzRoot) -> None:
    assert meminfo_kb(vzroot, "101") == 256 * 1024
    assert vzroot.ok("exec", "101", "grep -c ^processor /proc/cpuinfo").strip() == "1"
    assert vzroot.ok("exec", "101", "nproc").strip() == "1"  # /sys/devices/system/cpu too
    assert meminfo_kb(vzroot, "102") == host_kb()  # --meminfo none: still its own /proc
    assert vzroot.ok("exec", "102", "grep -c ^processor /proc/cpuinfo").strip() != ""


def stale(vzroot: VzRoot) -> None:
    """The CT's LXCFS files are dead now (read with lxc-attach itself: vzctl exec would
    heal them if some other LXCFS user on the machine had started LXCFS again meanwhile)."""
    argv = ["lxc-attach", "-P", str(vzroot.lxc_dir), "-n", "101", "--", "cat", "/proc/cpuinfo"]
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "Transport endpoint is not connected" in done.stderr, done


def test_systemctl_restart_lxcfs_is_healed_by_the_drop_in(lxcfs_kept: VzRoot, tmp_path: Path) -> None:
    vzroot = lxcfs_kept
    two_cts(vzroot)
    from pyvz.runtime import lxcfs, lxcfsmark

    # `systemctl reload lxcfs` (SIGUSR1) reloads its library in place: mounts stay good.
    before, pids = lxcfs.instance(), lxcfs_pids()
    os.kill(pids[-1], signal.SIGUSR1)
    time.sleep(0.5)
    assert (lxcfs.instance(), lxcfs_pids()) == (before, pids)
    assert meminfo_kb(vzroot, "101") == 256 * 1024

    # `systemctl restart lxcfs`: SIGTERM to the main process (KillMode=process), the unit's
    # ExecStopPost (`fusermount -u`; fuse3's fusermount is not installed here, umount is
    # what it does), the drop-in's ExecStart, then its ExecStartPost, at once.
    end_lxcfs(signal.SIGTERM)
    if mounted():
        subprocess.run(["umount", str(LXCFS_DIR)], check=True)
    stale(vzroot)
    start_as_the_service(tmp_path / "lxcfs.log")
    heal = dropin("ExecStartPost")
    assert heal[0] == "/usr/local/sbin/pyvz-lxcfs-heal"  # the launcher of pyvz.cli.pyvz_lxcfs_heal
    done = subprocess.run(
        [sys.executable, "-m", "pyvz.cli.pyvz_lxcfs_heal", *heal[1:]],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert lxcfs.instance() not in (None, before)
    said = (vzroot.root / "var/log/vzctl.log").read_text()
    for ctid in ("101", "102"):  # 102 too: its cpuinfo was LXCFS's
        assert f"CT {ctid} of {vzroot.root}: bound the restarted LXCFS's files in again" in said
    sees_itself_again(vzroot)
    assert lxcfsmark.healed() == lxcfs.instance()
    vzroot.ok("stop", "101")
    vzroot.ok("stop", "102")


def test_lxcfs_killed_on_a_host_without_systemd_is_healed_by_make_install(lxcfs_kept: VzRoot) -> None:
    vzroot = lxcfs_kept
    if Path("/run/systemd/system").exists():
        pytest.skip("under systemd, setup-lxcfs restarts the service instead")
    two_cts(vzroot)
    end_lxcfs(signal.SIGKILL)  # a crash: its dead mount is left on the host
    stale(vzroot)
    done = subprocess.run([str(REPO / "tools/setup-lxcfs"), sys.executable], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    sees_itself_again(vzroot)


def test_vzctl_exec_heals_after_a_restart_nobody_healed(lxcfs_kept: VzRoot, tmp_path: Path) -> None:
    vzroot = lxcfs_kept
    two_cts(vzroot)
    from pyvz.runtime import lxcfs, lxcfsmark

    end_lxcfs(signal.SIGTERM)
    if mounted():
        subprocess.run(["umount", str(LXCFS_DIR)], check=True)
    start_as_the_service(tmp_path / "lxcfs.log")  # and no ExecStartPost: an old drop-in
    current = lxcfs.wait_up(10.0)
    assert current is not None and lxcfsmark.healed() != current
    sees_itself_again(vzroot)  # the first exec healed them on its way in
    assert lxcfsmark.healed() == current
    vzroot.ok("stop", "101")
    vzroot.ok("stop", "102")
