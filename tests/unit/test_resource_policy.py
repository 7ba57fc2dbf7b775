"""The resource parameters end to end without a kernel: parsing the new rows, the config
to Limits, Limits to v1/v2 cgroup files (on fake cgroupfs trees), and vzctl's rules between
parameters (vm_overcommit, what this kernel does not enforce)."""

from __future__ import annotations

import errno
import os
import pathlib
from pathlib import Path
from typing import Any

import pytest

from pyvz.config import CtConfig
from pyvz.errors import ExitCode, VzError
from pyvz.params import (
    BY_KEY,
    BY_NAME,
    CPUMASK,
    CPUS,
    DISKINODES,
    IOLIMIT,
    IOPRIO,
    IOPSLIMIT,
    NODEMASK,
    NUMPROC,
    PHYSPAGES,
    SWAPPAGES,
    UBC_PARAMS,
    VM_OVERCOMMIT,
    format_id_list,
    parse_id_list,
    parse_options,
    ubc_name,
)
from pyvz.resources import cgroups, limits
from pyvz.resources.cgroups import CgroupV1, CgroupV2
from pyvz.resources.limits import Limits, cpuset, from_config, io_weight, nodeset
from pyvz.resources.policy import derived_changes, not_enforced, warning
from pyvz.units import UNLIMITED, BarrierLimit
from tests.unit.test_beancounters import UBC_ORDER

REL = "pyvz-test/101"
INNER = ("init.scope", "system.slice", "system.slice/cron.service")
MB = 1024 * 1024


def config(**values: str) -> CtConfig:
    return CtConfig.merge(101, {}, values, Path("/dev/null"))


def write(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def refused(parse: Any, text: str) -> VzError:
    with pytest.raises(VzError) as caught:
        parse(text)
    assert caught.value.code == ExitCode.INVALID_PARAMETER_VALUE, caught.value
    return caught.value


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> None:
    """8 online CPUs, NUMA nodes 0-1, swap: the same answers on every machine."""
    for module in (cgroups, limits):
        monkeypatch.setattr(module, "host_cpus", lambda: set(range(8)))
        monkeypatch.setattr(module, "host_nodes", lambda: {0, 1})
    monkeypatch.setattr(cgroups, "host_has_swap", lambda: True)


# ---- params: the UBC rows --------------------------------------------------------------------


def test_ubc_rows_in_proc_order() -> None:
    assert [ubc_name(p) for p in UBC_PARAMS] == UBC_ORDER  # /proc/user_beancounters order
    assert (PHYSPAGES.options, PHYSPAGES.key, PHYSPAGES.name) == (
        ("--ram", "--physpages"),
        "PHYSPAGES",
        "ram",
    )
    assert (SWAPPAGES.options, SWAPPAGES.key, SWAPPAGES.name) == (
        ("--swap", "--swappages"),
        "SWAPPAGES",
        "swap",
    )
    for param in UBC_PARAMS:
        assert BY_KEY[param.key or ""] is param and BY_NAME[param.name] is param
        if param not in (PHYSPAGES, SWAPPAGES):
            assert param.options[0] == f"--{param.name}" and param.key == param.name.upper()


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("privvmpages", "1M", BarrierLimit(256, 256)),  # pages
        ("privvmpages", "100:200", BarrierLimit(100, 200)),
        ("kmemsize", "1M", BarrierLimit(MB, MB)),  # bytes
        ("kmemsize", "10M:unlimited", BarrierLimit(10 * MB, UNLIMITED)),
        ("numproc", "unlimited", BarrierLimit(UNLIMITED, UNLIMITED)),
        ("numfile", "1000:2000", BarrierLimit(1000, 2000)),
        ("ram", "256M", BarrierLimit(0, 65536)),  # VSwap: barrier 0, limit in pages
        ("ram", "1G:2G", BarrierLimit(0, 524288)),
        ("swap", "unlimited", BarrierLimit(0, UNLIMITED)),
    ],
)
def test_ubc_values(name: str, text: str, value: BarrierLimit) -> None:
    assert BY_NAME[name].parse(text) == value


def test_vswap_values_are_saved_as_pages() -> None:
    assert PHYSPAGES.fmt(PHYSPAGES.parse("512M")) == "0:131072"
    # as vzctl writes them (its ubcstr): one number where barrier and limit agree, `unlimited`
    assert NUMPROC.fmt(NUMPROC.parse("240")) == "240"
    assert NUMPROC.fmt(NUMPROC.parse("240:240")) == "240"
    assert NUMPROC.fmt(NUMPROC.parse("unlimited")) == "unlimited"
    assert NUMPROC.fmt(NUMPROC.parse("100:unlimited")) == "100:unlimited"
    assert SWAPPAGES.fmt(SWAPPAGES.parse("1G")) == "0:262144"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("privvmpages", "2G:1G"),  # barrier above limit
        ("kmemsize", "lots"),
        ("numproc", "-1"),
        ("numproc", "1:2:3"),
        ("ram", "1.5"),
        ("swap", ""),
        ("diskinodes", "2000:1000"),
        ("diskinodes", "x"),
    ],
)
def test_bad_ubc_values(name: str, text: str) -> None:
    refused(BY_NAME[name].parse, text)


# ---- params: cpus, masks, overcommit, I/O ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3,0-1,2", "0-3"),
        ("all", "all"),
        ("ALL", "all"),
        (" 0-3,6 ", "0-3,6"),
        ("5,1,3", "1,3,5"),
        ("2-2", "2"),
        ("0,0,1", "0-1"),
    ],
)
def test_cpu_lists_are_normalised(text: str, value: str) -> None:
    assert CPUMASK.parse(text) == value
    assert NODEMASK.parse(text) == value


@pytest.mark.parametrize("text", ["", "a", "3-1", "1,,2", "-1", "0-", "1;2", "99999", "0-3,"])
def test_bad_cpu_lists(text: str) -> None:
    assert "cpumask" in str(refused(CPUMASK.parse, text))
    assert "nodemask" in str(refused(NODEMASK.parse, text))


def test_bad_cpu_list_in_a_config_is_a_config_error() -> None:
    with pytest.raises(VzError) as caught:
        from_config(config(CPUMASK="zero"))
    assert caught.value.code == ExitCode.INVALID_CONFIG


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("unlimited", 0), ("4", 4), ("8192", 8192)])
def test_cpus(text: str, value: int) -> None:
    assert CPUS.parse(text) == value


@pytest.mark.parametrize("text", ["-1", "8193", "two", "1.5"])
def test_bad_cpus(text: str) -> None:
    refused(CPUS.parse, text)


def test_ioprio_range() -> None:
    assert [IOPRIO.parse(str(n)) for n in range(8)] == list(range(8))
    for text in ("8", "-1", "high", ""):
        refused(IOPRIO.parse, text)


def test_iopslimit() -> None:
    assert (IOPSLIMIT.parse("0"), IOPSLIMIT.parse("1000")) == (0, 1000)
    for text in ("-5", "1k", "many"):
        refused(IOPSLIMIT.parse, text)


@pytest.mark.parametrize(
    ("text", "option", "saved"),
    [
        ("10", 10 * MB, 10),  # the CLI reads MB/s, the config bytes/s
        ("10M", 10 * MB, 10 * MB),
        ("512K", 512 * 1024, 512 * 1024),
        ("1G", 1024 * MB, 1024 * MB),
        ("0", 0, 0),
        ("unlimited", 0, 0),
    ],
)
def test_iolimit_units(text: str, option: int, saved: int) -> None:
    assert IOLIMIT.option_parse is not None
    assert IOLIMIT.option_parse(text) == option
    assert IOLIMIT.parse(text) == saved
    assert parse_options({"iolimit": text}) == {"iolimit": option}
    assert IOLIMIT.parse(IOLIMIT.fmt(option)) == option  # the saved form reads back the same


@pytest.mark.parametrize("text", ["abc", "-1", "10X", "1.5"])
def test_bad_iolimit(text: str) -> None:
    assert IOLIMIT.option_parse is not None
    refused(IOLIMIT.option_parse, text)
    refused(IOLIMIT.parse, text)


def test_vm_overcommit() -> None:
    assert VM_OVERCOMMIT.parse("1.5") == 1.5
    assert (VM_OVERCOMMIT.fmt(1.5), VM_OVERCOMMIT.fmt(2.0)) == ("1.5", "2")
    for text in ("0", "-1", "abc", "nan", "inf", "1001", ""):
        refused(VM_OVERCOMMIT.parse, text)


def test_diskinodes() -> None:
    assert DISKINODES.parse("1000") == BarrierLimit(1000, 1000)
    assert DISKINODES.parse("1000:2000") == BarrierLimit(1000, 2000)
    assert DISKINODES.fmt(BarrierLimit(1000, 2000)) == "1000:2000"


def test_parse_options_of_the_new_rows() -> None:
    parsed = parse_options(
        {
            "ram": "512M",
            "swap": "1G",
            "vm_overcommit": "1.5",
            "cpus": "2",
            "cpumask": "3,0-1,2",
            "nodemask": "0",
            "ioprio": "7",
            "iolimit": "10",
            "iopslimit": "500",
            "diskinodes": "1000:2000",
            "privvmpages": "1G",
            "tcpsndbuf": "1M:2M",
        }
    )
    assert parsed == {
        "ram": BarrierLimit(0, 131072),
        "swap": BarrierLimit(0, 262144),
        "vm_overcommit": 1.5,
        "cpus": 2,
        "cpumask": "0-3",
        "nodemask": "0",
        "ioprio": 7,
        "iolimit": 10 * MB,
        "iopslimit": 500,
        "diskinodes": BarrierLimit(1000, 2000),
        "privvmpages": BarrierLimit(262144, 262144),
        "tcpsndbuf": BarrierLimit(MB, 2 * MB),
    }


def test_parse_options_refuses_bad_input() -> None:
    for name, text in (("ioprio", "9"), ("cpumask", "x"), ("iolimit", "fast"), ("ram", "lots")):
        refused(lambda t, n=name: parse_options({n: t}), text)


def test_id_lists() -> None:
    assert format_id_list({0, 1, 2, 5}) == "0-2,5"
    assert format_id_list([7]) == "7"
    assert format_id_list([3, 1]) == "1,3"
    assert format_id_list([2, 2, 1]) == "1-2"
    assert format_id_list([]) == ""
    assert parse_id_list("0-2,5\n") == {0, 1, 2, 5}
    assert parse_id_list("") == set()
    assert parse_id_list(format_id_list({0, 2, 3, 4, 9})) == {0, 2, 3, 4, 9}


# ---- limits.from_config / cpuset / nodeset -----------------------------------------------------


def test_from_config_every_field(host: None) -> None:
    cfg = config(
        PHYSPAGES="0:65536",
        SWAPPAGES="0:32768",
        NUMPROC="100:200",
        CPUUNITS="2000",
        CPULIMIT="150",
        CPUS="2",
        CPUMASK="2-5",
        NODEMASK="1",
        TCPSNDBUF="1000:2000",
        TCPRCVBUF="3000:4000",
        IOLIMIT=str(10 * MB),
        IOPSLIMIT="500",
        IOPRIO="6",
    )
    assert from_config(cfg, "7:3") == Limits(
        memory=256 * MB,
        swap=128 * MB,
        pids=200,
        cpu_units=2000,
        cpu_percent=150,
        cpus="2-3",  # the first 2 of the mask
        mems="1",
        tcp=6000,  # one kernel counter: send + receive limits
        io_device="7:3",
        io_bps=10 * MB,
        io_iops=500,
        io_weight=400,
    )


def test_from_config_unset_and_zero(host: None) -> None:
    assert from_config(config()) == Limits()
    assert from_config(config(IOLIMIT="0", IOPSLIMIT="0", CPULIMIT="0", CPUS="0", CPUMASK="all")) == Limits()
    assert from_config(config(SWAPPAGES="0:1000")).swap is None  # swap only counts on top of ram
    assert from_config(config(PHYSPAGES="0:100", SWAPPAGES="0:0")).swap == 0


@pytest.mark.parametrize(
    "values",
    [
        {"TCPSNDBUF": "1000:2000"},
        {"TCPSNDBUF": "1000:2000", "TCPRCVBUF": "1000:unlimited"},
    ],
)
def test_tcp_limit_needs_both_directions(host: None, values: dict[str, str]) -> None:
    assert from_config(config(**values)).tcp is None


def test_io_weight_doubles_per_ioprio_step() -> None:
    assert [io_weight(n) for n in range(8)] == [6, 12, 25, 50, 100, 200, 400, 800]


@pytest.mark.parametrize(
    ("values", "chosen"),
    [
        ({}, None),
        ({"CPUMASK": "all"}, None),
        ({"CPUS": "0"}, None),
        ({"CPUS": "3"}, "0-2"),
        ({"CPUS": "3", "CPUMASK": "all"}, "0-2"),
        ({"CPUMASK": "1,3,5"}, "1,3,5"),
        ({"CPUMASK": "1,3,5", "CPUS": "2"}, "1,3"),
        ({"CPUMASK": "1,3,5", "CPUS": "10"}, "1,3,5"),
        ({"CPUMASK": "6-11"}, "6-7"),  # cut to the online CPUs
        ({"CPUS": "20"}, "0-7"),
    ],
)
def test_cpuset(values: dict[str, str], chosen: str | None) -> None:
    assert cpuset(config(**values), set(range(8))) == chosen


def test_cpuset_with_no_online_cpu_is_refused() -> None:
    with pytest.raises(VzError) as caught:
        cpuset(config(CPUMASK="8-9"), set(range(4)))
    assert caught.value.code == ExitCode.SETUBC_ERROR
    assert "8-9" in caught.value.message and "0-3" in caught.value.message


@pytest.mark.parametrize(
    ("mask", "chosen"), [(None, None), ("all", None), ("0", "0"), ("0-7", "0-1"), ("1,5", "1")]
)
def test_nodeset(mask: str | None, chosen: str | None) -> None:
    cfg = config(NODEMASK=mask) if mask else config()
    assert nodeset(cfg, {0, 1}) == chosen


def test_nodeset_with_no_online_node_is_refused() -> None:
    with pytest.raises(VzError) as caught:
        nodeset(config(NODEMASK="2-3"), {0, 1})
    assert caught.value.code == ExitCode.SETUBC_ERROR
    assert "2-3" in caught.value.message and "0-1" in caught.value.message


def test_from_config_refuses_an_offline_mask(host: None) -> None:
    with pytest.raises(VzError):
        from_config(config(CPUMASK="100-101"))
    with pytest.raises(VzError):
        from_config(config(NODEMASK="4"))


def test_unlimited_swap_is_not_zero_swap(host: None, tmp_path: Path) -> None:
    limits_ = from_config(config(PHYSPAGES="0:65536", SWAPPAGES="0:unlimited"))
    assert dict(CgroupV2(tmp_path).settings(limits_))["memory.swap.max"] == "max"
    write(tmp_path / "memory/memory.memsw.limit_in_bytes")
    assert dict(CgroupV1(tmp_path).settings(limits_))["memory.memsw.limit_in_bytes"] == "-1"


# ---- cgroup settings ---------------------------------------------------------------------------

FULL = Limits(
    memory=256 * MB,
    swap=128 * MB,
    pids=200,
    cpu_units=2000,
    cpu_percent=150,
    cpus="2-3",
    mems="1",
    tcp=6000,
    io_device="7:3",
    io_bps=10 * MB,
    io_iops=500,
    io_weight=400,
)


def v1_features(mount: Path, memsw: bool = True, bfq: bool = True, tcp: bool = True) -> CgroupV1:
    write(mount / "memory/memory.limit_in_bytes")
    if memsw:
        write(mount / "memory/memory.memsw.limit_in_bytes")
    if bfq:
        write(mount / "blkio/blkio.bfq.io_service_bytes")
    if tcp:
        write(mount / "memory/memory.kmem.tcp.usage_in_bytes")
    return CgroupV1(mount)


def test_v1_settings_everything(host: None, tmp_path: Path) -> None:
    assert v1_features(tmp_path).settings(FULL) == [
        ("memory.limit_in_bytes", str(256 * MB)),
        ("memory.memsw.limit_in_bytes", str(384 * MB)),  # ram + swap
        ("memory.kmem.tcp.limit_in_bytes", "6000"),
        ("pids.max", "200"),
        ("cpu.shares", "2048"),
        ("cpu.cfs_period_us", "100000"),
        ("cpu.cfs_quota_us", "150000"),
        ("cpuset.cpus", "2-3"),
        ("cpuset.mems", "1"),
        ("blkio.throttle.read_bps_device", f"7:3 {10 * MB}"),
        ("blkio.throttle.read_iops_device", "7:3 500"),
        ("blkio.throttle.write_bps_device", f"7:3 {10 * MB}"),
        ("blkio.throttle.write_iops_device", "7:3 500"),
        ("blkio.bfq.weight", "400"),
    ]


def test_v1_settings_nothing_set(host: None, tmp_path: Path) -> None:
    assert v1_features(tmp_path).settings(Limits()) == [
        ("memory.memsw.limit_in_bytes", "-1"),  # raised before memory, which must stay below it
        ("memory.limit_in_bytes", "-1"),
        ("memory.kmem.tcp.limit_in_bytes", "-1"),
        ("pids.max", "max"),
        ("cpu.cfs_period_us", "100000"),
        ("cpu.cfs_quota_us", "-1"),
        ("cpuset.cpus", "0-7"),  # every online CPU and node
        ("cpuset.mems", "0-1"),
    ]


def test_v1_settings_io_limit_off_is_zero(host: None, tmp_path: Path) -> None:
    found = dict(v1_features(tmp_path).settings(Limits(io_device="8:16", io_iops=100)))
    assert found["blkio.throttle.read_bps_device"] == "8:16 0"
    assert found["blkio.throttle.write_iops_device"] == "8:16 100"


def test_v1_settings_without_host_swap(host: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cgroups, "host_has_swap", lambda: False)
    found = dict(v1_features(tmp_path).settings(FULL))
    assert found["memory.memsw.limit_in_bytes"] == "-1"  # off: the memory limit hits (and counts) first
    assert found["memory.limit_in_bytes"] == str(256 * MB)


def test_v1_settings_without_swap_accounting_or_bfq(host: None, tmp_path: Path) -> None:
    tree = v1_features(tmp_path, memsw=False, bfq=False)
    files = [f for f, _v in tree.settings(FULL)]
    assert "memory.memsw.limit_in_bytes" not in files and "blkio.bfq.weight" not in files
    assert "memory.limit_in_bytes" in files
    problems = tree.unenforced(FULL)
    assert len(problems) == 2
    assert "swapaccount=1" in problems[0] and "bfq" in problems[1]


def test_v1_unenforced_says_nothing_when_all_holds(
    host: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert v1_features(tmp_path).unenforced(FULL) == []
    monkeypatch.setattr(cgroups, "host_has_swap", lambda: False)
    bare = v1_features(tmp_path / "bare", memsw=False, bfq=False)
    assert bare.unenforced(FULL._replace(io_weight=None)) == []  # no host swap: nothing to account


def test_v1_enforces(tmp_path: Path) -> None:
    assert v1_features(tmp_path / "a").enforces == {
        "physpages",
        "numproc",
        "swappages",
        "tcpsndbuf",
        "tcprcvbuf",
    }
    assert v1_features(tmp_path / "b", memsw=False, tcp=False).enforces == {"physpages", "numproc"}


def test_v2_settings_everything(tmp_path: Path) -> None:
    assert CgroupV2(tmp_path).settings(FULL) == [
        ("memory.max", str(256 * MB)),
        ("memory.swap.max", str(128 * MB)),
        ("pids.max", "200"),
        ("cpu.weight", "200"),
        ("cpu.max", "150000 100000"),
        ("cpuset.cpus", "2-3"),
        ("cpuset.mems", "1"),
        ("io.max", f"7:3 rbps={10 * MB} wbps={10 * MB} riops=500 wiops=500"),
        ("io.bfq.weight", "default 400"),
    ]


def test_v2_settings_nothing_set(tmp_path: Path) -> None:
    assert CgroupV2(tmp_path).settings(Limits()) == [
        ("memory.max", "max"),
        ("memory.swap.max", "max"),
        ("pids.max", "max"),
        ("cpu.max", "max 100000"),
        ("cpuset.cpus", ""),  # empty: the parent's
        ("cpuset.mems", ""),
    ]


def test_v2_settings_partial(tmp_path: Path) -> None:
    found = dict(CgroupV2(tmp_path).settings(Limits(memory=MB, swap=0, io_device="7:3", io_iops=50)))
    assert found["memory.swap.max"] == "0"  # ram without swap: no swap
    assert dict(CgroupV2(tmp_path).settings(Limits(memory=MB)))["memory.swap.max"] == "max"  # unlimited
    assert found["io.max"] == "7:3 rbps=max wbps=max riops=50 wiops=50"


def test_v2_unenforced_and_enforces(tmp_path: Path) -> None:
    tree = CgroupV2(tmp_path)
    assert tree.unenforced(Limits(memory=MB)) == []
    [problem] = tree.unenforced(Limits(tcp=6000))
    assert "tcpsndbuf" in problem
    assert tree.enforces == {"physpages", "swappages", "numproc"}


def test_lxc_keys(host: None, tmp_path: Path) -> None:
    assert "lxc.cgroup.cpuset.cpus = 2-3" in v1_features(tmp_path).lxc_lines(FULL)
    assert "lxc.cgroup.blkio.throttle.read_iops_device = 7:3 500" in v1_features(tmp_path).lxc_lines(FULL)
    assert "lxc.cgroup2.io.bfq.weight = default 400" in CgroupV2(tmp_path).lxc_lines(FULL)


# ---- targets and apply on fake trees -----------------------------------------------------------


def v1_ct(mount: Path) -> CgroupV1:
    """A CT's cgroups in every v1 hierarchy, with the inner cgroups its systemd made."""
    files = {
        "memory": ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"],
        "pids": ["pids.max"],
        "cpu": ["cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us"],
        "cpuset": ["cpuset.cpus", "cpuset.mems"],
        "blkio": [
            "blkio.throttle.read_bps_device",
            "blkio.throttle.write_bps_device",
            "blkio.throttle.read_iops_device",
            "blkio.throttle.write_iops_device",
            "blkio.bfq.weight",
        ],
    }
    write(mount / "memory/memory.memsw.limit_in_bytes")
    write(mount / "blkio/blkio.bfq.io_service_bytes")
    for controller, names in files.items():
        for directory in ("", *INNER):
            for name in names:
                write(mount / controller / REL / directory / name)
        write(mount / controller / f"{REL}.monitor" / names[0])  # the monitor: a sibling
    return CgroupV1(mount)


def test_v1_targets(tmp_path: Path) -> None:
    tree = v1_ct(tmp_path)
    top = tmp_path / "cpuset" / REL
    # Parents before children, so a widened cpuset is valid all the way down.
    assert tree.targets(REL, "cpuset.cpus") == [
        top / "cpuset.cpus",
        top / "init.scope/cpuset.cpus",
        top / "system.slice/cpuset.cpus",
        top / "system.slice/cron.service/cpuset.cpus",
    ]
    blkio = tree.targets(REL, "blkio.throttle.read_bps_device")
    assert len(blkio) == 4 and all(p.is_relative_to(tmp_path / "blkio" / REL) for p in blkio)
    # Hierarchical files are written on the CT's cgroup alone.
    assert tree.targets(REL, "memory.limit_in_bytes") == [tmp_path / "memory" / REL / "memory.limit_in_bytes"]
    assert tree.targets(REL, "blkio.bfq.weight") == [tmp_path / "blkio" / REL / "blkio.bfq.weight"]
    assert tree.targets("pyvz-test/102", "cpuset.cpus") == [tmp_path / "cpuset/pyvz-test/102/cpuset.cpus"]


def test_v2_targets_are_the_ct_only(tmp_path: Path) -> None:
    for directory in ("", *INNER):
        write(tmp_path / REL / directory / "cpuset.cpus")
    assert CgroupV2(tmp_path).targets(REL, "cpuset.cpus") == [tmp_path / REL / "cpuset.cpus"]


def test_v1_apply_writes_cpuset_and_throttle_below(host: None, tmp_path: Path) -> None:
    tree = v1_ct(tmp_path)
    tree.apply(REL, FULL)
    for directory in ("", *INNER):
        assert (tmp_path / "cpuset" / REL / directory / "cpuset.cpus").read_text() == "2-3"
        assert (tmp_path / "cpuset" / REL / directory / "cpuset.mems").read_text() == "1"
        blkio = tmp_path / "blkio" / REL / directory
        assert (blkio / "blkio.throttle.read_bps_device").read_text() == f"7:3 {10 * MB}"
        assert (blkio / "blkio.throttle.write_iops_device").read_text() == "7:3 500"
    ct = tmp_path / "memory" / REL
    assert (ct / "memory.limit_in_bytes").read_text() == str(256 * MB)
    assert (ct / "memory.memsw.limit_in_bytes").read_text() == str(384 * MB)
    assert (tmp_path / "pids" / REL / "pids.max").read_text() == "200"
    assert (tmp_path / "cpu" / REL / "cpu.cfs_quota_us").read_text() == "150000"
    assert (tmp_path / "blkio" / REL / "blkio.bfq.weight").read_text() == "400"
    # Hierarchical limits are not copied below, the monitor is left alone, nothing is created.
    assert (ct / "init.scope/memory.limit_in_bytes").read_text() == ""
    assert (tmp_path / "blkio" / REL / "init.scope/blkio.bfq.weight").read_text() == ""
    assert (tmp_path / "cpuset" / f"{REL}.monitor/cpuset.cpus").read_text() == ""
    assert not (ct / "memory.kmem.tcp.limit_in_bytes").exists()
    assert (tmp_path / "cpu" / REL / "init.scope/cpu.shares").read_text() == ""


def test_v1_apply_inner_copies_throttle_only(host: None, tmp_path: Path) -> None:
    tree = v1_ct(tmp_path)
    tree.apply_inner(REL, Limits(cpus="1", io_device="7:3", io_iops=500))
    blkio = tmp_path / "blkio" / REL
    for directory in INNER:
        assert (blkio / directory / "blkio.throttle.read_iops_device").read_text() == "7:3 500"
        assert (blkio / directory / "blkio.throttle.read_bps_device").read_text() == ""  # " 0": no limit
        assert (tmp_path / "cpuset" / REL / directory / "cpuset.cpus").read_text() == ""
    assert (blkio / "blkio.throttle.read_iops_device").read_text() == ""  # LXC writes the CT's own


def test_v2_apply(tmp_path: Path) -> None:
    write(tmp_path / "cgroup.controllers", "cpuset cpu io memory pids\n")
    names = ["memory.max", "memory.swap.max", "pids.max", "cpu.weight", "cpu.max", "cpuset.cpus"]
    names += ["cpuset.mems", "io.max", "io.bfq.weight"]
    for directory in ("", *INNER):
        for name in names:
            write(tmp_path / REL / directory / name)
    tree = cgroups.detect(tmp_path)
    assert isinstance(tree, CgroupV2)
    tree.apply(REL, FULL)
    ct = tmp_path / REL
    assert {name: (ct / name).read_text() for name in names} == dict(tree.settings(FULL))
    for directory in INNER:
        assert all((ct / directory / name).read_text() == "" for name in names)  # hierarchical
    tree.apply(REL, Limits())
    assert (ct / "cpuset.cpus").read_text() == "" and (ct / "memory.max").read_text() == "max"


def test_apply_of_missing_cgroup_does_nothing(host: None, tmp_path: Path) -> None:
    tree = v1_ct(tmp_path)
    tree.apply("pyvz-test/102", FULL)
    assert not (tmp_path / "memory/pyvz-test/102").exists()


class FakeKernel:
    """Path.write_text with two of the kernel's ordering rules: memory <= memory+swap, and a
    v1 cpuset parent must contain its children's CPUs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.refused = 0
        self.real = pathlib.Path.write_text
        monkeypatch.setattr(pathlib.Path, "write_text", lambda p, *a, **k: self.write_text(p, *a, **k))

    def refuse(self, code: int) -> OSError:
        self.refused += 1
        return OSError(code, os.strerror(code))

    def write_text(self, path: Path, data: str, *args: Any, **kwargs: Any) -> int:
        value = data.strip()
        if path.name == "memory.limit_in_bytes":
            both = (path.parent / "memory.memsw.limit_in_bytes").read_text().strip()
            if both and both != "-1" and (value == "-1" or int(value) > int(both)):
                raise self.refuse(errno.EINVAL)
        if path.name == "memory.memsw.limit_in_bytes":
            memory = (path.parent / "memory.limit_in_bytes").read_text().strip()
            if value != "-1" and memory and memory != "-1" and int(value) < int(memory):
                raise self.refuse(errno.EINVAL)
        if path.name == "cpuset.cpus":
            mine = parse_id_list(value)
            children = [d / "cpuset.cpus" for d in path.parent.iterdir() if d.is_dir()]
            if any(not parse_id_list(c.read_text()) <= mine for c in children):
                raise self.refuse(errno.EBUSY)
            parent = path.parent.parent / "cpuset.cpus"
            if parent.exists() and parent.read_text() and not mine <= parse_id_list(parent.read_text()):
                raise self.refuse(errno.EINVAL)
        return self.real(path, data, *args, **kwargs)


def test_apply_retries_writes_that_depend_on_the_old_values(
    host: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = v1_ct(tmp_path)
    memory = tmp_path / "memory" / REL
    cpus = [tmp_path / "cpuset" / REL / d / "cpuset.cpus" for d in ("", *INNER)]
    kernel = FakeKernel(monkeypatch)
    small = Limits(memory=64 * MB, swap=0, cpus="0")
    big = Limits(memory=MB * 1024, swap=MB * 1024, cpus="0-5")
    tree.apply(REL, small)
    assert (memory / "memory.limit_in_bytes").read_text() == str(64 * MB)
    assert [c.read_text() for c in cpus] == ["0"] * 4
    assert kernel.refused == 0
    tree.apply(REL, big)  # raising: memory+swap must grow first
    assert kernel.refused == 1
    assert (memory / "memory.limit_in_bytes").read_text() == str(1024 * MB)
    assert (memory / "memory.memsw.limit_in_bytes").read_text() == str(2048 * MB)
    assert [c.read_text() for c in cpus] == ["0-5"] * 4
    tree.apply(REL, small)  # narrowing: children's cpusets must shrink first
    assert kernel.refused > 1
    assert (memory / "memory.limit_in_bytes").read_text() == str(64 * MB)
    assert (memory / "memory.memsw.limit_in_bytes").read_text() == str(64 * MB)
    assert [c.read_text() for c in cpus] == ["0"] * 4


def test_apply_reports_a_write_that_never_succeeds(host: None, tmp_path: Path) -> None:
    tree = v1_ct(tmp_path)
    pids_max = tmp_path / "pids" / REL / "pids.max"
    pids_max.unlink()
    pids_max.mkdir()  # writing to it fails, every time
    with pytest.raises(VzError) as caught:
        tree.apply(REL, FULL)
    assert caught.value.code == ExitCode.SETUBC_ERROR
    assert "pids.max=200" in caught.value.message
    # The writes that could be made were made.
    assert (tmp_path / "memory" / REL / "memory.limit_in_bytes").read_text() == str(256 * MB)
    assert (tmp_path / "cpuset" / REL / "init.scope/cpuset.cpus").read_text() == "2-3"


# ---- policy --------------------------------------------------------------------------------------

VSWAP = {"PHYSPAGES": "0:1000", "SWAPPAGES": "0:500", "VM_OVERCOMMIT": "1.5"}


@pytest.mark.parametrize("changed", [["PHYSPAGES"], ["SWAPPAGES"], ["VM_OVERCOMMIT"], ["CPUS", "PHYSPAGES"]])
def test_vm_overcommit_sets_privvmpages(changed: list[str]) -> None:
    derived = derived_changes(config(**VSWAP), changed)
    assert derived == {"PRIVVMPAGES": "2250"}  # (1000 + 500) * 1.5, barrier and limit (vzctl writes one)
    assert BY_KEY["PRIVVMPAGES"].parse(derived["PRIVVMPAGES"]) == BarrierLimit(2250, 2250)


@pytest.mark.parametrize(
    ("values", "changed"),
    [
        (VSWAP, ["CPUUNITS"]),  # nothing VSwap changed
        (VSWAP, []),
        (VSWAP, ["PHYSPAGES", "PRIVVMPAGES"]),  # given explicitly: it wins
        ({"PHYSPAGES": "0:1000", "SWAPPAGES": "0:500"}, ["PHYSPAGES"]),  # no overcommit
        ({"SWAPPAGES": "0:500", "VM_OVERCOMMIT": "2"}, ["VM_OVERCOMMIT"]),  # no ram
        ({"PHYSPAGES": "0:unlimited", "VM_OVERCOMMIT": "2"}, ["PHYSPAGES"]),
    ],
)
def test_vm_overcommit_leaves_privvmpages(values: dict[str, str], changed: list[str]) -> None:
    assert derived_changes(config(**values), changed) == {}


@pytest.mark.parametrize("swap", [None, "0:unlimited"])
def test_vm_overcommit_without_a_swap_limit(swap: str | None) -> None:
    values = {"PHYSPAGES": "0:1000", "VM_OVERCOMMIT": "2"} | ({"SWAPPAGES": swap} if swap else {})
    assert derived_changes(config(**values), ["VM_OVERCOMMIT"]) == {"PRIVVMPAGES": "2000"}


def test_not_enforced() -> None:
    cfg = config(
        DISKINODES="100:200",
        VM_OVERCOMMIT="2",
        KMEMSIZE="1048576:1048576",
        PHYSPAGES="0:65536",
        SWAPPAGES="0:1000",
        NUMPROC="unlimited",
        PRIVVMPAGES="100:unlimited",
        CPUUNITS="1000",
        LOCKEDPAGES="unlimited:unlimited",
    )
    keys = [
        "DISKINODES",
        "VM_OVERCOMMIT",
        "KMEMSIZE",
        "PHYSPAGES",
        "SWAPPAGES",
        "NUMPROC",
        "PRIVVMPAGES",
        "CPUUNITS",
        "LOCKEDPAGES",
        "TCPSNDBUF",  # not in the config
        "NO_SUCH_KEY",
    ]
    found = not_enforced(cfg, keys, frozenset({"physpages", "numproc"}))
    assert found == ["diskinodes", "vm_overcommit", "kmemsize", "swappages", "privvmpages"]
    with_swap = not_enforced(cfg, keys, frozenset({"physpages", "swappages", "kmemsize"}))
    assert with_swap == ["diskinodes", "vm_overcommit", "privvmpages"]
    assert not_enforced(cfg, ["CPUUNITS", "NUMPROC"], frozenset()) == []


def test_not_enforced_follows_the_cgroup_version(tmp_path: Path) -> None:
    cfg = config(SWAPPAGES="0:1000", TCPSNDBUF="1000:2000")
    keys = ["SWAPPAGES", "TCPSNDBUF"]
    assert not_enforced(cfg, keys, CgroupV2(tmp_path).enforces) == ["tcpsndbuf"]
    assert not_enforced(cfg, keys, v1_features(tmp_path / "v1").enforces) == []
    bare = v1_features(tmp_path / "bare", memsw=False, tcp=False)
    assert not_enforced(cfg, keys, bare.enforces) == ["swappages", "tcpsndbuf"]


def test_warning_names_them() -> None:
    text = warning(["kmemsize", "diskinodes"])
    assert "kmemsize, diskinodes" in text
    assert "not enforced" in text
