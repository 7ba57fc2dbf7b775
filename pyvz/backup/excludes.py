"""What --exclude-path and --stdexcludes leave out of a full archive.

Patterns are Python regular expressions matched against the whole path as the CT sees it
(`/var/log/syslog`), like the `find -regex` tests of OpenVZ's vzdump; an excluded directory
takes everything below it along. --stdexcludes is vzdump's classic list: logs, temporary
files and pid files, which a restored CT does not need.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from pyvz.errors import ExitCode, VzError

STD_EXCLUDES = ("/var/log/.+", "/tmp/.+", "/var/tmp/.+", "/var/run/.+pid")
# The archive's own metadata lives at /etc/vzdump: a CT's files there are not backed up.
RESERVED = "./etc/vzdump"


def compile_patterns(patterns: Sequence[str]) -> list[re.Pattern[str]]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as err:
            raise VzError(
                ExitCode.INVALID_PARAMETER_VALUE, f"--exclude-path {pattern!r} is not a valid regex: {err}"
            ) from None
    return compiled


def is_excluded(path: str, patterns: Sequence[re.Pattern[str]]) -> bool:
    """`path` as the CT sees it, starting with /."""
    return any(p.fullmatch(path) for p in patterns)


def excluded_members(top: Path, patterns: Sequence[re.Pattern[str]]) -> Iterator[str]:
    """Tar member names (`./var/log/x`) of what the patterns exclude under `top`."""
    if not patterns:
        return
    for directory, dirs, files in os.walk(top):
        relative = os.path.relpath(directory, top)
        prefix = "" if relative == "." else "/" + relative
        for name in files:
            if is_excluded(f"{prefix}/{name}", patterns):
                yield f".{prefix}/{name}"
        kept = []
        for name in dirs:
            if is_excluded(f"{prefix}/{name}", patterns):
                yield f".{prefix}/{name}"
            else:
                kept.append(name)
        dirs[:] = kept


def as_tar_pattern(member: str) -> str:
    """A member name as a tar --exclude pattern that matches only that name."""
    return re.sub(r"([\\*?\[])", r"\\\1", member)
