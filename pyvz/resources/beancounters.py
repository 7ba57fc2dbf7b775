"""User beancounters: held, maxheld, barrier, limit and failcnt per resource, per CT.

barrier and limit come from the CT's config. held, maxheld and failcnt come from the
kernel: cgroup counters (memory, pids, TCP buffers, OOM kills) and the CT's processes (open
files, sockets, ptys, locks). What the kernel does not count is None ("-" in vzubc, 0 in
the /proc/user_beancounters text). Counters live in the CT's cgroup, so they survive any
number of vzubc runs and start again from zero when the CT restarts, as in OpenVZ. Where
the kernel keeps no peak, maxheld is the highest value pyvz has seen since the start, kept
in the CT's runtime state (beside its LXC config) and keyed by the cgroup's identity.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from pyvz.atomic import write_atomic
from pyvz.config import CtConfig
from pyvz.kernelfiles import read_small
from pyvz.params import PAGE, UBC_PARAMS, Param, ubc_name
from pyvz.resources.cgroups import CgroupTree, Usage
from pyvz.units import UNLIMITED, BarrierLimit

NAMES: tuple[str, ...] = tuple(ubc_name(p) for p in UBC_PARAMS)
PARAM_OF: dict[str, Param[BarrierLimit]] = {ubc_name(p): p for p in UBC_PARAMS}
IN_PAGES = frozenset(name for name in NAMES if name.endswith("pages"))
FROM_PROCESSES = frozenset({"numfile", "numtcpsock", "numothersock", "numpty", "numflock"})


class Beancounter(NamedTuple):
    name: str
    held: int | None
    maxheld: int | None
    barrier: int
    limit: int
    failcnt: int | None

    def as_json(self) -> dict[str, int | None]:
        return {
            "held": self.held,
            "maxheld": self.maxheld,
            "barrier": self.barrier,
            "limit": self.limit,
            "failcnt": self.failcnt,
        }


def configured(cfg: CtConfig | None, name: str) -> BarrierLimit:
    """barrier:limit as configured; unset means unlimited, as in OpenVZ."""
    value = cfg.get(PARAM_OF[name]) if cfg is not None else None
    return value if value is not None else BarrierLimit(UNLIMITED, UNLIMITED)


def _to_units(name: str, value: int | None) -> int | None:
    if value is None or name not in IN_PAGES:
        return value
    return (value + PAGE - 1) // PAGE


def process_usage(pids: list[int]) -> dict[str, Usage]:
    """Counters read from the CT's processes: open files, sockets, ptys and file locks."""
    if not pids:
        return {}
    files = 0
    for pid in pids:
        try:
            files += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    found = {"numfile": Usage(files)}
    try:
        # The CT has its own network namespace: these counts are the CT's alone.
        sockstat = read_small(f"/proc/{pids[0]}/net/sockstat").split("\n")
        fields = {line.split(":")[0]: line.split()[1:] for line in sockstat if ":" in line}
        used, tcp = int(fields["sockets"][1]), int(fields["TCP"][1])
        found["numtcpsock"], found["numothersock"] = Usage(tcp), Usage(max(0, used - tcp))
    except (OSError, KeyError, IndexError, ValueError):
        pass
    try:
        ptys = os.listdir(f"/proc/{pids[0]}/root/dev/pts")
        found["numpty"] = Usage(sum(1 for entry in ptys if entry.isdigit()))
    except OSError:
        pass
    locks = _lock_owners()
    if locks is not None:
        found["numflock"] = Usage(sum(locks.get(pid, 0) for pid in pids))
    return found


def new_reading() -> None:
    """Forget what was read once for all CTs: a long-running reader (the daemon's /metrics)
    calls this before each round, a command reads once anyway."""
    _lock_owners.cache_clear()


@cache
def _lock_owners() -> dict[int, int] | None:
    """File locks per owning pid, read once per command (one /proc/locks for all CTs)."""
    owners: dict[int, int] = {}
    try:
        with open("/proc/locks") as handle:
            for line in handle:
                pid = _lock_pid(line)
                owners[pid] = owners.get(pid, 0) + 1
    except OSError:
        return None
    return owners


def _lock_pid(line: str) -> int:
    # "1: POSIX  ADVISORY  WRITE 1234 00:15:123 0 EOF"; "->" lines are waiters.
    parts = line.split()
    try:
        return int(parts[4]) if parts[1] != "->" else int(parts[5])
    except (IndexError, ValueError):
        return -1


class State:
    """maxheld where the kernel keeps none, per cgroup identity."""

    def __init__(self, path: Path, identity: int) -> None:
        """`identity`: the cgroup's inode now."""
        self.path = path
        data: dict[str, Any] = {}
        try:
            data = json.loads(read_small(path))
        except (OSError, ValueError):
            pass
        self.identity = identity
        fresh = data.get("identity") != self.identity  # the CT restarted: its counters did too
        self.maxheld: dict[str, int] = {} if fresh else dict(data.get("maxheld", {}))
        self._saved = None if fresh else data

    def save(self) -> None:
        data = {"identity": self.identity, "maxheld": self.maxheld}
        if data != self._saved:
            try:
                write_atomic(self.path, json.dumps(data), durable=False)
            except OSError:
                pass  # a read-only state dir only costs the remembered maxheld
            self._saved = data


def read(
    cgroups: CgroupTree,
    relative: str,
    cfg: CtConfig | None,
    state_file: Path,
    names: frozenset[str] | None = None,
    kernel: dict[str, Usage] | None = None,
    pids: list[int] | None = None,
) -> list[Beancounter] | None:
    """The CT's beancounters (those in `names`, default all), or None when it is not running.

    `kernel` and `pids`: cgroups.usage() and cgroups.procs() of the CT if the caller has
    read them already (a scrape wants the bytes too), so no file is read twice."""
    identity = cgroups.identity(relative)
    if identity is None:
        return None
    kernel = dict(cgroups.usage(relative, names) if kernel is None else kernel)
    if names is None or names & FROM_PROCESSES:
        kernel.update(process_usage(cgroups.procs(relative) if pids is None else pids))
    state = State(state_file, identity)
    counters = []
    for name in NAMES if names is None else [n for n in NAMES if n in names]:
        usage = kernel.get(name, Usage(None))
        held = _to_units(name, usage.held)
        maxheld = _to_units(name, usage.maxheld)
        if held is not None:
            maxheld = max(held, maxheld or 0, state.maxheld.get(name, 0))
            state.maxheld[name] = maxheld
        configured_value = configured(cfg, name)
        counters.append(
            Beancounter(name, held, maxheld, configured_value.barrier, configured_value.limit, usage.failcnt)
        )
    state.save()
    return counters


def proc_text(cts: list[tuple[int, list[Beancounter]]]) -> str:
    """The /proc/user_beancounters text (Version 2.5) of these CTs; unknown values are 0.

    Mainline has no such file: this is the one vzubc reads by default (and `vzubc --proc`
    prints), in the OpenVZ kernel's layout, so scripts that parse that file parse this.
    """
    columns = ("held", "maxheld", "barrier", "limit", "failcnt")
    lines = ["Version: 2.5", f"{'uid':>10}  {'resource':<12} " + " ".join(f"{c:>20}" for c in columns)]
    for ctid, counters in cts:
        for index, counter in enumerate(counters):
            uid = f"{ctid:>10}:" if index == 0 else " " * 11
            values = (counter.held, counter.maxheld, counter.barrier, counter.limit, counter.failcnt)
            lines.append(f"{uid} {counter.name:<12} " + " ".join(f"{v or 0:>20}" for v in values))
    return "\n".join(lines) + "\n"
