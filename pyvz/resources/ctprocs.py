"""Which CT a host process belongs to, read from its cgroup.

LXC puts every process of a CT (init, its children, whatever `vzctl exec` attaches) in the
CT's container cgroup `<tag>/<ctid>` (see CtCgroups), below it for a CT's own inner cgroups.
So /proc/PID/cgroup names the CT and the root (the tag) in one read, with no list of CTs to
load and no LXC to ask. The cgroup is the answer rather than the PID namespace: a process in
a namespace nested inside a CT (a CT running its own sandbox) is still in the CT's cgroup,
and from inside the CT the cgroup namespace hides every path above it, so a CT cannot move a
process out. The CT's monitor (`<tag>/<ctid>.monitor`, lxc-start) is a host process.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from pyvz.errors import ExitCode, VzError

PROC = Path("/proc")

# A hierarchy line of /proc/PID/cgroup whose path is in a CT's container cgroup.
_CT_LINE = re.compile(r"^\d+:[^:]*:/(pyvz(?:-[0-9a-f]{8})?)/(\d+)(?:/|$)", re.MULTILINE)


class Owner(NamedTuple):
    """A CT of some pyvz root: the root's tag (Paths.tag) and the CTID."""

    tag: str
    ctid: int


HOST: Owner | None = None  # what a host process's owner is


def parse_cgroup(text: str) -> Owner | None:
    """The CT the /proc/PID/cgroup text puts the process in; None: a host process."""
    found = _CT_LINE.search(text)
    return Owner(found.group(1), int(found.group(2))) if found else None


class Gone(Exception):
    """The process no longer exists (or never did)."""


def owner_of(pid: int, proc: Path = PROC) -> Owner | None:
    """The CT process `pid` is in, None for a host process; Gone if there is no such process."""
    try:
        return parse_cgroup((proc / str(pid) / "cgroup").read_text())
    except (FileNotFoundError, ProcessLookupError):
        raise Gone(pid) from None


def label(owner: Owner | None, tag: str) -> str:
    """How tools show an owner: 0 for the host, the CTID for a CT of root `tag`, and
    `TAG:CTID` for a CT of another pyvz root (PYVZ_ROOT says which root is "ours")."""
    if owner is None:
        return "0"
    return str(owner.ctid) if owner.tag == tag else f"{owner.tag}:{owner.ctid}"


def selector(text: str, tag: str) -> Owner | None:
    """The owner a `-E` argument names: 0 (the host), a CTID of root `tag`, or TAG:CTID."""
    root, _sep, ctid = text.rpartition(":")
    if not ctid.isdigit() or (root and not re.fullmatch(r"pyvz(-[0-9a-f]{8})?", root)):
        raise VzError(ExitCode.INVALID_PARAMETER_SYNTAX, f"Invalid CT ID: {text}")
    if int(ctid) == 0 and not root:
        return HOST
    return Owner(root or tag, int(ctid))


def status_name(pid: int, proc: Path = PROC) -> str | None:
    """The Name: of /proc/PID/status (the command's first 15 bytes, escaped by the kernel);
    None when there is no such process."""
    try:
        lines = (proc / str(pid) / "status").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in lines:
        key, _sep, value = line.partition(":")
        if key == "Name":
            return value.strip()
    return ""


def ns_pid(pid: int, proc: Path = PROC) -> int | None:
    """The PID the process has in its innermost PID namespace (NSpid's last field)."""
    try:
        lines = (proc / str(pid) / "status").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in lines:
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    return None
