"""vzctl run (issue 15, item 4) on real CTs: a command in a fresh CT, its output and exit
code; --rm leaves nothing whatever happens to the command or to vzctl run itself (Ctrl-C,
SIGTERM, kill -9: the next `vzctl run` or `vzctl boot` sweeps); --timeout, --network none,
a bind-mounted host directory; bad input changes nothing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, VzRoot

pytestmark = pytest.mark.root

FIRST = 900000  # pyvz/ct/runowner.py: FIRST_CTID


def leftovers(vzroot: VzRoot) -> list[str]:
    """Everything of any run CT that --rm must not leave: configs (the `.destroyed` one
    too), owner records, private areas, LXC files, mount points and mounts, cgroups, lock
    files."""
    sys.path.insert(0, str(REPO))
    from pyvz.paths import Paths
    from pyvz.resources.cgroups import CtCgroups, detect

    def run_ct(name: str) -> bool:
        head = name.lstrip(".").split(".")[0]
        return head.isdigit() and int(head) >= FIRST

    def entries(directory: Path) -> list[str]:
        return sorted(p.name for p in directory.iterdir()) if directory.exists() else []

    lib = vzroot.root / "var/lib/vz"
    found = [f"conf/{n}" for n in entries(vzroot.conf_dir) if run_ct(n)]
    for place in ("private", "lxc", "root"):
        found += [f"{place}/{n}" for n in entries(lib / place) if run_ct(n)]
    found += [f"lock/{n}" for n in entries(lib / "lock")]
    real = os.path.realpath(vzroot.root / "var/lib/vz/root")
    with open("/proc/self/mountinfo") as handle:
        found += [f"mount {line.split()[4]}" for line in handle if line.split()[4].startswith(real + "/")]
    tree, tag = detect(), Paths(vzroot.root).tag
    for ctid in range(FIRST, FIRST + 4):
        cgroups = CtCgroups.of(tag, ctid)
        found += [str(d) for d in tree.dirs(cgroups.container) + tree.dirs(cgroups.monitor)]
    return found


def vzctl_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "pyvz.cli.vzctl", *args]


def start_run(vzroot: VzRoot, *args: str, stdout: int | Path = subprocess.PIPE) -> subprocess.Popen[bytes]:
    out = open(stdout, "wb") if isinstance(stdout, Path) else stdout  # noqa: SIM115
    return subprocess.Popen(
        vzctl_argv("run", *args),
        env=vzroot.env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def wait_for_line(proc: subprocess.Popen[bytes], line: bytes, within: float = 60.0) -> list[bytes]:
    """Lines of a running vzctl run's output up to `line`, read while it runs."""
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = proc.stdout.readline()
        if not got:
            break
        seen.append(got.rstrip(b"\n"))
        if seen[-1] == line:
            return seen
    raise AssertionError(f"no {line!r} from the command; it said {seen}")


def wait_until(check: object, within: float = 30.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_failing_command_returns_its_code_streams_in_order_and_leaves_nothing(vzroot: VzRoot) -> None:
    proc = start_run(vzroot, "--rm", "--", "sh", "-c", "echo one; echo two >&2; echo three; exit 7")
    out, _err = proc.communicate(timeout=120)
    lines = out.decode().splitlines()
    assert proc.returncode == 7, out
    ours = [line for line in lines if line.startswith("vzctl run: CT ")]
    assert len(ours) == 1 and "busybox" in ours[0], lines  # which CT, from what: on stderr
    assert [line for line in lines if line not in ours] == ["one", "two", "three"]
    assert leftovers(vzroot) == []


def test_stdout_is_the_command_alone_and_stdin_reaches_it(vzroot: VzRoot) -> None:
    done = subprocess.run(
        vzctl_argv("run", "--rm", "--", "sh", "-c", "tr a-z A-Z; echo end"),
        env=vzroot.env,
        cwd=REPO,
        input=b"piped in\n",
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"PIPED IN\nend\n"
    assert leftovers(vzroot) == []


def test_without_rm_the_ct_is_kept_stopped(vzroot: VzRoot) -> None:
    done = vzroot.vzctl("run", "--name", "kept", "--", "sh", "-c", "echo data > /root/made")
    assert done.code == 0, done.err
    assert f"CT {FIRST} is kept" in done.err
    assert vzroot.vzctl("status", "kept").out.strip() == f"CTID {FIRST} exist unmounted down"
    assert not (vzroot.conf_dir / f"{FIRST}.run").exists()  # an ordinary CT from here on
    # The next run is a fresh CT of its own, from the kept one's files.
    done = vzroot.vzctl("run", "--rm", "--from", "kept", "--", "cat", "/root/made")
    assert (done.code, done.out) == (0, "data\n"), done.err
    assert f"CT {FIRST + 1} from CT {FIRST}" in done.err
    vzroot.ok("destroy", "kept")
    assert leftovers(vzroot) == [f"conf/{FIRST}.conf.destroyed"]  # as vzctl destroy keeps it


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_run_goes_to_the_command_then_everything_goes(vzroot: VzRoot, signum: int) -> None:
    proc = start_run(vzroot, "--rm", "--", "sh", "-c", "echo ready; sleep 1000; echo not-reached")
    seen = wait_for_line(proc, b"ready")  # streamed live: the command is still running
    assert proc.poll() is None
    proc.send_signal(signum)
    out, _err = proc.communicate(timeout=60)
    assert b"not-reached" not in out
    assert proc.returncode == 128 + signum, seen + out.splitlines()  # sh, killed by it
    assert leftovers(vzroot) == []


def _killed_mid_run(vzroot: VzRoot, tmp_path: Path) -> None:
    """A vzctl run --rm killed with -9 while its command runs: its CT is left running."""
    output = tmp_path / "out"
    proc = start_run(vzroot, "--rm", "--", "sh", "-c", "echo ready; sleep 1000", stdout=output)
    assert wait_until(lambda: b"ready" in output.read_bytes(), 60), output.read_text()
    proc.kill()
    proc.wait()
    assert vzroot.vzctl("status", str(FIRST)).out.strip() == f"CTID {FIRST} exist mounted running"


def test_kill_9_mid_run_next_run_sweeps(vzroot: VzRoot, tmp_path: Path) -> None:
    _killed_mid_run(vzroot, tmp_path)
    done = vzroot.vzctl("run", "--rm", "--", "echo", "second")
    assert (done.code, done.out) == (0, "second\n"), done.err
    assert f"CT {FIRST} " in done.err  # swept before it chose: the killed run's CTID is free again
    assert leftovers(vzroot) == []


def test_kill_9_mid_run_boot_sweeps(vzroot: VzRoot, tmp_path: Path) -> None:
    _killed_mid_run(vzroot, tmp_path)
    assert vzroot.vzctl("boot").code == 0
    assert leftovers(vzroot) == []


def test_timeout_stops_the_command_with_124(vzroot: VzRoot) -> None:
    started = time.monotonic()
    done = vzroot.vzctl("run", "--rm", "--timeout", "1", "--", "sh", "-c", "echo begun; sleep 300")
    assert done.code == 124, done.err
    assert done.out == "begun\n"
    assert "--timeout 1" in done.err
    assert time.monotonic() - started < 60  # not the command's 300 s
    assert leftovers(vzroot) == []


def test_network_none_has_only_lo(vzroot: VzRoot) -> None:
    done = vzroot.vzctl("run", "--rm", "--network", "none", "--", "ls", "/sys/class/net")
    assert (done.code, done.out.split()) == (0, ["lo"]), done.err
    assert leftovers(vzroot) == []


def test_bindmount_host_dir_workdir_user_and_env(vzroot: VzRoot, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "Makefile").write_text("all:\n\techo built\n")
    done = vzroot.vzctl(
        "run", "--rm", "--bindmount_add", f"{src}:/src", "--workdir", "/src", "--env", "WHO=ci",
        "--", "sh", "-c", 'cat Makefile; pwd; echo "$WHO" > result; id -u',
    )  # fmt: skip
    assert done.code == 0, done.err
    assert done.out.splitlines() == ["all:", "\techo built", "/src", "0"]
    result = src / "result"
    assert result.read_text() == "ci\n"
    assert (result.stat().st_uid, result.stat().st_gid) == (0, 0)  # the CT's root is the host's, idmapped
    done = vzroot.vzctl("run", "--rm", "--user", "nobody", "--", "sh", "-c", "id -un; echo $HOME")
    assert (done.code, done.out.split()[0]) == (0, "nobody"), done.err
    assert leftovers(vzroot) == []


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--ostemplate", "no-such-os", "--", "true"], 91, "no-such-os"),
        (["--from", "4242", "--", "true"], 14, "4242"),
        (["--from", "4242", "--ostemplate", "busybox", "--", "true"], 20, "--from"),
        (["--rm"], 20, "no command"),
        (["--rm", "--"], 20, "no command"),
        (["--network", "none", "--ipadd", "10.0.0.2", "--", "true"], 20, "--network none"),
        (["--timeout", "soon", "--", "true"], 21, "--timeout"),
        (["--user", "nosuchuser", "--rm", "--", "true"], 21, "nosuchuser"),
    ],
)
def test_bad_input_one_line_its_code_nothing_left(
    vzroot: VzRoot, args: list[str], code: int, words: str
) -> None:
    done = vzroot.vzctl("run", *args)
    assert done.code == code, done.err
    lines = [line for line in done.err.splitlines() if not line.startswith("vzctl run: CT ")]
    assert len(lines) == 1 and words in lines[0], done.err
    assert done.out == ""
    assert leftovers(vzroot) == []


def test_two_runs_at_once_get_two_ctids(vzroot: VzRoot) -> None:
    vzroot.ok("run", "--rm", "--", "true")  # the busybox tree is unpacked once, first
    procs = [start_run(vzroot, "--rm", "--", "sh", "-c", "sleep 1; hostname") for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    names = sorted(line for out in outs for line in out.splitlines() if line.startswith("ct"))
    assert names == [f"ct{FIRST}", f"ct{FIRST + 1}"], outs
    assert leftovers(vzroot) == []


def test_debian_without_and_with_boot(vzroot: VzRoot, debian_template: Path) -> None:
    recipe = "debian-12-x86_64-minimal"
    cache = vzroot.root / "var/lib/vz/template/cache"
    cache.mkdir(parents=True, exist_ok=True)
    for file in debian_template.iterdir():
        if file.name.startswith(recipe):
            shutil.copy2(file, cache / file.name)
    probe = "cat /etc/debian_version; cat /proc/1/comm"
    done = vzroot.vzctl("run", "--rm", "--ostemplate", recipe, "--", "sh", "-c", probe)
    assert done.code == 0, done.err
    version, init = done.out.split()
    assert version.startswith("12.") and init == "lxc-execute"  # LXC's small init: systemd did not boot
    done = vzroot.vzctl("run", "--rm", "--boot", "--ostemplate", recipe, "--", "sh", "-c", probe)
    assert done.code == 0, done.err
    assert done.out.split()[1] == "systemd"
    assert leftovers(vzroot) == []
