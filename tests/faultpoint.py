"""A vzctl command stopped at one of pyvz/faults.py's points, for the crash tests: the
point is armed through the root's .fault-point file, the command runs until it says it has
reached it, and the caller then kills or interrupts it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.conftest import REPO, VzRoot


def stopped_at(vzroot: VzRoot, point: str, how: signal.Signals, *args: str) -> None:
    """Run `vzctl ARGS` to `point`, then send it `how`: SIGKILL to its whole session (a
    kill -9, helpers included), anything else to the command alone (Ctrl-C is SIGINT)."""
    marker = vzroot.root / "var/lib/vz/.fault-point"
    marker.write_text(point)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyvz.cli.vzctl", *args],
        env=vzroot.env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    while f"fault point {point} reached" not in proc.stderr.readline():
        assert time.monotonic() < deadline and proc.poll() is None, "the point was never reached"
    marker.unlink()
    if how is signal.SIGKILL:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.send_signal(how)
    proc.wait(120)
    proc.stderr.close()
