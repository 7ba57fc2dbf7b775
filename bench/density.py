"""Density (issue 15): how many idle busybox CTs this host runs, and what listing and
beancounters cost at that count.

A root of its own (the other benchmarks' fleet stays as it is): COUNT CTs created two at a
time from the vswap-256m sample (a memory and swap limit each, as on a hosting node), then
started one after another until all run or one fails (the failure, if any, is the result:
its one line is kept in the notes). Then, with all of them running: `vzlist -a`
and `vzubc` timed (median of 5), and the host memory of each CT outside its cgroup (its LXC
monitor's private memory, as the memory benchmark measures it) for a sample of 50. The
anchors have no run here: OpenVZ's "several hundreds" per host and LXD's 384 on ZFS are
figures from the seeds and the issue.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from bench.harness import VZCTL, VZLIST, BenchRoot, Row, log
from bench.resources import VZUBC

if TYPE_CHECKING:
    from bench.cases import Context

COUNT = 2000
QUICK_COUNT = 300
FIRST = 20001
SAMPLE = "vswap-256m"  # limits as a hosting admin sets them: vzubc then has rows to show


def _private_mb(vz: BenchRoot, ctid: int) -> float:
    from bench.cases import _monitor_pids, _rollup

    pids, _method = _monitor_pids(vz, ctid)
    kb = sum(r.get("Private_Clean", 0) + r.get("Private_Dirty", 0) for r in map(_rollup, pids))
    return kb / 1024


def bench_density(ctx: Context) -> list[Row]:
    count = QUICK_COUNT if ctx.n.vzlist < 10 else COUNT
    vz = BenchRoot()
    notes: dict[str, object] = {"cts": count, "template": "busybox", "sample": SAMPLE, "root": "its own"}
    try:
        ctids = list(range(FIRST, FIRST + count))
        started = time.monotonic()

        def create(ctid: int) -> None:
            vz.run([VZCTL, "--quiet", "create", str(ctid), "--config", SAMPLE])

        with ThreadPoolExecutor(2) as pool:
            for index, _ in enumerate(pool.map(create, ctids)):
                if (index + 1) % 250 == 0:
                    log(f"density: created {index + 1}/{count} ({time.monotonic() - started:.0f} s)")
        notes["create_s"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        running = 0
        for ctid in ctids:
            done = vz.run([VZCTL, "--quiet", "start", str(ctid)], check=False)
            if done.returncode != 0:
                notes["first_failure"] = f"CT {ctid} ({running} running): {done.stderr.strip()}"
                log(f"density: {notes['first_failure']}")
                break
            running += 1
            if running % 250 == 0:
                log(f"density: started {running}/{count} ({time.monotonic() - started:.0f} s)")
        notes["start_all_s"] = round(time.monotonic() - started, 1)
        listed = vz.run([VZLIST, "-H", "-o", "status"]).stdout.split().count("running")
        notes["running_by_vzlist"] = listed
        vzlist = [vz.timed([VZLIST, "-a"]) for _ in range(5)]
        vzubc = [vz.timed([VZUBC]) for _ in range(5)]
        sample = ctids[: min(50, running)]
        memory = [_private_mb(vz, ctid) for ctid in sample]
        notes["memory_pss_note"] = "LXC monitor's Private_Clean + Private_Dirty"
    finally:
        left = vz.cleanup()
        if left:
            log(f"density: left behind: {left}")
    return [
        Row(
            f"running idle busybox CTs on this host (of {count} asked)",
            "count",
            f"≥ {count}",
            [float(listed)],
            limit=float(count),
            notes=notes,
        ),
        Row(f"vzlist -a at {listed} running CTs", "abs", "≤ 0.5 s", vzlist, limit=0.5),
        Row(f"vzubc at {listed} running CTs", "abs", "≤ 1 s", vzubc, limit=1.0),
        Row(
            f"host memory per idle busybox CT outside its cgroup ({len(sample)} of {listed})",
            "mem",
            "≤ 1 MB",
            memory,
            limit=1.0,
            notes={"median_mb": statistics.median(memory) if memory else None},
        ),
    ]
