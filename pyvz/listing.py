"""The CTs vzlist shows: one record per CT, each value read when first asked for.

A record answers in vzlist's terms: `raw` is what the CT's own CTID.conf says (vzlist reads
that file alone, not vz.conf), `status` is running, suspended, mounted or stopped, and a
stopped CT whose private area is gone has no status (vzlist does not show it). The
fields that format these values are in pyvz.listing_fields.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

from pyvz.config import ConfigFile, CtConfig, name_owner
from pyvz.errors import VzError
from pyvz.host import Host
from pyvz.kernelfiles import read_small
from pyvz.params import LAYOUT, PRIVATE, ROOT, Layout, Param
from pyvz.resources.beancounters import NAMES as UBC_NAMES
from pyvz.resources.beancounters import Beancounter, configured
from pyvz.resources.beancounters import read as read_beancounters
from pyvz.storage import pool
from pyvz.storage.base import Area, StorageDriver, driver_for
from pyvz.storage.idmap import IdMap
from pyvz.storage.mounts import mount_table

# vzctl skips these when it reads IP_ADDRESS (its parse_ip): "no address".
_NO_ADDRESS = frozenset({"0.0.0.0", "::", "::0"})


class Record:
    """One CT as vzlist sees it; each value is computed once, when first asked for."""

    def __init__(
        self,
        host: Host,
        ctid: int,
        mounted_targets: frozenset[str],
        ubc: frozenset[str] | None = None,
        settings_stamp: tuple[int, ...] | None = None,
    ) -> None:
        self.host = host
        self.ctid = ctid
        self._mounted_targets = mounted_targets
        self._ubc = ubc  # the beancounters anyone will ask for (None: all)
        self._settings_stamp = settings_stamp  # vz.conf's, looked at once for all records

    @cached_property
    def _parsed(self) -> _Parsed | None:
        return _read_config(self.host, self.ctid, self._settings_stamp)

    @property
    def conf_file(self) -> ConfigFile | None:
        return self._parsed.file if self._parsed is not None else None

    @property
    def own(self) -> Mapping[str, str]:
        """The CT's own CTID.conf, key by key."""
        return self._parsed.own if self._parsed is not None else {}

    @property
    def config(self) -> CtConfig | None:
        """The effective settings: vz.conf overlaid by CTID.conf."""
        return self._parsed.merged if self._parsed is not None else None

    def raw(self, key: str) -> str | None:
        """KEY as the CT's CTID.conf holds it (None: not there)."""
        return self.own.get(key)

    def value(self, param: Param[Any]) -> Any:
        """The parameter's effective value; None when unset or unreadable."""
        if self.config is None:
            return None
        try:
            return self.config.get(param)
        except VzError:
            return None

    @cached_property
    def nproc(self) -> int:
        return self.host.runtime.nproc(self.ctid)

    @property
    def running(self) -> bool:
        return self.nproc > 0

    @cached_property
    def mounted(self) -> bool:
        root = self.value(ROOT)
        return root is not None and os.path.realpath(self.host.paths.host(root)) in self._mounted_targets

    @cached_property
    def exists(self) -> bool:
        private = self.value(PRIVATE)
        return private is not None and self.host.paths.host(private).exists()

    @cached_property
    def suspended(self) -> bool:
        """Stopped with a dump that `vzctl start` restores it from."""
        from pyvz.ct.checkpoint import default_dump, resumable

        return resumable(default_dump(self.host, self.ctid))

    @cached_property
    def status(self) -> str | None:
        """vzlist's status; None for a stopped CT with no private area, which vzlist hides."""
        if self.running:
            return "running"
        if not self.exists:
            return None
        if self.mounted:  # as vzlist: mounted wins over a dump lying beside it
            return "mounted"
        return "suspended" if self.suspended else "stopped"

    @property
    def layout(self) -> str:
        """VE_LAYOUT as the CT (or vz.conf) sets it; pyvz's default where neither does."""
        configured_layout = self.config.raw("VE_LAYOUT") if self.config is not None else None
        return configured_layout or str(Layout.BTRFS)

    @cached_property
    def name(self) -> str | None:
        """NAME, when names/NAME points back at this CT (vzlist shows no name otherwise)."""
        name = self.raw("NAME")
        if not name or "/" in name:
            return None
        return name if name_owner(self.host.paths, name) == self.ctid else None

    @cached_property
    def ip(self) -> str | None:
        """The addresses as vzlist keeps them: a running CT's without prefixes and with the
        kernel list's trailing blank, a stopped CT's as IP_ADDRESS holds them."""
        words = [w for w in (self.raw("IP_ADDRESS") or "").split() if w not in _NO_ADDRESS]
        if not words:
            return None
        if self.running:
            return "".join(word.split("/")[0] + " " for word in words)
        return " ".join(words)

    @cached_property
    def pids(self) -> list[int]:
        """The CT's processes; none when it is not running."""
        if not self.running:
            return []
        runtime = self.host.runtime
        return runtime.cgroups.procs(runtime.cgroups_of(self.ctid).container)

    @cached_property
    def init_pid(self) -> int | None:
        """The CT's init as the host sees it; None when it is not running."""
        from pyvz.net.venet import init_pid

        return init_pid(self.pids) if self.pids else None

    @cached_property
    def uptime(self) -> float | None:
        """Seconds since the CT's init started; None when it is not running."""
        pid = self.init_pid
        if pid is None:
            return None
        try:
            stat = read_small(f"/proc/{pid}/stat")
        except OSError:
            return None
        since_boot = time.clock_gettime(time.CLOCK_BOOTTIME)  # what /proc/uptime says
        # The fields after "(comm)": the 22nd of the line, starttime, is the 20th of them.
        started = int(stat[stat.rindex(")") + 2 :].split()[19]) / os.sysconf("SC_CLK_TCK")
        return max(0.0, since_boot - started)

    @property
    def state_file(self) -> Path:
        return self.host.runtime.beancounter_state(self.ctid)

    @cached_property
    def beancounters(self) -> list[Beancounter] | None:
        """The kernel's counters with the configured barrier/limit; None when not running."""
        if not self.running:
            return None
        runtime = self.host.runtime
        relative = runtime.cgroups_of(self.ctid).container
        return read_beancounters(runtime.cgroups, relative, self.config, self.state_file, self._ubc)

    def beancounter(self, name: str) -> Beancounter:
        for counter in self.beancounters or ():
            if counter.name == name:
                return counter
        limits = configured(self.config, name)
        return Beancounter(name, None, None, limits.barrier, limits.limit, None)

    @cached_property
    def _quota_area(self) -> tuple[StorageDriver, Area] | None:
        private, layout = self.value(PRIVATE), self.value(LAYOUT) or Layout.BTRFS
        if private is None or not self.exists:
            return None
        return driver_for(layout), Area(self.host.paths.host(private), Path("/"), IdMap(0, 0))

    @cached_property
    def disk_usage(self) -> int | None:
        """KiB counted against DISKSPACE, as vzlist's diskspace shows it."""
        if self._quota_area is None:
            return None
        used = self._quota_area[0].usage(self._quota_area[1])
        return None if used is None else used // 1024

    @cached_property
    def inode_usage(self) -> int | None:
        """Inodes counted against DISKINODES, where the layout counts them (vzlist's diskinodes)."""
        return None if self._quota_area is None else self._quota_area[0].inode_usage(self._quota_area[1])


class _Parsed(NamedTuple):
    """A CTID.conf as read, what it says, and the settings it gives over vz.conf."""

    stamp: tuple[int, ...]  # of CTID.conf and vz.conf when they were read
    file: ConfigFile
    own: Mapping[str, str]
    merged: CtConfig


# Configs read before, by path, for a process that lists again and again (pyvzd: its CT
# list, /metrics): parsing 500 configs was a third of a scrape. An entry is used only while
# both files have the stamp they had when it was read (the atomic writer gives a changed
# file a new inode, a new mtime and ctime). A file changed within the last seconds is read
# every time: a second change in the same clock tick could keep its stamp.
_PARSED: dict[Path, _Parsed] = {}
_SETTLED = 2.0  # seconds after its last change when a file's stamp is trusted


def _stamp(path: Path) -> tuple[int, ...] | None:
    """None for a file that may still change without its stamp showing it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if time.time() - st.st_mtime < _SETTLED or time.time() - st.st_ctime < _SETTLED:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _read_config(host: Host, ctid: int, global_stamp: tuple[int, ...] | None) -> _Parsed | None:
    path = host.paths.conf_file(ctid)
    own_stamp = _stamp(path)
    stamp = (*own_stamp, *global_stamp) if own_stamp and global_stamp else None
    known = _PARSED.get(path)
    if stamp is not None and known is not None and known.stamp == stamp:
        return known
    try:
        conf = ConfigFile.load(path)
    except VzError:
        _PARSED.pop(path, None)
        return None
    own = conf.items()
    parsed = _Parsed(stamp or (), conf, own, CtConfig.merge(ctid, host.global_conf.items(), own, path))
    if stamp is not None:
        _PARSED[path] = parsed
    else:
        _PARSED.pop(path, None)
    return parsed


def records(
    host: Host, ctids: Iterable[int] | None = None, ubc: frozenset[str] | None = None
) -> list[Record]:
    """One record per CT; `ubc`: the beancounters that will be read (None: all of them)."""
    pool.mount_existing(host.paths)
    mounted = frozenset(m.target for m in mount_table())
    chosen = host.ctids() if ctids is None else sorted(set(ctids))
    if ctids is None:  # the configs of CTs that are gone go from the cache too
        listed = {host.paths.conf_file(ctid) for ctid in chosen}
        for path in list(_PARSED):  # a copy: pyvzd's readers run in threads
            if path.parent == host.paths.conf_dir and path not in listed:
                _PARSED.pop(path, None)
    settings = _stamp(host.paths.vz_conf)
    return [Record(host, ctid, mounted, ubc, settings) for ctid in chosen]


def collect(
    host: Host, wanted: Iterable[int] | None, every: bool, stopped: bool, ubc: frozenset[str] | None
) -> list[Record]:
    """The CTs vzlist starts from, in CTID order: those with a config (with -a, -S or CTIDs
    given), else the running ones. Hiding (gone, filtered) comes after."""
    if every or stopped or wanted is not None:
        chosen = set(wanted) if wanted is not None else None
        return records(host, [c for c in host.ctids() if chosen is None or c in chosen], ubc)
    return [record for record in records(host, None, ubc) if record.running]


def ubc_names(fields: Iterable[str]) -> frozenset[str]:
    """The beancounters that vzlist fields (physpages, numproc.f, ...) need."""
    return frozenset(name.split(".")[0] for name in fields if name.split(".")[0] in UBC_NAMES)


def glob_match(pattern: str, text: str) -> bool:
    """fnmatch(3) with no flags, as vzlist's -h/-N/-d use it: `*`, `?`, `[...]` (`!` or `^`
    negates) match any character, `/` and a leading `.` included; a backslash quotes."""
    out, at = [], 0
    while at < len(pattern):
        char = pattern[at]
        at += 1
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "\\" and at < len(pattern):
            out.append(re.escape(pattern[at]))
            at += 1
        elif char == "[":
            end = at + (1 if pattern[at : at + 1] in ("!", "^") else 0)
            end += 1 if pattern[end : end + 1] == "]" else 0
            end = pattern.find("]", end)
            if end < 0:
                out.append(re.escape(char))
                continue
            body = pattern[at:end]
            negate = body[:1] in ("!", "^")
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\").replace("[", "\\[") + "]")
            at = end + 1
        else:
            out.append(re.escape(char))
    return re.fullmatch("".join(out), text, re.DOTALL) is not None
