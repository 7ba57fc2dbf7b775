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
