"""The one table of container parameters.

Each row says, once: the vzctl option(s), the config key, how to parse and write the value,
which commands take it, and which subsystem applies it (and whether that can happen on a
running CT). The CLI options, config handling, help text, vzlist fields and live
application are all driven from here, so a later feature adds rows, not code paths.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Generic, NamedTuple, TypeVar

from pyvz.errors import ExitCode, VzError
from pyvz.units import (
    UNLIMITED,
    BarrierLimit,
    bad_value,
    format_duration,
    format_yes_no,
    parse_barrier_limit,
    parse_duration,
    parse_int,
    parse_size,
    parse_yes_no,
)

T = TypeVar("T")

PAGE = 4096  # vzctl counts *pages parameters in 4 KiB pages

# CTIDs up to 100 belong to the system in OpenVZ; vzctl caps the rest here.
MIN_CTID = 101
MAX_CTID = 2147483644


class Layout(StrEnum):
    BTRFS = "btrfs"
    DIR = "dir"
    SIMFS = "simfs"  # OpenVZ's: a plain directory tree, uid 0 on disk
    PLOOP = "ploop"  # OpenVZ's image files: read by `vzctl convert`, not run


class SetMode(StrEnum):
    RESTART = "restart"
    IGNORE = "ignore"


class Subsystem(StrEnum):
    """Who applies a parameter when it changes."""

    CONFIG = "config"  # stored only; read when needed (name, onboot, ...)
    DISTRO = "distro"  # files inside the CT (hostname, passwords)
    STORAGE = "storage"  # the storage driver (disk quota)
    CREATE = "create"  # fixed at create time (layout, private area, id range)
    RESOURCES = "resources"  # cgroup limits
    NETWORK = "network"  # addresses, routes and firewall rules of a running CT
    DEVICES = "devices"  # device nodes and the device cgroup of a running CT
    NETDEV = "netdev"  # host interfaces moved into a running CT
    BINDMOUNTS = "bindmounts"  # host paths bound into the CT (ct/bindmounts.py)


CREATE = frozenset({"create"})
SET = frozenset({"set"})
BOTH = frozenset({"create", "set"})
BOTH_AND_CLONE = BOTH | {"clone"}  # what a clone may be given anew


class Param(NamedTuple, Generic[T]):
    name: str
    key: str | None  # None: an action, never saved (userpasswd, applyconfig)
    options: tuple[str, ...]
    parse: Callable[[str], T]
    fmt: Callable[[T], str]
    help: str
    metavar: str
    commands: frozenset[str]
    subsystem: Subsystem
    live: bool = True  # can change on a running CT without a restart
    field: str | None = None  # vzlist -o name
    default: Any = None  # the value when neither CTID.conf nor vz.conf sets it
    multi: bool = False  # the option may repeat; the values are kept space-separated
    option_parse: Callable[[str], T] | None = None  # when the CLI's unit differs from the config's
    merge: Callable[[T, T], T] | None = None  # set merges the new value into the old (vzctl's lists)
    bare: str | None = None  # the option given without a value means this one (a flag: --ephemeral)


def _text(text: str) -> str:
    if any(ord(char) < 32 for char in text):
        raise bad_value("text", text, "control characters and newlines are not allowed")
    return text


# Patterns are compiled on first use (re caches them): most commands never need them.
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?"
_NAME_RE = r"[A-Za-z0-9_.-]{1,64}"
_TEMPLATE_RE = r"[A-Za-z0-9][A-Za-z0-9_.+-]*"


def parse_hostname(text: str) -> str:
    if not re.fullmatch(_HOSTNAME_RE, text):
        raise VzError(
            ExitCode.BAD_HOSTNAME,
            f"invalid hostname: {text!r} (letters, digits, '-' and '.', labels up to 63 chars)",
        )
    return text


def parse_name(text: str) -> str:
    if not re.fullmatch(_NAME_RE, text) or text.isdigit() or text.startswith("."):
        raise VzError(
            ExitCode.SET_NAME_ERROR,
            f"invalid CT name: {text!r} (letters, digits, '_', '-', '.'; not all digits, no leading '.')",
        )
    return text


def parse_template_name(text: str) -> str:
    if not re.fullmatch(_TEMPLATE_RE, text) or len(text) > 128:
        raise bad_value("ostemplate", text, "letters, digits and _.+- only")
    return text


def parse_ctid(text: str) -> int:
    """A numeric CTID; names are resolved elsewhere (config.resolve_ctid)."""
    if not (text.isascii() and text.isdigit()):
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"invalid CTID: {text!r}")
    ctid = int(text)
    if ctid < MIN_CTID:
        raise VzError(
            ExitCode.INVALID_PARAMETER_VALUE,
            f"CTID {ctid} is reserved (CTIDs up to {MIN_CTID - 1} belong to the system)",
        )
    if ctid > MAX_CTID:
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, f"CTID {ctid} is too large (max {MAX_CTID})")
    return ctid


def _yes_no(what: str) -> Callable[[str], bool]:
    return lambda text: parse_yes_no(text, what)


class IntText:
    """A whole number in a range; the range is also what the API's schema says. (Not a
    dataclass: `dataclasses` pulls in inspect and ast, ~10 ms of every vzctl command's
    start-up.)"""

    __slots__ = ("what", "minimum", "maximum")

    def __init__(self, what: str, minimum: int, maximum: int) -> None:
        self.what = what
        self.minimum = minimum
        self.maximum = maximum

    def __repr__(self) -> str:
        return f"IntText({self.what!r}, {self.minimum}, {self.maximum})"

    def __call__(self, text: str) -> int:
        return parse_int(text, self.what, self.minimum, self.maximum)


def _int(what: str, minimum: int = 0, maximum: int = 2**31 - 1) -> Callable[[str], int]:
    return IntText(what, minimum, maximum)


def _diskspace(text: str) -> BarrierLimit:
    # vzctl counts disk space in 1 KiB blocks; suffixed values are bytes.
    return parse_barrier_limit(text, 1024, "diskspace")


def _layout(text: str) -> Layout:
    try:
        return Layout(text)
    except ValueError:
        raise bad_value("layout", text, "expected btrfs, simfs or dir") from None


def _path(what: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not text.startswith("/") or "\n" in text or '"' in text:
            raise bad_value(what, text, "expected an absolute path")
        return text.rstrip("/") or "/"

    return parse


def _nameservers(text: str) -> tuple[str, ...]:
    import ipaddress

    values = tuple(text.split())
    if values == ("inherit",):
        return values
    for value in values:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise bad_value("nameserver", value, "expected an IP address or `inherit`") from None
    return values


def _searchdomains(text: str) -> tuple[str, ...]:
    values = tuple(text.split())
    for value in values:
        if not re.fullmatch(_HOSTNAME_RE, value):
            raise bad_value("searchdomain", value, "expected a domain name")
    return values


def _words(values: tuple[str, ...]) -> str:
    return " ".join(values)


def _userpasswd(text: str) -> tuple[str, str]:
    user, sep, password = text.partition(":")
    if not sep or not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user) or not password:
        raise VzError(
            ExitCode.INVALID_PARAMETER_VALUE,
            "invalid --userpasswd: expected USER:PASSWORD with a lower-case user name",
        )
    if "\n" in password:
        raise VzError(ExitCode.INVALID_PARAMETER_VALUE, "invalid --userpasswd: newline in password")
    return user, password


def _fmt_pair(value: tuple[str, str]) -> str:
    return f"{value[0]}:***"


HOSTNAME: Param[str] = Param(
    "hostname",
    "HOSTNAME",
    ("--hostname",),
    parse_hostname,
    _text,
    "CT host name, written to the CT's own files",
    "NAME",
    BOTH_AND_CLONE,
    Subsystem.DISTRO,
    field="hostname",
)
NAME: Param[str] = Param(
    "name",
    "NAME",
    ("--name",),
    parse_name,
    _text,
    "a name to use instead of the CTID (`''` removes it)",
    "NAME",
    BOTH_AND_CLONE,
    Subsystem.CONFIG,
    field="name",
    option_parse=lambda text: text and parse_name(text),  # '' is no name, as in vzctl
)
DESCRIPTION: Param[str] = Param(
    "description",
    "DESCRIPTION",
    ("--description",),
    _text,
    _text,
    "free-text description",
    "TEXT",
    BOTH,
    Subsystem.CONFIG,
    field="description",
)
ONBOOT: Param[bool] = Param(
    "onboot",
    "ONBOOT",
    ("--onboot",),
    _yes_no("onboot"),
    format_yes_no,
    "start the CT when the host boots",
    "yes|no",
    SET,
    Subsystem.CONFIG,
    field="onboot",
    default=False,
)
BOOTORDER: Param[int] = Param(
    "bootorder",
    "BOOTORDER",
    ("--bootorder",),
    _int("bootorder"),
    str,
    "boot order: higher starts first",
    "N",
    SET,
    Subsystem.CONFIG,
    field="bootorder",
)
DISABLED: Param[bool] = Param(
    "disabled",
    "DISABLED",
    ("--disabled",),
    _yes_no("disabled"),
    format_yes_no,
    "refuse to start the CT (unless --force)",
    "yes|no",
    SET,
    Subsystem.CONFIG,
    field="disabled",
    default=False,
)
OSTEMPLATE: Param[str] = Param(
    "ostemplate",
    "OSTEMPLATE",
    ("--ostemplate",),
    parse_template_name,
    _text,
    "OS template the CT is made from",
    "NAME",
    BOTH,
    Subsystem.CONFIG,
    field="ostemplate",
)


def parse_recipe(text: str) -> str:
    """A recipe's name (looked up in $ROOT/etc/vz/recipes/, then pyvz's own) or the absolute
    path of its .toml file (templates/recipe.py: find)."""
    if text.startswith("/"):
        if not text.endswith(".toml") or any(ord(c) < 32 for c in text) or '"' in text:
            raise bad_value("recipe", text, "expected a recipe name or an absolute path to a .toml file")
        return text
    return parse_template_name(text)


OSRECIPE: Param[str] = Param(
    "recipe",
    "OSRECIPE",
    ("--recipe",),
    parse_recipe,
    _text,
    # The template is built from it (vztmpl build) and named after it; `vzctl rebuild` alone
    # builds it again and puts the CT's system on the new build (ct/rebuild.py).
    "build the OS template from this recipe (a name or a .toml path) and remember it for rebuild",
    "RECIPE",
    CREATE,
    Subsystem.CONFIG,
    live=False,
    field="osrecipe",
)
EPHEMERAL: Param[bool] = Param(
    "ephemeral",
    "EPHEMERAL",
    ("--ephemeral",),
    _yes_no("ephemeral"),
    format_yes_no,
    # set: `--ephemeral no` keeps a scratch CT for good at once; `yes` on a running CT covers
    # a halt inside it from its next start on (the hook is written at start).
    "destroy the CT when it stops: vzctl stop, a halt inside it, or a host reboot (ct/ephemeral.py)",
    "[yes|no]",
    BOTH_AND_CLONE,
    Subsystem.CONFIG,
    field="ephemeral",
    default=False,
    bare="yes",
)
STOP_TIMEOUT: Param[int] = Param(
    "stop_timeout",
    "STOP_TIMEOUT",
    ("--stop-timeout", "--stop_timeout"),
    _int("stop-timeout", 0, 86400),
    str,
    "seconds to wait for a clean shutdown before killing",
    "SECONDS",
    SET,
    Subsystem.CONFIG,
)
LAYOUT: Param[Layout] = Param(
    "layout",
    "VE_LAYOUT",
    ("--layout", "--ve_layout", "--velayout"),
    _layout,
    str,
    "storage layout: btrfs (snapshots, quota), simfs (a plain tree) or dir (overlayfs)",
    "btrfs|simfs|dir",
    CREATE,
    Subsystem.CREATE,
    live=False,
    field="layout",
)
PRIVATE: Param[str] = Param(
    "private",
    "VE_PRIVATE",
    ("--private",),
    _path("private"),
    _text,
    "private area (the CT's files); set: a stopped CT's files that were moved there",
    "PATH",
    BOTH,
    Subsystem.CREATE,
    live=False,
    field="private",
)
ROOT: Param[str] = Param(
    "root",
    "VE_ROOT",
    ("--root",),
    _path("root"),
    _text,
    "mount point of the CT's root (set: of a stopped, unmounted CT)",
    "PATH",
    BOTH,
    Subsystem.CREATE,
    live=False,
    field="root",
)


def _quota_pair(value: BarrierLimit) -> str:
    """Disk quotas as vzctl writes them: always soft:hard, in numbers (its store_dq)."""
    return f"{value.barrier}:{value.limit}"


DISKSPACE: Param[BarrierLimit] = Param(
    "diskspace",
    "DISKSPACE",
    ("--diskspace",),
    _diskspace,
    _quota_pair,
    "disk quota, soft[:hard] in 1K blocks or with K/M/G/T suffix",
    "SIZE[:SIZE]",
    BOTH,
    Subsystem.STORAGE,
    field="diskspace",
)
LOCAL_UID: Param[int] = Param(
    "local_uid",
    "LOCAL_UID",
    ("--local_uid",),
    _int("local_uid", 0, 2**32 - 65537),
    str,
    "host uid that CT root maps to (0: privileged CT)",
    "UID",
    CREATE,
    Subsystem.CREATE,
    live=False,
)
LOCAL_GID: Param[int] = Param(
    "local_gid",
    "LOCAL_GID",
    ("--local_gid",),
    _int("local_gid", 0, 2**32 - 65537),
    str,
    "host gid that CT root maps to (0: privileged CT)",
    "GID",
    CREATE,
    Subsystem.CREATE,
    live=False,
)
ORIGIN_SAMPLE: Param[str] = Param(
    "config",
    "ORIGIN_SAMPLE",
    ("--config",),
    parse_template_name,
    _text,
    "sample config (ve-NAME.conf-sample) to start from",
    "NAME",
    CREATE,
    Subsystem.CREATE,
    live=False,
)


def _vswap(what: str) -> Callable[[str], BarrierLimit]:
    """--ram/--swap take a size (bytes with a suffix); the config keeps pages as 0:LIMIT."""

    def parse(text: str) -> BarrierLimit:
        value = parse_barrier_limit(text, PAGE, what)
        return BarrierLimit(0, value.limit)

    return parse


def _fmt_vswap(value: BarrierLimit) -> str:
    return f"0:{value.limit}"


def _items(what: str) -> Callable[[str], BarrierLimit]:
    return lambda text: parse_barrier_limit(text, 1, what)


def _percent(text: str) -> int:
    return parse_int(text.strip().rstrip("%"), "cpulimit", 0, 100 * 1024)


def _overcommit(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise bad_value("vm_overcommit", text, "expected a number such as 1.5") from None
    if not 0 < value <= 1000 or value != value:
        raise bad_value("vm_overcommit", text, "must be greater than 0")
    return value


def _fmt_float(value: float) -> str:
    return f"{value:g}"


def _cpus(text: str) -> int:
    if text.strip().lower() == "unlimited":
        return 0
    return parse_int(text, "cpus", 0, 8192)


def _cpulist(what: str) -> Callable[[str], str]:
    """A kernel cpu list (0-3,6) or `all`; normalised, ids checked against the host at apply time."""

    def parse(text: str) -> str:
        text = text.strip()
        if text.lower() == "all":
            return "all"
        ids: set[int] = set()
        for part in text.split(","):
            match = re.fullmatch(r"(\d{1,4})(?:-(\d{1,4}))?", part)
            if not match:
                raise bad_value(what, text, "expected a list such as 0-3,6 or `all`")
            low, high = int(match.group(1)), int(match.group(2) or match.group(1))
            if high < low:
                raise bad_value(what, text, f"range {part} goes backwards")
            ids.update(range(low, high + 1))
        return format_id_list(ids)

    return parse


def format_id_list(ids: set[int] | list[int]) -> str:
    """0,1,2,5 -> 0-2,5 (the kernel's own cpu list form)."""
    ordered, runs = sorted(set(ids)), list[list[int]]()
    for value in ordered:
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def parse_id_list(text: str) -> set[int]:
    ids: set[int] = set()
    for part in filter(None, text.strip().split(",")):
        low, _sep, high = part.partition("-")
        ids.update(range(int(low), int(high or low) + 1))
    return ids


def _iolimit_option(text: str) -> int:
    """vzctl's --iolimit reads a plain number as MB/s."""
    text = text.strip()
    if text.isdigit():
        return parse_int(text, "iolimit", 0, 2**40) * 1024 * 1024
    return _iolimit(text)


def _iolimit(text: str) -> int:
    """Bytes per second, as IOLIMIT is stored."""
    value = parse_size(text, 1, "iolimit")
    if value >= UNLIMITED:
        return 0
    return value


PHYSPAGES: Param[BarrierLimit] = Param(
    "ram",
    "PHYSPAGES",
    ("--ram", "--physpages"),
    _vswap("ram"),
    _fmt_vswap,
    "memory limit (VSwap RAM), e.g. 512M",
    "SIZE",
    BOTH,
    Subsystem.RESOURCES,
)
SWAPPAGES: Param[BarrierLimit] = Param(
    "swap",
    "SWAPPAGES",
    ("--swap", "--swappages"),
    _vswap("swap"),
    _fmt_vswap,
    "swap the CT may use on top of --ram",
    "SIZE",
    BOTH,
    Subsystem.RESOURCES,
)
VM_OVERCOMMIT: Param[float] = Param(
    "vm_overcommit",
    "VM_OVERCOMMIT",
    ("--vm_overcommit",),
    _overcommit,
    _fmt_float,
    "privvmpages = (ram + swap) * N; saved, not enforced (no per-CT commit limit in mainline)",
    "N",
    BOTH,
    Subsystem.RESOURCES,
    field="vm_overcommit",
)
CPUUNITS: Param[int] = Param(
    "cpuunits",
    "CPUUNITS",
    ("--cpuunits",),
    _int("cpuunits", 8, 500000),
    str,
    "CPU weight relative to other CTs (1000 = default)",
    "N",
    BOTH,
    Subsystem.RESOURCES,
    field="cpuunits",
)
CPULIMIT: Param[int] = Param(
    "cpulimit",
    "CPULIMIT",
    ("--cpulimit",),
    _percent,
    str,
    "CPU limit in percent of one CPU (0 = none)",
    "PERCENT",
    BOTH,
    Subsystem.RESOURCES,
    field="cpulimit",
)
CPUS: Param[int] = Param(
    "cpus",
    "CPUS",
    ("--cpus",),
    _cpus,
    str,
    "number of CPUs the CT may run on (0 or unlimited = all)",
    "N",
    BOTH,
    Subsystem.RESOURCES,
    field="cpus",
)
CPUMASK: Param[str] = Param(
    "cpumask",
    "CPUMASK",
    ("--cpumask",),
    _cpulist("cpumask"),
    str,
    "CPUs the CT may run on, e.g. 0-3,6 (or all)",
    "LIST",
    BOTH,
    Subsystem.RESOURCES,
    field="cpumask",
)
NODEMASK: Param[str] = Param(
    "nodemask",
    "NODEMASK",
    ("--nodemask",),
    _cpulist("nodemask"),
    str,
    "NUMA memory nodes the CT may allocate from, e.g. 0 (or all)",
    "LIST",
    BOTH,
    Subsystem.RESOURCES,
    field="nodemask",
)
DISKINODES: Param[BarrierLimit] = Param(
    "diskinodes",
    "DISKINODES",
    ("--diskinodes",),
    _items("diskinodes"),
    _quota_pair,
    "inode quota, soft[:hard]; saved, not enforced (btrfs has no inode quota)",
    "N[:N]",
    BOTH,
    Subsystem.STORAGE,
    field="diskinodes",
)
IOPRIO: Param[int] = Param(
    "ioprio",
    "IOPRIO",
    ("--ioprio",),
    _int("ioprio", 0, 7),
    str,
    "disk I/O priority 0..7 (4 = default), as a bfq weight on the CT's disk",
    "0-7",
    BOTH,
    Subsystem.RESOURCES,
    field="ioprio",
)
IOLIMIT: Param[int] = Param(
    "iolimit",
    "IOLIMIT",
    ("--iolimit",),
    _iolimit,
    str,
    "disk bandwidth limit; a plain number is MB/s, or give K/M/G (0 = none)",
    "RATE",
    BOTH,
    Subsystem.RESOURCES,
    field="iolimit",
    option_parse=_iolimit_option,
)
IOPSLIMIT: Param[int] = Param(
    "iopslimit",
    "IOPSLIMIT",
    ("--iopslimit",),
    _int("iopslimit", 0),
    str,
    "disk I/O operations per second limit (0 = none)",
    "N",
    BOTH,
    Subsystem.RESOURCES,
    field="iopslimit",
)


# vzctl's one-letter forms of some beancounters (its getopt string, include/vzctl_param.h).
_UBC_SHORT = {
    "kmemsize": "-k",
    "lockedpages": "-l",
    "numproc": "-p",
    "numflock": "-f",
    "numpty": "-t",
    "numsiginfo": "-i",
    "tcprcvbuf": "-b",
    "numiptent": "-e",
    "numfile": "-n",
    "dcachesize": "-x",
}


def _ubc(name: str, unit: int, what: str) -> Param[BarrierLimit]:
    """One user beancounter: `--NAME barrier[:limit]` saved as NAME="barrier:limit"."""
    counted = "pages" if unit == PAGE else "bytes" if unit == 1 and not name.startswith("num") else "items"
    short = (_UBC_SHORT[name],) if name in _UBC_SHORT else ()
    return Param(
        name,
        name.upper(),
        (f"--{name}", *short),
        lambda text: parse_barrier_limit(text, unit, name),
        str,
        f"{what}, barrier[:limit] in {counted}",
        "N[:N]",
        BOTH,
        Subsystem.RESOURCES,
    )


# The UBC set in /proc/user_beancounters order. PHYSPAGES and SWAPPAGES are --ram/--swap above.
NUMPROC = _ubc("numproc", 1, "processes and threads")
UBC_PARAMS: tuple[Param[BarrierLimit], ...] = (
    _ubc("kmemsize", 1, "kernel memory"),
    _ubc("lockedpages", PAGE, "mlock()ed memory"),
    _ubc("privvmpages", PAGE, "allocated (committed) memory"),
    _ubc("shmpages", PAGE, "shared memory (IPC and tmpfs)"),
    NUMPROC,
    PHYSPAGES,
    _ubc("vmguarpages", PAGE, "guaranteed memory"),
    _ubc("oomguarpages", PAGE, "memory guaranteed against the OOM killer"),
    _ubc("numtcpsock", 1, "TCP sockets"),
    _ubc("numflock", 1, "file locks"),
    _ubc("numpty", 1, "pseudo-terminals"),
    _ubc("numsiginfo", 1, "pending signals"),
    _ubc("tcpsndbuf", 1, "TCP send buffers"),
    _ubc("tcprcvbuf", 1, "TCP receive buffers"),
    _ubc("othersockbuf", 1, "other socket send buffers"),
    _ubc("dgramrcvbuf", 1, "datagram receive buffers"),
    _ubc("numothersock", 1, "non-TCP sockets"),
    _ubc("dcachesize", 1, "dentry and inode cache"),
    _ubc("numfile", 1, "open files"),
    _ubc("numiptent", 1, "iptables entries"),
    SWAPPAGES,
)


def ubc_name(param: Param[Any]) -> str:
    """The beancounter's own name: physpages for --ram, swappages for --swap."""
    return param.key.lower() if param.key else param.name


NAMESERVER: Param[tuple[str, ...]] = Param(
    "nameserver",
    "NAMESERVER",
    ("--nameserver",),
    _nameservers,
    _words,
    "DNS server for the CT's resolv.conf (repeatable; `inherit`: the host's)",
    "ADDR",
    BOTH,
    Subsystem.DISTRO,
    field="nameserver",
    multi=True,
)
SEARCHDOMAIN: Param[tuple[str, ...]] = Param(
    "searchdomain",
    "SEARCHDOMAIN",
    ("--searchdomain",),
    _searchdomains,
    _words,
    "DNS search domain for the CT's resolv.conf (repeatable)",
    "DOMAIN",
    BOTH,
    Subsystem.DISTRO,
    field="searchdomain",
    multi=True,
)


def bad_ip(text: str, why: str) -> VzError:
    return VzError(ExitCode.INVALID_IP, f"invalid IP address {text!r}: {why}")


def parse_ip(text: str) -> str:
    """ADDR or ADDR/PREFIX, IPv4 or IPv6, normalised; not a network or broadcast address."""
    import ipaddress

    address, sep, prefix = text.partition("/")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise bad_ip(text, "not an IPv4 or IPv6 address") from None
    if sep:
        if not prefix.isdigit() or int(prefix) > ip.max_prefixlen:
            raise bad_ip(text, f"the prefix must be 0..{ip.max_prefixlen}")
        network = ipaddress.ip_network(f"{ip}/{prefix}", strict=False)
        usable = network.num_addresses <= 2 or ip.version == 6
        if not usable and ip in (network.network_address, network.broadcast_address):
            raise bad_ip(
                text, f"it is the {'network' if ip == network.network_address else 'broadcast'} address"
            )
    if ip.is_unspecified or ip.is_multicast or ip.is_loopback or ip.is_link_local:
        raise bad_ip(text, "not an address a CT can own")
    if ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255"):
        raise bad_ip(text, "the broadcast address")
    return f"{ip}/{prefix}" if sep else str(ip)


def _ip_list(text: str) -> tuple[str, ...]:
    values: list[str] = []
    for word in text.split():
        value = parse_ip(word)
        if value not in values:
            values.append(value)
    return tuple(values)


def _ip_del(text: str) -> tuple[str, ...]:
    return ("all",) if text.split() == ["all"] else _ip_list(text)


def parse_ports(text: str) -> tuple[str, ...]:
    """FIREWALL_ACCEPT: words like 22/tcp, 53/udp, 8000-8080/tcp."""
    values: list[str] = []
    for word in text.split():
        match = re.fullmatch(r"(\d{1,5})(?:-(\d{1,5}))?/(tcp|udp)", word.lower())
        if not match or not all(0 < int(p) < 65536 for p in match.groups()[:2] if p):
            raise bad_value("firewall-accept", word, "expected PORT/tcp, PORT/udp or FROM-TO/tcp")
        if match.group(2) and int(match.group(2)) < int(match.group(1)):
            raise bad_value("firewall-accept", word, "the range goes backwards")
        if word.lower() not in values:
            values.append(word.lower())
    return tuple(values)


IPADD: Param[tuple[str, ...]] = Param(
    "ipadd",
    "IP_ADDRESS",
    ("--ipadd", "--ip"),
    _ip_list,
    _words,
    "add a routed (venet) IP address, ADDR[/PREFIX], IPv4 or IPv6 (repeatable; adds to the list)",
    "ADDR",
    BOTH_AND_CLONE,
    Subsystem.NETWORK,
    multi=True,
)
IPDEL: Param[tuple[str, ...]] = Param(
    "ipdel",
    None,
    ("--ipdel",),
    _ip_del,
    _words,
    "remove a routed IP address (repeatable), or `all`",
    "ADDR|all",
    SET,
    Subsystem.NETWORK,
    multi=True,
)
FIREWALL_ACCEPT: Param[tuple[str, ...]] = Param(
    "firewall_accept",
    "FIREWALL_ACCEPT",
    ("--firewall-accept", "--firewall_accept"),
    parse_ports,
    _words,
    'inbound ports open on the CT, e.g. "22/tcp 80/tcp 53/udp" (empty: no filtering)',
    "PORTS",
    BOTH,
    Subsystem.NETWORK,
    field="firewall_accept",
)


def _netifs(text: str) -> tuple[Any, ...]:
    from pyvz.net.veth import parse_config

    return parse_config(text)


def _fmt_netifs(value: tuple[Any, ...]) -> str:
    from pyvz.net.veth import format_config

    return format_config(value)


def _checked(name: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        from pyvz.net import veth

        checks: dict[str, Callable[[str], str]] = {
            "mac": veth.check_mac,
            "host_mac": veth.check_mac,
            "ifname": veth.check_ifname,
            "host_ifname": veth.check_ifname,
            "bridge": veth.check_ifname,
            "mac_filter": veth.check_mac_filter,
            "netif_del": lambda t: t if t == "all" else veth.check_ifname(t),
            "netif_add": lambda t: veth.parse_add(t).text() and t,  # checked here, edited in set
        }
        return checks[name](text)

    return parse


def _netif_option(name: str, help_text: str, metavar: str, commands: frozenset[str] = SET) -> Param[str]:
    return Param(
        name, None, (f"--{name}",), _checked(name), str, help_text, metavar, commands, Subsystem.NETWORK
    )


# NETIF is written by the options below, never given whole on the command line.
NETIF: Param[tuple[Any, ...]] = Param(
    "netif", "NETIF", (), _netifs, _fmt_netifs, "bridged veth interfaces", "", frozenset(), Subsystem.NETWORK
)
NETIF_ADD = _netif_option(
    "netif_add", "add a veth interface: ifname[,mac,host_ifname,host_mac,bridge]", "SPEC", BOTH
)
NETIF_DEL = _netif_option(
    "netif_del", "remove a veth interface (by its name in the CT), or `all`", "IFNAME|all"
)
IFNAME = _netif_option(
    "ifname", "the veth interface that --mac/--host_*/--bridge/--mac_filter change", "IFNAME"
)
MAC = _netif_option("mac", "MAC address of the CT's side", "MAC")
HOST_IFNAME = _netif_option("host_ifname", "name of the host's side", "NAME")
HOST_MAC = _netif_option("host_mac", "MAC address of the host's side", "MAC")
BRIDGE = _netif_option("bridge", "host bridge the interface is a port of", "BRIDGE")
MAC_FILTER = _netif_option("mac_filter", "drop frames from the CT whose MAC is not its own", "on|off")
NETIF_OPTIONS = (NETIF_ADD, NETIF_DEL, IFNAME, MAC, HOST_IFNAME, HOST_MAC, BRIDGE, MAC_FILTER)

# ---- what the CT may touch (pyvz/runtime/access.py says how each is given) -------------------


def _access(name: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        from pyvz.runtime import access

        return getattr(access, f"parse_{name}")(text)

    return parse


def _access_fmt(name: str) -> Callable[[Any], str]:
    def fmt(value: Any) -> str:
        from pyvz.runtime import access

        return str(getattr(access, f"format_{name}")(value))

    return fmt


def _access_merge(name: str) -> Callable[[Any, Any], Any]:
    def merge(old: Any, new: Any) -> Any:
        from pyvz.runtime import access

        return getattr(access, f"merge_{name}")(old or (), new)

    return merge


def _devnodes_option(text: str) -> Any:
    from pyvz.runtime import access

    devices = access.parse_devnodes(text)
    access.check_devnodes(devices)  # as vzctl: the node must be a device on this host
    return devices


def _meminfo(text: str) -> str:
    mode, sep, value = text.strip().partition(":")
    if mode == "none" and not sep:
        return mode
    if mode in ("pages", "privvmpages") and value.isdigit() and int(value) > 0:
        return f"{mode}:{int(value)}"
    raise bad_value("meminfo", text, "expected none, pages:N or privvmpages:N (N > 0)")


def _netdev_names(text: str) -> tuple[str, ...]:
    from pyvz.net.veth import check_ifname

    names: list[str] = []
    for word in text.split():
        if check_ifname(word) not in names:
            names.append(word)
    return tuple(names)


def _iptables(text: str) -> tuple[str, ...]:
    words = tuple(text.replace(",", " ").split())
    for word in words:
        if not re.fullmatch(r"[A-Za-z0-9_]{1,64}", word):
            raise bad_value("iptables", word, "expected iptables module names such as iptable_filter")
    return words


def _mount_opts(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_=,.:/-]*", text):
        raise bad_value("mount_opts", text, "expected mount options such as noatime,nodiratime")
    return text


MEMINFO: Param[str] = Param(
    "meminfo",
    "MEMINFO",
    ("--meminfo",),
    _meminfo,
    str,
    "what the CT's /proc/meminfo shows: none (the host's), pages:N, privvmpages:N (LXCFS)",
    "none|MODE:N",
    BOTH,
    Subsystem.CONFIG,
    live=False,
    field="meminfo",
)
DEVNODES: Param[tuple[Any, ...]] = Param(
    "devnodes",
    "DEVNODES",
    ("--devnodes",),
    _access("devnodes"),
    _access_fmt("devnodes"),
    "give the CT /dev/NAME: r, w, rw or none (repeatable)",
    "NAME:PERM",
    BOTH,
    Subsystem.DEVICES,
    field="devnodes",
    multi=True,
    option_parse=_devnodes_option,
    merge=_access_merge("devices"),
)
DEVICES: Param[tuple[Any, ...]] = Param(
    "devices",
    "DEVICES",
    ("--devices",),
    _access("devices"),
    _access_fmt("devices"),
    "allow a device by number: b|c:MAJOR:MINOR|all:r|w|rw|none (repeatable)",
    "TYPE:MAJ:MIN:PERM",
    BOTH,
    Subsystem.DEVICES,
    field="devices",
    multi=True,
    merge=_access_merge("devices"),
)
CAPABILITY: Param[tuple[tuple[str, bool], ...]] = Param(
    "capability",
    "CAPABILITY",
    ("--capability",),
    _access("capabilities"),
    _access_fmt("capabilities"),
    "keep or drop a capability in the CT's bounding set, e.g. net_admin:off",
    "NAME:on|off",
    BOTH,
    Subsystem.CONFIG,
    live=False,
    field="capability",
    multi=True,
    merge=_access_merge("switches"),
)
FEATURES: Param[tuple[tuple[str, bool], ...]] = Param(
    "features",
    "FEATURES",
    ("--features",),
    _access("features"),
    _access_fmt("features"),
    "nfs, ppp, bridge, ipip, ipgre, sit, fuse, nfsd, sysfs: on or off",
    "NAME:on|off",
    BOTH,
    Subsystem.CONFIG,
    live=False,
    field="features",
    multi=True,
    merge=_access_merge("switches"),
)
NETFILTER: Param[str] = Param(
    "netfilter",
    "NETFILTER",
    ("--netfilter",),
    _access("netfilter"),
    str,
    "the CT's access to netfilter: disabled, stateless, stateful or full",
    "MODE",
    BOTH,
    Subsystem.CONFIG,
    live=False,
    field="netfilter",
)
IPTABLES: Param[tuple[str, ...]] = Param(
    "iptables",
    "IPTABLES",
    ("--iptables",),
    _iptables,
    _words,
    "obsolete list of iptables modules (see --netfilter); saved, not enforced",
    "NAMES",
    BOTH,
    Subsystem.CONFIG,
    live=False,
)
NETDEV: Param[tuple[str, ...]] = Param(
    "netdev",
    "NETDEV",
    (),
    _netdev_names,
    _words,
    "host interfaces moved into the CT",
    "",
    frozenset(),
    Subsystem.NETDEV,
)
NETDEV_ADD: Param[tuple[str, ...]] = Param(
    "netdev_add",
    None,
    ("--netdev_add",),
    _netdev_names,
    _words,
    "move a host network interface into the CT while it runs (repeatable)",
    "IFNAME",
    SET,
    Subsystem.NETDEV,
    multi=True,
)
NETDEV_DEL: Param[tuple[str, ...]] = Param(
    "netdev_del",
    None,
    ("--netdev_del",),
    _netdev_names,
    _words,
    "give a network interface back to the host (repeatable)",
    "IFNAME",
    SET,
    Subsystem.NETDEV,
    multi=True,
)
AVNUMPROC: Param[BarrierLimit] = Param(
    "avnumproc",
    "AVNUMPROC",
    ("--avnumproc",),
    _items("avnumproc"),
    str,
    "expected average number of processes (a sizing hint); saved, not enforced",
    "N[:N]",
    BOTH,
    Subsystem.CONFIG,
)
CPUWEIGHT: Param[int] = Param(
    "cpuweight",
    "CPUUWEIGHT",  # sic: vzctl's key
    ("--cpuweight",),
    _int("cpuweight", 0, 500000),
    str,
    "CPU weight of the CT (vzctl's; pyvz uses --cpuunits); saved, not enforced",
    "N",
    BOTH,
    Subsystem.CONFIG,
)
MOUNT_OPTS: Param[str] = Param(
    "mount_opts",
    "MOUNT_OPTS",
    ("--mount_opts",),
    _mount_opts,
    str,
    "extra mount options of a ploop CT's filesystem (no ploop here: saved, not used)",
    "OPTS",
    BOTH,
    Subsystem.CONFIG,
    live=False,
    field="mount_opts",
)
DISK_QUOTA: Param[bool] = Param(
    "diskquota",
    "DISK_QUOTA",
    ("--diskquota",),
    _yes_no("diskquota"),
    format_yes_no,
    "whether the CT's DISKSPACE is applied as its disk quota (default: vz.conf's DISK_QUOTA)",
    "yes|no",
    BOTH,
    Subsystem.STORAGE,
)
QUOTATIME: Param[int] = Param(
    "quotatime",
    "QUOTATIME",
    ("--quotatime",),
    _int("quotatime"),
    str,
    "grace period of the soft disk quota, in seconds",
    "SECONDS",
    BOTH,
    Subsystem.CONFIG,
)
QUOTAUGIDLIMIT: Param[int] = Param(
    "quotaugidlimit",
    "QUOTAUGIDLIMIT",
    ("--quotaugidlimit",),
    _int("quotaugidlimit"),
    str,
    "per-user and per-group quota inside the CT: how many ids (0 = off)",
    "N",
    BOTH,
    Subsystem.CONFIG,
    live=False,
)
ACCESS_PARAMS = (
    MEMINFO,
    DEVNODES,
    DEVICES,
    CAPABILITY,
    FEATURES,
    NETFILTER,
    IPTABLES,
    NETDEV,
    NETDEV_ADD,
    NETDEV_DEL,
    AVNUMPROC,
    CPUWEIGHT,
    MOUNT_OPTS,
    DISK_QUOTA,
    QUOTATIME,
    QUOTAUGIDLIMIT,
)


def _bindmount(name: str) -> Callable[..., Any]:
    def call(value: Any, *more: Any) -> Any:
        from pyvz.runtime import bindmount

        return getattr(bindmount, name)(value, *more)

    return call


# OpenVZ 7's BINDMOUNT; the host paths it may not lend are checked in ct/bindmounts.py.
BINDMOUNT: Param[tuple[Any, ...]] = Param(
    "bindmount_add",
    "BINDMOUNT",
    ("--bindmount_add",),
    _bindmount("parse_bindmounts"),
    _bindmount("format_bindmounts"),
    "bind a host path into the CT, idmapped to its root (repeatable)",
    "SRC:DST[,ro|rw,nosuid,nodev,noexec]",
    BOTH,
    Subsystem.BINDMOUNTS,
    field="bindmount",
    multi=True,
    merge=lambda old, new: _bindmount("merge")(old or (), new),
)
BINDMOUNT_DEL: Param[tuple[str, ...]] = Param(
    "bindmount_del",
    None,
    ("--bindmount_del",),
    _bindmount("parse_targets"),
    _words,
    "remove the bind mount at DST in the CT, or `all` (repeatable)",
    "DST|all",
    SET,
    Subsystem.BINDMOUNTS,
    multi=True,
)
USERPASSWD: Param[tuple[str, str]] = Param(
    "userpasswd",
    None,
    ("--userpasswd",),
    _userpasswd,
    _fmt_pair,
    "create or update a user's password inside the CT",
    "USER:PASS",
    SET,
    Subsystem.DISTRO,
)
APPLYCONFIG: Param[str] = Param(
    "applyconfig",
    None,
    ("--applyconfig",),
    parse_template_name,
    _text,
    "apply the parameters of ve-NAME.conf-sample",
    "NAME",
    SET,
    Subsystem.CONFIG,
)


def _applyconfig_map(text: str) -> str:
    if text != "name":
        raise bad_value("applyconfig_map", text, "the only group is name")
    return text


APPLYCONFIG_MAP: Param[str] = Param(
    "applyconfig_map",
    None,
    ("--applyconfig_map",),
    _applyconfig_map,
    str,
    "name: link the CT's NAME from its config again (names/NAME)",
    "GROUP",
    SET,
    Subsystem.CONFIG,
)


def _pci(text: str) -> tuple[str, ...]:
    """[domain:]bus:slot.func, as vzctl reads it (hex numbers, a decimal function)."""
    values: list[str] = []
    for word in text.split():
        match = re.fullmatch(r"(?:([0-9a-fA-F]{1,4}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])", word)
        if not match:
            raise bad_value("pci", word, "expected [domain:]bus:slot.func, e.g. 0000:01:00.0")
        domain, bus, slot, func = match.groups()
        values.append(f"{int(domain or '0', 16):04x}:{int(bus, 16):02x}:{int(slot, 16):02x}.{func}")
    return tuple(values)


# Accepted so that a script's command line parses, and refused by set in one line (setparams.py):
# mainline has no way to give a PCI device to an unprivileged CT.
PCI_ADD: Param[tuple[str, ...]] = Param(
    "pci_add",
    None,
    ("--pci_add",),
    _pci,
    _words,
    "refused: no PCI pass-through to a CT",
    "D:B:S.F",
    SET,
    Subsystem.DEVICES,
    multi=True,
)
PCI_DEL: Param[tuple[str, ...]] = Param(
    "pci_del",
    None,
    ("--pci_del",),
    _pci,
    _words,
    "refused: no PCI pass-through to a CT",
    "D:B:S.F",
    SET,
    Subsystem.DEVICES,
    multi=True,
)

_REPLICA_HOST_RE = r"(?:root@)?[A-Za-z0-9][A-Za-z0-9.:_-]{0,252}"


def _replica_hosts(text: str) -> tuple[str, ...]:
    """HOST[,HOST...] (commas or spaces); `''` is none. Each is a host name or address that
    ssh can reach with the host's migration key (vzmigrate's DESTINATION syntax)."""
    hosts: list[str] = []
    for word in text.replace(",", " ").split():
        if not re.fullmatch(_REPLICA_HOST_RE, word):
            raise bad_value("replicate", word, "expected host names or addresses, comma-separated")
        host = word.removeprefix("root@")
        if host not in hosts:
            hosts.append(host)
    return tuple(hosts)


DEFAULT_REPLICATE_INTERVAL = 900  # Proxmox's pvesr default: every 15 minutes

REPLICATE: Param[tuple[str, ...]] = Param(
    "replicate",
    "REPLICATE",
    ("--replicate",),
    _replica_hosts,
    _words,
    "standby hosts that keep a replica of the CT (vzreplicate; `''` removes)",
    "HOST[,HOST...]",
    SET,
    Subsystem.CONFIG,
    default=(),
)
REPLICATE_INTERVAL: Param[int] = Param(
    "replicate_interval",
    "REPLICATE_INTERVAL",
    ("--replicate-interval", "--replicate_interval"),
    lambda text: parse_duration(text, "replicate-interval", minimum=10),
    format_duration,
    "how often `vzreplicate run --due` sends the CT to its standby hosts (5m, 1h; default 15m)",
    "DURATION",
    SET,
    Subsystem.CONFIG,
    default=DEFAULT_REPLICATE_INTERVAL,
)

HA_ENABLE: Param[bool] = Param(
    "ha_enable",
    "HA_ENABLE",
    ("--ha_enable", "--ha-enable"),
    _yes_no("ha_enable"),
    format_yes_no,
    # OpenVZ 7's option. Enforced by the cluster (pyvz/cluster/ha.py): without one it is saved
    # and `vzctl set` says that nothing acts on it.
    "restart the CT on a standby holding its newest replica when its host dies (a cluster's HA)",
    "yes|no",
    SET,
    Subsystem.CONFIG,
    default=False,
)
HA_PRIO: Param[int] = Param(
    "ha_prio",
    "HA_PRIO",
    ("--ha_prio", "--ha-prio"),
    _int("ha_prio"),
    str,
    "HA order: of a dead host's CTs, higher ones are restarted first (default 0)",
    "N",
    SET,
    Subsystem.CONFIG,
    default=0,
)

PARAMS: tuple[Param[Any], ...] = (
    OSTEMPLATE,
    OSRECIPE,
    ORIGIN_SAMPLE,
    LAYOUT,
    PRIVATE,
    ROOT,
    LOCAL_UID,
    LOCAL_GID,
    HOSTNAME,
    NAME,
    DESCRIPTION,
    ONBOOT,
    BOOTORDER,
    DISABLED,
    EPHEMERAL,
    STOP_TIMEOUT,
    DISKSPACE,
    NAMESERVER,
    SEARCHDOMAIN,
    IPADD,
    IPDEL,
    FIREWALL_ACCEPT,
    NETIF,
    *NETIF_OPTIONS,
    *UBC_PARAMS,
    VM_OVERCOMMIT,
    CPUUNITS,
    CPULIMIT,
    CPUS,
    CPUMASK,
    NODEMASK,
    DISKINODES,
    IOPRIO,
    IOLIMIT,
    IOPSLIMIT,
    *ACCESS_PARAMS,
    BINDMOUNT,
    BINDMOUNT_DEL,
    REPLICATE,
    REPLICATE_INTERVAL,
    HA_ENABLE,
    HA_PRIO,
    USERPASSWD,
    APPLYCONFIG,
    APPLYCONFIG_MAP,
    PCI_ADD,
    PCI_DEL,
)
BY_NAME: dict[str, Param[Any]] = {p.name: p for p in PARAMS}
BY_KEY: dict[str, Param[Any]] = {p.key: p for p in PARAMS if p.key}

# Keys a sample may carry that applyconfig must not copy: they describe one CT, not a class.
NOT_APPLIED_FROM_SAMPLE = frozenset(
    {
        "OSTEMPLATE",
        "OSRECIPE",
        "VE_ROOT",
        "VE_PRIVATE",
        "VE_LAYOUT",
        "NAME",
        "HOSTNAME",
        "DESCRIPTION",
        "LOCAL_UID",
        "LOCAL_GID",
        "IP_ADDRESS",
        "ORIGIN_SAMPLE",
    }
)


# What a CT may reach on the host beyond its own share: its files' place, its id range, the
# host's devices, interfaces and bridges, capabilities and mount options. The API gives these
# only to a caller whose grant covers every CT (a host admin), so that a token for some CTs
# cannot turn one of them into a way out.
_REACHES_HOST = frozenset(
    {
        "capability",
        "features",
        "mount_opts",
        "bridge",
        "host_ifname",
        "netif_add",
        "bindmount_add",
        "bindmount_del",
        "replicate",  # the host's migration key connects out, and the CT's files go there
        "recipe",  # a build as host root (mmdebstrap, the recipe's commands), from any .toml path
    }
)


def reaches_host(param: Param[Any]) -> bool:
    return param.name in _REACHES_HOST or (
        param.subsystem in (Subsystem.DEVICES, Subsystem.NETDEV)
        or (param.subsystem is Subsystem.CREATE and param.name not in ("config", "layout"))
    )


def for_command(command: str) -> list[Param[Any]]:
    return [p for p in PARAMS if command in p.commands]


def parse_options(values: dict[str, str]) -> dict[str, Any]:
    """Step one of validation: syntax only, touching nothing. Keys are Param.name.

    A bad value is said as vzctl says it when it reads its options, with its code; pyvz's
    own explanation goes to the log (and to stderr with --verbose)."""
    from pyvz.log import log

    parsed = {}
    for name, text in values.items():
        param = BY_NAME[name]
        try:
            parsed[name] = (param.option_parse or param.parse)(text)
        except VzError as err:
            if err.code is ExitCode.BAD_HOSTNAME:
                raise  # vzctl takes any hostname: this check is pyvz's, in its own words
            log.debug(err.message)
            raise VzError(
                ExitCode.INVALID_PARAMETER_VALUE, f"Bad parameter for {param.options[0]}: {text}"
            ) from None
    return parsed
