"""vzdump against plain tar | zstd, and an incremental vzdump against a full one.

full:        `vzdump --dumpdir D CT` of a stopped CT holding ~1 GB of mixed files (bench/data.py)
             vs `tar -c --numeric-owner --xattrs --acls --sparse -C TREE . | zstd -T0 > FILE` of
             the same tree (its btrfs private area); archives are deleted between runs, untimed.
incremental: `vzdump --incremental` after 10 MB of changes vs the full vzdump before it; time
             and archive size.
"""

from __future__ import annotations

import os
import shutil
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from bench.data import fill_mixed
from bench.harness import VENV_BIN, Row, alternate, log

if TYPE_CHECKING:
    from bench.cases import Context

BACKUP_CT = 9601  # (9301 is the CPU benchmark's CT)
CHANGE = 10 << 20
VZDUMP = str(VENV_BIN / "vzdump")


def _prepare(ctx: Context) -> tuple[Path, Path]:
    vz = ctx.vz
    tree = vz.private_dir / str(BACKUP_CT)
    dumps = vz.root / "bench-dumps"
    if not tree.exists():
        vz.vzctl("create", str(BACKUP_CT))
    if not (tree / "srv/bench-data").exists():
        log("backup: writing ~1 GB of mixed files into the CT")
        size = fill_mixed(tree / "srv/bench-data")
        log(f"backup: {size / 1e9:.2f} GB written")
    dumps.mkdir(exist_ok=True)
    return tree, dumps


def _clear(dumps: Path) -> None:
    for entry in dumps.iterdir():
        entry.unlink()


def bench_backup(ctx: Context) -> list[Row]:
    vz = ctx.vz
    tree, dumps = _prepare(ctx)
    peer_file = dumps / "peer.tar.zst"
    peer_cmd = 'tar -c --numeric-owner --xattrs --acls --sparse -C "$1" . | zstd -T0 -q > "$2"'
    sizes: dict[str, list[int]] = {"pyvz": [], "peer": []}

    def ours() -> float:
        _clear(dumps)
        os.sync()
        elapsed = vz.timed([VZDUMP, "--quiet", "--dumpdir", str(dumps), str(BACKUP_CT)])
        sizes["pyvz"] += [p.stat().st_size for p in dumps.glob("vzdump-*.tar.zst")]
        return elapsed

    def theirs() -> float:
        _clear(dumps)
        os.sync()
        elapsed = vz.timed(["sh", "-c", peer_cmd, "sh", str(tree), str(peer_file)])
        sizes["peer"].append(peer_file.stat().st_size)
        return elapsed

    iterations = max(2, ctx.n.stop // 2)
    ours(), theirs()  # warm-up: page cache, the first base snapshot
    full, peer = alternate(iterations, ours, theirs, "vzdump full")
    rows = [
        Row(
            "vzdump full, ~1 GB mixed CT (zstd) vs tar \\| zstd -T0",
            "ratio",
            "≤ 1.25× (≥ 0.8× throughput)",
            full,
            peer,
            limit=1.25,
            notes={
                "archive_bytes": statistics.median(sizes["pyvz"]),
                "peer_bytes": statistics.median(sizes["peer"]),
            },
        )
    ]
    incremental: list[float] = []
    fulls: list[float] = []
    ratios: list[float] = []
    _clear(dumps)
    vz.timed([VZDUMP, "--quiet", "--dumpdir", str(dumps), str(BACKUP_CT)])
    for index in range(iterations):
        changed = tree / "srv/bench-data/changes"
        changed.mkdir(exist_ok=True)
        (changed / f"new{index}.bin").write_bytes(os.urandom(CHANGE // 2))
        with open(tree / "srv/bench-data/large/big0.img", "r+b") as handle:
            handle.seek(index * CHANGE)
            handle.write(os.urandom(CHANGE // 2))
        os.sync()
        before = set(dumps.iterdir())
        incremental.append(
            vz.timed([VZDUMP, "--quiet", "--incremental", "--dumpdir", str(dumps), str(BACKUP_CT)])
        )
        (inc,) = set(dumps.glob("vzdump-*.tar.zst")) - before
        before = set(dumps.iterdir())
        fulls.append(vz.timed([VZDUMP, "--quiet", "--dumpdir", str(dumps), str(BACKUP_CT)]))
        (whole,) = set(dumps.glob("vzdump-*.tar.zst")) - before
        ratios.append(inc.stat().st_size / whole.stat().st_size)
        step = f"vzdump incremental {index + 1}/{iterations}"
        log(f"{step}: {incremental[-1]:.2f} s vs full {fulls[-1]:.2f} s, size {ratios[-1]:.4f} of full")
    shutil.rmtree(dumps, ignore_errors=True)
    rows += [
        Row(
            "vzdump --incremental after 10 MB of changes vs full vzdump (time)",
            "ratio",
            "≤ 0.10×",
            incremental,
            fulls,
            limit=0.10,
        ),
        Row(
            "vzdump --incremental after 10 MB of changes: archive size / full",
            "growth",
            "≤ 0.05×",
            [statistics.median(ratios)],
            limit=0.05,
            notes={"ratios": ratios},
        ),
    ]
    return rows
