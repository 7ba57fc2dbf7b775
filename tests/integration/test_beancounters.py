"""Beancounters on real CTs: counters that rise when limits are hit, survive vzubc runs,
start again at a restart, and read the same through vzubc, vzubc --proc and vzlist
(vzubc's own layout and options: test_vzubc.py)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.conftest import VzRoot

pytestmark = pytest.mark.root


def ubc(vzroot: VzRoot, ctid: str, name: str) -> dict[str, int | None]:
    done = vzroot.vzlist("-j", "-o", f"ctid,{name}", ctid)
    assert done.code == 0, done.err
    value: dict[str, int | None] = json.loads(done.out)[0][name]
    return value


def proc_rows(text: str) -> dict[tuple[int, str], list[int]]:
    """Parse the /proc/user_beancounters text the way monitoring scripts do."""
    lines = text.splitlines()
    assert lines[0] == "Version: 2.5"
    assert lines[1].split() == ["uid", "resource", "held", "maxheld", "barrier", "limit", "failcnt"]
    rows, ctid = {}, 0
    for line in lines[2:]:
        match = re.match(r"^\s+(?:(\d+):)?\s+(\w+)((?:\s+\d+){5})$", line)
        assert match, f"not in /proc/user_beancounters form: {line!r}"
        ctid = int(match.group(1)) if match.group(1) else ctid
        rows[(ctid, match.group(2))] = [int(v) for v in match.group(3).split()]
    return rows


def test_numproc_failcnt_counts_refused_forks_and_survives_vzubc(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--numproc", "64")
    vzroot.ok("create", "102")
    vzroot.ok("start", "101")
    vzroot.ok("start", "102")
    assert ubc(vzroot, "101", "numproc")["failcnt"] == 0
    # A fork bomb, cut off by timeout; the CT's tasks must stop at 64.
    vzroot.vzctl("exec", "101", "timeout -s KILL 8 sh -c 'b() { b & b & }; b' 2>/dev/null; true", timeout=60)
    counters = ubc(vzroot, "101", "numproc")
    assert counters["maxheld"] is not None and counters["maxheld"] <= 64
    assert counters["failcnt"] is not None and counters["failcnt"] > 0
    # Meanwhile the host and the other CT answered at once.
    started = time.monotonic()
    assert vzroot.ok("exec", "102", "echo alive").strip() == "alive"
    assert time.monotonic() - started < 10
    # vzubc runs (relative or not) change nothing in the counter itself.
    failcnt = counters["failcnt"]
    for args in ((), ("-r",), ("-i",), ("-r",)):
        assert vzroot.run("vzubc", *args, "101").code == 0
    assert ubc(vzroot, "101", "numproc")["failcnt"] == failcnt
    rows = proc_rows(vzroot.run("vzubc", "--proc").out)
    assert rows[(101, "numproc")][2:4] == [64, 64]
    assert rows[(101, "numproc")][4] == failcnt
    assert rows[(102, "numproc")][4] == 0
    # A relative run shows only what is new since the previous one.
    relative = vzroot.run("vzubc", "-r", "-v", "101").out
    assert re.search(r"^      numproc\|.*\|    - $", relative, re.M), relative
    # A restart starts the counters again, as OpenVZ did.
    vzroot.ok("restart", "101")
    after = ubc(vzroot, "101", "numproc")
    assert after["failcnt"] == 0 and (after["maxheld"] or 0) < 64
    vzroot.ok("stop", "--fast", "101")
    vzroot.ok("stop", "--fast", "102")


def test_ram_limit_oom_counts_and_ct_survives(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--ram", "64M", "--swap", "0")
    vzroot.ok("start", "101")
    before = ubc(vzroot, "101", "physpages")
    assert before["limit"] == 16384 and before["failcnt"] == 0
    done = vzroot.vzctl("exec2", "101", "dd if=/dev/zero of=/dev/null bs=200M count=1")
    assert done.code != 0
    physpages = ubc(vzroot, "101", "physpages")
    oomguar = ubc(vzroot, "101", "oomguarpages")
    assert physpages["failcnt"] is not None and physpages["failcnt"] > 0
    assert oomguar["failcnt"] is not None and oomguar["failcnt"] > 0  # OpenVZ counts OOM kills here
    assert physpages["maxheld"] is not None and physpages["maxheld"] <= 16384
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist mounted running"
    text = vzroot.run("vzubc", "101").out
    assert re.search(r"^\s+physpages\|", text, re.M)
    vzroot.ok("stop", "--fast", "101")


def test_vzubc_says_what_the_kernel_does_not_enforce(vzroot: VzRoot) -> None:
    done = vzroot.vzctl("create", "101", "--kmemsize", "20M", "--numflock", "100", "--numproc", "100")
    assert done.code == 0
    assert "not enforced on this kernel: kmemsize, numflock" in done.err
    vzroot.ok("start", "101")
    shown = vzroot.run("vzubc", "101")
    # The table is vzubc's own, line for line; what is not enforced is said once, on stderr.
    assert re.search(r"^      numproc\|.*\| 100 \| 100 \|    - $", shown.out, re.M), shown.out
    assert re.search(r"^     kmemsize\|.*\|  20M\|  20M\|    - $", shown.out, re.M), shown.out
    assert "*" not in shown.out
    assert (
        shown.err == "WARNING: CT 101: saved, but not enforced on this kernel: kmemsize, numflock "
        "(mainline Linux has no per-CT limit for them; vzcfgvalidate explains)\n"
    )
    # Unlimited beancounters are left out unless -v.
    assert "dgramrcvbuf" not in shown.out
    assert "dgramrcvbuf" in vzroot.run("vzubc", "-v", "101").out
    # vzubc ignores CTs that do not exist, as vzctl's script does.
    other = vzroot.run("vzubc", "4242", "101")
    assert other.code == 0 and "CT 101 " in other.out and "4242" not in other.out + other.err
    vzroot.ok("stop", "--fast", "101")


def test_vm_overcommit_derives_privvmpages(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--ram", "256M", "--swap", "512M", "--vm_overcommit", "1.5")
    text = (vzroot.conf_dir / "101.conf").read_text()
    pages = int((256 + 512) * 256 * 1.5)
    assert f'PRIVVMPAGES="{pages}"' in text  # barrier = limit: one number, as vzctl writes it
    vzroot.ok("set", "101", "--ram", "512M", "--save")
    pages = int((512 + 512) * 256 * 1.5)
    assert f'PRIVVMPAGES="{pages}"' in (vzroot.conf_dir / "101.conf").read_text()
    # An explicit privvmpages wins over the derivation.
    vzroot.ok("set", "101", "--privvmpages", "1000:2000", "--ram", "1G", "--save")
    assert 'PRIVVMPAGES="1000:2000"' in (vzroot.conf_dir / "101.conf").read_text()


def test_tcp_buffers_and_cpuset_reach_the_cgroup_live(vzroot: VzRoot) -> None:
    from tests.integration.test_resources import cgroup_file

    vzroot.ok("create", "101", "--tcpsndbuf", "1M", "--tcprcvbuf", "1M", "--cpumask", "0")
    vzroot.ok("start", "101")
    assert cgroup_file(vzroot, "memory", "memory.kmem.tcp.limit_in_bytes").read_text().strip() == str(2 << 20)
    assert cgroup_file(vzroot, "cpuset", "cpuset.cpus").read_text().strip() == "0"
    assert vzroot.ok("exec", "101", "grep Cpus_allowed_list /proc/self/status").split()[-1] == "0"
    vzroot.ok("set", "101", "--cpumask", "all", "--tcpsndbuf", "unlimited", "--save")
    online = Path("/sys/devices/system/cpu/online").read_text().strip()
    assert cgroup_file(vzroot, "cpuset", "cpuset.cpus").read_text().strip() == online
    assert cgroup_file(vzroot, "cpuset", "ns/cpuset.cpus").read_text().strip() == online
    assert vzroot.ok("exec", "101", "grep Cpus_allowed_list /proc/self/status").split()[-1] == online
    assert int(cgroup_file(vzroot, "memory", "memory.kmem.tcp.limit_in_bytes").read_text()) > 1 << 40
    vzroot.ok("set", "101", "--cpus", "1", "--save")
    assert cgroup_file(vzroot, "cpuset", "ns/cpuset.cpus").read_text().strip() == "0"
    bad = vzroot.vzctl("set", "101", "--cpumask", "64", "--save")
    assert bad.code != 0 and "no online CPU" in bad.err
    assert 'CPUMASK="all"' in (vzroot.conf_dir / "101.conf").read_text()
    vzroot.ok("stop", "--fast", "101")
