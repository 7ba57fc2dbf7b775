"""Where a CT's cgroups are and what they say, on cgroup v1 (hybrid) and v2 alike.

LXC puts a CT's processes in `<tag>/<ctid>` and its monitor in `<tag>/<ctid>.monitor`
(lxc.cgroup.dir.container/monitor), where the tag names the PYVZ_ROOT, so two roots never
collide. Reading these files answers "is it running" and "how many processes" without
talking to LXC, which is fast and works from any network namespace.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import NamedTuple

from pyvz.errors import ExitCode, VzError
from pyvz.resources.limits import CPU_PERIOD_US, Limits, cpu_shares, cpu_weight

CGROUP_MOUNT = Path("/sys/fs/cgroup")


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
    def settings(self, limits: Limits) -> list[tuple[str, str]]:
        """(file, value) pairs that enforce `limits`, in the order they must be written."""

    @abstractmethod
    def lxc_key(self, file: str) -> str:
        """The LXC config key that sets `file` when the CT starts."""

    def unenforced(self, limits: Limits) -> list[str]:
        """What this host cannot enforce of `limits`, to be said out loud."""
        return []

    def lxc_lines(self, limits: Limits) -> list[str]:
        return [f"{self.lxc_key(file)} = {value}" for file, value in self.settings(limits)]

    @abstractmethod
    def file_path(self, relative: str, file: str) -> Path:
        """Where `file` of the cgroup `relative` is."""

    def apply(self, relative: str, limits: Limits) -> None:
        """Write the limits into a running CT's cgroup: no restart needed."""
        pending = self.settings(limits)
        for _attempt in range(2):  # memory and memory+swap limits must be raised in the other order
            failed = []
            for file, value in pending:
                path = self.file_path(relative, file)
                if not path.exists():
                    continue
                try:
                    path.write_text(value)
                except OSError as err:
                    failed.append((file, value, err))
            if not failed:
                return
            pending = [(file, value) for file, value, _err in failed]
        file, value, problem = failed[0]
        raise VzError(ExitCode.SETUBC_ERROR, f"cannot set {file}={value}: {problem.strerror}")

    def procs(self, relative: str) -> list[int]:
        for directory in self.dirs(relative):
            pids = _read_pids(directory / "cgroup.procs")
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
    def settings(self, limits: Limits) -> list[tuple[str, str]]:
        values: list[tuple[str, str]] = []
        if limits.memory is not None:
            values.append(("memory.limit_in_bytes", str(limits.memory)))
            values.append(("memory.memsw.limit_in_bytes", str(limits.memory + (limits.swap or 0))))
        else:
            values += [("memory.memsw.limit_in_bytes", "-1"), ("memory.limit_in_bytes", "-1")]
        values.append(("pids.max", str(limits.pids) if limits.pids is not None else "max"))
        if limits.cpu_units is not None:
            values.append(("cpu.shares", str(cpu_shares(limits.cpu_units))))
        values.append(("cpu.cfs_period_us", str(CPU_PERIOD_US)))
        quota = limits.cpu_percent * CPU_PERIOD_US // 100 if limits.cpu_percent else -1
        values.append(("cpu.cfs_quota_us", str(quota)))
        return [(f, v) for f, v in values if f != "memory.memsw.limit_in_bytes" or self._has_memsw()]

    def unenforced(self, limits: Limits) -> list[str]:
        if limits.memory is not None and not self._has_memsw():
            return [
                "the swap limit is not enforced: this kernel has no swap accounting (boot with swapaccount=1)"
            ]
        return []

    def _has_memsw(self) -> bool:
        # Without swap accounting (swapaccount=0) there is no memory+swap limit to set.
        return (self.mount / "memory/memory.memsw.limit_in_bytes").exists()

    def lxc_key(self, file: str) -> str:
        return f"lxc.cgroup.{file}"

    def file_path(self, relative: str, file: str) -> Path:
        return self.mount / file.split(".", 1)[0] / relative / file

    def _hierarchies(self) -> list[Path]:
        try:
            return sorted(p for p in self.mount.iterdir() if p.is_dir() and not p.is_symlink())
        except FileNotFoundError:
            return []

    def available(self) -> bool:
        return (self.mount / "pids").is_dir() or any((h / "tasks").exists() for h in self._hierarchies())

    def dirs(self, relative: str) -> list[Path]:
        return [h / relative for h in self._hierarchies() if (h / relative).is_dir()]

    def nproc(self, relative: str) -> int:
        pids = self.mount / "pids" / relative / "pids.current"
        try:
            return int(pids.read_text())
        except (FileNotFoundError, ValueError):
            pass
        for directory in self.dirs(relative):
            return sum(len(_read_pids(Path(top) / "tasks")) for top, _d, _f in os.walk(directory))
        return 0


class CgroupV2(CgroupTree):
    def settings(self, limits: Limits) -> list[tuple[str, str]]:
        values = [
            ("memory.max", str(limits.memory) if limits.memory is not None else "max"),
            ("memory.swap.max", str(limits.swap or 0) if limits.memory is not None else "max"),
            ("pids.max", str(limits.pids) if limits.pids is not None else "max"),
        ]
        if limits.cpu_units is not None:
            values.append(("cpu.weight", str(cpu_weight(limits.cpu_units))))
        quota = str(limits.cpu_percent * CPU_PERIOD_US // 100) if limits.cpu_percent else "max"
        values.append(("cpu.max", f"{quota} {CPU_PERIOD_US}"))
        return values

    def lxc_key(self, file: str) -> str:
        return f"lxc.cgroup2.{file}"

    def file_path(self, relative: str, file: str) -> Path:
        return self.mount / relative / file

    def available(self) -> bool:
        return (self.mount / "cgroup.controllers").exists()

    def dirs(self, relative: str) -> list[Path]:
        path = self.mount / relative
        return [path] if path.is_dir() else []

    def nproc(self, relative: str) -> int:
        path = self.mount / relative
        try:
            return int((path / "pids.current").read_text())
        except (FileNotFoundError, ValueError):
            pass
        if not path.is_dir():
            return 0
        return sum(len(_read_pids(Path(top) / "cgroup.threads")) for top, _d, _f in os.walk(path))


def _read_pids(path: Path) -> list[int]:
    try:
        return [int(line) for line in path.read_text().split()]
    except (FileNotFoundError, ValueError, OSError):
        return []


def detect(mount: Path = CGROUP_MOUNT) -> CgroupTree:
    """v2 when the mount itself is the unified hierarchy; v1 (or hybrid) otherwise."""
    if (mount / "cgroup.controllers").exists():
        return CgroupV2(mount)
    return CgroupV1(mount)
