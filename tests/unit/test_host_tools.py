"""The pieces of vzps, vzpid and vztop that need no CT: reading a process's CT from its
cgroup lines, -E arguments, the ps command line vzps builds, and its output rewriting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyvz.errors import VzError
from pyvz.hostps import annotate, build
from pyvz.resources.cgroups import CgroupV1, CgroupV2
from pyvz.resources.ctprocs import Owner, label, parse_cgroup, selector

REPO = Path(__file__).resolve().parents[2]

V1_CT = "12:pids:/pyvz-0b01e3c4/101/ns\n11:memory:/pyvz-0b01e3c4/101/ns\n0::/\n"
V2_CT = "0::/pyvz/7/ns/init.scope\n"


def test_a_ct_process_is_named_by_its_container_cgroup() -> None:
    assert parse_cgroup(V1_CT) == Owner("pyvz-0b01e3c4", 101)
    assert parse_cgroup(V2_CT) == Owner("pyvz", 7)
    assert parse_cgroup("0::/pyvz/101\n") == Owner("pyvz", 101)


@pytest.mark.parametrize(
    "text",
    [
        "0::/\n",
        "4:memory:/pyvz/101.monitor\n0::/\n",  # lxc-start, the monitor, runs on the host
        "0::/user.slice/pyvz/101\n",  # not at the hierarchy's top: not pyvz's
        "0::/pyvzx/101\n",
        "0::/pyvz-0b01e3c/101\n",  # a tag has eight hex digits
    ],
)
def test_host_processes_have_no_ct(text: str) -> None:
    assert parse_cgroup(text) is None


def test_labels_and_selectors_name_other_roots_by_tag() -> None:
    assert label(None, "pyvz") == "0"
    assert label(Owner("pyvz", 101), "pyvz") == "101"
    assert label(Owner("pyvz-0b01e3c4", 101), "pyvz") == "pyvz-0b01e3c4:101"
    assert selector("0", "pyvz") is None
    assert selector("101", "pyvz-0b01e3c4") == Owner("pyvz-0b01e3c4", 101)
    assert selector("pyvz:101", "pyvz-0b01e3c4") == Owner("pyvz", 101)
    for bad in ("abc", "", "-1", "other:101", "pyvz:"):
        with pytest.raises(VzError):
            selector(bad, "pyvz")


def test_standard_formats_pass_through_and_get_a_ctid_column() -> None:
    cmd = build(["aux"])
    assert (cmd.args, cmd.custom, cmd.ctid_header) == (["aux"], False, "CTID")
    cmd = build(["auxh"])  # the header finds the PID column, so vzps drops it itself
    assert (cmd.args, cmd.drop_header) == (["aux"], True)
    cmd = build(["--no-headers", "-ef"])
    assert (cmd.args, cmd.drop_header) == (["-ef"], True)


def test_user_formats_lose_ctid_and_gain_a_leading_pid() -> None:
    cmd = build(["-o", "pid=", "-C", "syslogd"])
    assert (cmd.args, cmd.custom, cmd.ctid_header) == (
        ["-o", "pid=", "-o", "pid=", "-C", "syslogd"],
        True,
        None,
    )
    cmd = build(["-eo", "ctid,pid,comm"])
    assert (cmd.args, cmd.ctid_header) == (["-o", "pid=", "-e", "-o", "pid,comm"], "CTID")
    cmd = build(["axo", "veid=VE,comm"])  # a header runs to the end of its argument
    assert (cmd.args, cmd.ctid_header) == (["-o", "pid=", "ax"], "VE,comm")
    cmd = build(["--format=comm,ctid", "-p", "1"])
    assert (cmd.args, cmd.ctid_header) == (["-o", "pid=", "--format=comm", "-p", "1"], "CTID")


def test_dash_capital_o_is_read_as_a_ps_format() -> None:
    cmd = build(["-O", "ctid,user", "-p", "1"])  # -O leads with PID and follows no -o
    assert (cmd.args, cmd.custom, cmd.ctid_header) == (["-O", "user", "-p", "1"], False, "CTID")


def test_a_selection_needs_a_pid_column() -> None:
    assert annotate(build(["L"]), "%cpu %CPU\n", None, "pyvz").text == "%cpu %CPU\n"
    with pytest.raises(VzError, match="PID column"):
        annotate(build(["L"]), "%cpu %CPU\n", [None], "pyvz")


def test_a_ct_selection_without_a_ps_selection_looks_at_every_process() -> None:
    assert build([], every=True).args == ["-e"]
    assert build(["-o", "pid="], every=True).args == ["-o", "pid=", "-e", "-o", "pid="]
    assert build(["-C", "syslogd"], every=True).args == ["-C", "syslogd"]
    assert build(["u", "1"], every=True).args == ["u", "1"]


def test_output_gets_the_ctid_column_and_the_selection() -> None:
    me = os.getpid()
    ps = f"  PID TTY          TIME CMD\n{me:>5} pts/0    00:00:00 python\n999999999 ?  00:00:00 gone\n"
    shown = annotate(build([]), ps, None, "pyvz")
    assert shown.text.splitlines() == [
        "CTID   PID TTY          TIME CMD",
        f"   0 {me:>5} pts/0    00:00:00 python",
        "   - 999999999 ?  00:00:00 gone",
    ]
    host_only = annotate(build([]), ps, [None], "pyvz")
    assert (host_only.rows, len(host_only.text.splitlines())) == (1, 2)
    in_a_ct = annotate(build([]), ps, [Owner("pyvz", 101)], "pyvz")
    assert (in_a_ct.rows, in_a_ct.text) == (0, "CTID   PID TTY          TIME CMD\n")


def test_user_format_output_loses_the_leading_pid() -> None:
    me = os.getpid()
    bare = annotate(build(["-o", "pid="]), f"{me:>5} {me:>5}\n", [None], "pyvz")
    assert bare.text == f"{me:>5}\n"
    with_ctid = annotate(build(["-o", "ctid,comm"]), f"      COMMAND\n{me:>5} python\n", None, "pyvz")
    assert with_ctid.text.splitlines() == ["CTID COMMAND", "   0 python"]


def test_vzps_runs_the_hosts_ps() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pyvz.cli.vzps", "-E", "0", "-o", "pid=,comm=", "-p", str(os.getpid())],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert (done.returncode, done.stdout.split()[0]) == (0, str(os.getpid()))
    bad = subprocess.run(
        [sys.executable, "-m", "pyvz.cli.vzps", "-E", "x1"], capture_output=True, text=True, cwd=REPO
    )
    assert bad.returncode == 20 and "Invalid CT ID: x1" in bad.stderr


def test_vzpid_without_a_ct() -> None:
    def vzpid(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "pyvz.cli.vzpid", *args]
        return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, input=stdin)

    usage = vzpid()
    assert (usage.returncode, usage.stdout, usage.stderr.splitlines()[0]) == (
        1,
        "",
        "Usage: vzpid [-p] <pid> ...",
    )
    name = Path("/proc/1/status").read_text().split("\n", 1)[0].split()[1]
    listed = vzpid("-", stdin="1\n 999999999 x 01\n")
    assert (listed.returncode, listed.stdout) == (0, f"Pid\tCTID\tName\n1\t0\t{name}\n")


def test_cpu_time_is_read_from_either_cgroup_version(tmp_path: Path) -> None:
    (tmp_path / "v1/cpuacct/pyvz/101").mkdir(parents=True)
    (tmp_path / "v1/cpuacct/pyvz/101/cpuacct.usage").write_text("123456789\n")
    (tmp_path / "v2/pyvz/101").mkdir(parents=True)
    (tmp_path / "v2/pyvz/101/cpu.stat").write_text("usage_usec 2500\nuser_usec 2000\n")
    assert CgroupV1(tmp_path / "v1").cpu_seconds("pyvz/101") == 0.123456789
    assert CgroupV2(tmp_path / "v2").cpu_seconds("pyvz/101") == 0.0025
    assert CgroupV2(tmp_path / "v2").cpu_seconds("pyvz/102") is None
