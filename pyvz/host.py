"""The host: one PYVZ_ROOT, its global config, runtime and locks."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pyvz.config import ConfigFile, existing_ctids, load_global
from pyvz.errors import ExitCode, VzError
from pyvz.lock import Lock, NoLock
from pyvz.paths import Paths
from pyvz.runtime.lxc import LxcRuntime
from pyvz.storage.idmap import ID_RANGE, IdMap

LOCK_WAIT_ENV = "PYVZ_LOCK_WAIT"


class Host:
    def __init__(self, paths: Paths | None = None, skiplock: bool = False) -> None:
        self.paths = paths or Paths.from_env()
        self.skiplock = skiplock

    @cached_property
    def global_conf(self) -> ConfigFile:
        return load_global(self.paths)

    def setting(self, key: str, default: str | None = None) -> str | None:
        value = self.global_conf.get(key)
        return default if value in (None, "") else value

    @cached_property
    def runtime(self) -> LxcRuntime:
        return LxcRuntime(self.paths)

    @property
    def lock_dir(self) -> Path:
        configured = self.setting("LOCKDIR")
        return self.paths.host(configured) if configured else self.paths.lock_dir

    def ct_lock(self, ctid: int, wait: float = 0.0) -> Lock | NoLock:
        if self.skiplock:
            return NoLock()
        from pyvz.events import poke

        wait = max(wait, _lock_wait())
        return Lock(self.lock_dir / f"{ctid}.lck", f"CT {ctid}", wait, lambda: poke(self.paths, ctid))

    def root_lock(self) -> Lock:
        """Serialises what is shared by all CTs: names, id ranges, the pool, template trees."""
        return Lock(self.lock_dir / ".root.lck", "the pyvz root", wait=120.0)

    def ctids(self) -> list[int]:
        return sorted(existing_ctids(self.paths))

    def addresses(self, but: int) -> dict[int, tuple[str, ...]]:
        """IP_ADDRESS of every other CT of this root (for the "already in use" check)."""
        from pyvz.config import ConfigFile

        found = {}
        for ctid in self.ctids():
            if ctid != but:
                found[ctid] = tuple(
                    (ConfigFile.load(self.paths.conf_file(ctid)).get("IP_ADDRESS") or "").split()
                )
        return found

    def allocate_ids(self, taken: set[int]) -> IdMap:
        """The lowest free 65536-id block at or above vz.conf's LOCAL_UID/LOCAL_GID."""
        base_uid = int(self.setting("LOCAL_UID", "0") or 0)
        base_gid = int(self.setting("LOCAL_GID", str(base_uid)) or 0)
        if base_uid == 0 and base_gid == 0:
            return IdMap(0, 0)
        slot = 0
        while base_uid + slot * ID_RANGE in taken:
            slot += 1
        idmap = IdMap(base_uid + slot * ID_RANGE, base_gid + slot * ID_RANGE)
        check_subids(idmap)
        return idmap


def _lock_wait() -> float:
    """Seconds a command waits for a CT's lock (vzctl: none). pyvzd runs its commands with
    PYVZ_LOCK_WAIT set, so an API request queues behind a vzctl instead of failing."""
    import os

    try:
        return max(0.0, float(os.environ.get(LOCK_WAIT_ENV, "0")))
    except ValueError:
        return 0.0


def _covered(path: Path, start: int) -> bool:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return False
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] in ("root", "0") and fields[1].isdigit() and fields[2].isdigit():
            first, count = int(fields[1]), int(fields[2])
            if first <= start and start + ID_RANGE <= first + count:
                return True
    return False


def check_subids(idmap: IdMap) -> None:
    for path, start, kind in (
        (Path("/etc/subuid"), idmap.uid, "uid"),
        (Path("/etc/subgid"), idmap.gid, "gid"),
    ):
        if not _covered(path, start):
            raise VzError(
                ExitCode.RESOURCE_ERROR,
                f"{kind}s {start}-{start + ID_RANGE - 1} are not delegated to root in {path} "
                f"(add a line root:{start}:{ID_RANGE} or larger; `make install` sets one up)",
            )


def cpu_flags() -> set[str]:
    """The CPU's feature flags (/proc/cpuinfo): a live-migrated CT's processes may use any."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()
