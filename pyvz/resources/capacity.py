"""What the host has to share out, and how much of it each CT uses or was promised.

One place for the capacity tools (vzsplit, vzcalc, vzmemcheck, vzoversell, vzcpucheck), so
no two of them measure the host or a CT differently:

- RAM, swap and low memory come from /proc/meminfo. Low memory (LowTotal) exists only on
  32-bit kernels; elsewhere every byte is "low", so it is the whole RAM.
- Tasks: the smaller of kernel.threads-max and kernel.pid_max.
- CPUs: /sys/devices/system/cpu/online.
- CPU power: OpenVZ rated a node by its bogomips, a number mainline's scheduler knows
  nothing about. Here one online CPU is worth UNITS_PER_CPU (1000) cpuunits, the default
  weight of one CT. A CT's cpuunits become a relative cgroup weight, so when the cpuunits of
  the running CTs plus the host's own share (VE0CPUUNITS) add up to no more than the power,
  each busy CT gets at least cpuunits / 1000 CPUs. Above it, the promise cannot be kept for
  all of them at once: the node is overcommitted.
- An unlimited limit counts as the whole of what it is measured against (a CT with no RAM
  limit may take all the RAM); kernel memory and socket buffers are charged to the CT's
  memory cgroup, so they are bounded by its RAM limit as well.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from pyvz.config import CtConfig
from pyvz.params import CPUUNITS, PAGE
from pyvz.resources.beancounters import IN_PAGES, Beancounter, configured
from pyvz.units import UNLIMITED

MB = 1 << 20
UNITS_PER_CPU = 1000  # cpuunits one online CPU is worth (see above)
DEFAULT_CPUUNITS = 1000  # a CT without CPUUNITS has the default cgroup weight, as vzctl's 1000
HOST_CPUUNITS = 1000  # the host's own processes, unless vz.conf sets VE0CPUUNITS

# vzsplit: what the host keeps for itself, and the least a CT can live with.
HOST_RESERVE_MIN = 256 * MB
HOST_RESERVE_SHARE = 20  # 1/20 = 5% of RAM, if that is more than the minimum
MIN_CT_RAM = 64 * MB
MIN_CT_DISK = 256 * MB
MIN_NUMPROC = 32
RAM_PER_TASK = 256 * 1024  # numproc: one task per 256 KB of the CT's RAM
DISK_SHARE = 0.9  # of the pool: the rest is btrfs metadata and snapshots
DISK_SOFT = 11  # DISKSPACE soft limit = hard * 10 / 11, as vzsplit always did

# Beancounters charged as kernel memory (vzctl's "low memory").
KMEM_NAMES = ("kmemsize", "tcpsndbuf", "tcprcvbuf", "othersockbuf", "dgramrcvbuf")


class HostCapacity(NamedTuple):
    ram: int  # bytes
    swap: int  # bytes
    lowmem: int  # bytes: LowTotal on 32-bit, the whole RAM elsewhere
    cpus: int  # online CPUs
    tasks: int  # processes and threads the kernel allows in all

    @property
    def power(self) -> int:
        """The node's CPU power in cpuunits (see the module docstring)."""
        return self.cpus * UNITS_PER_CPU


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo's `Key:  N kB` lines, in bytes."""
    values = {}
    for line in text.splitlines():
        key, _sep, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            values[key.strip()] = int(fields[0]) * (1024 if fields[1:2] == ["kB"] else 1)
    return values


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def count_ids(text: str) -> int:
    """How many ids a kernel list such as 0-3,6 names."""
    total = 0
    for part in filter(None, text.strip().split(",")):
        low, _sep, high = part.partition("-")
        total += int(high or low) - int(low) + 1
    return total


def host_capacity(proc: Path = Path("/proc"), sys: Path = Path("/sys")) -> HostCapacity:
    mem = parse_meminfo((proc / "meminfo").read_text())
    ram = mem.get("MemTotal", 0)
    try:
        cpus = max(1, count_ids((sys / "devices/system/cpu/online").read_text()))
    except (OSError, ValueError):
        cpus = os.cpu_count() or 1
    limits = [_read_int(proc / "sys/kernel" / name) for name in ("threads-max", "pid_max")]
    known = [n for n in limits if n]
    return HostCapacity(
        ram=ram,
        swap=mem.get("SwapTotal", 0),
        lowmem=mem.get("LowTotal") or ram,
        cpus=cpus,
        tasks=min(known) if known else 32768,
    )


def disk_capacity(private_dir: Path, pool_setting: str | None) -> int:
    """Bytes the private areas can hold: the pool if mounted (or about to be made with a fixed
    POOL_SIZE), else the filesystem that holds the private directory."""
    from pyvz.storage.mounts import is_mountpoint
    from pyvz.units import parse_size

    if not is_mountpoint(private_dir) and pool_setting and pool_setting not in ("auto", "none"):
        return parse_size(pool_setting, 1, "POOL_SIZE")
    path = private_dir
    while not path.exists() and path != path.parent:
        path = path.parent
    stat = os.statvfs(path)
    return stat.f_blocks * stat.f_frsize


# ---- vzsplit ------------------------------------------------------------------------------


class Split(NamedTuple):
    """One CT's share of a host split into `count` equal parts (bytes, tasks, cpuunits)."""

    cts: int
    ram: int
    swap: int
    numproc: int
    cpuunits: int
    disk_soft: int  # DISKSPACE, as vzsplit always set it: soft = hard * 10 / 11
    disk: int


def host_reserve(ram: int) -> int:
    return max(HOST_RESERVE_MIN, ram // HOST_RESERVE_SHARE)


def _round_mb(value: int) -> int:
    return value // MB * MB


def max_cts(cap: HostCapacity, disk: int) -> int:
    """The most CTs that fit, each with the minimum RAM, disk and tasks."""
    by_ram = (cap.ram - host_reserve(cap.ram)) // MIN_CT_RAM
    by_disk = int(disk * DISK_SHARE) // MIN_CT_DISK
    by_tasks = cap.tasks // MIN_NUMPROC - 1
    return max(0, min(by_ram, by_disk, by_tasks))


def split(cap: HostCapacity, count: int, disk: int, host_units: int = HOST_CPUUNITS) -> Split:
    """Equal shares for `count` CTs; ValueError with the reason when they do not fit."""
    if count < 1:
        raise ValueError("the number of CTs must be at least 1")
    ram = _round_mb((cap.ram - host_reserve(cap.ram)) // count)
    hard = _round_mb(int(disk * DISK_SHARE) // count)
    tasks = cap.tasks // (count + 1)  # the host keeps one share of the tasks
    most = max_cts(cap, disk)
    for have, least, what in (
        (ram, MIN_CT_RAM, "RAM"),
        (hard, MIN_CT_DISK, "disk space"),
        (tasks, MIN_NUMPROC, "tasks"),
    ):
        if have < least:
            unit = " MB" if what != "tasks" else ""
            scale = MB if what != "tasks" else 1
            raise ValueError(
                f"{count} CTs do not fit: each would get {have // scale}{unit} of {what}, "
                f"less than the minimum of {least // scale}{unit} (at most {most} CTs fit on this host)"
            )
    numproc = min(tasks, max(MIN_NUMPROC, ram // RAM_PER_TASK))
    units = max(8, min(500000, (cap.power - host_units) // count))
    return Split(
        count, ram, _round_mb(cap.swap // count), numproc, units, _round_mb(hard * 10 // DISK_SOFT), hard
    )


# ---- one CT against the host (vzcalc, vzmemcheck) ----------------------------------------


class Share(NamedTuple):
    """One resource of one CT: amounts in bytes (tasks for numproc), None when not known."""

    used: int | None  # in use now (None: stopped, or the kernel does not count it)
    promised: int | None  # the soft guarantee (None: the resource has none)
    limit: int  # the hard limit; unlimited counts as the whole host
    whole: int  # the host's total it is measured against


def _bytes(name: str, value: int) -> int:
    return value * PAGE if name in IN_PAGES else value


def _limit(cfg: CtConfig | None, name: str, whole: int, barrier: bool = False) -> int:
    value = configured(cfg, name)
    units = value.barrier if barrier else value.limit
    return whole if units >= UNLIMITED else _bytes(name, units)


def ram_limits(cfg: CtConfig | None, cap: HostCapacity) -> tuple[int, int]:
    """The CT's RAM and swap limits in bytes; unlimited counts as the host's RAM or swap."""
    return _limit(cfg, "physpages", cap.ram), _limit(cfg, "swappages", cap.swap)


def shares(cfg: CtConfig | None, counters: list[Beancounter] | None, cap: HostCapacity) -> dict[str, Share]:
    """lowmem, ram, memswap, alloc and numproc of one CT (counters: None when stopped)."""
    held = {c.name: c.held for c in counters or ()}

    def used(*names: str) -> int | None:
        known = [_bytes(n, held[n] or 0) for n in names if held.get(n) is not None]
        return sum(known) if counters is not None and known else None

    ram, swap = ram_limits(cfg, cap)
    memswap = cap.ram + cap.swap
    # Kernel memory is charged to the CT's memory cgroup: its RAM limit bounds it too.
    kmem_bound = min(ram, cap.lowmem)
    kmem_limit = min(kmem_bound, sum(_limit(cfg, n, kmem_bound) for n in KMEM_NAMES))
    kmem_barrier = min(kmem_bound, sum(_limit(cfg, n, kmem_bound, barrier=True) for n in KMEM_NAMES))
    # tcprcvbuf is the same kernel counter as tcpsndbuf: count it once.
    kmem_used = used(*(n for n in KMEM_NAMES if n != "tcprcvbuf"))
    guarantee = configured(cfg, "vmguarpages").barrier  # unset or unlimited: nothing promised
    return {
        "lowmem": Share(kmem_used, kmem_barrier, kmem_limit, cap.lowmem),
        "ram": Share(used("physpages"), None, ram, cap.ram),
        "memswap": Share(used("physpages", "swappages"), ram + swap, ram + swap, memswap),
        "alloc": Share(
            used("privvmpages"),
            _bytes("vmguarpages", guarantee) if guarantee < UNLIMITED else 0,
            _limit(cfg, "privvmpages", memswap),
            memswap,
        ),
        "numproc": Share(used("numproc"), None, _limit(cfg, "numproc", cap.tasks), cap.tasks),
    }


# ---- vzoversell ---------------------------------------------------------------------------


class Sold(NamedTuple):
    """What vzoversell counts for one CT: RAM and swap limits in bytes, and its flags."""

    ram: int
    swap: int
    flags: str


def sold(cfg: CtConfig | None, counters: list[Beancounter] | None = None) -> Sold:
    """U: no RAM limit (not counted); R: no RAM limit, guessed as half of privvmpages;
    S: no swap limit (not counted); f: RAM failcnt > 0; F: another failcnt > 0."""
    ram, swap, privvm = (configured(cfg, n) for n in ("physpages", "swappages", "privvmpages"))
    flags = ""
    if ram.limit >= UNLIMITED or ram.limit == 0:
        ram_bytes = 0 if privvm.limit >= UNLIMITED else privvm.limit * PAGE // 2
        flags += "U" if privvm.limit >= UNLIMITED else "R"
    else:
        ram_bytes = ram.limit * PAGE
    swap_bytes = 0 if swap.limit >= UNLIMITED else swap.limit * PAGE
    if swap.limit >= UNLIMITED:
        flags += "S"
    fails = {c.name: c.failcnt or 0 for c in counters or ()}
    if fails.get("physpages"):
        flags += "f"
    if any(count for name, count in fails.items() if name != "physpages"):
        flags += "F"
    return Sold(ram_bytes, swap_bytes, flags)


def oversell(total: int, available: int) -> float | None:
    """Allocated as a percentage of available; None when the host has none of it."""
    return None if available <= 0 else total * 100 / available


# ---- vzcpucheck ---------------------------------------------------------------------------


def cpuunits(cfg: CtConfig | None) -> int:
    value = cfg.get(CPUUNITS) if cfg is not None else None
    return DEFAULT_CPUUNITS if value is None else value


def host_units(setting: str | None) -> int:
    """The host's own share (vz.conf VE0CPUUNITS, default 1000)."""
    return int(setting) if setting and setting.isdigit() else HOST_CPUUNITS


# ---- formatting shared by the tools -------------------------------------------------------


def human(value: int | None) -> str:
    """A byte count the way vzoversell prints it: 512M, 1.5G, 100G; zero or None is '-'."""
    if not value:
        return "-"
    number = float(value)
    for suffix in ("", "K", "M", "G", "T", "P"):
        if number < 1024 or suffix == "P":
            break
        number /= 1024
    if not suffix:
        return str(value)
    return f"{number:.3g}{suffix}" if number < 100 else f"{number:.0f}{suffix}"
