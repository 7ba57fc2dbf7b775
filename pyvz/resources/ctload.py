"""What vztop shows of each running CT: processes, CPU use, memory against its limit, and
the beancounters that have failed, all read the way vzlist and vzubc read them (one
listing Record per CT, its beancounters from pyvz.resources.beancounters).

CPU % is the CT cgroup's CPU time between two samples over the wall time between them, as
top counts a process: 100 is one CPU kept busy.
"""

from __future__ import annotations

import time
from typing import NamedTuple

from pyvz.host import Host
from pyvz.listing import records
from pyvz.params import PAGE
from pyvz.units import UNLIMITED


class CtLoad(NamedTuple):
    ctid: int
    name: str | None
    nproc: int
    cpu_percent: float | None  # None: no earlier sample, or the cgroup keeps no CPU time
    memory: int | None  # bytes held (physpages)
    memory_limit: int | None  # bytes; None: unlimited
    failed: tuple[tuple[str, int], ...]  # (beancounter, failcnt) with failcnt > 0


class Sample(NamedTuple):
    at: float  # time.monotonic()
    cpu_seconds: dict[int, float]  # by CTID


def cpu_sample(host: Host, ctids: list[int]) -> Sample:
    runtime = host.runtime
    used = {}
    for ctid in ctids:
        value = runtime.cgroups.cpu_seconds(runtime.cgroups_of(ctid).container)
        if value is not None:
            used[ctid] = value
    return Sample(time.monotonic(), used)


def running_ctids(host: Host) -> list[int]:
    return [record.ctid for record in records(host) if record.running]


def load(host: Host, before: Sample) -> tuple[list[CtLoad], Sample]:
    """One row per running CT, CPU % since `before`; and the sample for the next round."""
    rows = [record for record in records(host) if record.running]
    now = cpu_sample(host, [record.ctid for record in rows])
    elapsed = now.at - before.at
    out = []
    for record in rows:
        counters = record.beancounters or []
        cpu = None
        if record.ctid in now.cpu_seconds and record.ctid in before.cpu_seconds and elapsed > 0:
            spent = max(0.0, now.cpu_seconds[record.ctid] - before.cpu_seconds[record.ctid])
            cpu = 100.0 * spent / elapsed
        memory = limit = None
        for counter in counters:
            if counter.name == "physpages":
                memory = None if counter.held is None else counter.held * PAGE
                limit = None if counter.limit >= UNLIMITED else counter.limit * PAGE
        failed = tuple((c.name, c.failcnt) for c in counters if c.failcnt)
        out.append(CtLoad(record.ctid, record.name, record.nproc, cpu, memory, limit, failed))
    return out, now
