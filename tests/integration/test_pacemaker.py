"""Pacemaker's OpenVZ resource agent, ocf:heartbeat:ManageVE (Debian's resource-agents), as
it is, against pyvz's vzctl (issue 14 item 7): validate, monitor, start, stop, and a
migration through chkpnt and restore (migrate_to on the source, migrate_from on the target;
one root here stands in for the shared storage the two nodes would have)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import Done, VzRoot

pytestmark = pytest.mark.root

AGENT = Path("/usr/lib/ocf/resource.d/heartbeat/ManageVE")
OCF_SUCCESS, OCF_ERR_GENERIC, OCF_NOT_RUNNING = 0, 1, 7


def ocf(vzroot: VzRoot, action: str, veid: str = "101") -> Done:
    env = {**vzroot.env, "OCF_ROOT": "/usr/lib/ocf", "OCF_RESKEY_veid": veid, "__OCF_ACTION": action}
    done = subprocess.run([str(AGENT), action], env=env, capture_output=True, text=True, timeout=180)
    return Done(done.returncode, done.stdout, done.stderr)


def test_the_resource_agent_runs_a_ct_and_migrates_it_through_a_checkpoint(vzroot: VzRoot) -> None:
    assert AGENT.exists(), "make installs Debian's resource-agents"
    assert Path("/usr/sbin/vzctl").resolve() == Path("/usr/local/sbin/vzctl").resolve()
    vzroot.ok("create", "101")
    assert ocf(vzroot, "validate-all").code == OCF_SUCCESS
    assert ocf(vzroot, "monitor").code == OCF_NOT_RUNNING
    started = ocf(vzroot, "start")
    assert started.code == OCF_SUCCESS, started
    assert ocf(vzroot, "monitor").code == OCF_SUCCESS
    assert ocf(vzroot, "start").code == OCF_SUCCESS  # already running: fine, as the agent says
    vzroot.ok("exec", "101", "sleep 1000 >/dev/null 2>&1 </dev/null & echo $! > /tmp/pid")
    pid = vzroot.ok("exec", "101", "cat /tmp/pid").strip()

    moved_out = ocf(vzroot, "migrate_to")
    assert moved_out.code == OCF_SUCCESS, moved_out
    assert ocf(vzroot, "monitor").code == OCF_NOT_RUNNING
    assert vzroot.ok("status", "101").split()[5] == "suspended"
    moved_in = ocf(vzroot, "migrate_from")
    assert moved_in.code == OCF_SUCCESS, moved_in
    assert ocf(vzroot, "monitor").code == OCF_SUCCESS
    assert (
        vzroot.ok("exec", "101", f"test -d /proc/{pid} && echo same").strip() == "same"
    )  # restored, not rebooted

    stopped = ocf(vzroot, "stop")
    assert stopped.code == OCF_SUCCESS, stopped
    assert ocf(vzroot, "monitor").code == OCF_NOT_RUNNING
    assert ocf(vzroot, "stop").code == OCF_SUCCESS  # stopping a stopped CT succeeds
    assert ocf(vzroot, "monitor", "999").code == OCF_NOT_RUNNING  # no such CT: not running
