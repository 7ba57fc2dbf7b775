"""LXC's command socket lives in the network namespace a CT was started from; pyvz must
still reach the CT from elsewhere. And start --wait returns only once the CT has booted."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import REPO, VzRoot
from tests.parallel import unique_name

pytestmark = pytest.mark.root


@pytest.fixture
def netns() -> Iterator[str]:
    name = unique_name("pyvz-ns")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def test_ct_started_in_another_netns_is_reachable(vzroot: VzRoot, netns: str) -> None:
    vzroot.ok("create", "101", "--hostname", "elsewhere")
    started = subprocess.run(
        # nsenter switches only the network namespace (ip netns exec would also hide /sys).
        ["nsenter", f"--net=/run/netns/{netns}", sys.executable, "-m", "pyvz.cli.vzctl", "start", "101"],
        env=vzroot.env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert started.returncode == 0, started.stderr
    # From the host's own network namespace:
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist mounted running"
    assert vzroot.ok("exec", "101", "hostname").strip() == "elsewhere"
    vzroot.ok("stop", "101")
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist unmounted down"


def test_start_refuses_without_cgroups_visible(vzroot: VzRoot, netns: str) -> None:
    # `ip netns exec` mounts a fresh /sys, hiding the cgroup hierarchies: a CT started
    # there would run without limits and be invisible to every later command.
    vzroot.ok("create", "101")
    started = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-m", "pyvz.cli.vzctl", "start", "101"],
        env=vzroot.env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert started.returncode == 3, started.stderr
    assert "cgroup" in started.stderr and len(started.stderr.strip().splitlines()) == 1
    assert vzroot.ok("status", "101").strip() == "CTID 101 exist unmounted down"


def test_start_wait_returns_after_boot(vzroot: VzRoot) -> None:
    vzroot.ok("create", "101")
    out = vzroot.ok("start", "101", "--wait")
    assert out.splitlines()[-1] == "Container boot complete"
    # rcS touches this as the last step of booting.
    assert (
        vzroot.ok("exec2", "101", "test -e /run/boot-complete && pidof syslogd >/dev/null && echo up").strip()
        == "up"
    )
    vzroot.ok("stop", "--fast", "101")
