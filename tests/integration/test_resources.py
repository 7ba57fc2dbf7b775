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
        (("--frobcount", "1"), 21),  # vzctl set reads options with getopt_long: 21
        (("--kmemsize", "2M:1M"), 21),
        (("--tcpsndbuf", "-1"), 21),
        (("--iolimit", "fast"), 21),
        (("--iopslimit", "-3"), 21),
        (("--ioprio", "9"), 21),
        (("--cpumask", "0-x"), 21),
        (("--cpus", "two"), 21),
        (("--vm_overcommit", "0"), 21),
        (("--diskinodes", "10:5"), 21),
    ):
        done = vzroot.vzctl("set", "101", *args, "--save")
        assert done.code == code, (args, done.err)
        assert len(done.err.strip().splitlines()) == 1
    assert (vzroot.conf_dir / "101.conf").read_bytes() == before


@pytest.mark.alone  # measures a CPU share: other tests' load would take CPU from it
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


def cpu_seconds(vzroot: VzRoot, ctid: str) -> float:
    from pyvz.paths import Paths

    usage = Path("/sys/fs/cgroup/cpuacct") / Paths(vzroot.root).tag / ctid / "cpuacct.usage"
    return int(usage.read_text()) / 1e9


@pytest.mark.alone  # measures CPU shares on core 0, which other tests' load would share
def test_cpuunits_share_one_core_2_to_1(vzroot: VzRoot) -> None:
    import time

    for ctid, units in (("101", "2000"), ("102", "1000")):
        vzroot.ok("create", ctid, "--cpuunits", units, "--cpumask", "0")
        vzroot.ok("start", ctid)
        vzroot.ok("exec", ctid, "(timeout 10 sh -c 'while :; do :; done' >/dev/null 2>&1 &)")
    time.sleep(1.5)
    before = [cpu_seconds(vzroot, "101"), cpu_seconds(vzroot, "102")]
    time.sleep(5)
    after = [cpu_seconds(vzroot, "101"), cpu_seconds(vzroot, "102")]
    heavy, light = after[0] - before[0], after[1] - before[1]
    assert heavy + light < 5 * 1.15, "both CTs were pinned to one core"
    assert 1.6 <= heavy / light <= 2.4, f"cpuunits 2000:1000 gave {heavy:.2f}s:{light:.2f}s"
    vzroot.ok("stop", "--fast", "101")
    vzroot.ok("stop", "--fast", "102")


def test_diskspace_stops_writes_near_the_quota_and_vzlist_shows_usage(vzroot: VzRoot) -> None:
    import json

    vzroot.ok("create", "101", "--diskspace", "100M")
    vzroot.ok("start", "101")
    done = vzroot.vzctl("exec", "101", "dd if=/dev/zero of=/big bs=1M count=200 2>&1; sync", timeout=60)
    # btrfs qgroups refuse with EDQUOT ("Disk quota exceeded"), where ploop ran out of space.
    assert "quota exceeded" in done.out.lower() or "no space" in done.out.lower(), done.out
    size = (vzroot.private_dir / "101/big").stat().st_size
    assert 85 << 20 <= size <= 101 << 20, f"the quota let {size >> 20} MB through"
    listed = json.loads(vzroot.vzlist("-j", "-o", "ctid,diskspace", "101").out)[0]["diskspace"]
    assert listed["hardlimit"] == 100 * 1024
    assert 85 * 1024 <= listed["usage"] <= 101 * 1024
    table = vzroot.vzlist("-H", "-o", "diskspace,diskspace.h", "101").out.split()
    assert int(table[0]) == listed["usage"] and table[1] == str(100 * 1024)
    vzroot.ok("stop", "--fast", "101")


@pytest.mark.alone  # measures a write rate: other tests' I/O on the same disk would slow it
def test_iolimit_holds_direct_writes_to_5_mb_per_second(vzroot: VzRoot) -> None:
    import time

    vzroot.ok("create", "101", "--iolimit", "5")  # a plain number is MB/s, as in vzctl
    assert 'IOLIMIT="5242880"' in conf(vzroot)
    vzroot.ok("start", "101")
    vzroot.ok(
        "exec", "101", "(timeout 14 dd if=/dev/zero of=/f bs=1M count=200 oflag=direct >/dev/null 2>&1 &)"
    )
    written = vzroot.private_dir / "101/f"
    time.sleep(2)  # past any first burst
    size, started = written.stat().st_size, time.monotonic()
    time.sleep(10)
    rate = (written.stat().st_size - size) / (time.monotonic() - started) / (1 << 20)
    assert 3.75 <= rate <= 6.25, f"iolimit=5M let direct writes run at {rate:.2f} MB/s"
    # Live: lifting the limit takes effect without a restart.
    vzroot.ok("set", "101", "--iolimit", "0", "--save")
    started = time.monotonic()
    vzroot.ok("exec", "101", "dd if=/dev/zero of=/g bs=1M count=50 oflag=direct 2>/dev/null")
    assert time.monotonic() - started < 8  # still limited, 50 MB would take 10 s
    vzroot.ok("stop", "--fast", "101")


def test_ioprio_and_iopslimit_reach_the_ct_disk(vzroot: VzRoot) -> None:
    from pyvz.storage.blockdev import device_of

    vzroot.ok("create", "101", "--ioprio", "7", "--iopslimit", "300")
    started = vzroot.vzctl("start", "101")
    assert started.code == 0, started
    device = device_of(vzroot.private_dir)
    assert device is not None and device.name.startswith("loop")
    offered = Path(f"/sys/block/{device.name}/queue/scheduler").read_text()
    if "bfq" in offered:
        assert device.scheduler == "bfq"  # pyvz switched its own pool's loop device to bfq
        assert cgroup_file(vzroot, "blkio", "blkio.bfq.weight").read_text().split()[-1] == "800"
    else:  # a kernel without bfq (some are built so): ioprio cannot be enforced, and start says so
        assert "ioprio is not enforced" in started.err, started
    iops = f"{device.number} 300"
    assert cgroup_file(vzroot, "blkio", "blkio.throttle.write_iops_device").read_text().strip() == iops
    assert cgroup_file(vzroot, "blkio", "ns/blkio.throttle.write_iops_device").read_text().strip() == iops
    vzroot.ok("set", "101", "--ioprio", "2", "--iopslimit", "0", "--save")
    if "bfq" in offered:
        assert cgroup_file(vzroot, "blkio", "blkio.bfq.weight").read_text().split()[-1] == "25"
    assert cgroup_file(vzroot, "blkio", "ns/blkio.throttle.write_iops_device").read_text().strip() == ""
    vzroot.ok("stop", "--fast", "101")
