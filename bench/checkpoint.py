"""Checkpoint/restore: `vzctl chkpnt N` + `vzctl restore N` of a running busybox CT without
IP vs `criu dump` + `criu restore` of the same kind of CT, run by hand with the argv
lxc-checkpoint (LXC 5.0) gives CRIU, as read off a logging `criu` wrapper: pyvz's criu.conf
(CRIU_CONFIG_FILE), its inner cgroup as --cgroup-root, LXC's --freeze-cgroup. On restore
`--root` is the CT's root mount and `--restore-detached --restore-sibling` makes the bench
process the restored init's parent, as LXC's monitor is: the init has PDEATHSIG set, and with
`--restore-detached` alone it dies as CRIU exits. Untimed between the two: LXC's monitor
tearing down, and the root remounted idmapped with the CT's host ids (which pyvz's restore
does inside its time). Each CT is started untimed before and killed untimed after."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import statistics
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.harness import VZCTL, BenchRoot, CommandFailed, Row, alternate

if TYPE_CHECKING:
    from bench.cases import Context

CKPT_CT = 9701
BOOT_SETTLE = 0.3  # busybox init installs its signal handlers


class RawCriu:
    """CRIU run directly on a running pyvz CT, with lxc-checkpoint's options."""

    def __init__(self, vz: BenchRoot, ctid: int) -> None:
        from pyvz.ct.container import Container
        from pyvz.host import Host
        from pyvz.resources.cgroups import CtCgroups
        from pyvz.runtime.criu import Criu

        self.vz = vz
        self.ctid = ctid
        self.ct = Container(Host(vz.paths), ctid)
        criu = Criu(vz.paths)
        binary = criu.require()  # the CRIU pyvz's shim runs
        self.binary = str(binary)
        # pyvz's own CRIU options (network-lock nftables, enable-fs ramfs), as LXC gets them.
        self.env = {**vz.env, "CRIU_CONFIG_FILE": criu.environment(binary)["CRIU_CONFIG_FILE"]}
        self.cgroup = CtCgroups.of(vz.paths.tag, ctid).container
        self.images = vz.root / "bench-criu"
        self.dump_argv: list[str] = []
        self.restore_argv: list[str] = []
        self.dumps: list[float] = []
        self.restores: list[float] = []
        self.restored_procs: list[int] = []

    def _common(self) -> list[str]:
        from pyvz.runtime.criu import INNER_CGROUP

        # LXC names every v1 controller in its own --cgroup-root (the shim adds /ns); one
        # value without a controller means the same for all of them, on v1 and v2.
        return [
            *("--tcp-established", "--file-locks", "--link-remap", "--manage-cgroups=full"),
            *("--ext-mount-map", "auto", "--enable-external-sharing", "--enable-external-masters"),
            *("--enable-fs", "hugetlbfs", "--enable-fs", "tracefs", "-D", str(self.images)),
            *("--cgroup-root", f"/{self.cgroup}/{INNER_CGROUP}"),
        ]

    def _timed(self, argv: list[str]) -> float:
        start = time.perf_counter()
        proc = subprocess.run(
            argv, env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
        )
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            log_name = "dump.log" if argv[1] == "dump" else "restore.log"
            tail = _criu_errors(self.images / log_name)
            raise CommandFailed(argv, proc.returncode, proc.stdout, f"{proc.stderr}\n{tail}")
        return elapsed

    def cycle(self) -> float:
        from pyvz.net.venet import init_pid
        from pyvz.resources.cgroups import detect

        vz, ct = self.vz, str(self.ctid)
        vz.vzctl("--quiet", "start", ct)
        time.sleep(BOOT_SETTLE)
        pid = init_pid(detect().procs(self.cgroup))
        if pid is None:
            raise RuntimeError(f"CT {ct} has no init to dump")
        shutil.rmtree(self.images, ignore_errors=True)
        self.images.mkdir(mode=0o711)  # the restored CT's root must pass through it
        os.chmod(self.images, 0o711)
        freezer = detect().freezer(self.cgroup)[0].parent
        self.dump_argv = [
            *(self.binary, "dump", *self._common(), "-o", "dump.log"),
            *("--ext-mount-map", "/sys/fs/fuse/connections:sys/fs/fuse/connections"),
            *("-t", str(pid), "--skip-in-flight", "--freeze-cgroup", str(freezer), "--force-irmap"),
        ]
        dumped = self._timed(self.dump_argv)
        self._wait_down()
        vz.vzctl("--quiet", "umount", ct)
        area = self.ct.area()
        self.ct.driver().mount_shifted(area)
        pidfile = self.images / "restored.pid"
        self.restore_argv = [
            *(self.binary, "restore", *self._common(), "-o", "restore.log"),
            *("--ext-mount-map", "sys/fs/fuse/connections:/sys/fs/fuse/connections"),
            *("--root", str(area.root), "--restore-detached", "--restore-sibling"),
            *("--pidfile", str(pidfile), "--ext-mount-map", "console:", "--external", "console:"),
        ]
        restored = self._timed(self.restore_argv)
        self._end(int(pidfile.read_text()))
        self.dumps.append(dumped)
        self.restores.append(restored)
        return dumped + restored

    def _wait_down(self) -> None:
        deadline = time.monotonic() + 10
        while not self.vz.status(self.ctid).endswith(" down"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"CT {self.ctid} still runs after criu dump")
            time.sleep(0.01)

    def _end(self, pid: int) -> None:
        """Check the restored CT runs, then kill it and clean up what LXC would have."""
        from pyvz.resources.cgroups import detect

        procs = detect().procs(self.cgroup)
        alive = pid in procs and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
        self.restored_procs.append(len(procs))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)  # --restore-sibling made it our child
        deadline = time.monotonic() + 10
        while detect().procs(self.cgroup) and time.monotonic() < deadline:
            time.sleep(0.01)
        detect().remove(self.cgroup)
        self.vz.vzctl("--quiet", "umount", str(self.ctid))
        if not alive:
            raise RuntimeError(f"the CT raw criu restored (pid {pid}) was not running: {procs}")


def _criu_errors(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    noise = ("iptables", "ip6tables", "RLIMIT_NOFILE")
    return "\n".join([line for line in lines if "Error" in line and not any(n in line for n in noise)][:5])


def _ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def bench_checkpoint(ctx: Context) -> list[Row]:
    vz = ctx.vz
    ct = str(CKPT_CT)
    if not vz.paths.conf_file(CKPT_CT).exists():
        vz.vzctl("--quiet", "create", ct)
    raw = RawCriu(vz, CKPT_CT)
    chkpnts: list[float] = []
    restores: list[float] = []

    def ours() -> float:
        vz.vzctl("--quiet", "start", ct)
        time.sleep(BOOT_SETTLE)
        chkpnts.append(vz.timed([VZCTL, "chkpnt", ct]))
        restores.append(vz.timed([VZCTL, "restore", ct]))
        if not vz.status(CKPT_CT).endswith(" running"):
            raise RuntimeError(f"CT {ct} is not running after vzctl restore: {vz.status(CKPT_CT)}")
        vz.vzctl("--quiet", "stop", "--fast", ct)
        return chkpnts[-1] + restores[-1]

    try:
        ours(), raw.cycle()  # warm-up: criu check, the shim, page cache
        for warm in (chkpnts, restores, raw.dumps, raw.restores):
            warm.clear()
        raw.restored_procs.clear()
        a, b = alternate(max(3, ctx.n.stop), ours, raw.cycle, "checkpoint")
    finally:
        vz.settle(CKPT_CT)
        shutil.rmtree(raw.images, ignore_errors=True)
    return [
        Row(
            "vzctl chkpnt + vzctl restore, busybox CT vs raw criu dump + criu restore",
            "diff",
            "≤ peer + 100 ms",
            a,
            b,
            limit=100.0,
            notes={
                "pyvz": f"vzctl chkpnt {ct}; vzctl restore {ct}",
                "peer": f"{shlex.join(raw.dump_argv)}; {shlex.join(raw.restore_argv)}",
                "peer_env": {"CRIU_CONFIG_FILE": raw.env["CRIU_CONFIG_FILE"]},
                "chkpnt_ms": _ms(chkpnts),
                "restore_ms": _ms(restores),
                "criu_dump_ms": _ms(raw.dumps),
                "criu_restore_ms": _ms(raw.restores),
                "peer_restored_processes": raw.restored_procs,
            },
        )
    ]
