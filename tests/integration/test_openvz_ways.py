"""What scripts written for OpenVZ's vzctl 4.11 rely on, checked against the behaviour of
its sources (src/vzctl.c, src/lib/create.c, src/lib/config.c): a config written before the
CT, a create that takes it, a name removed with `--name ''`, vzctl's option forms, a
script run in a stopped CT."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import VzRoot

pytestmark = pytest.mark.root


def test_set_save_writes_a_config_that_create_then_uses(vzroot: VzRoot) -> None:
    conf = vzroot.conf_dir / "101.conf"
    ahead = vzroot.vzctl("set", "101", "--numproc", "300", "--hostname", "early", "--save")
    assert ahead.code == 0, ahead
    assert ahead.err == f"WARNING: {conf} not found: No such file or directory\n", ahead.err
    assert "Saved parameters for CT 101" in ahead.out
    assert 'NUMPROC="300"' in conf.read_text()  # vzctl's form: one number for barrier = limit
    assert vzroot.ok("status", "101").strip() == "CTID 101 deleted unmounted down"

    # A --config sample cannot apply to a config that is there: vzctl's 82, nothing changed.
    before = conf.read_text()
    sampled = vzroot.vzctl("create", "101", "--config", "basic")
    assert sampled.code == 82, sampled
    assert "already exists, can not use --config" in sampled.err
    assert conf.read_text() == before and not (vzroot.private_dir / "101").exists()

    made = vzroot.vzctl("create", "101")
    assert made.code == 0, made
    assert "not applying a default config sample" in made.out
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist unmounted down"
    text = conf.read_text()
    assert 'HOSTNAME="early"' in text and "NUMPROC=" in text and "OSTEMPLATE=" in text
    vzroot.ok("start", "101")
    assert vzroot.ok("exec", "101", "hostname").strip() == "early"
    vzroot.ok("stop", "--fast", "101")


def test_a_failed_create_keeps_the_config_that_was_there(vzroot: VzRoot) -> None:
    conf = vzroot.conf_dir / "101.conf"
    vzroot.ok("set", "101", "--hostname", "kept", "--save")
    before = conf.read_text()
    failed = vzroot.vzctl("create", "101", "--ostemplate", "no-such-template")
    assert failed.code != 0, failed
    assert conf.read_text() == before
    assert not (vzroot.private_dir / "101").exists()


def test_set_without_save_on_a_ct_without_config_changes_nothing(vzroot: VzRoot) -> None:
    done = vzroot.vzctl("set", "101", "--numproc", "300")
    assert done.code == 14, done
    assert not (vzroot.conf_dir / "101.conf").exists()


def test_name_given_as_empty_removes_it(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101", "--name", "web")
    link = vzroot.root / "etc/vz/names/web"
    assert os.path.islink(link)
    done = vzroot.vzctl("set", "101", "--name", "", "--save")
    assert done.code == 0, done
    assert "Name  assigned" in done.out  # vzctl's words, two blanks and all
    assert not os.path.lexists(link)
    assert vzroot.vzctl("status", "web").code != 0
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist unmounted down"
    vzroot.ok("set", "101", "--name", "web2", "--save")  # and a new one can come
    assert os.path.islink(vzroot.root / "etc/vz/names/web2")


def test_vzctl_option_forms_on_a_real_ct(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101")
    assert vzroot.vzctl("set", "101", "-p", "321", "--save").code == 0
    assert vzroot.vzctl("set", "101", "--numfi", "4321", "--save").code == 0  # --numfile
    vzroot.ok("set", "101", "--tcpsndbuf", "unlimited", "--numtcpsock", "10:unlimited", "--save")
    text = (vzroot.conf_dir / "101.conf").read_text()
    assert 'NUMPROC="321"' in text and 'NUMFILE="4321"' in text
    assert 'TCPSNDBUF="unlimited"' in text and 'NUMTCPSOCK="10:unlimited"' in text
    ambiguous = vzroot.vzctl("set", "101", "--num", "5", "--save")
    assert ambiguous.code == 21, ambiguous
    assert (vzroot.conf_dir / "101.conf").read_text() == text
    assert vzroot.vzctl("set", "101", "--bogus", "1").code == 21
    assert vzroot.vzctl("start", "101", "--bogus").code == 20


def test_runscript_on_a_stopped_ct_runs_in_its_environment(vzroot: VzRoot, tmp_path: Path) -> None:
    """vzctl 4.11 (vps_run_script): a stopped CT is mounted, the script runs inside it with
    no init, and the CT is down and unmounted again after; its exit code is the command's."""
    vzroot.ok("create", "101")
    script = tmp_path / "fix.sh"
    script.write_text(
        "#!/bin/sh\n"
        'echo "uid $(id -u) in $(cat /etc/os-release 2>/dev/null | head -n 1 || echo busybox)"\n'
        "echo repaired > /root/repaired\n"
        'echo "uid_map $(cat /proc/self/uid_map)"\n'
        "echo to stderr >&2\n"
        "exit 5\n"
    )
    done = vzroot.vzctl("runscript", "101", str(script))
    assert done.code == 5, done
    assert "uid 0 in" in done.out and "to stderr" in done.err
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist unmounted down"
    written = vzroot.private_dir / "101/root/repaired"
    assert written.read_text() == "repaired\n"
    # Owned as the CT's root's own files are, and the script ran in the CT's user namespace.
    assert written.stat().st_uid == (vzroot.private_dir / "101/root").stat().st_uid
    local_uid = re.search(r'^LOCAL_UID="?(\d+)', (vzroot.conf_dir / "101.conf").read_text(), re.M)
    assert local_uid and f"uid_map 0 {local_uid[1]} 65536" in " ".join(done.out.split()), done.out
    assert not (vzroot.root / "var/lib/vz/lock/101.lck").exists()
    vzroot.ok("start", "101")  # and it starts as ever
    assert vzroot.ok("exec", "101", "cat /root/repaired").strip() == "repaired"
    vzroot.ok("stop", "--fast", "101")
