"""The capacity tools' arithmetic: host facts, vzsplit shares, vzcfgvalidate rules and
repair, vzoversell sums, vzcalc/vzmemcheck shares. No root, no LXC."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyvz.cli import vzcfgvalidate
from pyvz.cli.vzsplit import render
from pyvz.config import ConfigFile, CtConfig
from pyvz.params import CPUUNITS, PAGE
from pyvz.resources import capacity
from pyvz.resources.beancounters import Beancounter
from pyvz.resources.capacity import MB, HostCapacity, human, oversell, shares, sold, split
from pyvz.resources.validate import ERROR, RECOMMENDATION, WARNING, Finding, check, is_vswap, parse_values
from pyvz.units import UNLIMITED

GB = 1 << 30
HOST = HostCapacity(ram=8 * GB, swap=2 * GB, lowmem=8 * GB, cpus=4, tasks=32768)


def cfg(**values: str) -> CtConfig:
    return CtConfig.merge(101, {}, values, Path("/x/101.conf"))


def never(finding: Finding) -> bool:
    return False


def always(finding: Finding) -> bool:
    return True


# ---- host facts -----------------------------------------------------------------------------


def fake_host(tmp_path: Path, meminfo: str, online: str = "0-3") -> tuple[Path, Path]:
    proc, sys = tmp_path / "proc", tmp_path / "sys"
    (proc / "sys/kernel").mkdir(parents=True)
    (proc / "meminfo").write_text(meminfo)
    (proc / "sys/kernel/threads-max").write_text("60000\n")
    (proc / "sys/kernel/pid_max").write_text("32768\n")
    (sys / "devices/system/cpu").mkdir(parents=True)
    (sys / "devices/system/cpu/online").write_text(online + "\n")
    return proc, sys


def test_host_capacity_on_64bit_treats_all_ram_as_low_memory(tmp_path: Path) -> None:
    proc, sys = fake_host(
        tmp_path, "MemTotal:        8388608 kB\nMemFree:  100 kB\nSwapTotal:       2097152 kB\n", "0-2,5"
    )
    assert capacity.host_capacity(proc, sys) == HostCapacity(8 * GB, 2 * GB, 8 * GB, 4, 32768)
    assert capacity.host_capacity(proc, sys).power == 4000


def test_host_capacity_uses_low_total_where_the_kernel_has_one(tmp_path: Path) -> None:
    proc, sys = fake_host(tmp_path, "MemTotal: 4194304 kB\nLowTotal: 890000 kB\nSwapTotal: 0 kB\n", "0")
    cap = capacity.host_capacity(proc, sys)
    assert (cap.lowmem, cap.swap, cap.cpus) == (890000 * 1024, 0, 1)


# ---- vzsplit ---------------------------------------------------------------------------------


def test_split_shares_an_8g_4cpu_host_between_4_cts() -> None:
    share = split(HOST, 4, disk=100 * GB)
    reserve = 8 * GB // 20  # 5% of RAM is more than the 256 MB minimum
    assert share.ram == (8 * GB - reserve) // 4 // MB * MB == 1945 * MB
    assert share.swap == 512 * MB
    assert share.numproc == 32768 // 5  # tasks are the tighter bound (RAM would allow 7780)
    assert share.cpuunits == (4000 - 1000) // 4  # the host keeps its own 1000
    assert share.disk == 23040 * MB  # 90% of the pool, in four
    assert share.disk_soft == 20945 * MB  # hard * 10 / 11


def test_split_small_host_keeps_the_minimum_reserve_and_numproc_follows_ram() -> None:
    small = HostCapacity(ram=2 * GB, swap=0, lowmem=2 * GB, cpus=1, tasks=4194304)
    share = split(small, 2, disk=10 * GB)
    assert share.ram == (2 * GB - 256 * MB) // 2
    assert share.swap == 0
    assert share.numproc == share.ram // (256 * 1024)
    assert share.cpuunits == 8  # one CPU is all the host's own share: the floor


def test_split_refuses_when_cts_do_not_fit() -> None:
    with pytest.raises(ValueError, match=r"200 CTs do not fit: each would get 38 MB of RAM.*at most 121 CTs"):
        split(HOST, 200, disk=100 * GB)
    with pytest.raises(ValueError, match="disk space"):
        split(HOST, 4, disk=1 * GB)
    with pytest.raises(ValueError):
        split(HOST, 0, disk=100 * GB)


def test_split_sample_is_a_valid_vswap_config(tmp_path: Path) -> None:
    text = render(split(HOST, 4, disk=100 * GB), HOST, 100 * GB)
    conf = ConfigFile.parse(text, tmp_path / "ve-x.conf-sample")
    assert conf.get("PHYSPAGES") == "0:1945M"
    assert conf.get("SWAPPAGES") == "0:512M"
    assert conf.get("DISKSPACE") == "20945M:23040M"
    parsed = CtConfig.merge(101, {}, conf.items(), conf.path)  # every value parses
    assert parsed.get(CPUUNITS) == 750
    values, bad = parse_values(conf)
    assert not bad and is_vswap(values)
    assert check(values, True, HOST.ram // PAGE, HOST.swap // PAGE, never) == []


# ---- vzcfgvalidate ---------------------------------------------------------------------------


def findings(text: str, vswap: bool | None = None) -> list[Finding]:
    values, bad = parse_values(ConfigFile.parse(text, Path("/x")))
    assert not bad
    mode = is_vswap(values) if vswap is None else vswap
    return check(values, mode, HOST.ram // PAGE, HOST.swap // PAGE, never)


def test_barrier_above_limit_is_an_error() -> None:
    (found,) = findings('KMEMSIZE="2000000:1000000"\n')
    assert found.level == ERROR
    assert found.message == "barrier should be <= limit for kmemsize (currently, 2000000:1000000)"
    assert found.fix == "set to 2000000:2000000"


def test_kmemsize_must_cover_the_processes_and_dcache() -> None:
    found = findings('NUMPROC="100:100"\nKMEMSIZE="1M:1M"\nDCACHESIZE="1000000:1000000"\n')
    assert [f.level for f in found] == [ERROR]
    need = 40 * 1024 * 50 + 1000000  # 40 KB per average process (numproc / 2), plus dcache
    assert found[0].message == f"kmemsize.bar should be >= {need} (currently, {1 << 20})"
    assert found[0].fix == f"set to {need}:{need}"


def test_socket_buffer_rules() -> None:
    found = findings(
        'NUMTCPSOCK="100:100"\nTCPSNDBUF="100000:200000"\nTCPRCVBUF="100000:400000"\n'
        'NUMOTHERSOCK="10:10"\nOTHERSOCKBUF="40000:100000"\nDGRAMRCVBUF="20000:20000"\n'
    )
    assert [(f.level, f.message) for f in found] == [
        (WARNING, "dgramrcvbuf.bar should be >= 32768 (currently, 20000)"),
        (RECOMMENDATION, "othersockbuf.bar should be >= 132096 (currently, 40000)"),
        (ERROR, "tcpsndbuf.lim-tcpsndbuf.bar should be >= 256000 (currently, 200000-100000=100000)"),
    ]


def test_numfile_dcache_privvm_and_equal_barriers() -> None:
    found = findings(
        'NUMPROC="100:200"\nNUMFILE="1000:1000"\nDCACHESIZE="100000:100000"\n'
        'PRIVVMPAGES="1000:1100"\nVMGUARPAGES="2000:3000"\n'
    )
    messages = [f.message for f in found]
    assert messages == [
        "barrier should be equal to limit for numproc (currently, 100:200)",
        "limit should be unlimited for vmguarpages (currently, 3000)",
        "numfile.bar should be >= 1600 (currently, 1000)",  # 32 files per average process (50)
        "dcachesize.lim should be >= 384000 (currently, 100000)",
        "privvmpages.bar should be >= 2000, vmguarpages.bar (currently, 1000)",
    ]
    found = findings('NUMFILE="100:100"\nNUMTCPSOCK="80:80"\nNUMOTHERSOCK="30:30"\nNUMPTY="16:16"\n')
    assert [f.message for f in found] == ["numfile.bar should be >= 126 (currently, 100)"]  # sockets + ptys


def test_vswap_rules() -> None:
    too_big = (HOST.ram // PAGE) + 1
    found = findings(f'PHYSPAGES="5:{too_big}"\n')
    assert [(f.level, f.message) for f in found] == [
        (WARNING, "swappages is not set: the CT's swap is not limited (--swap)"),
        (ERROR, "physpages.bar should be = 0 (currently, 5)"),
        (WARNING, f"physpages.lim should be <= {HOST.ram // PAGE}, the host's total (currently, {too_big})"),
    ]
    assert findings("", vswap=True)[0].message.startswith("physpages is not set")
    assert findings('PHYSPAGES="0:256M"\nSWAPPAGES="0:512M"\n') == []


def test_repair_makes_every_rule_hold() -> None:
    values, _bad = parse_values(
        ConfigFile.parse(
            'NUMPROC="400:400"\nKMEMSIZE="2M:1M"\nDCACHESIZE="1M:1M"\nNUMFILE="9000:9000"\n'
            'NUMTCPSOCK="500:500"\nTCPSNDBUF="1000:2000"\nNUMOTHERSOCK="10:10"\nOTHERSOCKBUF="1:1"\n',
            Path("/x"),
        )
    )
    fixed = check(values, False, HOST.ram // PAGE, HOST.swap // PAGE, always)
    assert fixed and all(f.fixed for f in fixed)
    assert check(values, False, HOST.ram // PAGE, HOST.swap // PAGE, never) == []


BAD_FILE = """\
# Written by hand; this comment must survive the repair.
ONBOOT="no"
SOMETHING_PYVZ_DOES_NOT_KNOW="kept as is"
NUMPROC="100:100"
KMEMSIZE="2000000:1000000"
DCACHESIZE="1000000:1100000"

# trailing comment
"""


def test_repair_in_place_keeps_comments_and_unknown_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PYVZ_ROOT", str(tmp_path))
    path = tmp_path / "bad.conf"
    path.write_text(BAD_FILE)
    assert vzcfgvalidate.dispatch([str(path)]) == vzcfgvalidate.FAILED
    out = capsys.readouterr().out
    assert "Error: barrier should be <= limit for kmemsize" in out
    assert "Error: kmemsize.bar should be >= 3148000 (currently, 2000000)" in out
    assert path.read_text() == BAD_FILE  # without -r nothing changes

    assert vzcfgvalidate.dispatch(["-r", str(path)]) == 0
    out = capsys.readouterr().out
    assert "set to 3148000:3148000" in out and out.rstrip().endswith("Validation completed: success")
    repaired = path.read_text().splitlines()
    assert repaired[0] == "# Written by hand; this comment must survive the repair."
    assert 'SOMETHING_PYVZ_DOES_NOT_KNOW="kept as is"' in repaired
    assert repaired[-1] == "# trailing comment" and "" in repaired
    assert 'KMEMSIZE="3148000"' in repaired
    assert len(repaired) == len(BAD_FILE.splitlines())

    assert vzcfgvalidate.dispatch([str(path)]) == 0
    assert "Error" not in capsys.readouterr().out


def test_not_enforced_parameters_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYVZ_ROOT", str(tmp_path))
    conf = ConfigFile.parse('NUMFILE="5000:5000"\nPHYSPAGES="0:256M"\nKMEMSIZE="unlimited"\n', Path("/x"))
    notes = vzcfgvalidate.not_enforced_notes(conf, frozenset({"physpages", "swappages", "numproc"}))
    assert notes == [
        "Note: numfile is set, but not enforced on this kernel (mainline Linux has no per-CT limit for it)"
    ]


# ---- vzoversell, vzcalc, vzmemcheck -----------------------------------------------------------


def test_sold_sums_ram_and_swap_limits_with_vzoversells_flags() -> None:
    big = sold(cfg(PHYSPAGES="0:100G", SWAPPAGES="0:1G"))
    assert big == capacity.Sold(100 * GB, 1 * GB, "")
    assert sold(cfg()) == capacity.Sold(0, 0, "US")
    assert sold(cfg(PRIVVMPAGES="262144:262144", SWAPPAGES="0:0")) == capacity.Sold(512 * MB, 0, "R")
    assert sold(cfg(PHYSPAGES="0:1G")).flags == "S"
    failing = [Beancounter("physpages", 1, 2, 0, 10, 3), Beancounter("numproc", 1, 2, 5, 5, 1)]
    assert sold(cfg(PHYSPAGES="0:1G", SWAPPAGES="0:0"), failing).flags == "fF"
    total = 2 * big.ram + 2 * big.swap
    assert oversell(total, HOST.ram + HOST.swap) == pytest.approx(total * 100 / (10 * GB))
    assert oversell(0, 0) is None


def test_shares_count_unlimited_as_the_whole_host_and_bound_kmem_by_ram() -> None:
    stopped = shares(cfg(), None, HOST)
    assert stopped["ram"] == capacity.Share(None, None, HOST.ram, HOST.ram)
    assert stopped["memswap"].limit == HOST.ram + HOST.swap
    assert stopped["alloc"].promised == 0  # no vmguarpages: nothing guaranteed
    limited = shares(cfg(PHYSPAGES="0:1G", SWAPPAGES="0:512M", KMEMSIZE="10M:20M"), None, HOST)
    assert limited["memswap"].limit == 1536 * MB
    assert limited["lowmem"].limit == 1 * GB  # unlimited socket buffers: bounded by the RAM limit
    counters = [
        Beancounter("physpages", 1000, 2000, 0, UNLIMITED, 0),
        Beancounter("swappages", 10, 10, 0, UNLIMITED, 0),
        Beancounter("kmemsize", 4096, 8192, UNLIMITED, UNLIMITED, None),
        Beancounter("tcpsndbuf", 100, 100, UNLIMITED, UNLIMITED, None),
        Beancounter("tcprcvbuf", 100, 100, UNLIMITED, UNLIMITED, None),  # the same kernel counter
        Beancounter("privvmpages", None, None, UNLIMITED, UNLIMITED, None),
    ]
    running = shares(cfg(), counters, HOST)
    assert running["ram"].used == 1000 * PAGE
    assert running["memswap"].used == 1010 * PAGE
    assert running["lowmem"].used == 4096 + 100
    assert running["alloc"].used is None  # mainline does not count it


def test_human() -> None:
    assert [human(v) for v in (0, None, 512 * MB, 1536 * MB, 100 * GB, 1000)] == [
        "-",
        "-",
        "512M",
        "1.5G",
        "100G",
        "1000",
    ]
