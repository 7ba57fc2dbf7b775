"""The life of a CT through vzctl: mount, start, stop, exec, enter, console, set, boot, scripts.

Every test builds real busybox CTs in its own throwaway PYVZ_ROOT (the `vzroot` fixture)
and checks what a user would see: exit codes, status lines, output, files on disk.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from pyvz.paths import Paths
from tests.conftest import REPO, VzRoot

pytestmark = pytest.mark.root

CGROUP_PIDS = Path("/sys/fs/cgroup/pids")
ID_RANGE = 65536


# ---- helpers ------------------------------------------------------------------------------


def status(vzroot: VzRoot, ctid: str = "101") -> str:
    return vzroot.ok("status", ctid).strip()


def create_started(vzroot: VzRoot, ctid: str = "101", *create_args: str) -> None:
    vzroot.ok("create", ctid, *create_args)
    vzroot.ok("start", ctid)
    assert status(vzroot, ctid) == f"CTID {ctid} exist mounted running"


def conf_text(vzroot: VzRoot, ctid: str = "101") -> str:
    return (vzroot.conf_dir / f"{ctid}.conf").read_text()


def conf_value(vzroot: VzRoot, key: str, ctid: str = "101") -> str:
    match = re.search(rf'^{key}="?([^"\n]*)"?$', conf_text(vzroot, ctid), re.MULTILINE)
    assert match, f"{key} not in {ctid}.conf:\n{conf_text(vzroot, ctid)}"
    return match.group(1)


def private(vzroot: VzRoot, ctid: str = "101") -> Path:
    return vzroot.private_dir / ctid


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def ct_host_pids(vzroot: VzRoot, ctid: str = "101") -> list[int]:
    """Host pids of every process in the CT's cgroup (LXC nests them one level down)."""
    top = CGROUP_PIDS / Paths(vzroot.root.resolve()).tag / ctid
    pids: list[int] = []
    for directory, _dirs, _files in os.walk(top):
        try:
            pids += [int(p) for p in (Path(directory) / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            continue
    return sorted(pids)


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _sep, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def ct_init_pid(vzroot: VzRoot, ctid: str = "101") -> int:
    """The host pid of the CT's init (pid 1 in its pid namespace)."""
    for pid in ct_host_pids(vzroot, ctid):
        try:
            if proc_status(pid)["NSpid"].split()[-1] == "1":
                return pid
        except (FileNotFoundError, KeyError):
            continue
    raise AssertionError(f"CT {ctid} has no init among {ct_host_pids(vzroot, ctid)}")


def ct_init_starttime(vzroot: VzRoot, ctid: str = "101") -> str:
    stat = vzroot.ok("exec", ctid, "cat", "/proc/1/stat")
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: starttime


def ct_uid_map(vzroot: VzRoot, ctid: str = "101") -> list[str]:
    return vzroot.ok("exec", ctid, "cat", "/proc/self/uid_map").split()


def hang_shutdown(vzroot: VzRoot, ctid: str = "101") -> None:
    """Make busybox init's clean shutdown take 60 s (edit the private area before start)."""
    inittab = private(vzroot, ctid) / "etc/inittab"
    text = inittab.read_text()
    assert "::shutdown:" in text
    inittab.write_text(re.sub(r"^::shutdown:.*$", "::shutdown:/bin/sleep 60", text, flags=re.MULTILINE))


class PtyCommand:
    """vzctl run on a real pseudo-terminal, read with deadlines; never blocks forever."""

    def __init__(self, vzroot: VzRoot, *args: str) -> None:
        env = {**vzroot.env, "TERM": "vt100"}
        argv = [sys.executable, "-m", "pyvz.cli.vzctl", *args]
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # pragma: no cover - the child
            try:
                os.chdir(REPO)
                os.execve(sys.executable, argv, env)
            finally:
                os._exit(127)
        self.out = b""
        self.code: int | None = None

    def _read(self, timeout: float) -> bytes | None:
        """What arrives within `timeout` (b"" if nothing); None at end of output."""
        ready, _w, _x = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return b""
        try:
            data = os.read(self.fd, 4096)
        except OSError:  # EIO: every holder of the terminal's other side has closed it
            return None
        self.out += data
        return data or None

    def expect(self, needle: bytes, timeout: float, resend: bytes | None = None) -> None:
        """Wait until `needle` was printed; send `resend` every second meanwhile, if given."""
        deadline = time.monotonic() + timeout
        next_send = time.monotonic()
        while needle not in self.out:
            now = time.monotonic()
            if now >= deadline:
                raise AssertionError(f"no {needle!r} within {timeout} s; output: {self.out!r}")
            if resend is not None and now >= next_send:
                self.send(resend)
                next_send = now + 1.0
            if self._read(min(deadline, next_send) - now if resend else deadline - now) is None:
                raise AssertionError(f"output ended before {needle!r}: {self.out!r}")

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait(self, timeout: float) -> int:
        """The exit code, reading the remaining output; fails (and kills) after `timeout`."""
        deadline = time.monotonic() + timeout
        ended = False
        while self.code is None:
            pid, wait_status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.code = os.waitstatus_to_exitcode(wait_status)
                break
            if time.monotonic() >= deadline:
                self.close()
                raise AssertionError(f"still running after {timeout} s; output: {self.out!r}")
            if ended:
                time.sleep(0.05)
            else:
                ended = self._read(0.1) is None
        while not ended and self._read(0.05):  # the rest of the output, if any is left
            pass
        return self.code

    def close(self) -> None:
        if self.code is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self.pid, 0)
            self.code = -9
        try:
            os.close(self.fd)
        except OSError:
            pass


# ---- mount / umount / start / stop --------------------------------------------------------


def test_mount_umount_status_and_errors(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101")
    assert status(vzroot) == "CTID 101 exist unmounted down"
    vzroot.ok("mount", "101")
    assert status(vzroot) == "CTID 101 exist mounted down"
    assert (vzroot.root / "var/lib/vz/root/101/etc/inittab").is_file()

    again = vzroot.vzctl("mount", "101")  # vzctl 4.11 (vps_mount): its words, and success
    assert (again.code, again.err) == (0, "Container is already mounted\n"), again
    assert status(vzroot) == "CTID 101 exist mounted down"

    vzroot.ok("umount", "101")
    assert status(vzroot) == "CTID 101 exist unmounted down"
    assert not (vzroot.root / "var/lib/vz/root/101/etc/inittab").exists()
    not_mounted = vzroot.vzctl("umount", "101")
    assert not_mounted.code == 40, not_mounted

    vzroot.ok("start", "101")
    running = vzroot.vzctl("umount", "101")
    assert running.code == 32, running
    assert status(vzroot) == "CTID 101 exist mounted running"


def test_start_twice_and_commands_on_a_stopped_ct(vzroot: VzRoot) -> None:
    create_started(vzroot)
    second = vzroot.vzctl("start", "101")
    assert second.code == 32, second
    assert len(stderr_lines(second.err)) == 1, second.err
    assert "running" in second.err
    assert status(vzroot) == "CTID 101 exist mounted running"

    vzroot.ok("stop", "--fast", "101")
    assert status(vzroot) == "CTID 101 exist unmounted down"
    stop_again = vzroot.vzctl("stop", "101")  # vzctl 4.11: its words on stderr, and success
    assert stop_again.code == 0, stop_again
    assert stop_again.err == "Unable to stop: container is not running\n", stop_again.err
    exec_stopped = vzroot.vzctl("exec", "101", "true")
    assert (exec_stopped.code, exec_stopped.err) == (
        8,
        "Container is not running\n",
    ), exec_stopped  # vzctl: 8


def test_restart_keeps_it_running(vzroot: VzRoot) -> None:
    create_started(vzroot)
    before = ct_init_pid(vzroot)
    vzroot.ok("restart", "101")
    assert status(vzroot) == "CTID 101 exist mounted running"
    assert ct_init_pid(vzroot) != before  # it really went down and came back
    assert vzroot.ok("exec", "101", "echo", "alive").strip() == "alive"


def test_restart_starts_a_stopped_ct(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101")
    vzroot.ok("restart", "101")
    assert status(vzroot) == "CTID 101 exist mounted running"


def test_stop_fast_kills_without_a_clean_shutdown(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101")
    hang_shutdown(vzroot)  # a clean stop would wait STOP_TIMEOUT (60 s) for it
    vzroot.ok("start", "101")
    began = time.monotonic()
    done = vzroot.vzctl("stop", "--fast", "101", timeout=60)
    elapsed = time.monotonic() - began
    assert done.code == 0, done
    assert elapsed < 10, f"stop --fast took {elapsed:.1f} s"
    assert status(vzroot) == "CTID 101 exist unmounted down"
    assert ct_host_pids(vzroot) == []


def test_stop_timeout_is_honoured(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101")
    hang_shutdown(vzroot)
    vzroot.ok("set", "101", "--stop-timeout", "2", "--save")
    assert conf_value(vzroot, "STOP_TIMEOUT") == "2"
    vzroot.ok("start", "101")
    began = time.monotonic()
    done = vzroot.vzctl("stop", "101", timeout=90)
    elapsed = time.monotonic() - began
    assert done.code == 0, done
    assert elapsed < 20, f"stop took {elapsed:.1f} s with STOP_TIMEOUT=2"
    assert elapsed >= 1.5, f"stop took {elapsed:.1f} s: it did not wait for a clean shutdown"
    assert done.out.splitlines() == [  # vzctl's words for a CT that did not halt in time
        "Stopping container ...",
        "Killing container ...",
        "Container was stopped",
        "Container is unmounted",
    ]
    assert status(vzroot) == "CTID 101 exist unmounted down"
    assert ct_host_pids(vzroot) == []


# ---- running things inside ----------------------------------------------------------------


def test_exec_exit_codes_stdin_and_arguments(vzroot: VzRoot) -> None:
    create_started(vzroot, "101", "--hostname", "exechost")
    failed = vzroot.vzctl("exec", "101", "false")
    assert failed.code == 8, failed
    assert vzroot.vzctl("exec", "101", "true").code == 0
    assert vzroot.vzctl("exec2", "101", "exit 7").code == 7
    assert vzroot.vzctl("exec2", "101", "true").code == 0

    piped = vzroot.vzctl("exec", "101", "-", input="echo hi; hostname\n")
    assert piped.code == 0, piped
    assert piped.out.split() == ["hi", "exechost"]

    assert vzroot.ok("exec", "101", "echo", "a", "b").strip() == "a b"
    assert vzroot.ok("exec", "101", "echo one; echo two").split() == ["one", "two"]


def test_runscript_output_and_exit_code(vzroot: VzRoot, tmp_path: Path) -> None:
    create_started(vzroot, "101", "--hostname", "scripted")
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho from-script $(hostname)\nexit 3\n")
    done = vzroot.vzctl("runscript", "101", str(script))
    assert done.code == 3, done
    assert done.out.strip() == "from-script scripted"

    missing = vzroot.vzctl("runscript", "101", str(tmp_path / "nope.sh"))
    assert missing.code == 11, missing


def test_enter_on_a_real_pty(vzroot: VzRoot) -> None:
    create_started(vzroot, "101", "--hostname", "enterhost")
    session = PtyCommand(vzroot, "enter", "101")
    try:
        session.expect(b"# ", timeout=15)
        session.send(b"hostname; tty; exit\n")
        code = session.wait(timeout=15)
    finally:
        session.close()
    text = session.out.decode(errors="replace").replace("\r", "")
    assert code == 0, text
    assert "entered into CT 101" in text
    assert re.search(r"^enterhost$", text, re.MULTILINE), text
    assert re.search(r"^/dev/pts/\d+$", text, re.MULTILINE), text


def test_console_login_prompt_and_detach(vzroot: VzRoot) -> None:
    create_started(vzroot, "101", "--hostname", "consolehost")
    session = PtyCommand(vzroot, "console", "101")
    try:
        session.expect(b"Esc . to detach", timeout=15)
        session.expect(b"login:", timeout=20, resend=b"\r")
        assert b"consolehost login:" in session.out
        session.send(b"\x1b.")
        code = session.wait(timeout=5)
    finally:
        session.close()
    assert code == 0, session.out
    assert b"Detached" in session.out
    assert status(vzroot) == "CTID 101 exist mounted running"  # detaching leaves it running


# ---- set ----------------------------------------------------------------------------------


def _verify_crypt(password: str, hashed: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    return crypt.crypt(password, hashed) == hashed


def _shadow_hash(shadow: str, user: str) -> str:
    for line in shadow.splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return fields[1]
    raise AssertionError(f"{user} not in shadow:\n{shadow}")


def test_userpasswd_on_stopped_then_running_ct(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101")
    vzroot.ok("set", "101", "--userpasswd", "sa:secret")
    assert status(vzroot) == "CTID 101 exist unmounted down"
    assert ct_host_pids(vzroot) == []

    etc = private(vzroot) / "etc"
    passwd = {line.split(":")[0]: line.split(":") for line in (etc / "passwd").read_text().splitlines()}
    assert "sa" in passwd
    assert passwd["sa"][5] == "/home/sa"
    first = _shadow_hash((etc / "shadow").read_text(), "sa")
    assert first.startswith("$6$")
    assert _verify_crypt("secret", first)
    assert not _verify_crypt("wrong", first)
    assert _shadow_hash((etc / "shadow").read_text(), "root") == "!"  # others untouched

    vzroot.ok("start", "101")
    vzroot.ok("set", "101", "--userpasswd", "sa:n3w-pass")
    inside = vzroot.ok("exec", "101", "cat", "/etc/shadow")
    second = _shadow_hash(inside, "sa")
    assert second != first
    assert _verify_crypt("n3w-pass", second)
    assert not _verify_crypt("secret", second)
    assert vzroot.ok("exec", "101", "grep", "-c", "^sa:", "/etc/passwd").strip() == "1"


def test_set_hostname_on_a_running_ct(vzroot: VzRoot) -> None:
    create_started(vzroot, "101", "--hostname", "old")
    vzroot.ok("set", "101", "--hostname", "new", "--save")
    assert vzroot.ok("exec", "101", "hostname").strip() == "new"
    assert vzroot.ok("exec", "101", "cat", "/etc/hostname").strip() == "new"
    hosts = vzroot.ok("exec", "101", "cat", "/etc/hosts").splitlines()
    assert "127.0.1.1 new" in hosts
    assert not any("old" in line for line in hosts)
    assert 'HOSTNAME="new"' in conf_text(vzroot).splitlines()
    assert status(vzroot) == "CTID 101 exist mounted running"


def test_set_without_save_on_a_stopped_ct_changes_nothing(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--config", "light")  # ONBOOT="no"
    before = conf_text(vzroot)
    assert conf_value(vzroot, "ONBOOT") == "no"
    done = vzroot.vzctl("set", "101", "--onboot", "yes")
    assert done.code == 0, done
    assert "WARNING" in done.err and "--save" in done.err, done.err
    assert conf_text(vzroot) == before
    assert status(vzroot) == "CTID 101 exist unmounted down"


def test_disabled_ct_needs_force(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101")
    vzroot.ok("set", "101", "--disabled", "yes", "--save")
    refused = vzroot.vzctl("start", "101")
    assert refused.code == 105, refused
    assert status(vzroot) == "CTID 101 exist unmounted down"
    vzroot.ok("start", "--force", "101")
    assert status(vzroot) == "CTID 101 exist mounted running"


# ---- boot, action scripts, locks, log -----------------------------------------------------


def test_boot_starts_onboot_cts_in_bootorder(vzroot: VzRoot) -> None:
    for ctid in ("101", "102", "103"):
        vzroot.ok("create", ctid)
    vzroot.ok("set", "101", "--onboot", "yes", "--bootorder", "10", "--save")
    vzroot.ok("set", "102", "--onboot", "yes", "--bootorder", "20", "--save")
    vzroot.ok("set", "103", "--onboot", "no", "--save")
    done = vzroot.vzctl("boot")
    assert done.code == 0, done
    assert status(vzroot, "101") == "CTID 101 exist mounted running"
    assert status(vzroot, "102") == "CTID 102 exist mounted running"
    assert status(vzroot, "103") == "CTID 103 exist unmounted down"

    log = (vzroot.root / "var/log/vzctl.log").read_text()
    starts = re.findall(r"CT (\d+) : Starting container", log)
    assert starts == ["102", "101"], log


def test_action_scripts_on_host_and_inside(vzroot: VzRoot, tmp_path: Path) -> None:
    vzroot.ok("create", "101")
    marker = tmp_path / "mount-marker"
    mount_script = vzroot.conf_dir / "101.mount"
    mount_script.write_text(f'#!/bin/sh\necho "$VEID $VE_ROOT" > {marker}\n')
    mount_script.chmod(0o755)
    (vzroot.conf_dir / "101.start").write_text("touch /root/started-by-script\n")

    vzroot.ok("start", "101")
    assert marker.read_text().strip() == f"101 {vzroot.root / 'var/lib/vz/root/101'}"
    assert "started-by-script" in vzroot.ok("exec", "101", "ls", "/root").split()


def test_failing_premount_script_stops_start(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101")
    premount = vzroot.conf_dir / "101.premount"
    premount.write_text("#!/bin/sh\nexit 1\n")
    premount.chmod(0o755)
    done = vzroot.vzctl("start", "101")
    assert done.code == 79, done
    assert status(vzroot) == "CTID 101 exist unmounted down"
    assert ct_host_pids(vzroot) == []


def test_ct_lock_blocks_and_skiplock_bypasses(vzroot: VzRoot) -> None:
    """OpenVZ's lock file: one that vzctl 4.11 holds (its PID, an empty status) keeps pyvz
    out, --skiplock goes past it, and pyvz leaves no lock file of its own behind."""
    vzroot.ok("create", "101")
    lock_dir = vzroot.root / "var/lib/vz/lock"
    assert [p.name for p in lock_dir.iterdir() if p.name.startswith("101")] == []
    lock_path = lock_dir / "101.lck"
    vzctl_stand_in = subprocess.Popen(["sleep", "120"])
    try:
        lock_path.write_text(f"{vzctl_stand_in.pid}\n\n")
        locked = vzroot.vzctl("start", "101")
        assert locked.code == 9, locked
        assert len(stderr_lines(locked.err)) == 1, locked.err
        assert f"locked by pid {vzctl_stand_in.pid} (sleep 120)" in locked.err
        assert status(vzroot) == "CTID 101 exist unmounted down"

        vzroot.ok("--skiplock", "start", "101")
        assert status(vzroot) == "CTID 101 exist mounted running"
        vzroot.ok("--skiplock", "stop", "--fast", "101")
        assert status(vzroot) == "CTID 101 exist unmounted down"
        assert lock_path.read_text() == f"{vzctl_stand_in.pid}\n\n"  # not pyvz's to touch
    finally:
        vzctl_stand_in.kill()
        vzctl_stand_in.wait()
    # Its holder is gone: the lock is stale, and the next command takes it over.
    started = vzroot.vzctl("start", "101")
    assert started.code == 0, started
    assert f"Removing stale lock file {lock_path}" in started.out
    assert status(vzroot) == "CTID 101 exist mounted running"
    assert [p.name for p in lock_dir.iterdir() if p.name.startswith("101")] == []


def test_start_is_logged(vzroot: VzRoot) -> None:
    create_started(vzroot)
    log = (vzroot.root / "var/log/vzctl.log").read_text()
    assert "CT 101 : Starting container..." in log
    assert "CT 101 : Container start in progress..." in log


# ---- isolation: user namespaces --------------------------------------------------------


def test_unprivileged_by_default(vzroot: VzRoot) -> None:
    create_started(vzroot)
    local_uid = int(conf_value(vzroot, "LOCAL_UID"))
    assert local_uid >= 100000
    assert ct_uid_map(vzroot) == ["0", str(local_uid), str(ID_RANGE)]

    assert vzroot.vzctl("exec", "101", "mknod", "/tmp/x", "c", "1", "3").code != 0
    assert vzroot.vzctl("exec", "101", "echo s > /proc/sysrq-trigger").code != 0

    pids = ct_host_pids(vzroot)
    assert pids, "no processes in the CT's cgroup"
    commands = set()
    for pid in pids:
        uid = int(proc_status(pid)["Uid"].split()[0])
        assert local_uid <= uid < local_uid + ID_RANGE, f"pid {pid} runs as host uid {uid}"
        commands.add(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip())
    assert b"syslogd -O /var/log/messages" in commands

    vzroot.ok("exec", "101", "touch", "/root/x")
    on_disk = (private(vzroot) / "root/x").stat()
    assert (on_disk.st_uid, on_disk.st_gid) == (0, 0)


def test_two_cts_get_disjoint_id_ranges(vzroot: VzRoot) -> None:
    create_started(vzroot, "101")
    create_started(vzroot, "102")
    first = int(conf_value(vzroot, "LOCAL_UID", "101"))
    second = int(conf_value(vzroot, "LOCAL_UID", "102"))
    assert abs(first - second) >= ID_RANGE
    assert ct_uid_map(vzroot, "101")[1] == str(first)
    assert ct_uid_map(vzroot, "102")[1] == str(second)


def test_privileged_ct_with_local_uid_0(vzroot: VzRoot) -> None:
    create_started(vzroot, "102", "--local_uid", "0")
    assert conf_value(vzroot, "LOCAL_UID", "102") == "0"
    assert ct_uid_map(vzroot, "102") == ["0", "0", "4294967295"]


# ---- storage ------------------------------------------------------------------------------


def test_dir_layout(vzroot: VzRoot) -> None:
    create_started(vzroot, "103", "--layout", "dir")
    assert conf_value(vzroot, "VE_LAYOUT", "103") == "dir"
    vzroot.ok("exec", "103", "echo written-inside > /root/f")
    upper = private(vzroot, "103") / "fs/root/f"
    assert upper.read_text() == "written-inside\n"
    assert vzroot.ok("exec", "103", "cat", "/root/f") == "written-inside\n"

    vzroot.ok("stop", "--fast", "103")
    vzroot.ok("destroy", "103")
    assert not private(vzroot, "103").exists()
    assert status(vzroot, "103") == "CTID 103 deleted unmounted down"


def test_dir_layout_refuses_diskspace(vzroot: VzRoot) -> None:
    done = vzroot.vzctl("create", "103", "--layout", "dir", "--diskspace", "1G")
    assert done.code != 0, done
    assert len(stderr_lines(done.err)) == 1, done.err
    assert not (vzroot.conf_dir / "103.conf").exists()
    assert not private(vzroot, "103").exists()


def test_disk_quota_is_enforced_and_raised_live(vzroot: VzRoot) -> None:
    create_started(vzroot, "101", "--diskspace", "30M")
    write_60m = "dd if=/dev/zero of=/root/big bs=1M count=60 2>&1 && sync"
    full = vzroot.vzctl("exec2", "101", write_60m)
    assert full.code != 0, full
    init_pid, started = ct_init_pid(vzroot), ct_init_starttime(vzroot)

    vzroot.ok("set", "101", "--diskspace", "200M", "--save")
    assert conf_value(vzroot, "DISKSPACE") == "204800:204800"
    vzroot.ok("exec", "101", "rm -f /root/big; sync")
    deadline = time.monotonic() + 10
    while True:  # btrfs qgroup accounting can lag a transaction behind
        done = vzroot.vzctl("exec2", "101", write_60m)
        if done.code == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert done.code == 0, done
    size = vzroot.ok("exec", "101", "stat -c %s /root/big").strip()
    assert size == str(60 << 20)
    assert (ct_init_pid(vzroot), ct_init_starttime(vzroot)) == (init_pid, started)  # no restart


def test_disk_quota_set_on_a_stopped_ct_is_enforced(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101")  # the basic sample: DISKSPACE="10G"
    vzroot.ok("set", "101", "--diskspace", "30M", "--save")
    assert conf_value(vzroot, "DISKSPACE") == "30720:30720"
    vzroot.ok("start", "101")
    done = vzroot.vzctl("exec2", "101", "dd if=/dev/zero of=/root/big bs=1M count=60 2>&1 && sync")
    assert done.code != 0, f"60 MB written under a 30 MB quota: {done.out}"


def test_applyconfig_takes_a_samples_class_parameters_only(vzroot: VzRoot) -> None:
    sample = vzroot.conf_dir / "ve-small.conf-sample"
    sample.write_text(
        '# small CTs\nONBOOT="yes"\nDISKSPACE="1G:1G"\nHOSTNAME="not-copied"\nSTOP_TIMEOUT="7"\n'
    )
    vzroot.ok("create", "101", "--hostname", "keep")
    vzroot.ok("set", "101", "--applyconfig", "small", "--description", "from small", "--save")
    conf = (vzroot.conf_dir / "101.conf").read_text()
    assert 'DISKSPACE="1048576:1048576"' in conf or 'DISKSPACE="1G:1G"' in conf
    assert 'STOP_TIMEOUT="7"' in conf and 'ONBOOT="yes"' in conf
    assert 'HOSTNAME="keep"' in conf and "not-copied" not in conf
    assert 'DESCRIPTION="from small"' in conf
    rows = vzroot.vzlist("-a", "-H", "-o", "ctid,description,diskspace.s,diskspace.h").out.split()
    assert rows == ["101", "from", "small", "1048576", "1048576"]
    done = vzroot.vzctl("set", "101", "--applyconfig", "nosuch", "--save")
    assert done.code == 109 and len(done.err.strip().splitlines()) == 1


def test_unenforced_diskspace_barrier_is_said_out_loud(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101")
    done = vzroot.vzctl("set", "101", "--diskspace", "1G:2G", "--save")
    assert done.code == 0
    assert "barrier 1G is not enforced" in done.err and "limit 2G is" in done.err
    done = vzroot.vzctl("set", "101", "--diskspace", "2G", "--save")
    assert done.code == 0 and "not enforced" not in done.err
