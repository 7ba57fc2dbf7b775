"""vzctl convert simfs -> btrfs (issue 12): an adopted OpenVZ CT, its private area a plain
tree on the host's own filesystem (here the bench root's ext4, as /vz/private on an OpenVZ
host), 1 GB in 20,000 files, moved into the btrfs pool, vs `cp -a` of the same tree into a
directory of the same pool. Both read the tree from the page cache (it was just written)
and write into btrfs; neither syncs. Between samples (untimed): the CT's simfs tree is laid
down again with `cp -a` from a master copy and synced, and the last copy is removed and
synced. convert returns once the CT is ready; it removes the old tree in the background
(rm -rf, idle I/O class), which the bench waits out untimed before the next sample."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.harness import VZCTL, Row, alternate

if TYPE_CHECKING:
    from bench.cases import Context

CONVERT_CT = 9901
FILES = 20_000
TOTAL = 1 << 30


def _master(root: Path) -> Path:
    """A tree of FILES files of TOTAL bytes in all, in 200 directories (random bytes, so no
    filesystem can compress or dedupe them)."""
    master = root / "convert-master"
    size = TOTAL // FILES
    block = os.urandom(size * 64)
    for index in range(FILES):
        directory = master / f"d{index % 200:03d}"
        if index < 200:
            directory.mkdir(parents=True)
        offset = (index % 64) * size
        (directory / f"f{index:05d}").write_bytes(block[offset : offset + size])
    return master


def bench_convert(ctx: Context) -> list[Row]:
    vz = ctx.vz
    ct = str(CONVERT_CT)
    outside = vz.root / "vz/private"  # not on the pool: the bench root's own filesystem
    outside.mkdir(parents=True)
    master = _master(vz.root)
    pool_dir = vz.paths.lib_vz / "private"
    vz.vzctl("create", ct, "--layout", "simfs", "--private", f"/vz/private/{ct}")
    conf = vz.paths.conf_file(CONVERT_CT)
    simfs_conf = conf.read_text()
    subprocess.run(["rm", "-rf", str(outside / ct)], check=True)

    def fresh_simfs() -> None:
        subprocess.run(["cp", "-a", str(master), str(outside / ct)], check=True)
        conf.write_text(simfs_conf)
        # Written back before the timing: the peer's source is long on disk, and 1 GB of
        # dirty pages flushing under the convert would be timed as the convert's.
        subprocess.run(["sync"], check=False)

    def cleanup(path: Path) -> None:
        subprocess.run(["btrfs", "-q", "subvolume", "delete", str(path)], check=False, capture_output=True)
        shutil.rmtree(path, ignore_errors=True)
        # btrfs finishes deletions in the background (its cleaner, delayed refs): wait them
        # out, so neither side's sample pays for the other's cleanup.
        subprocess.run(["btrfs", "subvolume", "sync", str(pool_dir)], check=False, capture_output=True)
        subprocess.run(["sync"], check=False)
        time.sleep(1)

    def ours() -> float:
        fresh_simfs()
        elapsed = vz.timed([VZCTL, "convert", ct, "--layout", "btrfs"])
        # The old tree is removed in the background after convert returns: untimed, and
        # done before the next sample, so it slows neither side.
        while (outside / f".{ct}.converted").exists():
            time.sleep(0.1)
        cleanup(pool_dir / ct)
        return elapsed

    def theirs() -> float:
        target = pool_dir / "cp-a-peer"
        elapsed = vz.timed(["cp", "-a", str(master), str(target)])
        cleanup(target)
        return elapsed

    try:
        a, b = alternate(max(3, ctx.n.create // 2), ours, theirs, "convert")
    finally:
        conf.write_text(simfs_conf)
        subprocess.run(["rm", "-rf", str(outside / ct), str(master)], check=False)
        conf.unlink(missing_ok=True)
    return [
        Row(
            "convert simfs → btrfs, 1 GB in 20k files, vs cp -a",
            "ratio",
            "≤ 1.1×",
            a,
            b,
            limit=1.1,
            notes={"pyvz": f"vzctl convert {ct} --layout btrfs", "peer": "cp -a TREE POOL/DIR"},
        )
    ]
