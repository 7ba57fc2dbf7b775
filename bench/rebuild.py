"""vzctl rebuild (issue 15, item 2) of a running busybox CT against the manual way the seeds
script it: stop, destroy, create and start again (which keeps nothing: no config edits, no
kept paths, no old system to go back to)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from bench.harness import Row, alternate

if TYPE_CHECKING:
    from bench.cases import Context

REBUILT_CT = 9511
MANUAL_CT = 9512


def _ensure_running(ctx: Context, ctid: int) -> None:
    vz = ctx.vz
    if not vz.paths.conf_file(ctid).exists():
        vz.vzctl("--quiet", "create", str(ctid), "--ostemplate", "busybox")
    if vz.status(ctid).endswith("down"):
        vz.vzctl("--quiet", "start", str(ctid))


def _rebuild(ctx: Context) -> float:
    """One timed `vzctl rebuild` of the running CT with one kept path; running again after."""
    vz = ctx.vz
    _ensure_running(ctx, REBUILT_CT)
    vz.vzctl("exec", str(REBUILT_CT), "mkdir -p /root/.ssh && echo key > /root/.ssh/authorized_keys")
    start = time.perf_counter()
    vz.vzctl("--quiet", "rebuild", str(REBUILT_CT), "--keep", "/root/.ssh")
    elapsed = time.perf_counter() - start
    if not vz.status(REBUILT_CT).endswith("running"):
        raise RuntimeError(f"CT {REBUILT_CT} is not running after rebuild")
    return elapsed


def _manual(ctx: Context) -> float:
    vz = ctx.vz
    _ensure_running(ctx, MANUAL_CT)
    ctid = str(MANUAL_CT)
    start = time.perf_counter()
    vz.vzctl("--quiet", "stop", ctid)
    vz.vzctl("--quiet", "destroy", ctid)
    vz.vzctl("--quiet", "create", ctid, "--ostemplate", "busybox")
    vz.vzctl("--quiet", "start", ctid)
    return time.perf_counter() - start


def bench_rebuild(ctx: Context) -> list[Row]:
    n = 5 if ctx.n.create < 10 else 11
    _rebuild(ctx), _manual(ctx)  # warm-up: the template tree is unpacked once
    ours, peer = alternate(n, lambda: _rebuild(ctx), lambda: _manual(ctx), "rebuild")
    for ctid in (REBUILT_CT, MANUAL_CT):
        ctx.vz.vzctl("--quiet", "stop", "--fast", str(ctid), check=False)
        ctx.vz.vzctl("--quiet", "destroy", str(ctid), check=False)
    return [
        Row(
            "vzctl rebuild of a running busybox CT (--keep /root/.ssh) vs stop + destroy + create + start",
            "ratio",
            "≤ 1.0× (and it keeps config, paths and the old system)",
            ours,
            peer,
            limit=1.0,
            notes={
                "pyvz": f"vzctl rebuild {REBUILT_CT} --keep /root/.ssh (clean stop, snapshot, swap, start)",
                "peer": f"vzctl stop/destroy/create --ostemplate busybox/start {MANUAL_CT}",
            },
        )
    ]
