"""Beancounters: kernel counters from fake cgroupfs trees (v1 and v2), their conversion to
OpenVZ units, the remembered maxheld, and the /proc/user_beancounters text.

This machine runs cgroup v1, so the fake v2 tree is where the v2 code path is exercised.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

from pyvz.config import CtConfig
from pyvz.params import PAGE
from pyvz.resources import beancounters
from pyvz.resources.beancounters import NAMES, Beancounter, proc_text, process_usage, read
from pyvz.resources.cgroups import CgroupV1, CgroupV2, Usage, detect
from pyvz.units import UNLIMITED

REL = "pyvz-test/101"
MONITOR = "pyvz-test/101.monitor"
UBC_ORDER = [
    "kmemsize",
    "lockedpages",
    "privvmpages",
    "shmpages",
    "numproc",
    "physpages",
    "vmguarpages",
    "oomguarpages",
    "numtcpsock",
    "numflock",
    "numpty",
    "numsiginfo",
    "tcpsndbuf",
    "tcprcvbuf",
    "othersockbuf",
    "dgramrcvbuf",
    "numothersock",
    "dcachesize",
    "numfile",
    "numiptent",
    "swappages",
]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def config(**values: str) -> CtConfig:
    return CtConfig.merge(101, {}, values, Path("/dev/null"))


def by_name(counters: list[Beancounter] | None) -> dict[str, Beancounter]:
    assert counters is not None
    return {c.name: c for c in counters}


# ---- fake trees ----------------------------------------------------------------------------


def make_v1(mount: Path) -> CgroupV1:
    """A v1 CT with memory (swap accounting, kmem, tcp) and pids, and inner cgroups."""
    mem, pids = mount / "memory" / REL, mount / "pids" / REL
    write(mount / "memory/memory.memsw.limit_in_bytes", "")
    write(mem / "memory.usage_in_bytes", f"{10 * PAGE + 1}\n")  # 11 pages, rounded up
    write(mem / "memory.max_usage_in_bytes", f"{20 * PAGE}\n")
    write(mem / "memory.failcnt", "3\n")
    write(mem / "memory.memsw.failcnt", "2\n")
    write(mem / "memory.memsw.usage_in_bytes", f"{10 * PAGE + 1 + 2 * PAGE}\n")
    write(mem / "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    write(mem / "init.scope/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    write(mem / "system.slice/a.service/memory.oom_control", "oom_kill_disable 0\noom_kill 4\n")
    write(mount / "memory" / MONITOR / "memory.oom_control", "oom_kill 100\n")  # not the CT's
    write(mem / "memory.stat", "cache 4096\nrss 8192\nshmem 4096\ntotal_shmem 12288\n")
    write(mem / "memory.kmem.usage_in_bytes", "123456\n")
    write(mem / "memory.kmem.max_usage_in_bytes", "200000\n")
    write(mem / "memory.kmem.failcnt", "0\n")
    write(mem / "memory.kmem.tcp.usage_in_bytes", "5000\n")
    write(mem / "memory.kmem.tcp.max_usage_in_bytes", "9000\n")
    write(mem / "memory.kmem.tcp.failcnt", "1\n")
    write(mem / "cgroup.procs", "")
    write(pids / "pids.current", "7\n")
    write(pids / "pids.peak", "12\n")
    write(pids / "pids.events", "max 2\n")
    write(pids / "init.scope/pids.events", "max 3\n")
    write(mount / "pids" / MONITOR / "pids.events", "max 50\n")
    tree = detect(mount)
    assert isinstance(tree, CgroupV1)
    return tree


def make_v2(mount: Path, relative: str = REL) -> CgroupV2:
    top = mount / relative
    write(mount / "cgroup.controllers", "cpuset cpu io memory pids\n")
    write(top / "memory.current", f"{10 * PAGE + 1}\n")
    write(top / "memory.peak", f"{20 * PAGE}\n")
    write(top / "memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n")
    write(top / "memory.swap.current", f"{2 * PAGE}\n")
    write(top / "memory.swap.peak", f"{4 * PAGE}\n")
    write(top / "memory.swap.events", "high 0\nmax 0\nfail 3\n")
    write(top / "memory.stat", "anon 1\nfile 2\nkernel 70000\nkernel_stack 100\nsock 3000\nshmem 8192\n")
    write(top / "pids.current", "7\n")
    write(top / "pids.peak", "9\n")
    write(top / "pids.events", "max 2\n")
    write(top / "cgroup.procs", "")
    tree = detect(mount)
    assert isinstance(tree, CgroupV2)
    return tree


# ---- cgroup v1 usage -----------------------------------------------------------------------


def test_v1_usage_reads_every_counter(tmp_path: Path) -> None:
    tree = make_v1(tmp_path)
    tcp = Usage(5000, 9000, 1)
    assert tree.usage(REL) == {
        "physpages": Usage(10 * PAGE + 1, 20 * PAGE, 5),  # memory.failcnt + memsw.failcnt
        "swappages": Usage(2 * PAGE, None, None),  # memsw usage - memory usage
        "oomguarpages": Usage(12 * PAGE + 1, None, 7),  # oom kills summed over the CT's subtree
        "shmpages": Usage(12288),  # total_shmem, not the local shmem
        "kmemsize": Usage(123456, 200000, 0),
        "tcpsndbuf": tcp,
        "tcprcvbuf": tcp,  # one kernel counter for both directions
        "numproc": Usage(7, 12, 5),  # pids.events max summed over the subtree
    }


def test_v1_usage_without_swap_accounting_or_kmem(tmp_path: Path) -> None:
    tree = make_v1(tmp_path)
    mem = tmp_path / "memory" / REL
    for name in (
        "memory.memsw.usage_in_bytes",
        "memory.memsw.failcnt",
        "memory.kmem.usage_in_bytes",
        "memory.kmem.tcp.usage_in_bytes",
    ):
        (mem / name).unlink()
    usage = tree.usage(REL)
    assert usage["physpages"] == Usage(10 * PAGE + 1, 20 * PAGE, 3)
    assert usage["oomguarpages"] == Usage(10 * PAGE + 1, None, 7)  # memory alone
    assert not {"swappages", "kmemsize", "tcpsndbuf", "tcprcvbuf"} & usage.keys()


def test_v1_usage_pids_only(tmp_path: Path) -> None:
    write(tmp_path / "pids" / REL / "pids.current", "3\n")
    usage = CgroupV1(tmp_path).usage(REL)
    assert usage == {"numproc": Usage(3, None, 0)}  # no pids.peak on this kernel: no maxheld


def test_v1_usage_of_missing_cgroup_is_empty(tmp_path: Path) -> None:
    make_v1(tmp_path)
    assert CgroupV1(tmp_path).usage("pyvz-test/102") == {}


def test_v1_usage_ignores_garbage(tmp_path: Path) -> None:
    tree = make_v1(tmp_path)
    mem = tmp_path / "memory" / REL
    (mem / "init.scope/memory.oom_control").write_text("oom_kill lots\nunder_oom\n")
    assert tree.usage(REL)["oomguarpages"].failcnt == 5  # 1 + 4; the garbage counts nothing
    (mem / "memory.usage_in_bytes").write_text("garbage\n")
    usage = tree.usage(REL)
    assert not {"physpages", "swappages", "oomguarpages", "shmpages"} & usage.keys()
    assert usage["numproc"] == Usage(7, 12, 5)


# ---- cgroup v2 usage -----------------------------------------------------------------------


def test_v2_usage_reads_every_counter(tmp_path: Path) -> None:
    tree = make_v2(tmp_path)
    sock = Usage(3000)
    assert tree.usage(REL) == {
        "physpages": Usage(10 * PAGE + 1, 20 * PAGE, 4),  # memory.events max
        "swappages": Usage(2 * PAGE, 4 * PAGE, 3),  # memory.swap.events fail
        "oomguarpages": Usage(12 * PAGE + 1, None, 1),  # memory.events oom_kill
        "kmemsize": Usage(70000),  # memory.stat kernel, not kernel_stack
        "shmpages": Usage(8192),
        "tcpsndbuf": sock,
        "tcprcvbuf": sock,
        "numproc": Usage(7, 9, 2),
    }


def test_v2_usage_without_swap_accounting(tmp_path: Path) -> None:
    tree = make_v2(tmp_path)
    for name in ("memory.swap.current", "memory.swap.peak", "memory.swap.events"):
        (tmp_path / REL / name).unlink()
    usage = tree.usage(REL)
    assert "swappages" not in usage
    assert usage["oomguarpages"] == Usage(10 * PAGE + 1, None, 1)


def test_v2_usage_without_memory_controller(tmp_path: Path) -> None:
    tree = make_v2(tmp_path)
    for name in ("memory.current", "memory.peak", "memory.events", "memory.stat"):
        (tmp_path / REL / name).unlink()
    assert tree.usage(REL) == {"numproc": Usage(7, 9, 2)}


def test_v2_usage_missing_events_count_zero(tmp_path: Path) -> None:
    tree = make_v2(tmp_path)
    (tmp_path / REL / "memory.events").unlink()
    (tmp_path / REL / "pids.events").unlink()
    usage = tree.usage(REL)
    assert usage["physpages"].failcnt == 0 and usage["oomguarpages"].failcnt == 0
    assert usage["numproc"].failcnt == 0


def test_v2_usage_of_missing_cgroup_is_empty(tmp_path: Path) -> None:
    tree = make_v2(tmp_path)
    assert tree.usage("pyvz-test/102") == {}


# ---- beancounters.read ---------------------------------------------------------------------


def test_read_converts_units_and_fills_config(tmp_path: Path) -> None:
    tree = make_v2(tmp_path / "cg")
    cfg = config(PHYSPAGES="0:65536", NUMPROC="100:120", KMEMSIZE="1000000:2000000")
    counters = read(tree, REL, cfg, tmp_path / "state.json")
    assert counters is not None
    assert [c.name for c in counters] == UBC_ORDER == list(NAMES)
    found = by_name(counters)
    assert found["physpages"] == Beancounter("physpages", 11, 20, 0, 65536, 4)  # bytes -> pages, up
    assert found["swappages"] == Beancounter("swappages", 2, 4, UNLIMITED, UNLIMITED, 3)
    assert found["shmpages"].held == 2  # 8192 bytes
    assert found["oomguarpages"].held == 13 and found["oomguarpages"].maxheld == 13
    assert found["kmemsize"] == Beancounter("kmemsize", 70000, 70000, 1000000, 2000000, None)  # bytes stay
    assert found["numproc"] == Beancounter("numproc", 7, 9, 100, 120, 2)
    # Not counted by the kernel, not configured: unknown and unlimited.
    assert found["privvmpages"] == Beancounter("privvmpages", None, None, UNLIMITED, UNLIMITED, None)
    assert found["numfile"].held is None  # no processes in the CT's cgroup.procs


def test_read_exact_page_is_not_rounded_up(tmp_path: Path) -> None:
    tree = make_v2(tmp_path / "cg")
    (tmp_path / "cg" / REL / "memory.current").write_text(f"{PAGE}\n")
    (tmp_path / "cg" / REL / "memory.peak").write_text(f"{PAGE}\n")
    found = by_name(read(tree, REL, None, tmp_path / "state.json"))
    assert (found["physpages"].held, found["physpages"].maxheld) == (1, 1)


def test_read_of_stopped_ct_is_none(tmp_path: Path) -> None:
    tree = make_v2(tmp_path / "cg")
    state = tmp_path / "state.json"
    assert read(tree, "pyvz-test/102", None, state) is None
    assert not state.exists()


def test_read_counts_the_cts_processes(tmp_path: Path) -> None:
    tree = make_v2(tmp_path / "cg")
    write(tmp_path / "cg" / REL / "init.scope/cgroup.procs", f"{os.getpid()}\n")
    found = by_name(read(tree, REL, None, tmp_path / "state.json"))
    held = found["numfile"].held
    assert held is not None and held > 0
    assert found["numfile"].maxheld == held


def test_read_v1(tmp_path: Path) -> None:
    tree = make_v1(tmp_path / "cg")
    cfg = config(PHYSPAGES="0:65536", SWAPPAGES="0:1024", TCPSNDBUF="10000:20000")
    found = by_name(read(tree, REL, cfg, tmp_path / "state.json"))
    assert found["physpages"] == Beancounter("physpages", 11, 20, 0, 65536, 5)
    assert found["swappages"] == Beancounter("swappages", 2, 2, 0, 1024, None)
    assert found["oomguarpages"].held == 13 and found["oomguarpages"].failcnt == 7
    assert found["shmpages"].held == 3
    assert found["tcpsndbuf"] == Beancounter("tcpsndbuf", 5000, 9000, 10000, 20000, 1)
    assert found["tcprcvbuf"].held == 5000
    assert found["numproc"].failcnt == 5
    data = json.loads((tmp_path / "state.json").read_text())
    assert data["identity"] == tree.dirs(REL)[0].stat().st_ino


def test_maxheld_is_remembered_where_the_kernel_keeps_none(tmp_path: Path) -> None:
    tree = make_v2(tmp_path / "cg")
    top, state = tmp_path / "cg" / REL, tmp_path / "state.json"
    assert by_name(read(tree, REL, None, state))["kmemsize"].maxheld == 70000
    (top / "memory.stat").write_text("kernel 50000\nsock 0\nshmem 0\n")
    found = by_name(read(tree, REL, None, state))
    assert (found["kmemsize"].held, found["kmemsize"].maxheld) == (50000, 70000)
    data = json.loads(state.read_text())
    assert data["identity"] == top.stat().st_ino
    assert data["maxheld"]["kmemsize"] == 70000
    (top / "memory.stat").write_text("kernel 90000\nsock 0\nshmem 0\n")
    assert by_name(read(tree, REL, None, state))["kmemsize"].maxheld == 90000


def test_maxheld_is_the_highest_of_kernel_peak_held_and_remembered(tmp_path: Path) -> None:
    tree = make_v2(tmp_path / "cg")
    top, state = tmp_path / "cg" / REL, tmp_path / "state.json"
    read(tree, REL, None, state)  # physpages maxheld 20 (the kernel's peak)
    (top / "memory.peak").write_text(f"{5 * PAGE}\n")  # the peak was reset
    (top / "memory.current").write_text(f"{3 * PAGE}\n")
    found = by_name(read(tree, REL, None, state))
    assert (found["physpages"].held, found["physpages"].maxheld) == (3, 20)
    (top / "memory.current").write_text(f"{30 * PAGE}\n")  # held above every peak
    assert by_name(read(tree, REL, None, state))["physpages"].maxheld == 30
    (top / "memory.peak").write_text(f"{40 * PAGE}\n")
    assert by_name(read(tree, REL, None, state))["physpages"].maxheld == 40


def test_recreated_cgroup_resets_remembered_state(tmp_path: Path) -> None:
    tree = make_v2(tmp_path / "cg")
    top, state = tmp_path / "cg" / REL, tmp_path / "state.json"
    read(tree, REL, None, state)
    old_identity = json.loads(state.read_text())["identity"]
    # A restart: a new cgroup dir. The old one is kept aside so the inode cannot be reused.
    top.rename(tmp_path / "cg" / "old")
    make_v2(tmp_path / "cg")
    (top / "memory.stat").write_text("kernel 50000\nsock 0\nshmem 0\n")
    found = by_name(read(tree, REL, None, state))
    assert found["kmemsize"].maxheld == 50000  # 70000 belonged to the previous run
    data = json.loads(state.read_text())
    assert data["identity"] == top.stat().st_ino != old_identity
    assert data["maxheld"]["kmemsize"] == 50000


def test_garbage_state_file_is_replaced(tmp_path: Path) -> None:
    tree = make_v2(tmp_path / "cg")
    state = tmp_path / "state.json"
    state.write_text("{not json")
    assert by_name(read(tree, REL, None, state))["kmemsize"].maxheld == 70000
    assert json.loads(state.read_text())["maxheld"]["kmemsize"] == 70000


def test_unwritable_state_only_costs_the_remembered_maxheld(tmp_path: Path) -> None:
    tree = make_v2(tmp_path / "cg")
    state = tmp_path / "no-such-dir" / "state.json"
    found = by_name(read(tree, REL, None, state))
    assert found["physpages"].held == 11
    assert not state.exists()


# ---- process_usage -------------------------------------------------------------------------


def test_process_usage_of_this_process(tmp_path: Path) -> None:
    before = process_usage([os.getpid()])
    numfile = before["numfile"].held
    assert numfile is not None and numfile > 0
    assert {"numtcpsock", "numothersock", "numflock"} <= before.keys()
    with (
        open(tmp_path / "a", "w") as one,
        open(tmp_path / "b", "w"),
        open(tmp_path / "c", "w"),
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener,
    ):
        fcntl.lockf(one, fcntl.LOCK_EX)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        beancounters._lock_owners.cache_clear()  # /proc/locks is read once per command
        after = process_usage([os.getpid()])
    assert after["numfile"].held == numfile + 4
    locks = after["numflock"].held
    assert locks is not None and locks >= 1
    tcp = after["numtcpsock"].held
    assert tcp is not None and tcp >= 1


def test_process_usage_of_no_processes() -> None:
    assert process_usage([]) == {}


def test_process_usage_of_vanished_process() -> None:
    usage = process_usage([0])  # no /proc/0: as if the process just exited
    assert usage["numfile"] == Usage(0)
    assert usage["numflock"] == Usage(0)  # other processes' locks are not its own
    assert "numtcpsock" not in usage and "numpty" not in usage


def test_lock_owner_parsing() -> None:
    lock_pid = beancounters._lock_pid
    assert lock_pid("1: POSIX  ADVISORY  WRITE 1234 00:15:123 0 EOF") == 1234
    assert lock_pid("1: -> POSIX  ADVISORY  WRITE 5678 00:15:123 0 EOF") == 5678
    assert lock_pid("garbage") == -1


# ---- the /proc/user_beancounters text -------------------------------------------------------


def kernel_row(ctid: int | None, name: str, *values: int) -> str:
    """One row as the OpenVZ kernel prints it (kernel/bc/proc.c's printf format)."""
    uid = "%10s:" % ctid if ctid is not None else " " * 11
    return uid + " %-12s" % name + "".join(" %20d" % v for v in values)


def test_proc_text_is_the_kernels_layout() -> None:
    text = proc_text(
        [
            (
                101,
                [
                    Beancounter("kmemsize", 2752512, 2871296, UNLIMITED, UNLIMITED, 0),
                    Beancounter("physpages", 11, None, 0, 65536, None),  # unknown: 0
                    Beancounter("numproc", 7, 9, 100, 120, 2),
                ],
            ),
            (1234567890, [Beancounter("numfile", None, None, UNLIMITED, UNLIMITED, None)]),
        ]
    )
    assert text.endswith("\n")
    lines = text.split("\n")[:-1]
    assert lines[0] == "Version: 2.5"
    assert lines[1] == (
        "       uid  resource                     held              maxheld"
        "              barrier                limit              failcnt"
    )
    assert lines[2:] == [
        kernel_row(101, "kmemsize", 2752512, 2871296, UNLIMITED, UNLIMITED, 0),
        kernel_row(None, "physpages", 11, 0, 0, 65536, 0),
        kernel_row(None, "numproc", 7, 9, 100, 120, 2),
        kernel_row(1234567890, "numfile", 0, 0, UNLIMITED, UNLIMITED, 0),
    ]
    assert lines[2].startswith("       101: kmemsize ")
    assert lines[3].startswith("            physpages ")
    # Column names end where their numbers end.
    for line in lines[2:]:
        assert len(line) == len(lines[1])


def test_proc_text_of_no_cts() -> None:
    text = proc_text([])
    assert text.splitlines()[0] == "Version: 2.5"
    assert len(text.splitlines()) == 2
    assert proc_text([(101, [])]) == text
