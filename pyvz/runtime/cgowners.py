"""The owners and modes of a CT's cgroup files, carried across a CRIU checkpoint.

CRIU gives back the directories of a CT's cgroups with their owners and modes, and the
properties it knows with theirs, but every other file in a directory it makes belongs to
its creator, host root (CRIU 4.2.1, and its master of 2025-11: criu/cgroup.c). On cgroup
v2 the files it leaves that way include cgroup.procs and cgroup.threads: its v2 property
list has neither. A systemd CT's init, the CT's root, then cannot move a process into any
cgroup. Every unit that starts after the restore fails ("Failed to attach to cgroup
/system.slice/...: Permission denied"), systemd-halt.service among them, so systemd never
halts, and `vzctl stop` ends with the kill after STOP_TIMEOUT. CRIU also writes the
freezer.state it restores with an owner and mode from memory it never set.

So the CRIU action script records them after the dump, while CRIU still holds the CT's tasks
(so no cgroup can be made or chowned), and puts them back after the restore, before the CT
is thawed. Only files are recorded, and of those only the ones a restore gets wrong: those
not owned by host root, and every freezer.state.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from shlex import quote

from pyvz.storage.idmap import IdMap

log = logging.getLogger(__name__)

RECORD = "pyvz-cgroup-owners"  # in the dump directory, beside CRIU's images
_CHUNK = 64 * 1024  # bytes of paths per command: well under ARG_MAX


def record_command(dirs: Sequence[Path], record: Path) -> str:
    """Shell that writes the record of the cgroup directories `dirs` (one per hierarchy) to
    `record`: for each file, its hierarchy's directory, its path below it, and `uid gid
    mode`, each ended by a NUL (a cgroup's name may hold any other byte)."""
    if not dirs:
        return ":"
    starts = " ".join(quote(str(d)) for d in dirs)
    return (
        f"find {starts} -mindepth 1 ! -type d "
        r"\( ! -uid 0 -o ! -gid 0 -o -name freezer.state \) "
        rf"-printf '%H\0%P\0%U %G %m\0' > {quote(str(record))}"
    )


def _allowed(number: int, first: int, size: int) -> bool:
    return number == 0 or first <= number < first + size


def _plain(relative: str) -> bool:
    """A relative path that stays where it is put: no empty, `.` or `..` component."""
    return all(part not in ("", ".", "..") for part in relative.split("/"))


def parse(
    text: bytes, hierarchies: Sequence[Path], container: str, idmap: IdMap
) -> list[tuple[Path, int, int, int]]:
    """The record's entries as (path on this host, uid, gid, mode), for the CT's cgroup
    `container` in this host's cgroup `hierarchies` (their roots). The record came with the
    dump, maybe from another host: an entry that would reach outside the CT's cgroups, or give
    a file to an id that is neither host root nor in the CT's range, is left out (and said so)."""
    fields = text.split(b"\0")
    if fields and fields[-1] == b"":
        fields.pop()
    depth = len(Path(container).parts)
    entries: list[tuple[Path, int, int, int]] = []
    refused = 1 if len(fields) % 3 else 0  # a record cut short
    for index in range(0, len(fields) - 2, 3):
        start, below, owner = (field.decode(errors="surrogateescape") for field in fields[index : index + 3])
        try:
            hierarchy = Path(start).parents[depth - 1]
            uid, gid, mode = (
                int(part, base) for part, base in zip(owner.split(" "), (10, 10, 8), strict=True)
            )
        except (IndexError, ValueError):
            refused += 1
            continue
        if (
            not _plain(start.lstrip("/"))
            or not _plain(below)
            or hierarchy not in hierarchies
            or not _allowed(uid, idmap.uid, idmap.size)
            or not _allowed(gid, idmap.gid, idmap.size)
        ):
            refused += 1
            continue
        entries.append((hierarchy / container / below, uid, gid, mode & 0o777))
    if refused:
        log.warning(f"left out {refused} entries of the dump's record of its cgroups' owners")
    return entries


def _commands(tool: str, argument: str, paths: list[Path]) -> list[str]:
    commands: list[str] = []
    current: list[str] = []
    size = 0
    for path in paths:
        quoted = quote(str(path))
        if current and size + len(quoted) > _CHUNK:
            commands.append(f"{tool} {argument} {' '.join(current)}")
            current, size = [], 0
        current.append(quoted)
        size += len(quoted) + 1
    if current:
        commands.append(f"{tool} {argument} {' '.join(current)}")
    return commands


def apply_commands(entries: list[tuple[Path, int, int, int]]) -> str:
    """Shell that gives each entry's file its owner and mode back: one chown per owner and
    one chmod per mode (a few commands for a whole systemd CT), files that are gone skipped."""
    owners: defaultdict[tuple[int, int], list[Path]] = defaultdict(list)
    modes: defaultdict[int, list[Path]] = defaultdict(list)
    for path, uid, gid, mode in entries:
        owners[uid, gid].append(path)
        modes[mode].append(path)
    lines = []
    for (uid, gid), paths in sorted(owners.items()):
        lines += _commands("chown -f", f"{uid}:{gid}", paths)
    for mode, paths in sorted(modes.items()):
        lines += _commands("chmod -f", f"{mode:o}", paths)
    return "\n".join(lines)


def restore_commands(images: Path, hierarchies: Sequence[Path], container: str, idmap: IdMap) -> str:
    """The shell that puts back what the dump in `images` recorded; "" for a dump without a
    record (taken by an older pyvz: its CT comes back as CRIU leaves it)."""
    try:
        text = (images / RECORD).read_bytes()
    except FileNotFoundError:
        return ""
    return apply_commands(parse(text, hierarchies, container, idmap))
