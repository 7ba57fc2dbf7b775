"""Where a CT's cgroups are and what they say, on cgroup v1 (hybrid) and v2 alike.

LXC puts a CT's processes in `<tag>/<ctid>` and its monitor in `<tag>/<ctid>.monitor`
(lxc.cgroup.dir.container/monitor), where the tag names the PYVZ_ROOT, so two roots never
collide. Reading these files answers "is it running" and "how many processes" without
talking to LXC, which is fast and works from any network namespace.
"""

from __future__ import annotations

import errno
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from pyvz.errors import ExitCode, VzError
from pyvz.kernelfiles import read_small
from pyvz.params import format_id_list
from pyvz.resources.limits import CPU_PERIOD_US, Limits, cpu_shares, cpu_weight, host_cpus, host_nodes

CGROUP_MOUNT = Path("/sys/fs/cgroup")


class Usage(NamedTuple):
    """What the kernel counts for one beancounter, in bytes or items; None: not counted here."""

    held: int | None
    maxheld: int | None = None
    failcnt: int | None = None


class InForce(NamedTuple):
    """The limits the kernel holds a running CT's cgroup to: bytes or tasks, math.inf for
    none, None where this host has no such file (the controller or swap accounting is off)."""

    memory: float | None
    swap: float | None  # on top of memory
    pids: float | None


class IoCount(NamedTuple):
    """Block I/O of a cgroup and its inner cgroups on one device since the cgroup was made."""

    device: str  # MAJ:MIN
    read_bytes: int
    write_bytes: int
    reads: int
    writes: int


# The beancounters each version's memory files give (usage() skips those files when none
# of them is asked for).
_V1_MEMORY = ("physpages", "swappages", "oomguarpages", "shmpages")
_V2_MEMORY = ("physpages", "swappages", "oomguarpages", "kmemsize", "shmpages", "tcpsndbuf", "tcprcvbuf")


class CtCgroups(NamedTuple):
    """The LXC config's view: relative cgroup dirs for one CT."""

    container: str
    monitor: str

    @classmethod
    def of(cls, tag: str, ctid: int) -> CtCgroups:
        return cls(f"{tag}/{ctid}", f"{tag}/{ctid}.monitor")


class CgroupTree(ABC):
    def __init__(self, mount: Path) -> None:
        self.mount = mount

    @abstractmethod
    def available(self) -> bool:
        """Whether the hierarchy is mounted here at all (a fresh /sys hides it)."""

    @abstractmethod
    def dirs(self, relative: str) -> list[Path]:
        """Every directory that is this cgroup (one per v1 hierarchy, one on v2)."""

    @abstractmethod
    def nproc(self, relative: str) -> int:
        """Tasks in the cgroup and below; 0 if it does not exist."""

    @abstractmethod
    def freezer(self, relative: str) -> tuple[Path, str, str]:
        """The file that freezes the cgroup, and what to write to it to freeze and to thaw."""

    def thaw_below(self, relative: str) -> None:
        """Thaw the cgroup and every cgroup below it: a CRIU restore gives each the freezer
        state it was dumped with, frozen for a CT dumped while frozen (snapshot, --dump)."""
        path, _freeze, thaw = self.freezer(relative)
        for top, _dirs, files in os.walk(path.parent):
            if path.name in files:
                try:
                    (Path(top) / path.name).write_text(thaw)
                except OSError as err:
                    # Gone meanwhile (ENOENT; ENODEV on v1): a killed CT's cgroups are
                    # removed by LXC as its tasks die, which is what a thaw after a kill awaits.
                    if err.errno not in (errno.ENOENT, errno.ENODEV):
                        raise

    @abstractmethod
    def frozen_probe(self, relative: str) -> tuple[Path, str]:
        """The file that tells whether the cgroup is frozen, and the line it then holds."""

    def is_frozen(self, relative: str) -> bool:
        """Whether every task in the cgroup has stopped (freezing is not instant)."""
        path, line = self.frozen_probe(relative)
        try:
            return line in path.read_text().splitlines()
        except FileNotFoundError:
            return False

    @abstractmethod
    def settings(self, limits: Limits, fresh: bool = False) -> list[tuple[str, str]]:
        """(file, value) pairs that enforce `limits`, in the order they must be written;
        `fresh`: for a new cgroup, leaving out what only resets a limit to "none"."""

    @abstractmethod
    def lxc_key(self, file: str) -> str:
        """The LXC config key that sets `file` when the CT starts."""

    def unenforced(self, limits: Limits) -> list[str]:
        """What this host cannot enforce of `limits`, to be said out loud."""
        return []

    # Beancounters whose limit this cgroup version enforces (the rest are saved and reported).
    enforces: frozenset[str] = frozenset({"physpages", "swappages", "numproc"})

    @abstractmethod
    def usage(self, relative: str, names: frozenset[str] | None = None) -> dict[str, Usage]:
        """The kernel's counters for a running CT's cgroup, by beancounter name; `names`:
        only these are needed (the files of the others are not read; they may still come)."""

    @abstractmethod
    def cpu_seconds(self, relative: str) -> float | None:
        """CPU time the cgroup's tasks have used, inner cgroups included; None: no such cgroup."""

    @abstractmethod
    def in_force(self, relative: str) -> InForce:
        """The memory, swap and task limits the kernel applies to the cgroup now."""

    @abstractmethod
    def io_counts(self, relative: str) -> list[IoCount]:
        """Block I/O per device, inner cgroups included."""

    def count_io(self, device: str, relative: str) -> None:
        """Make the kernel count per-cgroup block I/O on `device` (MAJ:MIN), by a write to
        the cgroup `relative` if it takes one; v2 always counts."""
        return None

    def _limit(self, path: str | Path, none_at: int) -> float | None:
        """A limit file's value: math.inf for "max" or a value at or above `none_at`."""
        try:
            text = read_small(path).strip()
        except OSError:
            return None
        if text == "max":
            return math.inf
        try:
            value = int(text)
        except ValueError:
            return None
        return math.inf if value < 0 or value >= none_at else float(value)

    def _read(self, path: str | Path) -> int | None:
        try:
            return int(read_small(path).split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _keyed(self, path: str | Path) -> dict[str, int]:
        """A `key value` per line file (memory.stat, pids.events, memory.oom_control)."""
        try:
            lines = read_small(path).splitlines()
        except OSError:
            return {}
        pairs = (line.split() for line in lines)
        return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].lstrip("-").isdigit()}

    def _key(self, path: str, key: str) -> int | None:
        """One key of a big keyed file (v1's memory.stat has some 40): found, not parsed."""
        try:
            text = read_small(path)
        except OSError:
            return None
        at = 0 if text.startswith(f"{key} ") else text.find(f"\n{key} ") + 1
        if at == 0 and not text.startswith(f"{key} "):
            return None
        end = text.find("\n", at)
        try:
            return int(text[at + len(key) + 1 : end if end >= 0 else None])
        except ValueError:
            return None

    def _subtree_sum(self, top: str, file: str, key: str) -> int:
        """Events are counted where they happen: in the CT's inner cgroups too."""
        return sum(self._keyed(f"{d}/{file}").get(key, 0) for d in subtree(top))

    def lxc_lines(self, limits: Limits) -> list[str]:
        """The LXC config lines for a start: a new cgroup has no limits, so only real ones."""
        return [f"{self.lxc_key(file)} = {value}" for file, value in self.settings(limits, fresh=True)]

    @abstractmethod
    def file_path(self, relative: str, file: str) -> Path:
        """Where `file` of the cgroup `relative` is."""

    def targets(self, relative: str, file: str) -> list[Path]:
        """The files to write `file` into: the CT's own, and on v1 some its whole subtree."""
        return [self.file_path(relative, file)]

    def apply_inner(self, relative: str, limits: Limits) -> None:
        """After a start: LXC wrote the CT's own cgroup; copy what must hold below it too."""
        return None  # hierarchical limits (v2) hold below by themselves

    def write_device_rule(self, relative: str, allow: bool, rule: str) -> bool:
        """Change a running CT's device access; False where it cannot be done live (v2's
        device access is an eBPF program LXC attaches at start)."""
        return False

    def apply(self, relative: str, limits: Limits) -> None:
        """Write the limits into a running CT's cgroup: no restart needed.

        Some files must be written in an order that depends on the old values (memory before
        memory+swap when lowering, after when raising; a v1 cpuset parent before its children
        when widening, after when narrowing), so failed writes are retried while any succeed.
        """
        pending = [
            (path, value)
            for file, value in self.settings(limits)
            for path in self.targets(relative, file)
            if path.exists()
        ]
        while pending:
            failed = []
            for path, value in pending:
                try:
                    path.write_text(value)
                except OSError as err:
                    failed.append((path, value, err))
            if len(failed) == len(pending):
                path, value, problem = failed[0]
                raise VzError(ExitCode.SETUBC_ERROR, f"cannot set {path.name}={value}: {problem.strerror}")
            pending = [(path, value) for path, value, _err in failed]

    def each_dir(self, relative: str) -> Iterator[str]:
        """dirs(), one at a time: a reader that needs only the first stops there."""
        for directory in self.dirs(relative):
            yield str(directory)

    def identity(self, relative: str) -> int | None:
        """The inode of the cgroup's first directory: new each time the CT starts."""
        for directory in self.each_dir(relative):
            try:
                return os.stat(directory).st_ino
            except OSError:
                return None
        return None

    def procs(self, relative: str) -> list[int]:
        """Processes in the cgroup and its inner cgroups (a CT's live one level down)."""
        for directory in self.each_dir(relative):
            pids = [pid for top in subtree(directory) for pid in _read_pids(f"{top}/cgroup.procs")]
            if pids:
                return pids
        return []

    def remove(self, relative: str) -> None:
        """rmdir the cgroup and its children, deepest first; populated ones stay."""
        for directory in self.dirs(relative):
            if not directory.is_dir():
                continue
            subdirs = [Path(top) for top, _d, _f in os.walk(directory)]
            for sub in sorted(subdirs, key=lambda p: len(p.parts), reverse=True):
                try:
                    sub.rmdir()
                except OSError:
                    pass


class CgroupV1(CgroupTree):
    _mounted: list[Path] | None = None

    def settings(self, limits: Limits, fresh: bool = False) -> list[tuple[str, str]]:
        values: list[tuple[str, str]] = []
        if limits.memory is not None:
            values.append(("memory.limit_in_bytes", str(limits.memory)))
            # Measured on 6.18: a charge that fails on the memory+swap counter is not counted in
            # any failcnt. With no swap on the host that limit cannot matter, so it stays off and
            # the memory counter is the one that hits (and counts) first.
            both = limits.memory + limits.swap if limits.swap is not None and host_has_swap() else -1
            if not fresh or both != -1:
                values.append(("memory.memsw.limit_in_bytes", str(both)))
        elif not fresh:
            values += [("memory.memsw.limit_in_bytes", "-1"), ("memory.limit_in_bytes", "-1")]
        if limits.tcp is not None or not fresh:
            values.append(
                ("memory.kmem.tcp.limit_in_bytes", str(limits.tcp) if limits.tcp is not None else "-1")
            )
        if limits.pids is not None or not fresh:
            values.append(("pids.max", str(limits.pids) if limits.pids is not None else "max"))
        if limits.cpu_units is not None:
            values.append(("cpu.shares", str(cpu_shares(limits.cpu_units))))
        if limits.cpu_percent or not fresh:
            values.append(("cpu.cfs_period_us", str(CPU_PERIOD_US)))
            quota = limits.cpu_percent * CPU_PERIOD_US // 100 if limits.cpu_percent else -1
            values.append(("cpu.cfs_quota_us", str(quota)))
        if limits.cpus or not fresh:
            values.append(("cpuset.cpus", limits.cpus or format_id_list(host_cpus())))
        if limits.mems or not fresh:
            values.append(("cpuset.mems", limits.mems or format_id_list(host_nodes())))
        if limits.io_device:
            device = limits.io_device
            for direction in ("read", "write"):
                if limits.io_bps or not fresh:
                    values.append(
                        (f"blkio.throttle.{direction}_bps_device", f"{device} {limits.io_bps or 0}")
                    )
                if limits.io_iops or not fresh:
                    values.append(
                        (f"blkio.throttle.{direction}_iops_device", f"{device} {limits.io_iops or 0}")
                    )
        if limits.io_weight is not None and self.has_bfq():
            values.append(("blkio.bfq.weight", str(min(1000, limits.io_weight))))
        if any(f == "memory.memsw.limit_in_bytes" for f, _v in values) and not self._has_memsw():
            values = [(f, v) for f, v in values if f != "memory.memsw.limit_in_bytes"]
        return values

    def apply_inner(self, relative: str, limits: Limits) -> None:
        """After a start: LXC wrote the CT's own cgroup; copy what must hold below it too."""
        if not (limits.io_device and (limits.io_bps or limits.io_iops)):
            return
        for file, value in self.settings(limits, fresh=True):
            if file.startswith("blkio.throttle."):
                for path in self.targets(relative, file)[1:]:
                    path.write_text(value)

    def unenforced(self, limits: Limits) -> list[str]:
        problems = []
        if limits.memory is not None and limits.swap and host_has_swap() and not self._has_memsw():
            problems.append(
                "the swap limit is not enforced: this kernel has no swap accounting (boot with swapaccount=1)"
            )
        if limits.io_weight is not None and not self.has_bfq():
            problems.append("ioprio is not enforced: the bfq I/O scheduler is not loaded (modprobe bfq)")
        return problems

    @property
    def enforces(self) -> frozenset[str]:  # type: ignore[override]
        tcp = (
            {"tcpsndbuf", "tcprcvbuf"}
            if (self.mount / "memory/memory.kmem.tcp.usage_in_bytes").exists()
            else set()
        )
        swap = {"swappages"} if self._has_memsw() else set()
        return frozenset({"physpages", "numproc", *swap, *tcp})

    def usage(self, relative: str, names: frozenset[str] | None = None) -> dict[str, Usage]:
        # Plain strings, no existence checks: a missing cgroup reads as nothing counted.
        mem, pids = f"{self.mount}/memory/{relative}", f"{self.mount}/pids/{relative}"
        found: dict[str, Usage] = {}
        read = self._read

        def wanted(*which: str) -> bool:
            return names is None or not names.isdisjoint(which)

        held = read(f"{mem}/memory.usage_in_bytes") if wanted(*_V1_MEMORY) else None
        if held is not None:
            failcnt = (read(f"{mem}/memory.failcnt") or 0) + (read(f"{mem}/memory.memsw.failcnt") or 0)
            found["physpages"] = Usage(held, read(f"{mem}/memory.max_usage_in_bytes"), failcnt)
            both = read(f"{mem}/memory.memsw.usage_in_bytes")
            if both is not None:
                found["swappages"] = Usage(max(0, both - held), None, None)
            if wanted("oomguarpages"):
                oom = self._subtree_sum(mem, "memory.oom_control", "oom_kill")
                found["oomguarpages"] = Usage(both if both is not None else held, None, oom)
            if wanted("shmpages"):
                found["shmpages"] = Usage(self._key(f"{mem}/memory.stat", "total_shmem"))
        for name, prefix in (("kmemsize", "memory.kmem"), ("tcpsndbuf", "memory.kmem.tcp")):
            if not wanted(name, "tcprcvbuf" if name == "tcpsndbuf" else name):
                continue
            kheld = read(f"{mem}/{prefix}.usage_in_bytes")
            if kheld is not None:
                found[name] = Usage(
                    kheld, read(f"{mem}/{prefix}.max_usage_in_bytes"), read(f"{mem}/{prefix}.failcnt")
                )
        if "tcpsndbuf" in found:
            found["tcprcvbuf"] = found["tcpsndbuf"]  # one kernel counter for both directions
        current = read(f"{pids}/pids.current") if wanted("numproc") else None
        if current is not None:
            found["numproc"] = Usage(
                current, read(f"{pids}/pids.peak"), self._subtree_sum(pids, "pids.events", "max")
            )
        return found

    def cpu_seconds(self, relative: str) -> float | None:
        nanoseconds = self._read(f"{self.mount}/cpuacct/{relative}/cpuacct.usage")
        return None if nanoseconds is None else nanoseconds / 1e9

    def in_force(self, relative: str) -> InForce:
        mem = f"{self.mount}/memory/{relative}"
        memory = self._limit(f"{mem}/memory.limit_in_bytes", _V1_NO_LIMIT)
        both = self._limit(f"{mem}/memory.memsw.limit_in_bytes", _V1_NO_LIMIT)
        swap = None if memory is None or both is None else max(0.0, both - memory)
        return InForce(memory, swap, self._limit(f"{self.mount}/pids/{relative}/pids.max", 1 << 62))

    def io_counts(self, relative: str) -> list[IoCount]:
        # The throttle files are v1's only per-cgroup I/O counts since CFQ went (see count_io).
        top = f"{self.mount}/blkio/{relative}"
        data = _v1_rwstat(f"{top}/blkio.throttle.io_service_bytes_recursive")
        ops = _v1_rwstat(f"{top}/blkio.throttle.io_serviced_recursive")
        return [
            IoCount(device, *data[device], *ops.get(device, (0, 0)))
            for device in sorted(data)
            if any(data[device]) or any(ops.get(device, (0, 0)))
        ]

    def count_io(self, device: str, relative: str) -> None:
        # Measured on 6.18: v1 counts a cgroup's bios only on a queue where blk-throttle is set
        # up, which the kernel (6.9+) does at the first rule written for that device, in any
        # cgroup. A rule of 0 is "no limit": written where pyvz sets no rule of its own (the
        # root's tag cgroup, above the CTs'), it limits nothing and changes no one's limit.
        try:
            (self.mount / "blkio" / relative / "blkio.throttle.read_bps_device").write_text(f"{device} 0")
        except OSError:
            pass

    def _has_memsw(self) -> bool:
        # Without swap accounting (swapaccount=0) there is no memory+swap limit to set.
        return (self.mount / "memory/memory.memsw.limit_in_bytes").exists()

    def has_bfq(self) -> bool:
        return (self.mount / "blkio/blkio.bfq.io_service_bytes").exists()

    # Files whose value must also be written below the CT's cgroup. A v1 cpuset child must
    def write_device_rule(self, relative: str, allow: bool, rule: str) -> bool:
        # v1's devices controller keeps a child within its parent: widen top-down, narrow bottom-up.
        top = self.file_path(relative, "devices.list").parent
        below = sorted((Path(d) for d, _s, _f in os.walk(top) if d != str(top)), key=lambda d: len(d.parts))
        order = [top, *below] if allow else [*reversed(below), top]
        for directory in order:
            (directory / ("devices.allow" if allow else "devices.deny")).write_text(rule)
        return True

    # stay inside its parent; v1 blkio throttling is not hierarchical (measured on 6.18: a
    # limit on the CT's cgroup does not hold its tasks, which live one level down).
    SUBTREE_FILES = ("cpuset.", "blkio.throttle.")

    def targets(self, relative: str, file: str) -> list[Path]:
        top = self.file_path(relative, file)
        if not file.startswith(self.SUBTREE_FILES):
            return [top]
        below = sorted(Path(d) / file for d, _s, _f in os.walk(top.parent) if d != str(top.parent))
        return [top, *below]

    def lxc_key(self, file: str) -> str:
        return f"lxc.cgroup.{file}"

    def file_path(self, relative: str, file: str) -> Path:
        return self.mount / file.split(".", 1)[0] / relative / file

    def _hierarchies(self) -> list[Path]:
        # Listed once per command: vzubc and vzlist ask for every running CT.
        if self._mounted is None:
            try:
                self._mounted = sorted(p for p in self.mount.iterdir() if p.is_dir() and not p.is_symlink())
            except FileNotFoundError:
                return []
        return self._mounted

    def available(self) -> bool:
        return (self.mount / "pids").is_dir() or any((h / "tasks").exists() for h in self._hierarchies())

    def dirs(self, relative: str) -> list[Path]:
        return [h / relative for h in self._hierarchies() if (h / relative).is_dir()]

    def each_dir(self, relative: str) -> Iterator[str]:
        for hierarchy in self._hierarchies():
            directory = f"{hierarchy}/{relative}"
            if os.path.isdir(directory):
                yield directory

    def freezer(self, relative: str) -> tuple[Path, str, str]:
        return self.mount / "freezer" / relative / "freezer.state", "FROZEN", "THAWED"

    def frozen_probe(self, relative: str) -> tuple[Path, str]:
        return self.mount / "freezer" / relative / "freezer.state", "FROZEN"

    def nproc(self, relative: str) -> int:
        try:
            return int(read_small(f"{self.mount}/pids/{relative}/pids.current"))
        except (FileNotFoundError, ValueError):
            pass
        for directory in self.each_dir(relative):
            return sum(len(_read_pids(f"{top}/tasks")) for top in subtree(directory))
        return 0


class CgroupV2(CgroupTree):
    def settings(self, limits: Limits, fresh: bool = False) -> list[tuple[str, str]]:
        swap = limits.swap if limits.memory is not None else None
        values = [
            ("memory.max", str(limits.memory) if limits.memory is not None else "max"),
            ("memory.swap.max", str(swap) if swap is not None else "max"),
            ("pids.max", str(limits.pids) if limits.pids is not None else "max"),
        ]
        if limits.cpu_units is not None:
            values.append(("cpu.weight", str(cpu_weight(limits.cpu_units))))
        quota = str(limits.cpu_percent * CPU_PERIOD_US // 100) if limits.cpu_percent else "max"
        values.append(("cpu.max", f"{quota} {CPU_PERIOD_US}"))
        # An empty v2 cpuset means "the parent's": that is how a mask is taken away.
        values.append(("cpuset.cpus", limits.cpus or ""))
        values.append(("cpuset.mems", limits.mems or ""))
        if limits.io_device:
            bps, iops = limits.io_bps or "max", limits.io_iops or "max"
            values.append(("io.max", f"{limits.io_device} rbps={bps} wbps={bps} riops={iops} wiops={iops}"))
        if limits.io_weight is not None:
            values.append(("io.bfq.weight", f"default {min(1000, limits.io_weight)}"))
        if fresh:  # a new cgroup already has no limits: say only what differs
            unlimited = {
                "max",
                "",
                f"max {CPU_PERIOD_US}",
                f"{limits.io_device} rbps=max wbps=max riops=max wiops=max",
            }
            values = [(f, v) for f, v in values if v not in unlimited]
        return values

    def usage(self, relative: str, names: frozenset[str] | None = None) -> dict[str, Usage]:
        path = f"{self.mount}/{relative}"  # a missing cgroup reads as nothing counted
        read, keyed = self._read, self._keyed
        found: dict[str, Usage] = {}
        memory = names is None or not names.isdisjoint(_V2_MEMORY)
        held = read(f"{path}/memory.current") if memory else None
        if held is not None:
            events = keyed(f"{path}/memory.events")  # hierarchical: inner cgroups included
            found["physpages"] = Usage(held, read(f"{path}/memory.peak"), events.get("max", 0))
            swap = read(f"{path}/memory.swap.current")
            if swap is not None:
                swap_events = keyed(f"{path}/memory.swap.events")
                found["swappages"] = Usage(swap, read(f"{path}/memory.swap.peak"), swap_events.get("fail", 0))
            found["oomguarpages"] = Usage(held + (swap or 0), None, events.get("oom_kill", 0))
            stat = keyed(f"{path}/memory.stat")
            found["kmemsize"] = Usage(stat.get("kernel"))
            found["shmpages"] = Usage(stat.get("shmem"))
            found["tcpsndbuf"] = found["tcprcvbuf"] = Usage(stat.get("sock"))
        current = read(f"{path}/pids.current") if names is None or "numproc" in names else None
        if current is not None:
            found["numproc"] = Usage(
                current, read(f"{path}/pids.peak"), keyed(f"{path}/pids.events").get("max", 0)
            )
        return found

    def cpu_seconds(self, relative: str) -> float | None:
        microseconds = self._keyed(f"{self.mount}/{relative}/cpu.stat").get("usage_usec")
        return None if microseconds is None else microseconds / 1e6

    def in_force(self, relative: str) -> InForce:
        path = f"{self.mount}/{relative}"
        limit = self._limit
        return InForce(
            limit(f"{path}/memory.max", 1 << 62),
            limit(f"{path}/memory.swap.max", 1 << 62),
            limit(f"{path}/pids.max", 1 << 62),
        )

    def io_counts(self, relative: str) -> list[IoCount]:
        # io.stat: "MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N", hierarchical.
        try:
            lines = read_small(f"{self.mount}/{relative}/io.stat").splitlines()
        except OSError:
            return []
        found = []
        for line in lines:
            device, *pairs = line.split()
            values = dict(pair.partition("=")[::2] for pair in pairs)
            try:
                numbers = [int(values.get(key, "0")) for key in ("rbytes", "wbytes", "rios", "wios")]
            except ValueError:
                continue
            found.append(IoCount(device, *numbers))
        return sorted(found)

    def unenforced(self, limits: Limits) -> list[str]:
        if limits.tcp is not None:
            return ["tcpsndbuf/tcprcvbuf are not enforced: cgroup v2 has no separate TCP buffer limit"]
        return []

    def lxc_key(self, file: str) -> str:
        return f"lxc.cgroup2.{file}"

    def file_path(self, relative: str, file: str) -> Path:
        return self.mount / relative / file

    def available(self) -> bool:
        return (self.mount / "cgroup.controllers").exists()

    def dirs(self, relative: str) -> list[Path]:
        path = self.mount / relative
        return [path] if path.is_dir() else []

    def freezer(self, relative: str) -> tuple[Path, str, str]:
        return self.mount / relative / "cgroup.freeze", "1", "0"

    def frozen_probe(self, relative: str) -> tuple[Path, str]:
        return self.mount / relative / "cgroup.events", "frozen 1"

    def nproc(self, relative: str) -> int:
        path = self.mount / relative
        try:
            return int(read_small(f"{path}/pids.current"))
        except (FileNotFoundError, ValueError):
            pass
        if not path.is_dir():
            return 0
        return sum(len(_read_pids(f"{top}/cgroup.threads")) for top in subtree(str(path)))


# v1 shows "no memory limit" as the page counter's maximum (LONG_MAX rounded down to a page).
_V1_NO_LIMIT = 1 << 62


def _v1_rwstat(path: str) -> dict[str, tuple[int, int]]:
    """(read, write) per device of a v1 blkio stat file ("MAJ:MIN Read N" lines)."""
    found: dict[str, tuple[int, int]] = {}
    try:
        lines = read_small(path).splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split()
        if len(parts) != 3 or parts[1] not in ("Read", "Write") or not parts[2].isdigit():
            continue
        read, write = found.get(parts[0], (0, 0))
        value = int(parts[2])
        found[parts[0]] = (value, write) if parts[1] == "Read" else (read, value)
    return found


def host_has_swap() -> bool:
    try:
        with open("/proc/swaps") as handle:
            return len(handle.readlines()) > 1
    except OSError:
        return False


def subtree(top: str) -> list[str]:
    """`top` and every directory below it, parents first; nothing if `top` is gone.

    cgroupfs counts a directory's links as 2 + its subdirectories (as ext4 and tmpfs do;
    btrfs says 1), so one with 2 has none and is not listed: a CT's cgroups are mostly
    leaves, each holding tens of files to step over."""
    try:
        links = os.stat(top).st_nlink
    except OSError:
        return []
    found, pending = [top], [] if links == 2 else [top]
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        found.append(entry.path)
                        if entry.stat(follow_symlinks=False).st_nlink != 2:
                            pending.append(entry.path)
        except OSError:
            pass  # removed meanwhile
    return found


def _read_pids(path: str | Path) -> list[int]:
    try:
        return [int(line) for line in read_small(path).split()]
    except (FileNotFoundError, ValueError, OSError):
        return []


def detect(mount: Path = CGROUP_MOUNT) -> CgroupTree:
    """v2 when the mount itself is the unified hierarchy; v1 (or hybrid) otherwise."""
    if (mount / "cgroup.controllers").exists():
        return CgroupV2(mount)
    return CgroupV1(mount)
