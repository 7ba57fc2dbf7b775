"""vzquota's text: the stat/show tables (plain and -b batch), the -t user/group part, and its
time formats, in and out. Derived from vzquota's printf formats so scripts read the same."""

from __future__ import annotations

import re

from pyvz.ct.quota import Status

_MINUTE, _HOUR, _DAY = 60, 3600, 86400
_SUFFIX = {"H": _HOUR, "D": _DAY, "W": 7 * _DAY, "M": 30 * _DAY, "Y": 365 * _DAY}
_FIELD_LIMITS = (60, 60, 24)  # seconds, minutes, hours: each below the next unit


def parse_time(text: str) -> int | None:
    """vzquota's time argument (-e, -n): seconds, [[[dd:]hh:]mm:]ss, or N with h, d, w, m
    or y; None if it is neither."""
    if not text or len(text) >= 256:
        return None
    if text[-1].isdigit():
        body = text.lstrip(" \t")
        if body.isdigit():
            return int(body)
        if not re.fullmatch(r"[0-9:]*", body) or body.count(":") > 3:
            return None
        total = 0
        for index, part in enumerate(reversed(body.split(":"))):
            if not part:
                return None
            value = int(part) * (1, _MINUTE, _HOUR, _DAY)[index]
            if index < 3 and value >= (_MINUTE, _HOUR, _DAY)[index]:
                return None
            total += value
        return total
    unit = _SUFFIX.get(text[-1].upper())
    number = text[:-1].lstrip(" \t")
    if unit is None or not number.isdigit():
        return None
    return int(number) * unit


def rounded(seconds: int) -> str:
    """A span as vzquota rounds it: whole days, else hh:mm."""
    minutes = (seconds + 30) // 60
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days}days" if days else f"{hours:02d}:{minutes:02d}"


def grace_left(deadline: int, now: int) -> str:
    """The grace column: empty when not over the soft limit, `none` once it has run out."""
    if not deadline:
        return ""
    if deadline <= now:
        return "none"
    return rounded(deadline - now)


def _over(used: int, soft: int, hard: int) -> str:
    return "*" if (soft and used > soft) or (hard and used > hard) else " "


def status_lines(st: Status, batch: bool, now: int) -> list[str]:
    lim = st.qf.limits
    block_grace = st.qf.block_grace if st.blocks > lim.block_soft else 0
    inode_grace = st.qf.inode_grace if st.inodes > lim.inode_soft else 0
    if batch:
        return [
            f"{st.blocks:14} {lim.block_soft:14} {st.block_hard:14} {block_grace:14} {lim.block_exptime:14}",
            f"{st.inodes:14} {lim.inode_soft:14} {lim.inode_hard:14} {inode_grace:14} {lim.inode_exptime:14}",
        ]
    return [
        f"{'resource':>11} {'usage':>14}  {'softlimit':>14} {'hardlimit':>14} {'grace':>8}",
        f"{'1k-blocks':>11} {st.blocks:14}{_over(st.blocks, lim.block_soft, st.block_hard)} "
        f"{lim.block_soft:14} {st.block_hard:14} {grace_left(block_grace, now):>8}",
        f"{'inodes':>11} {st.inodes:14}{_over(st.inodes, lim.inode_soft, lim.inode_hard)} "
        f"{lim.inode_soft:14} {lim.inode_hard:14} {grace_left(inode_grace, now):>8}",
    ]


def ugid_lines(st: Status, batch: bool, force: bool) -> list[str]:
    """-t: per-user/group quota. Never active on pyvz's layouts, so no ids are loaded, the
    grace times are unset and there are no objects to list."""
    limit = st.qf.ugid_limit
    if batch:
        lines = [f"{-1 if force else int(st.qf.ugid_on)} 0", f"0 0 {limit}", "0"]
        return lines + [f"{kind:>5} 0 0 {0:9X}h" for kind in ("user", "group")]
    state = "-" if force else ("on" if st.qf.ugid_on else "off")
    return [
        f"User/group quota: {state},inactive",
        f"Ugids: loaded 0, total 0, limit {limit}",
        "Ugid limit was exceeded: no",
        "",
        "User/group grace times and quotafile flags:",
        f"{'type':>5} {'block_exp_time':>14} {'inode_exp_time':>14} {'dqi_flags':>10}",
        *(f"{kind:>5} {'':>14} {'':>14} {0:9X}h" for kind in ("user", "group")),
    ]
