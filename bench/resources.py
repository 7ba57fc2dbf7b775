"""Resource benchmarks (issue 4): vzubc over 100 running CTs, vzlist with beancounter fields
vs lxc-ls -f, and CPU-bound work inside a CT vs on the host."""

from __future__ import annotations

import re
import subprocess
import time
from typing import TYPE_CHECKING

from bench.harness import VENV_BIN, VZCTL, VZLIST, Row, alternate, log

if TYPE_CHECKING:
    from bench.cases import Context

VZUBC = str(VENV_BIN / "vzubc")
UBC_RUNNING = 100
CPU_CT = 9301
# The same busybox binary runs the same loop on the host and in the CT (the CT's /bin/busybox
# is the host's busybox-static); `time` inside each reports the loop's own wall time, so the
# cost of entering the CT is not part of the comparison.
CPU_WORK = "busybox time busybox awk 'BEGIN{for(i=0;i<3000000;i++)s+=i*i; print s}'"
_REAL = re.compile(r"real\s+(\d+)m\s*([\d.]+)s")


def _fleet_of_100(ctx: Context) -> list[int]:
    """The 200-CT fleet of the vzlist benchmark, with its first 100 running."""
    from bench.cases import _fleet

    fleet = _fleet(ctx)
    first = fleet[0]
    wanted = list(range(first, first + UBC_RUNNING))
    for ctid in wanted[len(fleet) :]:
        if ctx.vz.status(ctid).endswith("down"):
            ctx.vz.vzctl("--quiet", "start", str(ctid))
    log(f"resources: {UBC_RUNNING} CTs running")
    return wanted


def bench_vzubc(ctx: Context) -> list[Row]:
    vz = ctx.vz
    running = _fleet_of_100(ctx)
    out = vz.run([VZUBC, "-v"]).stdout
    shown = out.count("\nCT ")
    if shown != len(running):
        raise RuntimeError(f"vzubc -v showed {shown} CTs, {len(running)} are running")
    times = [vz.timed([VZUBC]) for _ in range(ctx.n.vzlist)]
    return [
        Row(
            f"vzubc ({len(running)} running CTs)",
            "abs",
            "≤ 500 ms",
            times,
            limit=0.5,
            notes={"pyvz": "vzubc", "cts_shown_by_vzubc_-v": shown},
        )
    ]


def bench_vzlist_ubc(ctx: Context) -> list[Row]:
    vz = ctx.vz
    running = _fleet_of_100(ctx)
    ours_argv = [VZLIST, "-a", "-o", "ctid,physpages,numproc.f"]
    peer_argv = ["lxc-ls", "-P", vz.lxcpath, "-f"]
    rows = vz.run(ours_argv).stdout.splitlines()[1:]
    counted = [line for line in rows if line.split()[1] != "-"]
    if len(counted) != len(running):
        raise RuntimeError(f"vzlist shows physpages for {len(counted)} CTs; {len(running)} are running")
    a, b = alternate(ctx.n.vzlist, lambda: vz.timed(ours_argv), lambda: vz.timed(peer_argv), "vzlist-ubc")
    return [
        Row(
            f"vzlist -a -o ctid,physpages,numproc.f ({len(rows)} CTs, {len(running)} running) vs lxc-ls -f",
            "ratio",
            "≤ 1.0×",
            a,
            b,
            limit=1.0,
            notes={"pyvz": " ".join(ours_argv), "peer": " ".join(peer_argv)},
        )
    ]


def _real_seconds(stderr: str) -> float:
    match = _REAL.search(stderr)
    if not match:
        raise RuntimeError(f"no `real` time in: {stderr!r}")
    return int(match.group(1)) * 60 + float(match.group(2))


def bench_cpu(ctx: Context) -> list[Row]:
    vz = ctx.vz
    ct = str(CPU_CT)
    if not vz.paths.conf_file(CPU_CT).exists():
        vz.vzctl("--quiet", "create", ct)
    if vz.status(CPU_CT).endswith("down"):
        vz.vzctl("--quiet", "start", ct)
        time.sleep(0.5)

    def in_ct() -> float:
        return _real_seconds(vz.run([VZCTL, "exec", ct, CPU_WORK]).stderr)

    def on_host() -> float:
        done = subprocess.run(["sh", "-c", CPU_WORK], capture_output=True, text=True, check=True)
        return _real_seconds(done.stderr)

    in_ct(), on_host()  # warm-up
    try:
        a, b = alternate(ctx.n.exec // 3 + 2, in_ct, on_host, "cpu")
    finally:
        vz.vzctl("--quiet", "stop", "--fast", ct, check=False)
    return [
        Row(
            "CPU-bound loop (busybox awk, 3M iterations) in a CT vs on the host",
            "ratio",
            "≤ 1.03×",
            a,
            b,
            limit=1.03,
            notes={"work": CPU_WORK, "timer": "busybox time, inside the CT and on the host (10 ms steps)"},
        )
    ]
