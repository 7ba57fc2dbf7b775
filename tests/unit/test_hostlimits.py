"""The host-wide start checks' decisions, on a copy of the few /proc files they read.

Why a copy: the real limits are shared by everything on this machine (kernel.pid_max,
fs.file-max, MemAvailable): lowering them to see a refusal would break every other process
and test running meanwhile. The network-namespace limits are tested on the real kernel
(tests/integration/test_hostlimits.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyvz.errors import VzError
from pyvz.resources import hostlimits


def fake_proc(tmp_path: Path, tasks: int, pid_max: int, threads_max: int = 190000) -> Path:
    proc = tmp_path / "proc"
    (proc / "sys/kernel").mkdir(parents=True)
    (proc / "sys/fs").mkdir(parents=True)
    (proc / "loadavg").write_text(f"0.50 0.40 0.30 3/{tasks} 12345\n")
    (proc / "sys/kernel/pid_max").write_text(f"{pid_max}\n")
    (proc / "sys/kernel/threads-max").write_text(f"{threads_max}\n")
    (proc / "sys/fs/file-nr").write_text("9000\t0\t2466300\n")
    (proc / "sys/fs/file-max").write_text("2466300\n")
    (proc / "meminfo").write_text("MemTotal: 24000000 kB\nMemAvailable: 20000000 kB\n")
    return proc


def test_the_live_host_passes() -> None:
    hostlimits.before_start()  # this machine, as it is: nothing near a limit


def test_pid_max_with_room_is_left_alone(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, tasks=6000, pid_max=32768)
    hostlimits.check_pids(proc)
    assert (proc / "sys/kernel/pid_max").read_text() == "32768\n"


def test_pid_max_nearly_used_up_is_doubled(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, tasks=32500, pid_max=32768)
    hostlimits.check_pids(proc)
    assert (proc / "sys/kernel/pid_max").read_text() == "65536\n"


def test_pid_max_at_the_kernels_ceiling_is_refused(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, tasks=4194300, pid_max=4194304, threads_max=9000000)
    with pytest.raises(VzError, match=r"kernel.pid_max \(4194304\) is nearly used up by 4194300 tasks"):
        hostlimits.check_pids(proc)


def test_threads_max_is_reported(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, tasks=99990, pid_max=4194304, threads_max=100000)
    with pytest.raises(VzError, match=r"kernel.threads-max \(100000\).*sysctl -w kernel.threads-max=200000"):
        hostlimits.check_pids(proc)


def test_file_max_and_memory_are_reported(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, tasks=100, pid_max=32768)
    (proc / "sys/fs/file-nr").write_text("2465000\t0\t2466300\n")
    with pytest.raises(VzError, match=r"fs.file-max \(2466300\) is nearly used up"):
        hostlimits.check_files(proc)
    (proc / "meminfo").write_text("MemTotal: 24000000 kB\nMemAvailable: 20000 kB\n")
    with pytest.raises(VzError, match=r"host memory is exhausted: 19 MB available"):
        hostlimits.check_memory(proc)


def test_unreadable_files_check_nothing(tmp_path: Path) -> None:
    hostlimits.before_start(tmp_path / "nothing-here")


def fake_neighbours(tmp_path: Path, entries: int, thresh3: int) -> Path:
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    header = "IP address       HW type     Flags       HW address            Mask     Device\n"
    rows = "".join(
        f"10.0.{n // 250}.{n % 250 + 1} 0x1 0x2 00:18:51:00:00:01 * veth{n}\n" for n in range(entries)
    )
    (proc / "net/arp").write_text(header + rows)
    for family in ("ipv4", "ipv6"):
        base = proc / "sys/net" / family / "neigh/default"
        base.mkdir(parents=True)
        for name, value in (
            ("gc_thresh1", thresh3 // 8),
            ("gc_thresh2", thresh3 // 2),
            ("gc_thresh3", thresh3),
        ):
            (base / name).write_text(f"{value}\n")
    return proc


def test_a_neighbour_table_with_room_is_left_alone(tmp_path: Path) -> None:
    proc = fake_neighbours(tmp_path, entries=500, thresh3=1024)
    hostlimits.check_neighbours(2, proc)
    assert (proc / "sys/net/ipv4/neigh/default/gc_thresh3").read_text() == "1024\n"


def test_a_filling_neighbour_table_is_raised_in_both_families(tmp_path: Path) -> None:
    proc = fake_neighbours(tmp_path, entries=767, thresh3=1024)
    hostlimits.check_neighbours(2, proc)
    for family in ("ipv4", "ipv6"):
        base = proc / "sys/net" / family / "neigh/default"
        assert [(base / n).read_text() for n in ("gc_thresh1", "gc_thresh2", "gc_thresh3")] == [
            "512\n",
            "1024\n",
            "2048\n",
        ]


def test_no_thresholds_here_checks_nothing(tmp_path: Path) -> None:
    """Inside a network namespace other than the host's the thresholds are not shown."""
    proc = fake_neighbours(tmp_path, entries=2000, thresh3=1024)
    for family in ("ipv4", "ipv6"):
        for name in ("gc_thresh1", "gc_thresh2", "gc_thresh3"):
            (proc / "sys/net" / family / "neigh/default" / name).unlink()
    hostlimits.check_neighbours(2, proc)
