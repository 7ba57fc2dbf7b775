"""The host's own limits that many CTs run into, checked before a start, not after.

At a few thousand CTs per host the kernel's defaults bite before memory does, and what LXC
says then names no limit ("Failed to create tty 1", "Resource temporarily unavailable").
Before each start this module looks at the few counters that grow with the number of
CTs, each read from one small /proc file (no walk over CTs, so a start costs the same at
2000 CTs as at 2):

- kernel.pid_max (default 32768 where systemd's 4194304 is not set): every CT's processes
  and threads take host PIDs. It is raised (doubled, up to the 64-bit kernel's 4194304)
  when fewer than HEADROOM_TASKS are left, and said: raising it costs nothing.
- kernel.threads-max: sized by the kernel from memory; reported, not raised.
- fs.file-max (open files on the whole host): reported.
- memory: a start with less than MIN_AVAILABLE of MemAvailable is refused.
- the neighbour table (net.ipv4/ipv6.neigh.default.gc_thresh3, 1024 by default, per
  network namespace): the host resolves each routed CT address (venet) on its veth, and
  past gc_thresh3 entries the kernel drops new ones ("neighbour table overflow"): the
  thresholds are raised (doubled) before the table is 3/4 full, and said.
- a Linux bridge takes at most 1023 ports (port numbers 1 to BR_MAX_PORTS - 1; the next
  gives "Exchange full"): a CT joining a full bridge is refused with one line, before
  anything is set up.

ptys are not among them: pyvz gives CTs no console or ttys of their own (runtime/lxc.py),
so kernel.pty.max (3072 usable outside the host's devpts) no longer caps the CT count.

Every refusal is one VzError line that names the limit and how to raise it.
"""

from __future__ import annotations

from pathlib import Path

from pyvz.errors import ExitCode, VzError
from pyvz.kernelfiles import read_small
from pyvz.log import log

PROC = Path("/proc")
HEADROOM_TASKS = 512  # host tasks kept free: a CT's start forks a few dozen at most
PID_MAX_LIMIT = 4194304  # the kernel's ceiling on 64-bit (PID_MAX_LIMIT)
HEADROOM_FILES = 4096
MIN_AVAILABLE = 64 * 1024 * 1024  # bytes of MemAvailable below which no CT starts
NEIGH_FILL = 0.75  # raise the neighbour thresholds once the table is this full
BRIDGE_PORTS = 1023  # net/bridge/br_private.h: BR_MAX_PORTS 1024, port number 0 unused


def _read_int(path: Path) -> int | None:
    try:
        return int(read_small(str(path)).split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _write(path: Path, value: int) -> bool:
    try:
        path.write_text(f"{value}\n")
        return True
    except OSError:
        return False


def _used_up(sysctl: str, limit: int, by: str, raise_to: int) -> VzError:
    return VzError(
        ExitCode.ENVCREATE_ERROR,
        f"host limit {sysctl} ({limit}) is nearly used up by {by}: raise it with "
        f"`sysctl -w {sysctl}={raise_to}`",
    )


def tasks(proc: Path = PROC) -> int | None:
    """Host tasks (processes and threads) now: the 4th field of loadavg, "running/total"."""
    try:
        return int(read_small(str(proc / "loadavg")).split()[3].split("/")[1])
    except (OSError, ValueError, IndexError):
        return None


def check_pids(proc: Path = PROC) -> None:
    used = tasks(proc)
    pid_max = _read_int(proc / "sys/kernel/pid_max")
    if used is not None and pid_max is not None and used + HEADROOM_TASKS > pid_max:
        raised = min(PID_MAX_LIMIT, max(2 * pid_max, used + 2 * HEADROOM_TASKS))
        if raised > pid_max and _write(proc / "sys/kernel/pid_max", raised):
            log.warning(f"raised kernel.pid_max from {pid_max} to {raised}: {used} tasks run on this host")
        elif used + HEADROOM_TASKS // 8 > pid_max:
            raise _used_up("kernel.pid_max", pid_max, f"{used} tasks", PID_MAX_LIMIT)
    threads_max = _read_int(proc / "sys/kernel/threads-max")
    if used is not None and threads_max is not None and used + HEADROOM_TASKS // 8 > threads_max:
        raise _used_up("kernel.threads-max", threads_max, f"{used} tasks", 2 * threads_max)


def check_files(proc: Path = PROC) -> None:
    try:
        open_now = int(read_small(str(proc / "sys/fs/file-nr")).split()[0])
    except (OSError, ValueError, IndexError):
        return
    file_max = _read_int(proc / "sys/fs/file-max")
    if file_max is not None and open_now + HEADROOM_FILES > file_max:
        raise _used_up("fs.file-max", file_max, f"{open_now} open files", 2 * file_max)


def check_memory(proc: Path = PROC) -> None:
    try:
        text = read_small(str(proc / "meminfo"))
    except OSError:
        return
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            available = int(line.split()[1]) * 1024
            if available < MIN_AVAILABLE:
                raise VzError(
                    ExitCode.ENVCREATE_ERROR,
                    f"host memory is exhausted: {available // 1048576} MB available, a CT start needs "
                    f"{MIN_AVAILABLE // 1048576} MB (stop CTs, or add memory or swap)",
                )
            return


def before_start(proc: Path = PROC) -> None:
    """The host-wide checks of a CT start (raising what can be raised)."""
    check_pids(proc)
    check_files(proc)
    check_memory(proc)


def _neighbours(proc: Path, family: str) -> int | None:
    """Entries in this network namespace's neighbour table (arp for IPv4; ipv6_route does
    not count them, so IPv6 is judged by the IPv4 table's fill, the same CTs' addresses)."""
    try:
        return len(read_small(str(proc / "net/arp")).splitlines()) - 1 if family == "ipv4" else None
    except OSError:
        return None


def check_neighbours(adding: int, proc: Path = PROC) -> None:
    """Before a CT's `adding` routed addresses go up: room in the neighbour table."""
    if adding <= 0:
        return
    used = _neighbours(proc, "ipv4")
    for family in ("ipv4", "ipv6"):
        base = proc / "sys/net" / family / "neigh/default"
        thresh3 = _read_int(base / "gc_thresh3")
        if used is None or thresh3 is None or used + adding <= thresh3 * NEIGH_FILL:
            continue
        raised = max(2 * thresh3, int((used + adding) / NEIGH_FILL) + 1)
        levels = {"gc_thresh1": raised // 4, "gc_thresh2": raised // 2, "gc_thresh3": raised}
        # Upwards: thresh3 first, so that the kernel never sees thresh1 > thresh3.
        if all(_write(base / name, value) for name, value in reversed(levels.items())):
            log.warning(
                f"raised net.{family}.neigh.default.gc_thresh3 from {thresh3} to {raised} "
                f"(gc_thresh2 {raised // 2}, gc_thresh1 {raised // 4}): {used} neighbours known here"
            )
        elif used + adding > thresh3:
            raise VzError(
                ExitCode.ENVCREATE_ERROR,
                f"host limit net.{family}.neigh.default.gc_thresh3 ({thresh3}) is reached by {used} "
                f"neighbours: raise it with `sysctl -w net.{family}.neigh.default.gc_thresh3={raised}`",
            )


def check_bridge(bridge: str) -> None:
    """Before a CT's veth joins `bridge`: the kernel takes 1023 ports per bridge at most.
    Asked over netlink (ip): /sys shows the namespace it was mounted in, not ours."""
    from pyvz.run import run

    listed = run(["ip", "-o", "link", "show", "master", bridge], check=False)
    if listed.returncode != 0:
        return  # no such bridge: the attach itself says so
    ports = sum(1 for line in listed.stdout.splitlines() if line.strip())
    if ports >= BRIDGE_PORTS:
        raise VzError(
            ExitCode.ENVCREATE_ERROR,
            f"bridge {bridge} has {ports} ports, the most a Linux bridge takes (BR_MAX_PORTS): give "
            "this CT another bridge (--netif_add …,bridge=NAME)",
        )
