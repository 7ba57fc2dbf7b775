"""vzps, vzpid and vztop on real CTs, and the seed's syslog story (004): on the host,
stopping "the syslog" the documented way, `kill $(vzps -E 0 -o pid= -C syslogd)`, stops the
host's syslogd and leaves every CT's running. The busybox template's init starts a syslogd
in each CT; the host's is a busybox syslogd the test starts in the host PID namespace, in a
private mount namespace with its own /dev, so its /dev/log never touches the real host's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, VzRoot

pytestmark = pytest.mark.root

CTS = ("101", "102", "103")


def ct_procs(vzroot: VzRoot, ctid: str) -> set[int]:
    from pyvz.paths import Paths
    from pyvz.runtime.lxc import LxcRuntime

    runtime = LxcRuntime(Paths(vzroot.root))
    return set(runtime.cgroups.procs(runtime.cgroups_of(int(ctid)).container))


def comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def syslogds(pids: set[int]) -> set[int]:
    return {pid for pid in pids if comm(pid) == "syslogd"}


def ct_init(pids: set[int]) -> int:
    from pyvz.resources.ctprocs import ns_pid

    return next(pid for pid in pids if ns_pid(pid) == 1)


def pid_column(text: str) -> set[int]:
    return {int(word) for word in text.split()}


def start_host_syslogd(tmp_path: Path) -> subprocess.Popen[bytes]:
    """A busybox syslogd named syslogd, in the host's PID namespace, writing to tmp_path."""
    (tmp_path / "syslogd").symlink_to("/bin/busybox")
    script = f"mount -t tmpfs none /dev && exec {tmp_path}/syslogd -n -O {tmp_path}/messages"
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script], start_new_session=True
    )
    deadline = time.monotonic() + 10
    while comm(proc.pid) != "syslogd":
        assert proc.poll() is None, "the host's test syslogd did not start"
        assert time.monotonic() < deadline, "the host's test syslogd did not start"
        time.sleep(0.05)
    return proc


def test_host_tools_know_cts(vzroot: VzRoot, tmp_path: Path) -> None:
    tool = [sys.executable, "-m", "pyvz.cli.vzps"]
    already = vzroot.run("vzps", "-E", "0", "-o", "pid=", "-C", "syslogd")
    if already.code == 0:  # stopping it would stop this host's real logging
        pytest.skip(f"this host runs a syslogd of its own: {already.out.split()}")
    for ctid in CTS:
        vzroot.ok("create", ctid, "--name", f"log{ctid}")
        vzroot.ok("start", ctid)
    host_syslogd = start_host_syslogd(tmp_path)
    try:
        inside = {ctid: ct_procs(vzroot, ctid) for ctid in CTS}
        deadline = time.monotonic() + 15  # busybox init starts syslogd from rcS
        while not all(syslogds(ct_procs(vzroot, ctid)) for ctid in CTS):
            assert time.monotonic() < deadline, "a CT's syslogd did not start"
            time.sleep(0.1)
        inside = {ctid: ct_procs(vzroot, ctid) for ctid in CTS}
        every_ct_pid = set().union(*inside.values())

        host = vzroot.run("vzps", "-E", "0", "-e", "-o", "pid=")
        assert host.code == 0, host.err
        host_pids = pid_column(host.out)
        assert os.getpid() in host_pids and host_syslogd.pid in host_pids
        assert not host_pids & every_ct_pid, "vzps -E 0 listed CT processes"

        only_101 = vzroot.run("vzps", "-E", "101", "-o", "pid=")  # -E alone selects from all
        assert only_101.code == 0, only_101.err
        assert pid_column(only_101.out) == ct_procs(vzroot, "101")

        full = vzroot.run("vzps", "-ef")
        assert full.code == 0, full.err
        assert full.out.splitlines()[0].split()[:3] == ["CTID", "UID", "PID"]
        rows = {int(line.split()[2]): line.split()[0] for line in full.out.splitlines()[1:]}
        init_101 = ct_init(inside["101"])
        assert rows[init_101] == "101" and rows[os.getpid()] == "0"
        assert rows[ct_init(inside["102"])] == "102"

        me = (comm(os.getpid()) or "").split()[0]
        pid = vzroot.run("vzpid", str(init_101), str(os.getpid()), "999999999")
        assert pid.code == 0, pid.err
        assert pid.out.splitlines() == [
            "Pid\tCTID\tName",
            f"{init_101}\t101\tinit",
            f"{os.getpid()}\t0\t{me}",
        ]
        ns = vzroot.run("vzpid", "-p", str(init_101))
        assert ns.out.splitlines() == ["Pid\tCT/Pid\tCTID\tName", f"{init_101}\t1\t101\tinit"]

        top = vzroot.run("vztop", "-b", "-n", "2", "-d", "0.3")
        assert top.code == 0, top.err
        screens = top.out.split("\n\n")
        assert len([s for s in screens if s.startswith("vztop - ")]) == 2, top.out
        last = {line.split()[0]: line.split() for line in screens[1].splitlines()[2:]}
        for ctid in CTS:
            assert last[ctid][1] == f"log{ctid}"
            assert int(last[ctid][2]) == len(ct_procs(vzroot, ctid))
            assert 0.0 <= float(last[ctid][3]) < 100.0 * (os.cpu_count() or 1)  # read, not "-"
            assert last[ctid][4].endswith(("K", "M")) and last[ctid][5] != "-"

        before = {ctid: syslogds(inside[ctid]) for ctid in CTS}
        # The seed's `service syslog stop`, made to act on the host's processes only.
        stop = subprocess.run(
            ["sh", "-c", 'kill $("$@" -E 0 -o pid= -C syslogd)', "stop", *tool],
            env=vzroot.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert stop.returncode == 0, stop.stderr
        assert host_syslogd.wait(timeout=10) is not None
        for ctid in CTS:
            assert before[ctid] == syslogds(ct_procs(vzroot, ctid)), f"CT {ctid} lost its syslogd"
        gone = vzroot.run("vzps", "-E", "0", "-o", "pid=", "-C", "syslogd")
        assert (gone.code, gone.out) == (1, "")
    finally:
        if host_syslogd.poll() is None:
            os.killpg(host_syslogd.pid, signal.SIGKILL)
            host_syslogd.wait()
