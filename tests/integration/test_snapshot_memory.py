"""Snapshots of a running CT keep its memory: snapshot-switch resumes the CT's processes as
they were at the snapshot (same PIDs, the in-memory state of that moment)."""

from __future__ import annotations

import re
import time

import pytest

from tests.conftest import VzRoot

pytestmark = pytest.mark.root

UUID = "0a1b2c3d-1111-4222-8333-444455556666"
# A counter kept only in a shell variable: its value survives only if memory does.
COUNTER = (
    # The count is renamed into place: a reader never catches it truncated and empty.
    "sh -c 'echo $$ > /tmp/counter.pid; i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; "
    "mv /tmp/count.new /tmp/count; sleep 0.05; done' </dev/null >/dev/null 2>&1 &"
)


def counter(vzroot: VzRoot) -> tuple[int, int]:
    pid, count = vzroot.ok("exec", "101", "cat /tmp/counter.pid /tmp/count").split()
    return int(pid), int(count)


@pytest.mark.parametrize("layout", ["btrfs", "dir"])
def test_switch_resumes_the_memory_of_the_snapshot(vzroot: VzRoot, layout: str) -> None:
    vzroot.ok("create", "101", "--layout", layout)
    vzroot.ok("start", "101")
    vzroot.ok("exec", "101", COUNTER)
    time.sleep(0.5)
    before = counter(vzroot)[1]  # the snapshot's moment comes after this
    out = vzroot.ok("snapshot", "101", "--id", UUID, "--name", "warm")
    assert "memory and processes are saved" in out
    pid, at_snapshot = counter(vzroot)
    time.sleep(2.0)
    later = counter(vzroot)[1]
    assert later > at_snapshot + 5  # it went on counting after the snapshot
    out = vzroot.ok("snapshot-switch", "101", "--id", UUID, "--must-resume")
    assert "Restoring completed" in out
    resumed_pid, resumed = counter(vzroot)
    assert resumed_pid == pid  # the same process, not a fresh boot
    # It counts on from the snapshot's moment, which lies after `before`, and had counted
    # a little further by the time `vzctl exec` read it (how much further depends on the
    # machine's load, so the count read just after the snapshot is no bound), but not as
    # far as it had 2 s after the snapshot.
    assert before <= resumed < later
    time.sleep(0.3)
    assert counter(vzroot)[1] > resumed  # and it goes on from there
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist mounted running"


def test_a_snapshot_without_memory_refuses_must_resume(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101")
    vzroot.ok("snapshot", "101", "--id", UUID)  # of a stopped CT: files only
    vzroot.ok("start", "101")
    done = vzroot.vzctl("snapshot-switch", "101", "--id", UUID, "--must-resume")
    assert done.code == 159, done  # vzctl: VZCTL_E_SWITCH_SNAPSHOT
    assert len([line for line in done.err.splitlines() if line.strip()]) == 1
    assert re.search(r"no memory state", done.err)
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist mounted running"
