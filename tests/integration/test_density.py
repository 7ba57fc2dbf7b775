"""Density at a size CI can afford (issue 15, item 6; the full 2000 is `make bench`'s
density row): 300 idle busybox CTs run at once on one host, each started the ordinary way,
all listed as running, each sampled one answering; then all stopped and destroyed, and
nothing of theirs is left (the root's fixture checks mounts, loops and cgroups too)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from pyvz.paths import Paths
from pyvz.resources.cgroups import detect
from tests.conftest import VzRoot

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

COUNT = 300
FIRST = 3001


def in_parallel(vzroot: VzRoot, command: str, ctids: list[int], *extra: str) -> None:
    def one(ctid: int) -> None:
        vzroot.ok(command, *extra, str(ctid))

    with ThreadPoolExecutor(2) as pool:  # two cores: more would only queue
        list(pool.map(one, ctids))


def test_300_idle_cts_run_at_once_and_leave_nothing(vzroot: VzRoot) -> None:
    ctids = list(range(FIRST, FIRST + COUNT))
    in_parallel(vzroot, "create", ctids)
    in_parallel(vzroot, "start", ctids)
    listed = vzroot.vzlist("-H", "-o", "ctid,status")
    assert listed.code == 0, listed
    rows = {int(line.split()[0]): line.split()[1] for line in listed.out.splitlines()}
    assert rows == {ctid: "running" for ctid in ctids}
    for ctid in ctids[::30]:  # every 30th answers an exec
        assert vzroot.ok("exec", str(ctid), "echo up").strip() == "up"
    in_parallel(vzroot, "stop", ctids, "--fast")
    in_parallel(vzroot, "destroy", ctids)
    assert vzroot.vzlist("-a", "-H").out.strip() == ""
    assert not list(vzroot.conf_dir.glob("3???.conf"))
    # No CT's cgroup is left below the root's own, in any hierarchy.
    tag = Paths(vzroot.root).tag
    left = [sub for top in detect().dirs(tag) for sub in top.iterdir() if sub.is_dir()]
    assert not left, left[:5]
