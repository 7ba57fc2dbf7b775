"""Resource limits: from the config to cgroup v1 and v2 files (on fake cgroupfs trees, since
this machine runs v1 and most users run v2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyvz.config import CtConfig
from pyvz.errors import ExitCode, VzError
from pyvz.params import BY_NAME
from pyvz.resources.cgroups import CgroupV1, CgroupV2, detect
from pyvz.resources.limits import Limits, cpu_shares, cpu_weight, from_config

REL = "pyvz-test/101"


def config(**values: str) -> CtConfig:
    return CtConfig.merge(101, {}, values, Path("/dev/null"))


def test_vswap_parameters_become_bytes() -> None:
    ram = BY_NAME["ram"].parse("256M")
    assert BY_NAME["ram"].fmt(ram) == "0:65536"  # pages, as vzctl writes PHYSPAGES
    limits = from_config(
        config(PHYSPAGES="0:65536", SWAPPAGES="0:131072", NUMPROC="100:120", CPUUNITS="2000", CPULIMIT="50")
    )
    assert limits == Limits(256 << 20, 512 << 20, 120, 2000, 50)
    assert from_config(config()) == Limits()
    assert from_config(config(PHYSPAGES="0:unlimited", NUMPROC="unlimited")) == Limits()


@pytest.mark.parametrize("text", ["-5", "abc", "2G:1G", "1.5"])
def test_bad_values_are_refused(text: str) -> None:
    with pytest.raises(VzError) as caught:
        BY_NAME["numproc"].parse(text)
    assert caught.value.code == ExitCode.INVALID_PARAMETER_VALUE


def test_cpu_scales() -> None:
    assert cpu_shares(1000) == 1024 and cpu_shares(8) == 8
    assert cpu_weight(1000) == 100 and cpu_weight(500000) == 10000 and cpu_weight(8) == 1


def v1_tree(tmp_path: Path) -> CgroupV1:
    for controller, files in {
        "memory": ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "tasks"],
        "pids": ["pids.max", "tasks"],
        "cpu": ["cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us", "tasks"],
    }.items():
        (tmp_path / controller).mkdir()
        for name in files[:2]:  # the root's files: the controller, and swap accounting
            (tmp_path / controller / name).write_text("")
        directory = tmp_path / controller / REL
        directory.mkdir(parents=True)
        for name in files:
            (directory / name).write_text("")
    tree = detect(tmp_path)
    assert isinstance(tree, CgroupV1)
    return tree


def test_v1_files_and_lxc_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pyvz.resources.cgroups.host_has_swap", lambda: True)
    tree = v1_tree(tmp_path)
    limits = Limits(memory=64 << 20, swap=0, pids=64, cpu_units=2000, cpu_percent=50)
    tree.apply(REL, limits)
    read = lambda c, f: (tmp_path / c / REL / f).read_text()  # noqa: E731
    assert read("memory", "memory.limit_in_bytes") == str(64 << 20)
    assert read("memory", "memory.memsw.limit_in_bytes") == str(64 << 20)  # no swap on top
    assert read("pids", "pids.max") == "64"
    assert read("cpu", "cpu.shares") == "2048"
    assert (read("cpu", "cpu.cfs_period_us"), read("cpu", "cpu.cfs_quota_us")) == ("100000", "50000")
    lines = tree.lxc_lines(limits)
    assert "lxc.cgroup.memory.limit_in_bytes = 67108864" in lines
    assert "lxc.cgroup.pids.max = 64" in lines
    tree.apply(REL, Limits())
    assert read("pids", "pids.max") == "max" and read("cpu", "cpu.cfs_quota_us") == "-1"
    assert read("memory", "memory.limit_in_bytes") == "-1"


def test_v2_files_and_lxc_keys(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    directory = tmp_path / REL
    directory.mkdir(parents=True)
    for name in ("memory.max", "memory.swap.max", "pids.max", "cpu.weight", "cpu.max"):
        (directory / name).write_text("")
    tree = detect(tmp_path)
    assert isinstance(tree, CgroupV2)
    limits = Limits(memory=128 << 20, swap=64 << 20, pids=100, cpu_units=500, cpu_percent=150)
    tree.apply(REL, limits)
    assert (directory / "memory.max").read_text() == str(128 << 20)
    assert (directory / "memory.swap.max").read_text() == str(64 << 20)
    assert (directory / "pids.max").read_text() == "100"
    assert (directory / "cpu.weight").read_text() == "50"
    assert (directory / "cpu.max").read_text() == "150000 100000"
    assert "lxc.cgroup2.memory.max = 134217728" in tree.lxc_lines(limits)
    tree.apply(REL, Limits())
    assert (directory / "memory.max").read_text() == "max" and (
        directory / "cpu.max"
    ).read_text() == "max 100000"


def test_v1_memsw_stays_off_without_host_swap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With no swap the memory+swap limit cannot matter, and a hit on it is never counted.
    monkeypatch.setattr("pyvz.resources.cgroups.host_has_swap", lambda: False)
    tree = v1_tree(tmp_path)
    tree.apply(REL, Limits(memory=64 << 20, swap=0))
    assert (tmp_path / "memory" / REL / "memory.limit_in_bytes").read_text() == str(64 << 20)
    assert (tmp_path / "memory" / REL / "memory.memsw.limit_in_bytes").read_text() == "-1"


def test_start_lines_carry_only_real_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A new cgroup has no limits: the LXC config says only what differs; a live apply on a
    # running CT must also reset what was lifted.
    monkeypatch.setattr("pyvz.resources.cgroups.host_has_swap", lambda: False)
    monkeypatch.setattr("pyvz.resources.cgroups.host_cpus", lambda: {0, 1})
    monkeypatch.setattr("pyvz.resources.cgroups.host_nodes", lambda: {0})
    v1, v2 = v1_tree(tmp_path), CgroupV2(tmp_path / "v2")
    assert v1.lxc_lines(Limits()) == [] and v2.lxc_lines(Limits()) == []
    assert v1.lxc_lines(Limits(pids=10)) == ["lxc.cgroup.pids.max = 10"]
    assert v2.lxc_lines(Limits(pids=10)) == ["lxc.cgroup2.pids.max = 10"]
    reset = dict(v1.settings(Limits()))
    assert reset["pids.max"] == "max" and reset["cpu.cfs_quota_us"] == "-1"
    assert reset["cpuset.cpus"] == "0-1" and reset["memory.limit_in_bytes"] == "-1"
    assert dict(v2.settings(Limits()))["memory.max"] == "max"
