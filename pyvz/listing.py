"""What vzlist shows: one record per CT and the table of fields it can print.

Every field is defined once here (its -o name, header, width and JSON form); vzlist only
picks, sorts and formats. Parameter fields come from the parameter table.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

from pyvz.config import ConfigFile, CtConfig
from pyvz.errors import VzError
from pyvz.host import Host
from pyvz.params import DISKINODES, DISKSPACE, LAYOUT, PARAMS, PRIVATE, ROOT, Layout, Param
from pyvz.resources.beancounters import NAMES as UBC_NAMES
from pyvz.resources.beancounters import Beancounter, configured
from pyvz.resources.beancounters import read as read_beancounters
from pyvz.storage import pool
from pyvz.storage.base import Area, driver_for
from pyvz.storage.idmap import IdMap
from pyvz.storage.mounts import mount_table
from pyvz.units import UNLIMITED, BarrierLimit


class Record:
    """One CT as vzlist sees it; each value is computed once, when first asked for."""

    def __init__(
        self, host: Host, ctid: int, mounted_targets: frozenset[str], ubc: frozenset[str] | None = None
    ) -> None:
        self.host = host
        self.ctid = ctid
        self._mounted_targets = mounted_targets
        self._ubc = ubc  # the beancounters anyone will ask for (None: all)

    @cached_property
    def config(self) -> CtConfig | None:
        try:
            conf = ConfigFile.load(self.host.paths.conf_file(self.ctid))
        except VzError:
            return None
        return CtConfig.merge(self.ctid, self.host.global_conf.items(), conf.items(), conf.path)

    def value(self, param: Param[Any]) -> Any:
        if self.config is None:
            return None
        try:
            return self.config.get(param)
        except VzError:
            return None

    @cached_property
    def nproc(self) -> int:
        return self.host.runtime.nproc(self.ctid)

    @cached_property
    def mounted(self) -> bool:
        root = self.value(ROOT)
        return root is not None and os.path.realpath(self.host.paths.host(root)) in self._mounted_targets

    @cached_property
    def exists(self) -> bool:
        private = self.value(PRIVATE)
        return private is not None and self.host.paths.host(private).exists()

    @property
    def status(self) -> str:
        if self.nproc > 0:
            return "running"
        if self.mounted:
            return "mounted"
        return "stopped" if self.exists else "deleted"

    @property
    def running(self) -> bool:
        return self.nproc > 0

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
    def disk_usage(self) -> int | None:
        """KiB counted against DISKSPACE, as vzlist's diskspace shows it."""
        private, layout = self.value(PRIVATE), self.value(LAYOUT) or Layout.BTRFS
        if private is None or not self.exists:
            return None
        area = Area(self.host.paths.host(private), Path("/"), IdMap(0, 0))
        used = driver_for(layout).usage(area)
        return None if used is None else used // 1024

    def raw(self, key: str) -> str | None:
        return None if self.config is None else self.config.raw(key)


class Field(NamedTuple):
    name: str
    header: str
    width: int  # 0: as wide as it needs to be
    right: bool  # right-aligned (numbers)
    get: Callable[[Record], Any]  # the JSON value
    text: Callable[[Any], str]  # the table cell


def _cell(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ":".join("unlimited" if v >= UNLIMITED else str(v) for v in value.values())
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, tuple) and not isinstance(value, BarrierLimit):
        return list(value)  # nameserver, searchdomain, firewall_accept: lists of words
    if isinstance(value, BarrierLimit):
        return {"softlimit": value.barrier, "hardlimit": value.limit}
    if isinstance(value, str | int | bool) or value is None:
        return value
    return str(value)


def _ips(record: Record) -> list[str]:
    return (record.raw("IP_ADDRESS") or "").split()


def _param_field(param: Param[Any], header: str, width: int = 0) -> Field:
    assert param.field
    return Field(param.field, header, width, False, lambda r: _json_value(r.value(param)), _cell)


_WIDTHS = {"hostname": ("HOSTNAME", 0), "name": ("NAME", 0), "ostemplate": ("OSTEMPLATE", 24)}

FIELDS: dict[str, Field] = {
    "ctid": Field("ctid", "CTID", 10, True, lambda r: r.ctid, _cell),
    "nproc": Field("nproc", "NPROC", 10, True, lambda r: r.nproc if r.running else None, _cell),
    "status": Field("status", "STATUS", 7, False, lambda r: r.status, _cell),
    "ip": Field("ip", "IP_ADDR", 15, False, _ips, _cell),
}
for _param in PARAMS:
    if _param.field:
        _header, _width = _WIDTHS.get(_param.field, (_param.field.upper(), 0))
        FIELDS[_param.field] = _param_field(_param, _header, _width)
FIELDS["veid"] = FIELDS["ctid"]._replace(name="veid")  # the name vzctl 3.x used


def _ubc_fields(name: str) -> dict[str, Field]:
    """NAME (held, or all five in JSON), NAME.m (maxheld), .b (barrier), .l (limit), .f (failcnt)."""

    def getter(attr: str) -> Callable[[Record], Any]:
        return lambda r: getattr(r.beancounter(name), attr)

    fields = {
        name: Field(name, name.upper(), 10, True, lambda r: r.beancounter(name).as_json(), _held_cell),
    }
    for suffix, attr in (("m", "maxheld"), ("b", "barrier"), ("l", "limit"), ("f", "failcnt")):
        key = f"{name}.{suffix}"
        fields[key] = Field(key, key.upper(), 10, True, getter(attr), _cell)
    return fields


def _held_cell(value: Any) -> str:
    return _cell(value["held"] if isinstance(value, dict) else value)


def _disk_fields(name: str, param: Param[Any], usage: Callable[[Record], int | None]) -> dict[str, Field]:
    def limits(r: Record) -> tuple[int | None, int | None]:
        value = r.value(param)
        return (value.barrier, value.limit) if value is not None else (None, None)

    def as_json(r: Record) -> dict[str, int | None]:
        soft, hard = limits(r)
        return {"usage": usage(r), "softlimit": soft, "hardlimit": hard}

    return {
        name: Field(name, name.upper(), 10, True, as_json, lambda v: _cell(v["usage"])),
        f"{name}.s": Field(f"{name}.s", f"{name.upper()}.S", 10, True, lambda r: limits(r)[0], _cell),
        f"{name}.h": Field(f"{name}.h", f"{name.upper()}.H", 10, True, lambda r: limits(r)[1], _cell),
    }


for _name in UBC_NAMES:
    FIELDS.update(_ubc_fields(_name))
FIELDS.update(_disk_fields("diskspace", DISKSPACE, lambda r: r.disk_usage))
FIELDS.update(_disk_fields("diskinodes", DISKINODES, lambda r: None))  # btrfs counts no inodes

DEFAULT_FIELDS = ("ctid", "nproc", "status", "ip", "hostname")


def records(
    host: Host, ctids: Iterable[int] | None = None, ubc: frozenset[str] | None = None
) -> list[Record]:
    """One record per CT; `ubc`: the beancounters that will be read (None: all of them)."""
    pool.mount_existing(host.paths)
    mounted = frozenset(m.target for m in mount_table())
    chosen = host.ctids() if ctids is None else sorted(set(ctids))
    return [Record(host, ctid, mounted, ubc) for ctid in chosen]


def ubc_names(fields: Iterable[str]) -> frozenset[str]:
    """The beancounters that vzlist fields (physpages, numproc.f, ...) need."""
    return frozenset(name.split(".")[0] for name in fields if name.split(".")[0] in UBC_NAMES)
