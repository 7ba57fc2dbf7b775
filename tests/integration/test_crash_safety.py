"""kill -9 at any point of create or destroy: the CT is as it was or complete, status tells
the truth, and destroy cleans up whatever is left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, VzRoot

pytestmark = pytest.mark.root

STEPS = 12


def spread(vzroot: VzRoot, *args: str) -> list[float]:
    """Kill times spread evenly over one uninterrupted run of the same command."""
    start = time.monotonic()
    vzroot.ok(*args)
    duration = time.monotonic() - start
    return [duration * i / STEPS for i in range(STEPS + 1)]


def killed_after(vzroot: VzRoot, delay: float, *args: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyvz.cli.vzctl", *args],
        env=vzroot.env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.3)  # let a btrfs or tar the kill orphaned finish


def leftovers(vzroot: VzRoot, ctid: int) -> list[str]:
    private = list(vzroot.private_dir.iterdir()) if vzroot.private_dir.exists() else []
    found = [p.name for p in private if p.name.lstrip(".").split(".")[0] == str(ctid)]
    found += [p.name for p in vzroot.conf_dir.glob(f"{ctid}.conf")]
    found += [
        p.name for p in (vzroot.root / "etc/vz/names").iterdir() if os.readlink(p) == f"../conf/{ctid}.conf"
    ]
    return found


def check_truthful_then_clean(vzroot: VzRoot, ctid: int) -> str:
    status = vzroot.ok("status", str(ctid)).strip()
    if status.startswith(f"CTID {ctid} exist"):
        # It says it exists: then it must work.
        vzroot.ok("start", str(ctid))
        assert vzroot.ok("exec", str(ctid), "cat /etc/os-release").count("ID=busybox") == 1
        vzroot.ok("stop", "--fast", str(ctid))
    else:
        assert status == f"CTID {ctid} deleted unmounted down"
        done = vzroot.vzctl("start", str(ctid))
        assert done.code in (14, 43), done.err  # not a half-made CT that tries to boot
    done = vzroot.vzctl("destroy", str(ctid))
    # 14: nothing of the CT was left to destroy (vzctl's "Container config file does not exist")
    assert done.code in (0, 14, 43), done.err
    assert vzroot.ok("status", str(ctid)).strip() == f"CTID {ctid} deleted unmounted down"
    assert leftovers(vzroot, ctid) == []
    return status.split()[2]


def test_kill_during_create(vzroot: VzRoot) -> None:
    vzroot.ok("create", "150")  # the pool and the template tree exist from here on
    delays = spread(vzroot, "create", "151", "--name", "n151", "--hostname", "crash")
    seen = set()
    for index, delay in enumerate(delays):
        ctid = 101 + index
        killed_after(vzroot, delay, "create", str(ctid), "--name", f"n{ctid}", "--hostname", "crash")
        seen.add(check_truthful_then_clean(vzroot, ctid))
        vzroot.ok("create", str(ctid), "--name", f"n{ctid}")  # the id and name are free again
    assert "deleted" in seen  # at least the earliest kill landed before completion


def test_kill_during_first_create_with_template_unpack(vzroot: VzRoot) -> None:
    for index, delay in enumerate([0.15, 0.3, 0.5]):
        ctid = 120 + index
        killed_after(vzroot, delay, "create", str(ctid))
        check_truthful_then_clean(vzroot, ctid)
    vzroot.ok("create", "130")
    vzroot.ok("start", "130")
    vzroot.ok("stop", "--fast", "130")


def test_kill_during_destroy(vzroot: VzRoot) -> None:
    vzroot.ok("create", "150", "--name", "d150")
    delays = spread(vzroot, "destroy", "150")
    seen = set()
    for index, delay in enumerate(delays):
        ctid = 101 + index
        vzroot.ok("create", str(ctid), "--name", f"d{ctid}")
        killed_after(vzroot, delay, "destroy", str(ctid))
        seen.add(check_truthful_then_clean(vzroot, ctid))
    assert "exist" in seen  # the earliest kill landed before destroy did anything


def test_ctrl_c_during_create_takes_everything_back(vzroot: VzRoot) -> None:
    vzroot.ok("create", "150")
    delays = spread(vzroot, "create", "151", "--name", "n151")
    for index, delay in enumerate(delays):
        ctid = 101 + index
        proc = subprocess.Popen(
            [sys.executable, "-m", "pyvz.cli.vzctl", "create", str(ctid), "--name", f"c{ctid}"],
            env=vzroot.env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
        status = vzroot.ok("status", str(ctid)).strip()
        if proc.returncode == 0 or status.startswith(f"CTID {ctid} exist"):
            # Finished before the interrupt (or at its very end): a complete CT.
            assert status == f"CTID {ctid} exist unmounted down", err
            vzroot.ok("destroy", str(ctid))
        else:
            # Interrupted: nothing of it is left, without needing a destroy.
            assert status == f"CTID {ctid} deleted unmounted down"
            assert leftovers(vzroot, ctid) == [], err
