"""A CT's resource limits, from its config, in the kernel's terms.

vzctl's VSwap model: --ram is PHYSPAGES' limit (pages), --swap is SWAPPAGES' limit on top of
it, --numproc's limit caps tasks, --cpuunits is a relative weight (1000 = a default share)
and --cpulimit a percentage of one CPU (0 = none).
"""

from __future__ import annotations

from typing import NamedTuple

from pyvz.config import CtConfig
from pyvz.params import CPULIMIT, CPUUNITS, NUMPROC, PHYSPAGES, SWAPPAGES
from pyvz.units import UNLIMITED

PAGE = 4096
CPU_PERIOD_US = 100_000


class Limits(NamedTuple):
    memory: int | None = None  # bytes
    swap: int | None = None  # bytes on top of memory
    pids: int | None = None
    cpu_units: int | None = None
    cpu_percent: int | None = None  # of one CPU


def _pages(value: int | None) -> int | None:
    return None if value is None or value >= UNLIMITED or value == 0 else value * PAGE


def from_config(cfg: CtConfig) -> Limits:
    physpages, swappages, numproc = cfg.get(PHYSPAGES), cfg.get(SWAPPAGES), cfg.get(NUMPROC)
    memory = _pages(physpages.limit) if physpages else None
    swap = (swappages.limit * PAGE if swappages.limit < UNLIMITED else None) if swappages else None
    pids = numproc.limit if numproc and numproc.limit < UNLIMITED else None
    return Limits(
        memory, swap if memory is not None else None, pids, cfg.get(CPUUNITS), cfg.get(CPULIMIT) or None
    )


def cpu_shares(units: int) -> int:
    """cgroup v1 cpu.shares: 1024 is the default share, as cpuunits 1000 is."""
    return max(2, units * 1024 // 1000)


def cpu_weight(units: int) -> int:
    """cgroup v2 cpu.weight: 100 is the default, range 1..10000."""
    return max(1, min(10000, units // 10))
