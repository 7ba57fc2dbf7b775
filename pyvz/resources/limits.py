"""A CT's resource limits, from its config, in the kernel's terms.

vzctl's VSwap model: --ram is PHYSPAGES' limit (pages), --swap is SWAPPAGES' limit on top of
it, --numproc's limit caps tasks, --cpuunits is a relative weight (1000 = a default share)
and --cpulimit a percentage of one CPU (0 = none). --cpus and --cpumask choose the CPUs
(a cpuset), TCPSNDBUF+TCPRCVBUF bound the CT's TCP buffer memory, and the I/O parameters act
on the block device under the CT's private area.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from pyvz.config import CtConfig
from pyvz.errors import ExitCode, VzError
from pyvz.params import (
    BY_NAME,
    CPULIMIT,
    CPUMASK,
    CPUS,
    CPUUNITS,
    IOLIMIT,
    IOPRIO,
    IOPSLIMIT,
    NODEMASK,
    NUMPROC,
    PAGE,
    PHYSPAGES,
    SWAPPAGES,
    format_id_list,
    parse_id_list,
)
from pyvz.units import UNLIMITED

CPU_PERIOD_US = 100_000
DEFAULT_IOPRIO = 4
_SYS = Path("/sys/devices/system")


class Limits(NamedTuple):
    memory: int | None = None  # bytes
    swap: int | None = None  # bytes on top of memory; None: no swap limit
    pids: int | None = None
    cpu_units: int | None = None
    cpu_percent: int | None = None  # of one CPU
    cpus: str | None = None  # cpuset.cpus; None: every online CPU
    mems: str | None = None  # cpuset.mems; None: every online node
    tcp: int | None = None  # bytes of TCP socket buffers
    io_device: str | None = None  # MAJ:MIN of the disk that holds the CT's data
    io_bps: int | None = None  # bytes/s, reads and writes each
    io_iops: int | None = None
    io_weight: int | None = None  # bfq weight, from ioprio


def _pages(value: int | None) -> int | None:
    return None if value is None or value >= UNLIMITED or value == 0 else value * PAGE


def online_ids(path: Path) -> set[int]:
    try:
        return parse_id_list(path.read_text())
    except (OSError, ValueError):
        return {0}


def host_cpus() -> set[int]:
    return online_ids(_SYS / "cpu/online")


def host_nodes() -> set[int]:
    return online_ids(_SYS / "node/online")


def cpuset(cfg: CtConfig, online: set[int] | None = None) -> str | None:
    """The CPUs the CT may use: its mask (or all), cut to the first --cpus of them."""
    mask, count = cfg.get(CPUMASK), cfg.get(CPUS)
    if (mask is None or mask == "all") and not count:
        return None
    online = host_cpus() if online is None else online
    chosen = sorted(online if mask is None or mask == "all" else parse_id_list(mask) & online)
    if not chosen:
        raise VzError(
            ExitCode.SETUBC_ERROR, f"cpumask {mask} names no online CPU (online: {format_id_list(online)})"
        )
    if count:
        chosen = chosen[:count]
    return format_id_list(chosen)


def nodeset(cfg: CtConfig, online: set[int] | None = None) -> str | None:
    mask = cfg.get(NODEMASK)
    if mask is None or mask == "all":
        return None
    online = host_nodes() if online is None else online
    chosen = parse_id_list(mask) & online
    if not chosen:
        raise VzError(
            ExitCode.SETUBC_ERROR, f"nodemask {mask} names no online node (online: {format_id_list(online)})"
        )
    return format_id_list(chosen)


def _limit_bytes(cfg: CtConfig, name: str) -> int | None:
    value = cfg.get(BY_NAME[name])
    return None if value is None or value.limit >= UNLIMITED else value.limit


def io_weight(ioprio: int) -> int:
    """ioprio 0..7 to a bfq weight: 4 (the default) is bfq's 100, each step doubles or halves it."""
    return max(1, int(round(100 * 2.0 ** (ioprio - DEFAULT_IOPRIO))))


def has_io_limits(cfg: CtConfig) -> bool:
    """Whether any I/O parameter is set: only then is the CT's disk worth looking up."""
    return cfg.get(IOLIMIT) is not None or cfg.get(IOPSLIMIT) is not None or cfg.get(IOPRIO) is not None


def from_config(cfg: CtConfig, io_device: str | None = None) -> Limits:
    physpages, swappages, numproc = cfg.get(PHYSPAGES), cfg.get(SWAPPAGES), cfg.get(NUMPROC)
    memory = _pages(physpages.limit) if physpages else None
    # Unset SWAPPAGES is no swap (the VSwap samples always set it); `unlimited` is no limit.
    swap = (swappages.limit * PAGE if swappages.limit < UNLIMITED else None) if swappages else 0
    pids = numproc.limit if numproc and numproc.limit < UNLIMITED else None
    snd, rcv = _limit_bytes(cfg, "tcpsndbuf"), _limit_bytes(cfg, "tcprcvbuf")
    ioprio = cfg.get(IOPRIO)
    return Limits(
        memory=memory,
        swap=swap if memory is not None else None,
        pids=pids,
        cpu_units=cfg.get(CPUUNITS),
        cpu_percent=cfg.get(CPULIMIT) or None,
        cpus=cpuset(cfg),
        mems=nodeset(cfg),
        # The kernel keeps one counter for TCP send and receive buffers: it gets their sum.
        tcp=None if snd is None or rcv is None else snd + rcv,
        io_device=io_device,
        io_bps=cfg.get(IOLIMIT) or None,
        io_iops=cfg.get(IOPSLIMIT) or None,
        io_weight=io_weight(ioprio) if ioprio is not None else None,
    )


def cpu_shares(units: int) -> int:
    """cgroup v1 cpu.shares: 1024 is the default share, as cpuunits 1000 is."""
    return max(2, units * 1024 // 1000)


def cpu_weight(units: int) -> int:
    """cgroup v2 cpu.weight: 100 is the default, range 1..10000."""
    return max(1, min(10000, units // 10))
