"""pyvz.resources.cgroups on fake cgroupfs trees, v2 (unified) and v1 (one dir per controller).

The machines here run hybrid v1, so this is where the v2 code path is exercised.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyvz.paths import Paths
from pyvz.resources.cgroups import CgroupV1, CgroupV2, CtCgroups, detect

TAG = "pyvz-0123abcd"
CT = f"{TAG}/101"
MONITOR = f"{TAG}/101.monitor"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def all_dirs(top: Path) -> list[str]:
    return sorted(str(Path(d).relative_to(top)) for d, _s, _f in os.walk(top))


# ---- the tree layout -----------------------------------------------------------------------


def test_ct_cgroups_names() -> None:
    assert CtCgroups.of(TAG, 101) == CtCgroups(CT, MONITOR)


def test_ct_cgroups_of_two_roots_do_not_collide(tmp_path: Path) -> None:
    one = CtCgroups.of(Paths(tmp_path / "a").tag, 101)
    two = CtCgroups.of(Paths(tmp_path / "b").tag, 101)
    assert one.container != two.container
    assert CtCgroups.of(Paths(Path("/")).tag, 101).container == "pyvz/101"


# ---- v2 ------------------------------------------------------------------------------------


@pytest.fixture
def v2(tmp_path: Path) -> Path:
    mount = tmp_path / "cgroup2"
    write(mount / "cgroup.controllers", "cpuset cpu io memory pids\n")
    write(mount / CT / "cgroup.procs", "")  # no internal processes: all in leaves
    write(mount / CT / "pids.current", "5\n")
    write(mount / CT / "init.scope/cgroup.procs", "4242\n")
    write(mount / CT / "init.scope/cgroup.threads", "4242\n")
    write(mount / CT / "system.slice/cron.service/cgroup.procs", "4300\n4301\n")
    write(mount / CT / "system.slice/cron.service/cgroup.threads", "4300\n4301\n4302\n")
    write(mount / CT / "system.slice/cgroup.threads", "")
    write(mount / MONITOR / "cgroup.procs", "4200\n")
    return mount


def test_detect_v2(v2: Path) -> None:
    tree = detect(v2)
    assert isinstance(tree, CgroupV2)
    assert tree.mount == v2


def test_v2_dirs(v2: Path) -> None:
    tree = detect(v2)
    assert tree.dirs(CT) == [v2 / CT]
    assert tree.dirs(f"{TAG}/102") == []


def test_v2_nproc_reads_pids_current(v2: Path) -> None:
    assert detect(v2).nproc(CT) == 5


def test_v2_nproc_without_pids_controller_counts_threads_below(v2: Path) -> None:
    (v2 / CT / "pids.current").unlink()
    assert detect(v2).nproc(CT) == 4  # 1 in init.scope + 3 in cron.service


def test_v2_nproc_bad_pids_current_falls_back(v2: Path) -> None:
    (v2 / CT / "pids.current").write_text("garbage\n")
    assert detect(v2).nproc(CT) == 4


def test_v2_nproc_of_missing_cgroup_is_zero(v2: Path) -> None:
    assert detect(v2).nproc(f"{TAG}/102") == 0


def test_v2_nproc_of_empty_cgroup_is_zero(v2: Path) -> None:
    (v2 / f"{TAG}/103").mkdir()
    write(v2 / f"{TAG}/103/pids.current", "0\n")
    assert detect(v2).nproc(f"{TAG}/103") == 0


def test_v2_procs(v2: Path) -> None:
    tree = detect(v2)
    assert tree.procs(MONITOR) == [4200]
    assert tree.procs(f"{CT}/system.slice/cron.service") == [4300, 4301]
    assert tree.procs(f"{TAG}/102") == []


def test_v2_remove_deepest_first(tmp_path: Path) -> None:
    mount = tmp_path / "cgroup2"
    write(mount / "cgroup.controllers", "pids\n")
    for sub in ("init.scope", "system.slice/a.service", "system.slice/b.service/deep", "user.slice"):
        (mount / CT / sub).mkdir(parents=True)
    (mount / f"{TAG}/102/init.scope").mkdir(parents=True)
    tree = detect(mount)
    tree.remove(CT)
    assert not (mount / CT).exists()
    assert all_dirs(mount) == [".", TAG, f"{TAG}/102", f"{TAG}/102/init.scope"]
    tree.remove(CT)  # already gone: nothing to do
    tree.remove(f"{TAG}/999")
    assert (mount / f"{TAG}/102/init.scope").is_dir()


def test_v2_remove_leaves_populated_cgroups(tmp_path: Path) -> None:
    # In the fake tree a file stands in for a populated cgroup: rmdir fails on it.
    mount = tmp_path / "cgroup2"
    write(mount / "cgroup.controllers", "pids\n")
    (mount / CT / "empty/deeper").mkdir(parents=True)
    write(mount / CT / "busy/cgroup.procs", "77\n")
    detect(mount).remove(CT)
    assert all_dirs(mount) == [".", TAG, CT, f"{CT}/busy"]


# ---- v1 ------------------------------------------------------------------------------------


@pytest.fixture
def v1(tmp_path: Path) -> Path:
    mount = tmp_path / "cgroup"
    for controller in ("freezer", "memory", "pids"):
        write(mount / controller / "tasks", "1\n")  # the host's own tasks at the top
        write(mount / controller / CT / "tasks", "")
        write(mount / controller / CT / "cgroup.procs", "")
        write(mount / controller / MONITOR / "cgroup.procs", "4200\n")
        write(mount / controller / MONITOR / "tasks", "4200\n")
    write(mount / "pids" / CT / "pids.current", "6\n")
    write(mount / "memory" / CT / "cgroup.procs", "4242\n4243\n")
    write(mount / "memory" / CT / "tasks", "4242\n4243\n4244\n")
    write(mount / "memory" / CT / "sub/tasks", "4250\n")
    write(mount / "freezer" / CT / "tasks", "4242\n4243\n4244\n4250\n")
    # hybrid hosts have controller symlinks; they must not count twice
    (mount / "cpu,cpuacct").mkdir()
    os.symlink("cpu,cpuacct", mount / "cpu")
    os.symlink("memory", mount / "memory_alias")
    return mount


def test_detect_v1(v1: Path) -> None:
    tree = detect(v1)
    assert isinstance(tree, CgroupV1)
    assert tree.mount == v1


def test_detect_hybrid_is_v1(v1: Path) -> None:
    # hybrid: the unified hierarchy is a subdirectory, not the mount itself
    write(v1 / "unified/cgroup.controllers", "")
    assert isinstance(detect(v1), CgroupV1)


def test_detect_missing_mount_is_v1_and_empty(tmp_path: Path) -> None:
    tree = detect(tmp_path / "nothing")
    assert isinstance(tree, CgroupV1)
    assert tree.dirs(CT) == []
    assert tree.nproc(CT) == 0
    assert tree.procs(CT) == []
    tree.remove(CT)


def test_v1_dirs_one_per_hierarchy_no_symlinks(v1: Path) -> None:
    tree = detect(v1)
    assert tree.dirs(CT) == [v1 / "freezer" / CT, v1 / "memory" / CT, v1 / "pids" / CT]
    assert tree.dirs(f"{TAG}/102") == []


def test_v1_nproc_reads_pids_current(v1: Path) -> None:
    assert detect(v1).nproc(CT) == 6


def test_v1_nproc_without_pids_counts_tasks_of_one_hierarchy(v1: Path) -> None:
    (v1 / "pids" / CT / "pids.current").unlink()
    assert detect(v1).nproc(CT) == 4  # freezer: 4 tasks; not summed over hierarchies


def test_v1_nproc_of_missing_cgroup_is_zero(v1: Path) -> None:
    assert detect(v1).nproc(f"{TAG}/102") == 0


def test_v1_procs_first_hierarchy_that_has_any(v1: Path) -> None:
    tree = detect(v1)
    assert tree.procs(CT) == [4242, 4243]  # freezer's cgroup.procs is empty
    assert tree.procs(MONITOR) == [4200]
    assert tree.procs(f"{TAG}/102") == []


def test_v1_procs_ignores_garbage(v1: Path) -> None:
    (v1 / "memory" / CT / "cgroup.procs").write_text("not a pid\n")
    assert detect(v1).procs(CT) == []


def test_v1_remove_in_every_hierarchy(tmp_path: Path) -> None:
    mount = tmp_path / "cgroup"
    for controller in ("freezer", "memory", "pids"):
        (mount / controller / CT / "a/b").mkdir(parents=True)
        (mount / controller / MONITOR).mkdir(parents=True)
    (mount / "memory" / CT / "c").mkdir()
    tree = detect(mount)
    tree.remove(CT)
    for controller in ("freezer", "memory", "pids"):
        assert all_dirs(mount / controller) == [".", TAG, MONITOR]
    tree.remove(MONITOR)
    for controller in ("freezer", "memory", "pids"):
        assert all_dirs(mount / controller) == [".", TAG]


def test_v1_remove_leaves_populated_cgroups(tmp_path: Path) -> None:
    mount = tmp_path / "cgroup"
    (mount / "pids" / CT / "gone").mkdir(parents=True)
    write(mount / "memory" / CT / "busy/tasks", "5\n")
    (mount / "memory" / CT / "idle").mkdir()
    detect(mount).remove(CT)
    assert all_dirs(mount / "pids") == [".", TAG]
    assert all_dirs(mount / "memory") == [".", TAG, CT, f"{CT}/busy"]


# ---- freezer (snapshots freeze a running CT) --------------------------------------------


def test_v2_freezer_file_and_state(v2: Path) -> None:
    tree = CgroupV2(v2)
    assert tree.freezer(CT) == (v2 / CT / "cgroup.freeze", "1", "0")
    assert not tree.is_frozen(CT)  # no cgroup.events yet
    write(v2 / CT / "cgroup.events", "populated 1\nfrozen 0\n")
    assert not tree.is_frozen(CT)
    write(v2 / CT / "cgroup.events", "populated 1\nfrozen 1\n")
    assert tree.is_frozen(CT)


def test_v1_freezer_file_and_state(v1: Path) -> None:
    tree = CgroupV1(v1)
    assert tree.freezer(CT) == (v1 / "freezer" / CT / "freezer.state", "FROZEN", "THAWED")
    assert not tree.is_frozen(CT)
    write(v1 / "freezer" / CT / "freezer.state", "FREEZING\n")  # some tasks not stopped yet
    assert not tree.is_frozen(CT)
    write(v1 / "freezer" / CT / "freezer.state", "FROZEN\n")
    assert tree.is_frozen(CT)
    assert not tree.is_frozen("pyvz/999")
