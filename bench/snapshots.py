"""Snapshot and clone benchmarks (issue 6): a running CT holding 1 GB of mixed files,
snapshotted and cloned by pyvz, against `cp -a` of its private area (what simfs and LXC's
dir backend do), in the same btrfs pool; and the same snapshot of a bare busybox CT, to show
the time does not grow with the CT's size."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from typing import TYPE_CHECKING

from bench.data import fill_mixed
from bench.harness import Row, alternate, log

if TYPE_CHECKING:
    from bench.cases import Context

BIG_CT = 9501  # 1 GB of mixed files, running
SMALL_CT = 9502  # bare busybox, running
CLONE_CT = 9503
_UUID = re.compile(r"\{([0-9a-f-]{36})\}")


def _prepare(ctx: Context) -> int:
    vz = ctx.vz
    for ctid in (BIG_CT, SMALL_CT):
        if not vz.paths.conf_file(ctid).exists():
            vz.vzctl("--quiet", "create", str(ctid))
        if vz.status(ctid).endswith("down"):
            vz.vzctl("--quiet", "start", str(ctid))
    data = vz.private_dir / str(BIG_CT) / "srv/bench-data"
    if not data.exists():
        started = time.monotonic()
        size = fill_mixed(data)
        subprocess.run(["sync"], check=True)
        log(
            f"snapshots: wrote {size / (1 << 30):.2f} GB into CT {BIG_CT} "
            f"in {time.monotonic() - started:.0f} s"
        )
    return sum(1 for _ in data.rglob("*"))


def _snapshot(ctx: Context, ctid: int) -> float:
    """One timed `vzctl snapshot` of a running CT; the snapshot is deleted untimed."""
    vz = ctx.vz
    start = time.perf_counter()
    done = vz.vzctl("--quiet", "snapshot", str(ctid))
    elapsed = time.perf_counter() - start
    listed = _UUID.findall(vz.vzctl("snapshot-list", str(ctid), "-H", "-o", "uuid").stdout)
    if len(listed) != 1:
        raise RuntimeError(f"expected one snapshot of CT {ctid}, found {listed}: {done.stderr}")
    vz.vzctl("--quiet", "snapshot-delete", str(ctid), "--id", listed[0])
    return elapsed


def _copy(ctx: Context) -> float:
    """The peer: a copy of the CT's private area into the same pool, removed untimed.

    `--reflink=never`: coreutils 9 made plain `cp -a` reflink on btrfs, which is itself a
    metadata-only clone; simfs (cp/rsync on ext4) and LXC's dir backend (rsync) copy the data,
    and that copy is the peer the target names."""
    target = ctx.vz.private_dir / "peer-copy"
    start = time.perf_counter()
    source = str(ctx.vz.private_dir / str(BIG_CT))
    subprocess.run(["cp", "-a", "--reflink=never", source, str(target)], check=True)
    elapsed = time.perf_counter() - start
    shutil.rmtree(target)
    subprocess.run(["sync"], check=True)
    return elapsed


def _clone(ctx: Context) -> float:
    vz = ctx.vz
    start = time.perf_counter()
    vz.vzctl("--quiet", "clone", str(BIG_CT), str(CLONE_CT))
    elapsed = time.perf_counter() - start
    vz.vzctl("--quiet", "destroy", str(CLONE_CT))
    return elapsed


def bench_snapshots(ctx: Context) -> list[Row]:
    files = _prepare(ctx)
    n = 3 if ctx.n.create < 10 else 7
    big, copy = alternate(n, lambda: _snapshot(ctx, BIG_CT), lambda: _copy(ctx), "snapshot")
    clone, copy2 = alternate(n, lambda: _clone(ctx), lambda: _copy(ctx), "clone")
    small, big2 = alternate(n, lambda: _snapshot(ctx, SMALL_CT), lambda: _snapshot(ctx, BIG_CT), "flat")
    for ctid in (BIG_CT, SMALL_CT):
        ctx.vz.vzctl("--quiet", "stop", "--fast", str(ctid))
    what = f"1 GB in {files} files, CT running"
    return [
        Row(
            f"vzctl snapshot ({what}) vs cp -a --reflink=never of its private area",
            "ratio",
            "≤ 300 ms and ≥ 20× faster",
            big,
            copy,
            limit=1 / 20,
            ceiling=0.3,
            notes={
                "pyvz": f"vzctl snapshot {BIG_CT} (freeze, btrfs snapshot, thaw; deleted untimed)",
                "peer": "cp -a --reflink=never private/CTID private/peer-copy (a data copy)",
            },
        ),
        Row(
            f"vzctl clone ({what}) vs cp -a --reflink=never of its private area",
            "abs",
            "≤ 300 ms",
            clone,
            copy2,
            limit=0.3,
            notes={"pyvz": f"vzctl clone {BIG_CT} {CLONE_CT} (destroyed untimed)"},
        ),
        Row(
            "vzctl snapshot: 1 GB CT / busybox CT (flat in size?)",
            "growth",
            "≈ 1× (≤ 1.25×)",
            [b / s for b, s in zip(big2, small, strict=True)],
            limit=1.25,
            notes={"small_ms": [s * 1000 for s in small], "big_ms": [b * 1000 for b in big2]},
        ),
    ]
