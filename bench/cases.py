"""The benchmarks: each one measures pyvz and its peer A B A B ... and returns table rows."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench.api import bench_api_clients, bench_api_event, bench_api_list, bench_api_start
from bench.backup import bench_backup
from bench.checkpoint import bench_checkpoint
from bench.cluster import bench_cluster_list, bench_evacuate
from bench.convert import bench_convert
from bench.density import bench_density
from bench.ha import bench_ha_failover
from bench.harness import VZCTL, VZLIST, BenchRoot, Row, alternate, log
from bench.lxcfs import bench_lxcfs_free, bench_lxcfs_start
from bench.metrics import bench_metrics
from bench.migrate import bench_migrate
from bench.network import bench_throughput
from bench.rebuild import bench_rebuild
from bench.replicate import bench_replicate
from bench.resources import bench_cpu, bench_vzlist_ubc, bench_vzubc
from bench.run_cmd import bench_run_busybox, bench_run_debian
from bench.snapshots import bench_clone_destroy, bench_snapshot_delete, bench_snapshot_switch, bench_snapshots
from bench.templates import bench_template_build, bench_template_cold_create, bench_template_create
from pyvz.resources.cgroups import CtCgroups, detect

CREATE_CT = 9001  # created and destroyed over and over by the create benchmark
SINGLE_CT = 9101  # the busybox CT that start, stop and exec use
FLEET_FIRST = 1001  # the 200 CTs of the vzlist and memory benchmarks
FLEET_SIZE = 200
FLEET_RUNNING = 50
BIG_FILES = 2000  # the synthetic big template: busybox plus 2000 files of 100 KB
BIG_FILE_SIZE = 100 * 1024
BOOT_SETTLE = 0.3  # let busybox init install its signal handlers before a clean stop
DIFF_LIMIT_MS = 50.0


@dataclass
class Iterations:
    create: int
    start: int
    stop: int
    exec: int
    vzlist: int

    @classmethod
    def of(cls, quick: bool) -> Iterations:
        return cls(3, 3, 2, 10, 3) if quick else cls(10, 15, 10, 30, 10)


@dataclass
class Context:
    vz: BenchRoot
    n: Iterations
    single_ready: bool = False
    fleet_ready: bool = False
    fleet_running: list[int] = field(default_factory=list)


def _sync() -> None:
    subprocess.run(["sync"], check=False)


# ---- 1. create -------------------------------------------------------------------------------


def _build_big_template(vz: BenchRoot) -> Path:
    """busybox.tar.zst plus ~200 MB of random files, packed as big.tar.zst in the cache."""
    cache = vz.paths.template_cache
    big = cache / "big.tar.zst"
    if big.exists():
        return big
    staging = Path(tempfile.mkdtemp(prefix="big-", dir=vz.root))
    try:
        tree = staging / "tree"
        tree.mkdir()
        vz.run(["tar", "--numeric-owner", "-xpf", str(cache / "busybox.tar.zst"), "-C", str(tree)])
        data = tree / "opt/bench-data"
        data.mkdir(parents=True)
        for index in range(BIG_FILES):
            (data / f"blob{index:04d}.bin").write_bytes(os.urandom(BIG_FILE_SIZE))
        packing = cache / ".big.tar.zst.partial"
        vz.run(["tar", "--numeric-owner", "--zstd", "-cf", str(packing), "-C", str(tree), "."])
        os.replace(packing, big)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return big


def bench_create(ctx: Context) -> list[Row]:
    vz = ctx.vz
    ct = str(CREATE_CT)
    log("create: warm-up (builds busybox.tar.zst, the pool and the busybox tree)")
    vz.vzctl("create", ct)
    vz.vzctl("destroy", ct)
    log(f"create: building big.tar.zst ({BIG_FILES} files of {BIG_FILE_SIZE // 1024} KB)")
    _build_big_template(vz)
    log("create: warm-up for big (unpacks its tree in the pool once)")
    vz.vzctl("create", ct, "--ostemplate", "big")
    vz.vzctl("destroy", ct)
    peer_base = vz.private_dir / ".bench-tar"  # the same btrfs filesystem the CTs live on
    peer_base.mkdir(exist_ok=True)
    counter = iter(range(1_000_000))

    def tar_x(archive: Path) -> float:
        target = peer_base / str(next(counter))
        target.mkdir()
        try:
            return vz.timed(["tar", "--numeric-owner", "-xpf", str(archive), "-C", str(target)])
        finally:
            shutil.rmtree(target, ignore_errors=True)
            _sync()

    def vzctl_create(options: list[str]) -> float:
        try:
            return vz.timed([VZCTL, "create", ct, *options])
        finally:
            if vz.paths.conf_file(CREATE_CT).exists():
                vz.vzctl("destroy", ct)
            _sync()

    rows: list[Row] = []
    medians: dict[str, tuple[float, float]] = {}
    sizes: dict[str, dict[str, int]] = {}
    for name, options in (("busybox", []), ("big", ["--ostemplate", "big"])):
        archive = vz.paths.template_cache / f"{name}.tar.zst"
        unpacked = _tree_size(vz, archive)
        sizes[name] = {"archive_bytes": archive.stat().st_size, "unpacked_bytes": unpacked}
        tar_x(archive)  # warm the page cache for the peer too
        ours, theirs = alternate(
            ctx.n.create,
            partial(vzctl_create, options),
            partial(tar_x, archive),
            f"create {name}",
        )
        label = f"{unpacked / 1e6:.0f} MB" if unpacked >= 10e6 else f"{unpacked / 1e6:.1f} MB"
        row = Row(
            f"create, {name} template ({label}) vs tar -x",
            "abs",
            "≤ 150 ms",
            ours,
            theirs,
            limit=0.150,
            notes={"pyvz": f"vzctl create {ct} {' '.join(options)}".strip(), **sizes[name]},
        )
        rows.append(row)
        medians[name] = (row.pyvz_median, row.peer_median or 0.0)
    growth = Row(
        "create: big / busybox (flat in size?)",
        "growth",
        "pyvz ≈ 1× (≤ 1.25×)",
        [medians["big"][0] / medians["busybox"][0]],
        [medians["big"][1] / medians["busybox"][1]],
        limit=1.25,
        notes={"sizes": sizes},
    )
    return [*rows, growth]


def _tree_size(vz: BenchRoot, archive: Path) -> int:
    listing = vz.run(["tar", "--numeric-owner", "-tvf", str(archive)]).stdout
    total = 0
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2].isdigit():
            total += int(fields[2])
    return total


# ---- 2-4. start, stop, exec on one busybox CT ----------------------------------------------


def _single(ctx: Context) -> str:
    """CT SINGLE_CT exists, has a generated LXC config, and is stopped and unmounted."""
    vz = ctx.vz
    ct = str(SINGLE_CT)
    if not ctx.single_ready:
        log(f"preparing CT {ct}")
        vz.vzctl("create", ct)
        vz.vzctl("start", ct)  # writes the LXC config that raw lxc-start uses
        time.sleep(BOOT_SETTLE)
        vz.vzctl("stop", "--fast", ct)
        ctx.single_ready = True
    vz.settle(SINGLE_CT)
    return ct


def bench_start(ctx: Context) -> list[Row]:
    vz = ctx.vz
    ct = _single(ctx)

    def ours() -> float:
        elapsed = vz.timed([VZCTL, "start", ct])
        vz.vzctl("stop", "--fast", ct)
        return elapsed

    def theirs() -> float:
        vz.vzctl("mount", ct)
        elapsed = vz.timed(vz.lxc("lxc-start", SINGLE_CT, "-d"))
        vz.vzctl("stop", "--fast", ct)  # kills, removes the cgroups and unmounts, like ours
        return elapsed

    try:
        ours(), theirs()  # warm-up
        a, b = alternate(ctx.n.start, ours, theirs, "start")
    finally:
        vz.settle(SINGLE_CT)
    return [
        Row(
            "start (busybox CT) vs lxc-start -d",
            "diff",
            f"≤ peer + {DIFF_LIMIT_MS:.0f} ms",
            a,
            b,
            limit=DIFF_LIMIT_MS,
            notes={"pyvz": f"vzctl start {ct}", "peer": " ".join(vz.lxc("lxc-start", SINGLE_CT, "-d"))},
        )
    ]


def bench_stop(ctx: Context) -> list[Row]:
    vz = ctx.vz
    ct = _single(ctx)

    def started() -> None:
        vz.vzctl("start", ct)
        time.sleep(BOOT_SETTLE)

    def ours() -> float:
        started()
        return vz.timed([VZCTL, "stop", ct])

    def theirs() -> float:
        started()
        elapsed = vz.timed(vz.lxc("lxc-stop", SINGLE_CT))
        vz.vzctl("umount", ct)  # same state as after vzctl stop, untimed
        return elapsed

    try:
        ours(), theirs()  # warm-up
        a, b = alternate(ctx.n.stop, ours, theirs, "stop")
    finally:
        vz.settle(SINGLE_CT)
    return [
        Row(
            "stop (busybox CT, clean) vs lxc-stop",
            "diff",
            f"≤ peer + {DIFF_LIMIT_MS:.0f} ms",
            a,
            b,
            limit=DIFF_LIMIT_MS,
            notes={"pyvz": f"vzctl stop {ct}", "peer": " ".join(vz.lxc("lxc-stop", SINGLE_CT))},
        )
    ]


def bench_exec(ctx: Context) -> list[Row]:
    vz = ctx.vz
    ct = _single(ctx)
    peer = vz.lxc("lxc-attach", SINGLE_CT, "--clear-env", "--", "/bin/sh", "-c", "true")
    vz.vzctl("start", ct)
    time.sleep(BOOT_SETTLE)
    try:
        vz.timed([VZCTL, "exec", ct, "true"]), vz.timed(peer)  # warm-up
        a, b = alternate(
            ctx.n.exec,
            lambda: vz.timed([VZCTL, "exec", ct, "true"]),
            lambda: vz.timed(peer),
            "exec",
        )
    finally:
        vz.settle(SINGLE_CT)
    return [
        Row(
            "exec true vs lxc-attach",
            "diff",
            f"≤ peer + {DIFF_LIMIT_MS:.0f} ms",
            a,
            b,
            limit=DIFF_LIMIT_MS,
            notes={"pyvz": f"vzctl exec {ct} true", "peer": " ".join(peer)},
        )
    ]


# ---- 5-6. vzlist and monitor memory on a fleet of 200 CTs, 50 running ---------------------


def _fleet(ctx: Context) -> list[int]:
    """200 CTs, all known to LXC (started once), of which the first 50 are running."""
    vz = ctx.vz
    if ctx.fleet_ready:
        return ctx.fleet_running
    ctids = list(range(FLEET_FIRST, FLEET_FIRST + FLEET_SIZE))
    for other in _existing(vz):  # vzlist -a must list exactly the fleet
        if other not in ctids:
            vz.settle(other)
            vz.vzctl("--quiet", "destroy", str(other))
            ctx.single_ready = ctx.single_ready and other != SINGLE_CT
    started = time.monotonic()
    for index, ctid in enumerate(ctids):
        if not vz.paths.conf_file(ctid).exists():
            vz.vzctl("--quiet", "create", str(ctid))
        if (index + 1) % 50 == 0:
            log(f"fleet: created {index + 1}/{FLEET_SIZE} CTs ({time.monotonic() - started:.0f} s)")
    # lxc-ls only knows CTs with a generated config, written at start: start every CT once so
    # the peer lists all 200 like vzlist -a does; stop all but the first 50 again.
    for index, ctid in enumerate(ctids):
        vz.vzctl("--quiet", "start", str(ctid))
        if index >= FLEET_RUNNING:
            vz.vzctl("--quiet", "stop", "--fast", str(ctid))
        if (index + 1) % 50 == 0:
            log(f"fleet: started {index + 1}/{FLEET_SIZE} CTs ({time.monotonic() - started:.0f} s)")
    ctx.fleet_running = ctids[:FLEET_RUNNING]
    ctx.fleet_ready = True
    return ctx.fleet_running


def _existing(vz: BenchRoot) -> list[int]:
    names = (p.name for p in vz.paths.conf_dir.glob("*.conf"))
    return sorted(int(n[:-5]) for n in names if n[:-5].isdigit() and int(n[:-5]) > 100)


def bench_vzlist(ctx: Context) -> list[Row]:
    vz = ctx.vz
    running = _fleet(ctx)
    ours_argv = [VZLIST, "-a"]
    peer_argv = ["lxc-ls", "-P", vz.lxcpath, "-f"]
    ours_out = vz.run(ours_argv).stdout.splitlines()
    peer_out = vz.run(peer_argv).stdout.splitlines()
    ours_running = sum(1 for line in ours_out if " running " in line)
    peer_running = sum(1 for line in peer_out if " RUNNING " in line)
    if len(ours_out) - 1 != FLEET_SIZE or ours_running != len(running):
        raise RuntimeError(
            f"vzlist -a shows {len(ours_out) - 1} CTs, {ours_running} running; "
            f"expected {FLEET_SIZE}, {len(running)} running:\n" + "\n".join(ours_out[:5])
        )
    a, b = alternate(ctx.n.vzlist, lambda: vz.timed(ours_argv), lambda: vz.timed(peer_argv), "vzlist")
    return [
        Row(
            f"vzlist -a ({FLEET_SIZE} CTs, {len(running)} running) vs lxc-ls -f",
            "abs",
            "≤ 500 ms",
            a,
            b,
            limit=0.5,
            notes={
                "pyvz": " ".join(ours_argv),
                "peer": " ".join(peer_argv),
                "pyvz_rows": len(ours_out) - 1,
                "pyvz_running": ours_running,
                "peer_rows": len(peer_out) - 1,
                "peer_running": peer_running,
            },
        )
    ]


def _monitor_pids(vz: BenchRoot, ctid: int) -> tuple[list[int], str]:
    """The CT's LXC monitor: from its monitor cgroup, else from the process list."""
    pids = detect().procs(CtCgroups.of(vz.paths.tag, ctid).monitor)
    if pids:
        return pids, "cgroup"
    wanted = [vz.lxcpath.encode(), str(ctid).encode()]
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            words = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").split()
        except OSError:
            continue
        if words and b"lxc" in words[0] and wanted[0] in words and wanted[1] in words:
            found.append(int(entry))
    return found, "cmdline"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _rollup(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        words = rest.split()
        if words and words[0].isdigit():
            values[key] = int(words[0])  # kB
    return values


def bench_memory(ctx: Context) -> list[Row]:
    vz = ctx.vz
    running = _fleet(ctx)
    private_mb = []
    pss_mb = []
    methods = set()
    per_ct: dict[int, dict[str, Any]] = {}
    for ctid in running:
        pids, method = _monitor_pids(vz, ctid)
        if not pids:
            raise RuntimeError(f"no LXC monitor process found for running CT {ctid}")
        methods.add(method)
        private = pss = 0
        for pid in pids:
            rollup = _rollup(pid)
            private += rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)
            pss += rollup.get("Pss", 0)
        private_mb.append(private / 1024)
        pss_mb.append(pss / 1024)
        per_ct[ctid] = {"pids": pids, "private_kb": private, "pss_kb": pss}
    return [
        Row(
            f"host memory per running CT (LXC monitor, {len(running)} CTs)",
            "mem",
            "≤ 1 MB",
            private_mb,
            limit=1.0,
            notes={
                "metric": "Private_Clean + Private_Dirty of the monitor's smaps_rollup",
                "pss_mb_median": statistics.median(pss_mb),
                "found_by": sorted(methods),
                "example_cmdline": _cmdline(per_ct[running[0]]["pids"][0]),
                "per_ct": per_ct,
            },
        )
    ]


BENCHMARKS: dict[str, Callable[[Context], list[Row]]] = {
    "create": bench_create,
    "start": bench_start,
    "stop": bench_stop,
    "exec": bench_exec,
    "vzlist": bench_vzlist,
    "memory": bench_memory,
    "vzubc": bench_vzubc,  # these three start 50 more of the fleet: they run after vzlist
    "vzlist-ubc": bench_vzlist_ubc,
    "cpu": bench_cpu,
    "network": bench_throughput,
    "snapshots": bench_snapshots,
    "snapshot-delete": bench_snapshot_delete,
    "snapshot-switch": bench_snapshot_switch,
    "clone-destroy": bench_clone_destroy,
    "template-create": bench_template_create,
    "template-cold-create": bench_template_cold_create,
    "template-build": bench_template_build,
    "backup": bench_backup,
    "checkpoint": bench_checkpoint,
    "migrate": bench_migrate,  # on three test hosts of their own (tests/testhosts.py)
    "replicate": bench_replicate,  # on two test hosts of their own
    "lxcfs-start": bench_lxcfs_start,
    "lxcfs-free": bench_lxcfs_free,
    "convert": bench_convert,
    "rebuild": bench_rebuild,
    "api-list": bench_api_list,
    "api-start": bench_api_start,
    "api-event": bench_api_event,
    "api-clients": bench_api_clients,
    "metrics": bench_metrics,  # 500 CTs of its own, running; every other CT stopped meanwhile
    "cluster-list": bench_cluster_list,  # three test hosts with etcd, 200 CTs each
    "evacuate": bench_evacuate,  # three test hosts with etcd, 10 running CTs moved off one
    "ha-failover": bench_ha_failover,  # fresh three test hosts per sample, host a killed
    "run-busybox": bench_run_busybox,
    "run-debian": bench_run_debian,  # builds the Debian 12 template if no benchmark has yet
    "density": bench_density,  # a root of its own: 2000 running CTs (300 with --quick)
}
