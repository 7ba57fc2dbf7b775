"""vzubc on a real running CT: pyvz's own counters in vzubc 4.11's layout, the same table
from `vzubc -f` of the /proc/user_beancounters text pyvz writes, and -r/-i/-q against the
real failcnt and held of a CT whose process limit is hit."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pyvz.resources.ubcreport import human
from tests.conftest import VzRoot
from tests.integration.test_resources import cgroup_file, subtree_count

pytestmark = pytest.mark.root

HEADER = "CT 101       | HELD  Bar%  Lim%| MAXH  Bar%  Lim%| BAR | LIM | FAIL"
RELATIVE = "CT 101       | HELD  Bar%  Lim%| MAXH  Bar%  Lim%| BAR | LIM |+FAIL"
FORK_BOMB = "sh -c 'b() { b & b & }; b' 2>/dev/null; true"


def fork_bomb(vzroot: VzRoot) -> None:
    """Run into the process limit and wait until the bomb is over: each shell tries two
    forks and exits, and the CT's init reaps them (until then they count as held)."""
    before = subtree_count(vzroot, "pids", "pids.events", "max")
    vzroot.vzctl("exec", "101", FORK_BOMB, timeout=60)  # returns at once, the bomb goes on
    current = cgroup_file(vzroot, "pids", "pids.current")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if subtree_count(vzroot, "pids", "pids.events", "max") > before and int(current.read_text()) < 10:
            return
        time.sleep(0.1)
    raise AssertionError(f"the fork bomb did not end: {current.read_text().strip()} tasks")


def numproc_row(text: str) -> list[str]:
    """The numproc line's cells: name, held, bar%, lim%, maxheld, bar%, lim%, bar, lim, fail."""
    lines = [line for line in text.splitlines() if line.startswith("      numproc|")]
    assert len(lines) == 1, text
    return [cell for group in lines[0].split("|") for cell in group.split()]


def proc_failcnt(vzroot: VzRoot) -> int:
    done = vzroot.run("vzubc", "--proc", "101")
    assert done.code == 0, done.err
    for line in done.out.splitlines():
        parts = line.replace("101:", "").split()
        if parts and parts[0] == "numproc":
            return int(parts[5])
    raise AssertionError(done.out)


def test_vzubc_on_a_running_ct(vzroot: VzRoot, tmp_path: Path) -> None:
    vzroot.ok("create", "101", "--numproc", "64", "--name", "web")
    vzroot.ok("start", "101")
    plain = vzroot.run("vzubc", "web")  # a name, resolved as vzlist would
    assert (plain.code, plain.err) == (0, "")
    lines = plain.out.splitlines()
    assert lines[0] == lines[-1] == "-" * 68
    assert lines[1] == HEADER
    assert lines[2] == "-------------+-----------------+-----------------+-----+-----+------"
    # Only limited beancounters without -v: here numproc and the --ram/--swap pair at most.
    names = [line.split("|")[0].strip() for line in lines[3:-1]]
    assert "numproc" in names and "kmemsize" not in names
    assert set(names) <= {"numproc", "physpages", "swappages", "oomguarpages", "vmguarpages", "privvmpages"}
    assert numproc_row(plain.out)[7:10] == ["64", "64", "-"]  # barrier, limit; no failures yet

    # The /proc/user_beancounters text pyvz writes reads back through -f as the same table.
    text = vzroot.run("vzubc", "--proc", "101").out
    assert text.startswith("Version: 2.5\n")
    (tmp_path / "ubc").write_text(text)
    again = vzroot.run("vzubc", "-v", "-f", str(tmp_path / "ubc"))
    assert again.code == 0 and again.out == vzroot.run("vzubc", "-v", "-f", "-", input=text).out
    assert "    kmemsize|" in again.out and "  dgramrcvbuf|" in again.out  # -v: unlimited too
    # Without -v vzubc reads only the limited counters; the rows are those the report of
    # all of them shows (values move between two reads, the rows do not).
    every = vzroot.run("vzubc", "-f", str(tmp_path / "ubc")).out.splitlines()
    assert [row.split("|")[0] for row in every] == [row.split("|")[0] for row in lines]

    store = tmp_path / "store"
    first = vzroot.run("vzubc", "-r", "-i", "-rd", str(store), "101")
    assert first.code == 0, first.err
    assert first.out.splitlines()[1].startswith("CT 101       | HELD  +/-    Bar%")
    assert first.out.splitlines()[1].endswith("|+FAIL")
    assert (store / "ubc.101.numproc.held").read_text().strip().isdigit()

    # Hit the process limit: failcnt rises in the kernel's counter.
    fork_bomb(vzroot)
    failcnt = proc_failcnt(vzroot)
    assert failcnt > 0
    quiet = vzroot.run("vzubc", "-q", "101")
    assert quiet.code == 0
    assert numproc_row(quiet.out)[9] == human("", float(failcnt)).strip()  # a failure is never quiet
    relative = vzroot.run("vzubc", "-r", "-rd", str(store), "-q", "101")
    assert relative.out.splitlines()[1] == RELATIVE
    shown = numproc_row(relative.out)[9]
    assert shown == human("", float(failcnt)).strip()  # none saved before: all of it is new
    assert (store / "ubc.101.numproc.failcnt").read_text() == f"{failcnt}\n"
    # Nothing new since: -r -q at 100% (over 1 is a percentage) shows nothing at all.
    assert vzroot.run("vzubc", "-r", "-rd", str(store), "-q", "-qh", "100", "-qm", "100", "101").out == ""
    fork_bomb(vzroot)
    now = proc_failcnt(vzroot)
    assert now > failcnt
    new = vzroot.run("vzubc", "-r", "-rd", str(store), "-q", "-qh", "100", "-qm", "100", "101")
    assert numproc_row(new.out)[9] == human("", float(now - failcnt)).strip()
    assert [line.split("|")[0].strip() for line in new.out.splitlines()[3:-1]] == ["numproc"]
    # Unknown CTs are ignored, as the script ignores them.
    unknown = vzroot.run("vzubc", "4242")
    assert (unknown.code, unknown.out, unknown.err) == (0, "", "")
    vzroot.ok("stop", "--fast", "101")
    assert vzroot.run("vzubc", "101").out == ""  # a stopped CT has no beancounters
