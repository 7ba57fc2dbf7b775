"""What LXCFS costs (issue 12).

lxcfs-start  `vzctl start N` of a busybox CT with LXCFS=yes vs the same CT with LXCFS=no in
             vz.conf (no LXCFS binds in its LXC config), alternately; each ended untimed with
             `vzctl stop --fast`.
lxcfs-free   procps `free` as the CT runs it vs on the host. busybox's free asks sysinfo(2),
             which LXCFS cannot change, so the host's procps free is run the way a Debian CT
             runs it: in the CT's memory cgroup with LXCFS's meminfo bound over /proc/meminfo
             (a private mount namespace), 200 runs timed by GNU date around the loop; the peer
             is the same loop in a host shell. The CT's `free -m` total is recorded.
"""

from __future__ import annotations

import subprocess
import time
from typing import TYPE_CHECKING

from bench.harness import VZCTL, Row, alternate

if TYPE_CHECKING:
    from bench.cases import Context

LXCFS_CT = 9801
RUNS = 200
_LOOP = (
    f"s=$(date +%s%N); for i in $(seq {RUNS}); do free >/dev/null; done; "
    f"e=$(date +%s%N); echo $(((e-s)/{RUNS}))"
)


def _lxcfs_setting(ctx: Context, value: str) -> None:
    conf = ctx.vz.root / "etc/vz/vz.conf"
    lines = [line for line in conf.read_text().splitlines() if not line.startswith("LXCFS=")]
    conf.write_text("\n".join([*lines, f"LXCFS={value}"]) + "\n")


def bench_lxcfs_start(ctx: Context) -> list[Row]:
    vz = ctx.vz
    ct = str(LXCFS_CT)
    vz.vzctl("create", ct, "--ram", "256M")

    def started(value: str) -> float:
        _lxcfs_setting(ctx, value)
        elapsed = vz.timed([VZCTL, "start", ct])
        vz.vzctl("stop", "--fast", ct)
        return elapsed

    try:
        started("yes"), started("no")  # warm-up
        a, b = alternate(ctx.n.start, lambda: started("yes"), lambda: started("no"), "lxcfs-start")
    finally:
        _lxcfs_setting(ctx, "yes")
        vz.settle(LXCFS_CT)
        vz.vzctl("destroy", ct)
    return [
        Row(
            "start (busybox CT) with LXCFS vs without",
            "diff",
            "≤ peer + 10 ms",
            a,
            b,
            limit=10.0,
            notes={"pyvz": f"vzctl start {ct} (LXCFS=yes)", "peer": f"vzctl start {ct} (LXCFS=no)"},
        )
    ]


def bench_lxcfs_free(ctx: Context) -> list[Row]:
    from pyvz.resources.cgroups import CtCgroups, detect

    vz = ctx.vz
    ct = str(LXCFS_CT + 1)
    vz.vzctl("create", ct, "--ram", "256M")
    vz.vzctl("start", ct)
    memory = detect().file_path(CtCgroups.of(vz.paths.tag, int(ct)).container, "memory.limit_in_bytes").parent
    inside = (
        f"echo $$ > {memory}/cgroup.procs && "
        "mount --bind /var/lib/lxcfs/proc/meminfo /proc/meminfo && "
        'if [ "$1" = total ]; then free -m; else ' + _LOOP + "; fi"
    )

    def run(argv: list[str]) -> float:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
        return int(done.stdout.split()[-1]) / 1e9

    ours_argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", inside, "sh", "loop"]
    try:
        total = subprocess.run([*ours_argv[:-1], "total"], capture_output=True, text=True, check=True).stdout
        mem_total = int(total.splitlines()[1].split()[1])
        run(ours_argv), run(["sh", "-c", _LOOP])  # warm-up
        a, b = alternate(
            max(5, ctx.n.start // 2), lambda: run(ours_argv), lambda: run(["sh", "-c", _LOOP]), "free"
        )
    finally:
        vz.vzctl("stop", "--fast", ct)
        time.sleep(0.2)
        vz.vzctl("destroy", ct)
    return [
        Row(
            "free in a CT (LXCFS meminfo) vs on the host",
            "ratio",
            "≤ 2×",
            a,
            b,
            limit=2.0,
            notes={"free -m total inside, MB": mem_total, "runs per sample": RUNS},
        )
    ]
