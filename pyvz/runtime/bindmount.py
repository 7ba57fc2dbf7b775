"""Bind mounts of host paths into a CT (OpenVZ 7's BINDMOUNT): syntax, the config's text,
and the LXC lines a start gives them. What the host refuses to lend is ct/bindmounts.py's.

The config keeps them as OpenVZ 7 does, space-separated `SRC:DST[,opt]...` entries, e.g.
BINDMOUNT="/srv/data:/data /srv/www:/var/www,ro,nodev".
"""

from __future__ import annotations

import posixpath
import re
from typing import NamedTuple

from pyvz.units import bad_value

# In the order they are written back; `rw` is the default and never stored.
FLAGS = ("ro", "nosuid", "nodev", "noexec")
_PATH_RE = r"/[^\s,:\"'\\]*"  # the config is space-separated and the options comma-separated


class BindMount(NamedTuple):
    src: str  # absolute host path, as given (resolved only when checked and mounted)
    dst: str  # absolute, normalised path inside the CT
    flags: frozenset[str] = frozenset()

    @property
    def readonly(self) -> bool:
        return "ro" in self.flags

    def text(self) -> str:
        return ",".join([f"{self.src}:{self.dst}", *(f for f in FLAGS if f in self.flags)])

    def __str__(self) -> str:  # vzlist's cell and JSON item: the entry as the config has it
        return self.text()


def _normal(path: str, what: str, whole: str) -> str:
    if not re.fullmatch(_PATH_RE, path):
        raise bad_value("bindmount", whole, f"{what} must be an absolute path without spaces, ':' or ','")
    if ".." in path.split("/"):
        raise bad_value("bindmount", whole, f"{what} must not contain '..'")
    return posixpath.normpath(path).replace("//", "/")


def parse_one(text: str) -> BindMount:
    paths, *options = text.split(",")
    src, sep, dst = paths.partition(":")
    if not sep or not src or not dst:
        raise bad_value("bindmount", text, "expected SRC:DST[,ro|,rw][,nosuid][,nodev][,noexec]")
    flags: set[str] = set()
    for option in options:
        if option == "rw":
            flags.discard("ro")
        elif option in FLAGS:
            flags.add(option)
        else:
            raise bad_value("bindmount", text, f"unknown option {option!r} (ro, rw, nosuid, nodev, noexec)")
    target = _normal(dst, "DST", text)
    if target == "/":
        raise bad_value("bindmount", text, "DST cannot be the CT's root")
    return BindMount(_normal(src, "SRC", text), target, frozenset(flags))


def parse_bindmounts(text: str) -> tuple[BindMount, ...]:
    """Entries in order; a later entry for the same DST replaces an earlier one."""
    return merge((), tuple(parse_one(word) for word in text.split()))


def format_bindmounts(mounts: tuple[BindMount, ...]) -> str:
    return " ".join(m.text() for m in mounts)


def merge(old: tuple[BindMount, ...], new: tuple[BindMount, ...]) -> tuple[BindMount, ...]:
    """--bindmount_add: a new DST is appended, a known one gets the new source and options
    in its place."""
    result = list(old or ())
    for mount in new:
        at = next((i for i, m in enumerate(result) if m.dst == mount.dst), None)
        if at is None:
            result.append(mount)
        else:
            result[at] = mount
    return tuple(result)


def parse_targets(text: str) -> tuple[str, ...]:
    """--bindmount_del: DST paths, or `all`."""
    targets: list[str] = []
    for word in text.split():
        target = word if word == "all" else _normal(word, "DST", word)
        if target not in targets:
            targets.append(target)
    return tuple(targets)


def remove(old: tuple[BindMount, ...], targets: tuple[str, ...]) -> tuple[BindMount, ...]:
    """What is left after --bindmount_del; a DST the CT does not have is refused."""
    if "all" in targets:
        return ()
    have = {m.dst for m in old}
    for target in targets:
        if target not in have:
            raise bad_value("bindmount_del", target, "the CT has no bind mount there")
    return tuple(m for m in old if m.dst not in targets)


def lxc_lines(mounts: tuple[BindMount, ...], directories: dict[str, bool], idmapped: bool) -> list[str]:
    """One lxc.mount.entry each. `directories` says, per SRC, whether it is a directory (the
    mount point LXC makes is then a directory, else a file). With `idmapped`, LXC 5.0 makes
    the mount an idmapped one in the CT's user namespace (as it does the rootfs), so host
    uid 0 is the CT's root, with no chown."""
    lines = []
    for mount in mounts:
        options = ["bind", "create=dir" if directories[mount.src] else "create=file"]
        options += [f for f in FLAGS if f in mount.flags]
        if idmapped:
            options.append("idmap=container")
        lines.append(f"lxc.mount.entry = {mount.src} {mount.dst.lstrip('/')} none {','.join(options)} 0 0")
    return lines
