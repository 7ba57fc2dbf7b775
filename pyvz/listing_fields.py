"""vzlist 4.11's fields as its vzlist.c prints them: for each, the -o name, the header with
its printf width, the table cell, the JSON value and the sort order.

A width below zero is left-aligned, as in printf. A trimmed column (any but the last,
unless -t) is cut to its width where vzlist cuts it: text fields, address lists (first
address only) and features; numbers never are. JSON values are laid out as vzlist prints
them, nested objects indented for their place inside an entry. Values come from the CT's
own CTID.conf, as vzlist reads them, or from the running CT (beancounters, status,
uptime, disk usage). The parameters pyvz adds (cpumask, nodemask, firewall_accept, and
any later `field=` of the parameter table) are fields after vzlist's; -L and the default
-j list vzlist's alone.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from pyvz.listing import Record
from pyvz.params import DISKINODES, DISKSPACE, PARAMS, PRIVATE, ROOT, Param
from pyvz.resources.beancounters import PARAM_OF
from pyvz.units import UNLIMITED, BarrierLimit

Cell = Callable[[Record, bool], str]  # (record, trim) -> the cell's text
Json = Callable[[Record], str]  # the value's JSON text
Key = Callable[[Record], Any]  # the sort key (records start in CTID order; sorts are stable)

LONG_MAX = UNLIMITED
INT_MAX = 2**31 - 1


class Field(NamedTuple):
    name: str
    header: str
    width: int  # the header's printf width; below zero: left-aligned
    cell: Cell
    json: Json
    key: Key
    suffixed: bool = False  # NAME.m, diskspace.s, ...: vzlist refuses these in JSON

    def head(self) -> str:
        return pad(self.header, self.width)


def pad(text: str, width: int) -> str:
    return text.ljust(-width) if width < 0 else text.rjust(width)


def _nullable(value: Any) -> tuple[Any, ...]:
    """vzlist sorts an unset value before any set one."""
    return (0,) if value is None else (1, value)


def _unsorted(_record: Record) -> int:
    return 0  # vzlist has no order for these: -s keeps CTID order


def _json_str(value: str | None) -> str:
    return "null" if value is None else json.dumps(value, ensure_ascii=False)


def _json_bool(value: bool | None) -> str:
    return "null" if value is None else "true" if value else "false"


def json_object(items: Iterable[tuple[str, str]]) -> str:
    """An object nested in an entry, as vzlist prints one; null when it has no items."""
    body = ",\n".join(f'      "{key}": {value}' for key, value in items)
    return "{\n" + body + "\n    }" if body else "null"


# ---- config values as vzctl's parser reads them -----------------------------------------


def c_ulong(text: str | None) -> int | None:
    """vzctl's parse_ul: `unlimited` is LONG_MAX; strtoul's leading blanks and sign."""
    if text is None:
        return None
    if text == "unlimited":
        return LONG_MAX
    match = re.fullmatch(r"\s*([+-]?)(\d+)|", text)
    if not match:
        return None
    value = int(match.group(2) or 0)
    if match.group(1) == "-":
        value = -value % 2**64
    return value if value <= LONG_MAX else None


def c_int(text: str | None) -> int | None:
    """vzctl's parse_int (strtol into an int)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*([+-]?\d+)|", text)
    if not match:
        return None
    value = int(match.group(1) or 0)
    return value if -(2**31) <= value <= INT_MAX else None


def _as_c_int(value: int) -> int:
    """An unsigned long stored into an int, as C truncates it."""
    value &= 0xFFFFFFFF
    return value - 2**32 if value > INT_MAX else value


def _yes_no(text: str | None) -> bool | None:
    return {"yes": True, "no": False}.get(text or "")


def _words(text: str | None) -> str | None:
    words = (text or "").split()
    return " ".join(words) if words else None


def _pair(record: Record, param: Param[BarrierLimit]) -> tuple[int, int] | None:
    text = record.raw(param.key or "")
    if text is None:
        return None
    try:
        value = param.parse(text)
    except Exception:  # a value vzctl would skip as invalid: unset
        return None
    return value.barrier, value.limit


def _cpulimit(text: str | None) -> int | None:
    """CPULIMIT: percent of one CPU; `N%` is N percent of each of the host's CPUs."""
    import os

    match = re.fullmatch(r"\s*\+?(\d+)(%?)", text or "")
    if not match:
        return None
    value = int(match.group(1))
    if match.group(2):
        return value * (os.cpu_count() or 1) if value <= 100 else None
    return value


def _cpuunits(text: str | None) -> int | None:
    value = c_ulong(text)
    return value if value is not None and 8 <= value <= 500000 else None


def _iolimit(text: str | None) -> int:
    """IOLIMIT in bytes/s (K/M/G/T/P/B suffixes), capped at INT_MAX; -1: unset."""
    if text is None:
        return -1
    if text == "unlimited":
        return 0
    match = re.fullmatch(r"\s*\+?(\d*)([TtGgMmKkPpBb]?)", text)
    if not match:
        return -1
    scale = {"t": 1024**4, "g": 1024**3, "m": 1024**2, "k": 1024, "p": 4096, "b": 1}
    value = min(int(match.group(1) or 0), INT_MAX) * scale.get(match.group(2).lower(), 1)
    return min(value, INT_MAX)


def _ioprio(text: str | None) -> int:
    value = c_int(text)
    return value if value is not None and 0 <= value <= 7 else -1


def _iopslimit(text: str | None) -> int:
    value = c_int(text)
    return value if value is not None and value >= 0 else -1


def _float(text: str | None) -> float:
    match = re.match(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text or "")
    return _float32(float(match.group(0))) if match else 0.0


def _float32(value: float) -> float:
    """vzlist keeps these in a C float."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


# FEATURES and CAPABILITY in the order vzlist prints them (vzctl's tables).
FEATURES = ("sysfs", "nfs", "sit", "ipip", "ppp", "ipgre", "bridge", "nfsd")
CAPABILITIES = tuple(
    (
        "chown dac_override dac_read_search fowner fsetid kill setgid setuid setpcap linux_immutable "
        "net_bind_service net_broadcast net_admin net_raw ipc_lock ipc_owner sys_module sys_rawio "
        "sys_chroot sys_ptrace sys_pacct sys_admin sys_boot sys_nice sys_resource sys_time "
        "sys_tty_config mknod lease audit_write ve_admin setfcap"
    ).split()
)
NETFILTER = ("disabled", "stateless", "stateful", "full")


def _switches(text: str | None, known: tuple[str, ...], fold: bool) -> list[tuple[str, bool]]:
    """NAME:on|off words (blank- or comma-separated) in the order of `known`, then the names
    vzctl 4.11 did not know (pyvz may) in the config's order. vzctl keeps an on and an off
    mask, and prints on where a name was ever on. `fold`: names are case-insensitive."""
    seen: dict[str, bool] = {}
    for token in re.split(r"[\t ,]+", text or ""):
        name, sep, state = token.rpartition(":")
        if not sep or not name or state not in ("on", "off"):
            continue
        name = name.lower() if fold else name
        seen[name] = seen.get(name, False) or state == "on"
    ordered = [(name, seen[name]) for name in known if name in seen]
    return ordered + [(name, on) for name, on in seen.items() if name not in known]


def features(record: Record) -> list[tuple[str, bool]]:
    return _switches(record.raw("FEATURES"), FEATURES, fold=False)


def capabilities(record: Record) -> list[tuple[str, bool]]:
    return _switches(record.raw("CAPABILITY"), CAPABILITIES, fold=True)


def netfilter(record: Record) -> str | None:
    value = record.raw("NETFILTER")
    return value if value in NETFILTER else None


def _switch_text(items: list[tuple[str, bool]]) -> str:
    return ",".join(f"{name}:{'on' if on else 'off'}" for name, on in items) or "-"


def _switch_json(items: list[tuple[str, bool]]) -> str:
    return json_object((name, _json_bool(on)) for name, on in items)


# ---- field makers -------------------------------------------------------------------------


def _text(
    name: str, header: str, width: int, get: Callable[[Record], str | None], header_width: int | None = None
) -> Field:
    def cell(record: Record, trim: bool) -> str:
        value = get(record)
        text = pad("-" if value is None else value, width)
        return text[: abs(width)] if trim else text

    return Field(
        name,
        header,
        width if header_width is None else header_width,
        cell,
        lambda r: _json_str(get(r)),
        lambda r: _nullable(get(r)),
    )


def _list(name: str, header: str, get: Callable[[Record], str | None]) -> Field:
    def cell(record: Record, trim: bool) -> str:
        value = get(record)
        text = "-" if value is None else value
        if trim:
            text = text.split(" ", 1)[0].ljust(15)[:15]
        return text.ljust(15)

    def as_json(record: Record) -> str:
        words = [w for w in re.split(r"[ \t]+", get(record) or "") if w]
        return "[" + ", ".join(json.dumps(w, ensure_ascii=False) for w in words) + "]"

    return Field(name, header, -15, cell, as_json, lambda r: _nullable(get(r)))


def _number(
    name: str,
    header: str,
    width: int,
    get: Callable[[Record], int | None],
    key: Key | None = None,
    shown: Callable[[int], bool] = lambda value: True,
    json_default: int | None = None,
) -> Field:
    """A number right-aligned in `width`; `-` when unset or not `shown`. In JSON null when
    unset, or `json_default` where vzlist prints a number for unset (0)."""

    def cell(record: Record, trim: bool) -> str:
        value = get(record)
        return pad("-" if value is None or not shown(value) else str(value), width)

    def as_json(record: Record) -> str:
        value = get(record)
        if value is None:
            return "null" if json_default is None else str(json_default)
        return str(max(value, json_default) if json_default is not None else value)

    return Field(name, header, width, cell, as_json, key or (lambda r: _nullable(get(r))))


def _flag(name: str, header: str, width: int, get: Callable[[Record], bool | None]) -> Field:
    def cell(record: Record, trim: bool) -> str:
        value = get(record)
        return pad("-" if value is None else "yes" if value else "no", width)

    return Field(name, header, width, cell, lambda r: _json_bool(get(r)), _unsorted)


def _ctid(name: str) -> Field:
    return Field(name, "CTID", 10, lambda r, trim: f"{r.ctid:10d}", lambda r: str(r.ctid), lambda r: r.ctid)


def _smart_name(record: Record, trim: bool) -> str:
    if record.name is None:
        return f"{record.ctid:10d}"
    text = record.name.rjust(10)
    return text[:10] if trim else text


_STATUSES = ("running", "stopped", "mounted", "suspended")


def _status_key(record: Record) -> tuple[int, int]:
    return _STATUSES.index(record.status or "stopped"), record.ctid


def _uptime_text(record: Record, trim: bool) -> str:
    if record.uptime is None:
        return "-".rjust(15)
    up = _float32(record.uptime)
    days = int(up / 86400)
    minutes = int(up / 60)
    hours, minutes = minutes // 60 % 24, minutes % 60
    secs = int(up - (60 * minutes + 3600 * hours + 86400 * days))
    return f"{days:03d}d{hours:02d}h:{minutes:02d}m:{secs:02d}s"


def _uptime_key(record: Record) -> tuple[Any, ...]:
    return (0,) if record.uptime is None else (1, -record.uptime)  # vzlist: longest first


def _bootorder_key(record: Record) -> tuple[Any, ...]:
    # vzlist's comparator: unset first, then ascending; equal ones by descending CTID.
    value = c_ulong(record.raw("BOOTORDER"))
    return (0, 0, -record.ctid) if value is None else (1, value, -record.ctid)


def _layout_key(record: Record) -> tuple[int, str]:
    return {"simfs": 1, "ploop": 2}.get(record.layout, 3), record.layout


def _vswap(record: Record) -> bool:
    # vzctl's is_vswap_config: a physpages limit that is set and not "unlimited"
    limit = _ubc(record, "physpages")[3]
    return limit is not None and limit not in (LONG_MAX, INT_MAX)


def _vm_overcommit(record: Record, trim: bool) -> str:
    value = _float(record.raw("VM_OVERCOMMIT"))
    return "-".rjust(6) if value == 0 else f"{value:6g}"


# ---- beancounters and disk quota ----------------------------------------------------------

# vzlist's UBC columns: the beancounter and its header, in vzlist's order.
UBC_HEADERS = (
    ("kmemsize", "KMEMSIZE"),
    ("lockedpages", "LOCKEDP"),
    ("privvmpages", "PRIVVMP"),
    ("shmpages", "SHMP"),
    ("numproc", "NPROC"),
    ("physpages", "PHYSP"),
    ("vmguarpages", "VMGUARP"),
    ("oomguarpages", "OOMGUARP"),
    ("numtcpsock", "NTCPSOCK"),
    ("numflock", "NFLOCK"),
    ("numpty", "NPTY"),
    ("numsiginfo", "NSIGINFO"),
    ("tcpsndbuf", "TCPSNDB"),
    ("tcprcvbuf", "TCPRCVB"),
    ("othersockbuf", "OTHSOCKB"),
    ("dgramrcvbuf", "DGRAMRB"),
    ("numothersock", "NOTHSOCK"),
    ("dcachesize", "DCACHESZ"),
    ("numfile", "NFILE"),
    ("numiptent", "NIPTENT"),
    ("swappages", "SWAPP"),
)
_UBC_KEYS = ("held", "maxheld", "barrier", "limit", "failcnt")
# (suffix, value shown, value sorted by): vzlist 4.11 sorts .b by the limit and .l by the
# barrier (its sort table has the two swapped); kept, so -s orders rows as vzlist does.
_UBC_SUFFIXES = (("", 0, 0), (".m", 1, 1), (".b", 2, 3), (".l", 3, 2), (".f", 4, 4))


def _ubc(record: Record, name: str) -> tuple[int | None, ...]:
    """held, maxheld, barrier, limit, failcnt: a running CT's from its counters (None: not
    counted on this kernel), a stopped CT's barrier and limit from its config (0 unset)."""
    if record.running:
        counter = record.beancounter(name)
        return counter.held, counter.maxheld, counter.barrier, counter.limit, counter.failcnt
    barrier, limit = _pair(record, PARAM_OF[name]) or (0, 0)
    return None, None, barrier, limit, None


def _ubc_fields(name: str, header: str) -> list[Field]:
    def as_json(record: Record) -> str:
        return json_object(
            (key, str(value or 0)) for key, value in zip(_UBC_KEYS, _ubc(record, name), strict=True)
        )

    fields = []
    for suffix, shown, sorted_by in _UBC_SUFFIXES:

        def cell(record: Record, trim: bool, index: int = shown) -> str:
            if name == "numproc" and index == 0:
                # the default NPROC column: the task count every listing reads anyway
                value = record.nproc if record.running else None
            else:
                value = _ubc(record, name)[index]
            return pad("-" if value is None else str(value), 10)

        def key(record: Record, index: int = sorted_by) -> int:
            return _ubc(record, name)[index] or 0

        fields.append(Field(name + suffix, header + suffix.upper(), 10, cell, as_json, key, bool(suffix)))
    return fields


def _quota(record: Record) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """(usage, soft, hard) of disk space (KiB) and of inodes; None: no quota at all.
    Usage is what the storage layout counts (btrfs: the qgroup; simfs: the project quota, which
    counts inodes too)."""
    space, inodes = _pair(record, DISKSPACE), _pair(record, DISKINODES)
    usage, used_inodes = record.disk_usage, record.inode_usage
    if space is None and inodes is None and usage is None:
        return None
    return (usage or 0, *(space or (0, 0))), (used_inodes or 0, *(inodes or (0, 0)))


def _quota_fields(name: str, header: str, which: int) -> list[Field]:
    def as_json(record: Record) -> str:
        quota = _quota(record)
        if quota is None:
            return "null"
        return json_object(zip(("usage", "softlimit", "hardlimit"), map(str, quota[which]), strict=True))

    fields = []
    for suffix, index in (("", 0), (".s", 1), (".h", 2)):

        def cell(record: Record, trim: bool, index: int = index) -> str:
            quota = _quota(record)
            value = None if quota is None else quota[which][index]
            return pad("-" if value is None or (index == 0 and value == 0) else str(value), 10)

        def key(record: Record, index: int = index) -> tuple[Any, ...]:
            quota = _quota(record)
            return _nullable(None if quota is None else quota[which][index])

        fields.append(Field(name + suffix, header + suffix.upper(), 10, cell, as_json, key, bool(suffix)))
    return fields


def _cpu(record: Record, index: int) -> int | None:
    """CPULIMIT (0) or CPUUNITS (1); vzlist shows both as unset unless one of them is set."""
    limit, units = _cpulimit(record.raw("CPULIMIT")), _cpuunits(record.raw("CPUUNITS"))
    if limit is None and units is None:
        return None
    return (limit or 0, units or 0)[index]


def _cpunum(record: Record) -> int:
    value = c_ulong(record.raw("CPUS"))
    return -1 if value is None else _as_c_int(value)


# ---- the table ------------------------------------------------------------------------------


def _build() -> list[Field]:
    fields = [
        _ctid("ctid"),
        _ctid("veid"),
        _ctid("vpsid"),
        _text("private", "PRIVATE", -32, lambda r: r.value(PRIVATE)),
        _text("root", "ROOT", -32, lambda r: r.value(ROOT)),
        _text("mount_opts", "MOUNT_OPTS", -16, lambda r: r.raw("MOUNT_OPTS")),
        _text("origin_sample", "ORIGIN_SAMPLE", -32, lambda r: r.raw("ORIGIN_SAMPLE"), header_width=32),
        _text("hostname", "HOSTNAME", -32, lambda r: r.raw("HOSTNAME")),
        _text("name", "NAME", -32, lambda r: r.name),
        Field(
            "smart_name",
            "SMARTNAME",
            10,
            _smart_name,
            lambda r: str(r.ctid) if r.name is None else _json_str(r.name),
            lambda r: _nullable(r.name),
        ),
        _text("description", "DESCRIPTION", -32, lambda r: r.raw("DESCRIPTION")),
        _text("ostemplate", "OSTEMPLATE", -32, lambda r: r.raw("OSTEMPLATE")),
        _list("ip", "IP_ADDR", lambda r: r.ip),
        _list("nameserver", "NAMESERVER", lambda r: _words(r.raw("NAMESERVER"))),
        _list("searchdomain", "SEARCHDOMAIN", lambda r: _words(r.raw("SEARCHDOMAIN"))),
        Field(
            "status",
            "STATUS",
            -9,
            lambda r, trim: (r.status or "stopped").ljust(9),
            lambda r: _json_str(r.status or "stopped"),
            _status_key,
        ),
    ]
    for name, header in UBC_HEADERS:
        fields += _ubc_fields(name, header)
    fields += _quota_fields("diskspace", "DSPACE", 0)
    fields += _quota_fields("diskinodes", "DINODES", 1)
    fields += [
        # The load average is the OpenVZ kernel's per-CT figure; mainline keeps none.
        Field("laverage", "LAVERAGE", 14, lambda r, trim: "-".rjust(14), lambda r: "null", _unsorted),
        Field(
            "uptime",
            "UPTIME",
            15,
            _uptime_text,
            lambda r: f"{_float32(r.uptime or 0.0):.3f}",
            _uptime_key,
        ),
        _number("cpulimit", "CPULIM", 7, lambda r: _cpu(r, 0)),
        _number("cpuunits", "CPUUNI", 7, lambda r: _cpu(r, 1)),
        _number("cpus", "CPUS", 5, _cpunum, key=_cpunum, shown=lambda n: n > 0, json_default=0),
        _number(
            "ioprio",
            "IOP",
            3,
            lambda r: _ioprio(r.raw("IOPRIO")),
            key=lambda r: _ioprio(r.raw("IOPRIO")),
            shown=lambda n: n >= 0,
            json_default=0,
        ),
        _number(
            "iolimit",
            "IOLIMIT",
            10,
            lambda r: _iolimit(r.raw("IOLIMIT")),
            key=lambda r: _iolimit(r.raw("IOLIMIT")),
            shown=lambda n: n >= 1,
            json_default=0,
        ),
        _number(
            "iopslimit",
            "IOPS",
            4,
            lambda r: _iopslimit(r.raw("IOPSLIMIT")),
            key=lambda r: _iopslimit(r.raw("IOPSLIMIT")),
            shown=lambda n: n >= 1,
            json_default=0,
        ),
        _flag("onboot", "ONBOOT", 6, lambda r: _yes_no(r.raw("ONBOOT"))),
        _number("bootorder", "BOOTORDER", 10, lambda r: c_ulong(r.raw("BOOTORDER")), key=_bootorder_key),
        Field(
            "layout",
            "LAYOUT",
            6,
            lambda r, trim: r.layout.ljust(6),
            lambda r: _json_str(r.layout),
            _layout_key,
        ),
        Field(
            "features",
            "FEATURES",
            -15,
            lambda r, trim: _switch_text(features(r)).ljust(15)[: 15 if trim else None],
            lambda r: _switch_json(features(r)),
            _unsorted,
        ),
        _flag("vswap", "VSWAP", 5, _vswap),
        _flag("disabled", "DISABL", 6, lambda r: _yes_no(r.raw("DISABLED")) is True),
        Field(
            "vm_overcommit",
            "VM_OVC",
            6,
            _vm_overcommit,
            lambda r: format(_float(r.raw("VM_OVERCOMMIT")), "g"),
            _unsorted,
        ),
        Field(
            "netfilter",
            "NETFILTER",
            -9,
            # printf("%s") of vzctl's NULL for an unset NETFILTER is glibc's "(null)"
            lambda r, trim: (netfilter(r) or "(null)").ljust(9),
            lambda r: _json_str(netfilter(r)),
            _unsorted,
        ),
        Field(
            "capability",
            "CAPABILITY",
            -15,
            lambda r, trim: _switch_text(capabilities(r)).ljust(15),
            lambda r: _switch_json(capabilities(r)),
            _unsorted,
        ),
    ]
    return fields


def _extension(param: Param[Any]) -> Field:
    """A pyvz parameter that vzlist 4.11 has no field for: its config text, left in 15."""

    def value(record: Record) -> Any:
        return record.value(param)

    def text(record: Record) -> str | None:
        found = value(record)
        if found is None or found == "" or found == ():
            return None
        if isinstance(found, bool):
            return "yes" if found else "no"  # as the config says it
        return " ".join(map(str, found)) if isinstance(found, tuple) else str(found)

    def as_json(record: Record) -> str:
        found = value(record)
        if isinstance(found, tuple):
            return "[" + ", ".join(json.dumps(str(w), ensure_ascii=False) for w in found) + "]"
        return "null" if found is None else json.dumps(found, ensure_ascii=False)

    field = _text(param.field or "", (param.field or "").upper(), -15, text)
    return field._replace(json=as_json)


VZLIST_FIELDS: tuple[Field, ...] = tuple(_build())  # vzlist 4.11's, in its order (-L)
FIELDS: dict[str, Field] = {field.name: field for field in VZLIST_FIELDS}
for _p in PARAMS:
    if _p.field and _p.field not in FIELDS:
        FIELDS[_p.field] = _extension(_p)

DEFAULT_FIELDS = ("ctid", "numproc", "status", "ip", "hostname")
NAME_FIELDS = ("smart_name", "numproc", "status", "ip", "hostname")  # -n
