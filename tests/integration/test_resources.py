"""Resource limits on real CTs: applied at start, changed live, and holding under load."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import VzRoot

pytestmark = pytest.mark.root


def cgroup_file(vzroot: VzRoot, controller: str, name: str) -> Path:
    from pyvz.paths import Paths

    return Path("/sys/fs/cgroup") / controller / Paths(vzroot.root).tag / "101" / name


def subtree_count(vzroot: VzRoot, controller: str, name: str, key: str) -> int:
    """A counter summed over the CT's cgroup and the one below it, where its tasks live
    (the kernel counts a failed fork or an OOM kill where the task is)."""
    total = 0
    for path in (cgroup_file(vzroot, controller, name), cgroup_file(vzroot, controller, f"ns/{name}")):
        for line in path.read_text().splitlines():
            if line.split()[0] == key:
                total += int(line.split()[1])
    return total


def conf(vzroot: VzRoot) -> str:
    return (vzroot.conf_dir / "101.conf").read_text()


def test_numproc_stops_a_fork_bomb(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--numproc", "40")
    vzroot.ok("start", "101")
    assert cgroup_file(vzroot, "pids", "pids.max").read_text().strip() == "40"
    # Try to start 100 sleepers; the CT's task count must stop at the limit.
    vzroot.vzctl("exec", "101", "for i in $(seq 100); do sleep 30 & done 2>/dev/null; true", timeout=60)
    assert int(cgroup_file(vzroot, "pids", "pids.current").read_text()) <= 40
    assert subtree_count(vzroot, "pids", "pids.events", "max") > 0  # the refused forks are counted
    vzroot.ok("stop", "--fast", "101")


def test_ram_is_enforced_and_changes_live(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--ram", "64M", "--swap", "0")
    vzroot.ok("start", "101")
    limit = cgroup_file(vzroot, "memory", "memory.limit_in_bytes")
    assert int(limit.read_text()) == 64 << 20
    init_before = vzroot.ok("exec", "101", "cut -d' ' -f22 /proc/1/stat").strip()
    # 200 MB in one buffer: the CT's OOM killer takes dd, the CT itself keeps running.
    done = vzroot.vzctl("exec2", "101", "dd if=/dev/zero of=/dev/null bs=200M count=1")
    assert done.code != 0
    assert subtree_count(vzroot, "memory", "memory.oom_control", "oom_kill") > 0
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist mounted running"
    # Live: more RAM without a restart, saved.
    vzroot.ok("set", "101", "--ram", "256M", "--save")
    assert int(limit.read_text()) == 256 << 20
    assert vzroot.ok("exec", "101", "cut -d' ' -f22 /proc/1/stat").strip() == init_before
    assert 'PHYSPAGES="0:65536"' in conf(vzroot)
    assert vzroot.vzctl("exec2", "101", "dd if=/dev/zero of=/dev/null bs=200M count=1").code == 0
    vzroot.ok("stop", "--fast", "101")


def test_cpu_settings_reach_the_cgroup(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--cpuunits", "2000", "--cpulimit", "50")
    vzroot.ok("start", "101")
    assert cgroup_file(vzroot, "cpu", "cpu.shares").read_text().strip() == "2048"
    assert cgroup_file(vzroot, "cpu", "cpu.cfs_quota_us").read_text().strip() == "50000"
    vzroot.ok("set", "101", "--cpulimit", "0", "--save")
    assert cgroup_file(vzroot, "cpu", "cpu.cfs_quota_us").read_text().strip() == "-1"
    vzroot.ok("stop", "--fast", "101")


def test_bad_resource_values_leave_the_config_untouched(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101")
    before = (vzroot.conf_dir / "101.conf").read_bytes()
    for args, code in (
        (("--numproc", "-5"), 21),
        (("--ram", "lots"), 21),
        (("--numproc", "200:100"), 21),
        (("--cpuunits", "3"), 21),
        (("--frobcount", "1"), 20),
    ):
        done = vzroot.vzctl("set", "101", *args, "--save")
        assert done.code == code, (args, done.err)
        assert len(done.err.strip().splitlines()) == 1
    assert (vzroot.conf_dir / "101.conf").read_bytes() == before


def test_cpulimit_holds_a_busy_loop(vzroot: VzRoot) -> None:
    import time

    vzroot.ok("create", "101", "--cpulimit", "50")
    vzroot.ok("start", "101")
    vzroot.ok("exec", "101", "(timeout 9 sh -c 'while :; do :; done' >/dev/null 2>&1 &)")
    usage = cgroup_file(vzroot, "cpuacct", "cpuacct.usage")  # counts the CT's whole subtree
    time.sleep(1.5)  # past the first period's burst
    used, started = int(usage.read_text()), time.monotonic()
    time.sleep(5)
    share = (int(usage.read_text()) - used) / 1e9 / (time.monotonic() - started)
    assert 0.3 < share <= 0.60, f"a busy loop used {share:.0%} of a CPU under cpulimit=50"
    vzroot.ok("stop", "--fast", "101")
