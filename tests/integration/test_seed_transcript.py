"""The seed transcript (001_*.txt, "Basic Setup" and "Basic Commands"), on busybox."""

from __future__ import annotations

import re
import warnings

import pytest

from tests.conftest import VzRoot

pytestmark = pytest.mark.root

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt


def test_seed_transcript(vzroot: VzRoot) -> None:
    # 1-4: create
    out = vzroot.ok("create", "101", "--config", "basic", "--ostemplate", "busybox")
    assert out.splitlines() == [
        "Creating container private area (busybox)",
        "Performing postcreate actions",
        "Saved parameters for CT 101",
        "Container private area was created",
    ]
    # 5-7: hostname and name
    out = vzroot.ok("set", "101", "--hostname", "wks-ve1", "--name", "stable", "--save")
    assert out.splitlines() == ["Name stable assigned", "Saved parameters for CT 101"]
    assert (vzroot.root / "etc/vz/names/stable").resolve() == (vzroot.conf_dir / "101.conf").resolve()
    # 12: a user and password, applied to the CT's files, never saved in the config
    vzroot.ok("set", "stable", "--userpasswd", "sa:xxxxxxxxxxxxxxx")
    shadow = (vzroot.private_dir / "101/etc/shadow").read_text()
    hashed = next(line.split(":")[1] for line in shadow.splitlines() if line.startswith("sa:"))
    assert crypt.crypt("xxxxxxxxxxxxxxx", hashed) == hashed
    assert "xxxxxxxxxxxxxxx" not in (vzroot.conf_dir / "101.conf").read_text()
    # 19-20: onboot
    assert vzroot.ok("set", "stable", "--onboot", "no", "--save").splitlines() == [
        "Saved parameters for CT 101"
    ]
    assert 'ONBOOT="no"' in (vzroot.conf_dir / "101.conf").read_text()
    # 21-29: start
    out = vzroot.ok("start", "stable")
    assert out.splitlines() == [
        "Starting container...",
        "Container is mounted",
        "Set hostname: wks-ve1",
        "File resolv.conf was modified",  # NAMESERVER=inherit in vz.conf
        "Container start in progress...",
    ]
    # 30-35: vzlist -a and -an. The transcript is vzctl 3.0's (VEID, STATUS in 7, -n putting
    # NAME last); these are vzlist 4.11's columns: CTID, STATUS in 9, -n's SMARTNAME first.
    lines = vzroot.vzlist("-a").out.splitlines()
    assert lines[0] == "      CTID      NPROC STATUS    IP_ADDR         HOSTNAME"
    assert re.fullmatch(r"       101 {1,10}\d+ running   -               wks-ve1", lines[1]), lines[1]
    lines = vzroot.vzlist("-an").out.splitlines()
    assert lines[0] == " SMARTNAME      NPROC STATUS    IP_ADDR         HOSTNAME"
    assert re.fullmatch(r"    stable {1,10}\d+ running   -               wks-ve1", lines[1]), lines[1]
    # exec and enter-like commands
    assert vzroot.ok("exec", "stable", "hostname").strip() == "wks-ve1"
    out = vzroot.ok("exec", "stable", "whoami; pwd; cat /etc/os-release")
    assert out.splitlines()[:2] == ["root", "/"]
    assert "ID=busybox" in out
    assert vzroot.ok("status", "stable").strip() == "CTID 101 exist mounted running"
    # stop and destroy
    assert vzroot.ok("stop", "stable").splitlines() == [
        "Stopping container ...",
        "Container was stopped",
        "Container is unmounted",
    ]
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist unmounted down"
    out = vzroot.ok("destroy", "stable")
    assert out.splitlines()[-1] == "Container private area was destroyed"
    assert vzroot.ok("status", "101").strip() == "CTID 101 deleted unmounted down"
    assert not (vzroot.root / "etc/vz/names/stable").exists()
    assert not (vzroot.private_dir / "101").exists()
