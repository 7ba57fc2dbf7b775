"""vzctl's everyday failures, byte for byte: the text, the stream and the exit code.

The expected output is fixtures/vzctl-messages.txt, written from vzctl 4.11's format strings
(its header says how to read it). The cases run against one CT taken through its states:
no config, stopped, mounted, running."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from tests.conftest import VzRoot

pytestmark = pytest.mark.root

FIXTURE = Path(__file__).parent / "fixtures" / "vzctl-messages.txt"
UUID = "0b5e8c5a-7f27-4f3a-9d1e-5c2b1a0f9e77"


class Case(NamedTuple):
    args: str
    code: int
    out: str
    err: str


def cases() -> dict[str, list[Case]]:
    states: dict[str, list[Case]] = {}
    current: list[Case] = []
    args, code, out, err = "", 0, "", ""

    def close() -> None:
        if args:
            current.append(Case(args, code, out, err))

    for line in FIXTURE.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line.startswith("["):
            close()
            args = ""
            current = states.setdefault(line.strip("[]"), [])
        elif line.startswith("$ "):
            close()
            args, code, out, err = line[2:], 0, "", ""
        elif line.startswith("? "):
            code = int(line[2:])
        elif line.startswith(("> ", "! ")):
            text = line[2:] + "\n"
            if line[0] == ">":
                out += text
            else:
                err += text
    close()
    return states


def check(vzroot: VzRoot, state: str, case: Case) -> None:
    values = {
        "{private}": str(vzroot.private_dir / "101"),
        "{conf}": str(vzroot.conf_dir / "101.conf"),
        "{uuid}": UUID,
    }

    def filled(text: str) -> str:
        for name, value in values.items():
            text = text.replace(name, value)
        return text

    args = filled(case.args).split()
    done = vzroot.vzctl(*args)
    got = (done.code, done.out, done.err)
    wanted = (case.code, filled(case.out), filled(case.err))
    assert got == wanted, f"[{state}] vzctl {' '.join(args)}"


def test_the_fixture_has_every_state() -> None:
    states = cases()
    assert set(states) == {"none", "stopped", "mounted", "running"}
    assert all(states.values())


def test_vzctl_says_what_vzctl_411_says(vzroot: VzRoot) -> None:
    states = cases()
    for case in states["none"]:
        check(vzroot, "none", case)
    (vzroot.conf_dir / "101.conf").unlink()  # the last case wrote one, as vzctl does
    vzroot.ok("create", "101")
    for case in states["stopped"]:
        check(vzroot, "stopped", case)
    vzroot.ok("mount", "101")
    for case in states["mounted"]:
        check(vzroot, "mounted", case)
    vzroot.ok("start", "101")
    try:
        for case in states["running"]:
            check(vzroot, "running", case)
    finally:
        vzroot.vzctl("stop", "101", "--fast")


def test_exec3_compact_and_snapshot_fields(vzroot: VzRoot) -> None:
    """vzctl 4.11's commands pyvz lacked: exec3 runs a program with no shell between."""
    vzroot.ok("create", "101")
    listed = vzroot.vzctl("snapshot-list", "101", "-L")
    assert listed.code == 0 and listed.out.splitlines()[0] == f"{'parent_uuid':<15} {'PARENT_UUID':<15}"
    vzroot.ok("start", "101")
    try:
        done = vzroot.vzctl("exec3", "101", "/bin/echo", "$HOME", "a;b")
        assert (done.code, done.out) == (0, "$HOME a;b\n")  # no shell: no expansion, no split
        assert vzroot.vzctl("exec3", "101", "/bin/sh", "-c", "exit 3").code == 3
        assert vzroot.vzctl("exec", "101", "echo", "$((1+2))").out == "3\n"  # exec: a shell line
    finally:
        vzroot.vzctl("stop", "101", "--fast")
