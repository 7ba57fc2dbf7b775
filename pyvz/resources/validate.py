"""The classic OpenVZ rules between beancounters, at vzctl's three levels (Error, Warning,
Recommendation), each with the repair vzcfgvalidate -r applies. vzcfgvalidate (the CLI)
reads the file, asks or repairs, and writes it back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from pyvz.errors import ExitCode, VzError
from pyvz.units import UNLIMITED, show_limit

if TYPE_CHECKING:
    from pyvz.config import ConfigFile

ERROR, WARNING, RECOMMENDATION = "Error", "Warning", "Recommendation"
FAILED = 2  # vzctl: "validation fails"

# Parameters without a real barrier in OpenVZ: barrier must equal limit (non-VSwap configs).
EQUAL = ("numproc", "numtcpsock", "numothersock", "shmpages", "numfile", "numpty", "numsiginfo", "numiptent")
GUARANTEES = ("vmguarpages", "oomguarpages")  # their limit must be unlimited
KMEM_PER_PROC = 40 * 1024  # kmemsize per average process
DCACHE_PER_FILE = 384  # dcachesize per open file
FILES_PER_PROC = 32
SOCKBUF_PER_SOCK = 2560  # limit - barrier of a socket buffer per socket
MIN_TCPBUF = 64 * 1024
MIN_SOCKBUF, GOOD_SOCKBUF = 32 * 1024, 129 * 1024


class Finding(NamedTuple):
    level: str
    message: str
    fix: str | None  # "set to B:L", when there is a repair
    fixed: bool


Values = dict[str, tuple[int, int]]  # lower-case name -> (barrier, limit) in the config's units
Decide = Callable[[Finding], bool]  # told of each finding as found; for one with a repair: apply it?


def unit_of(name: str) -> int:
    from pyvz.params import PAGE
    from pyvz.resources.beancounters import IN_PAGES

    return PAGE if name in IN_PAGES else 1024 if name == "diskspace" else 1


def checked_keys() -> list[str]:
    from pyvz.resources.beancounters import PARAM_OF

    return [p.key for p in PARAM_OF.values() if p.key] + ["DISKSPACE", "DISKINODES", "AVNUMPROC"]


def parse_values(conf: ConfigFile) -> tuple[Values, list[str]]:
    """(barrier, limit) of every beancounter the file sets, and what could not be parsed.
    Unlike the config reader, a barrier above its limit is kept: reporting it is the point."""
    from pyvz.units import parse_size

    values: Values = {}
    bad = []
    for key in checked_keys():
        text = conf.get(key)
        if text is None or text == "":
            continue
        name = key.lower()
        parts = text.split(":")
        try:
            if len(parts) > 2 or not all(parts):
                raise VzError(ExitCode.INVALID_PARAMETER_VALUE, "expected VALUE or BARRIER:LIMIT")
            numbers = [parse_size(part, unit_of(name), name) for part in parts]
        except VzError as err:
            bad.append(f"cannot parse {key}={text!r}: {err.message}")
            continue
        values[name] = (numbers[0], numbers[-1])
    return values, bad


show = show_limit


def _plus(value: int, delta: int) -> int:
    return UNLIMITED if value >= UNLIMITED or value + delta >= UNLIMITED else value + delta


class Checker:
    def __init__(self, values: Values, decide: Decide) -> None:
        self.values = values
        self.decide = decide
        self.findings: list[Finding] = []

    def finite(self, name: str, which: int = 0) -> int | None:
        """The barrier (0) or limit (1) when set and not unlimited."""
        value = self.values.get(name)
        return value[which] if value is not None and value[which] < UNLIMITED else None

    def report(
        self, level: str, message: str, name: str | None = None, new: tuple[int, int] | None = None
    ) -> None:
        fix = f"set to {show(new[0])}:{show(new[1])}" if new is not None else None
        finding = Finding(level, message, fix, False)
        if self.decide(finding) and new is not None and name is not None:
            self.values[name] = new
            finding = finding._replace(fixed=True)
        self.findings.append(finding)


def check(values: Values, vswap: bool, ram_pages: int, swap_pages: int, decide: Decide) -> list[Finding]:
    """The rules, in an order where a repair never breaks a rule already checked."""
    c = Checker(values, decide)
    for name, (barrier, limit) in list(values.items()):
        if barrier > limit:
            c.report(
                ERROR,
                f"barrier should be <= limit for {name} (currently, {show(barrier)}:{show(limit)})",
                name,
                (barrier, barrier),
            )
    if vswap:
        _check_vswap(c, ram_pages, swap_pages)
    else:
        for name in EQUAL:
            if name in values and values[name][0] != values[name][1]:
                top = max(values[name])
                b, lim = values[name]
                c.report(
                    ERROR,
                    f"barrier should be equal to limit for {name} (currently, {show(b)}:{show(lim)})",
                    name,
                    (top, top),
                )
        for name in GUARANTEES:
            if name in values and values[name][1] < UNLIMITED:
                c.report(
                    ERROR,
                    f"limit should be unlimited for {name} (currently, {values[name][1]})",
                    name,
                    (values[name][0], UNLIMITED),
                )
    avnumproc = c.finite("avnumproc")
    if avnumproc is None and c.finite("numproc") is not None:
        avnumproc = (c.finite("numproc") or 0) // 2
    _check_numfile(c, avnumproc)
    _check_kmem(c, avnumproc)
    _check_buffers(c)
    return c.findings


def _check_vswap(c: Checker, ram_pages: int, swap_pages: int) -> None:
    if "physpages" not in c.values:
        c.report(ERROR, "physpages is not set: a VSwap config needs a RAM limit (--ram)")
    if "swappages" not in c.values:
        c.report(WARNING, "swappages is not set: the CT's swap is not limited (--swap)")
    for name, host in (("physpages", ram_pages), ("swappages", swap_pages)):
        if name not in c.values:
            continue
        barrier, limit = c.values[name]
        if barrier != 0:
            c.report(ERROR, f"{name}.bar should be = 0 (currently, {show(barrier)})", name, (0, limit))
        if c.values[name][1] > host:
            c.report(
                WARNING,
                f"{name}.lim should be <= {host}, the host's total (currently, {show(limit)})",
                name,
                (0, host),
            )


def _raise_barrier(c: Checker, level: str, name: str, least: int) -> None:
    """barrier up to `least`, limit up by as much (the gap above the barrier stays)."""
    barrier, limit = c.values[name]
    c.report(
        level,
        f"{name}.bar should be >= {least} (currently, {barrier})",
        name,
        (least, max(least, _plus(limit, least - barrier))),
    )


def _check_numfile(c: Checker, avnumproc: int | None) -> None:
    numfile = c.finite("numfile")
    if numfile is None:
        return
    needs = []
    if avnumproc is not None:
        needs.append(FILES_PER_PROC * avnumproc)
    socks = [c.finite(n) for n in ("numtcpsock", "numothersock", "numpty")]
    if all(s is not None for s in socks):
        needs.append(sum(s or 0 for s in socks))
    if needs and numfile < max(needs):
        _raise_barrier(c, WARNING, "numfile", max(needs))
    numfile = c.finite("numfile") or 0
    dcache = c.finite("dcachesize", 1)
    if dcache is not None and dcache < numfile * DCACHE_PER_FILE:
        need = numfile * DCACHE_PER_FILE
        c.report(
            WARNING,
            f"dcachesize.lim should be >= {need} (currently, {dcache})",
            "dcachesize",
            (min(c.values["dcachesize"][0], need), need),
        )


def _check_kmem(c: Checker, avnumproc: int | None) -> None:
    kmem = c.finite("kmemsize")
    if kmem is not None and avnumproc is not None:
        need = KMEM_PER_PROC * avnumproc + (c.finite("dcachesize", 1) or 0)
        if kmem < need:
            _raise_barrier(c, ERROR, "kmemsize", need)
    privvm, guar = c.finite("privvmpages"), c.finite("vmguarpages")
    if privvm is not None and guar is not None and privvm < guar:
        c.report(
            WARNING,
            f"privvmpages.bar should be >= {guar}, vmguarpages.bar (currently, {privvm})",
            "privvmpages",
            (guar, max(guar, c.values["privvmpages"][1])),
        )


def _check_buffers(c: Checker) -> None:
    for name in ("tcpsndbuf", "tcprcvbuf"):
        barrier = c.finite(name)
        if barrier is not None and barrier < MIN_TCPBUF:
            _raise_barrier(c, WARNING, name, MIN_TCPBUF)
    for name in ("dgramrcvbuf", "othersockbuf"):
        barrier = c.finite(name)
        if barrier is not None and barrier < MIN_SOCKBUF:
            _raise_barrier(c, WARNING, name, MIN_SOCKBUF)
        barrier = c.finite(name)  # once repaired up to the minimum, the recommendation follows
        if barrier is not None and MIN_SOCKBUF <= barrier < GOOD_SOCKBUF:
            _raise_barrier(c, RECOMMENDATION, name, GOOD_SOCKBUF)
    for name, socks, level in (
        ("tcpsndbuf", "numtcpsock", ERROR),
        ("tcprcvbuf", "numtcpsock", WARNING),
        ("othersockbuf", "numothersock", ERROR),
    ):
        count, limit = c.finite(socks), c.finite(name, 1)
        if count is None or limit is None:
            continue
        barrier, need = c.values[name][0], SOCKBUF_PER_SOCK * count
        if limit - barrier < need:
            c.report(
                level,
                f"{name}.lim-{name}.bar should be >= {need} (currently, {limit}-{barrier}={limit - barrier})",
                name,
                (barrier, _plus(barrier, need)),
            )


def is_vswap(values: Values) -> bool:
    """vzctl's auto-detection: a RAM limit is set."""
    ram = values.get("physpages")
    return ram is not None and 0 < ram[1] < UNLIMITED


def not_enforced_notes(conf: ConfigFile, enforced: frozenset[str]) -> list[str]:
    from pyvz.config import CtConfig
    from pyvz.params import BY_KEY
    from pyvz.resources.policy import access_notes, not_enforced

    cfg = CtConfig.merge(0, {}, conf.items(), conf.path)
    keys = []
    for key in cfg.values:
        if key in BY_KEY:
            try:
                cfg.get(BY_KEY[key])
            except VzError:
                continue  # reported as an Error already
            keys.append(key)
    return [
        f"Note: {name} is set, but not enforced on this kernel (mainline Linux has no per-CT limit for it)"
        for name in not_enforced(cfg, keys, enforced)
    ] + [f"Note: {note}" for note in access_notes(cfg, keys)]
