"""OpenVZ-era and Proxmox-era vzdump archives: read as untrusted input, then unpacked.

Those archives are a tar of the CT's private area as it was on disk (`--numeric-owner
--sparse`, members named `./...`), plain, gzip or lzop, with the CT's OpenVZ config at
./etc/vzdump/vps.conf somewhere inside and its action scripts beside it as vps.mount,
vps.umount, vps.start ... Nothing marks them as ours, so before anything is written the
whole archive is read once member by member (Python's tarfile on the decompressor's
output) and refused, with one line naming the member, if it could reach outside the tree
it is unpacked into or put there what a CT may not have:

- a member name that is absolute or has a `..` component, or a hard link to such a name;
- a member (or hard link target) below a name the archive made a symlink: unpacking it
  would follow that symlink on the host; a symlink that replaces a directory likewise;
- a device node outside ./dev that is not one a CT gets (the character devices null, zero,
  full, random, urandom, tty, console, ptmx, pts, fuse, net/tun). Other nodes under ./dev
  (old templates carried BSD ptys, VTs, disks) are left out with one warning: a CT gets its
  own /dev from LXC, so it would never see them;
- a member type tar has no business unpacking into a CT, and no vps.conf at all.

The same read returns the config and scripts, so the restore can write the config before
the private area, in the order every CT comes into being. GNU tar then unpacks the tree
(without xattrs or ACLs, which these archives never carried and a hostile one could abuse),
and ./etc/vzdump and the dropped nodes are removed before the tree is given its real name.
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, NamedTuple

from pyvz.errors import ExitCode, VzError
from pyvz.log import log
from pyvz.run import piped, pipeline
from pyvz.scripts import CT_ACTIONS, HOST_ACTIONS
from pyvz.storage.base import remove_path

META_DIR = "etc/vzdump"
CONFIG = f"{META_DIR}/vps.conf"
_SCRIPT_RE = re.compile(rf"{META_DIR}/vps\.([a-z]+)")
_ACTIONS = (*HOST_ACTIONS, *CT_ACTIONS)
_SMALL = 1 << 20  # a config or an action script is far smaller than this
_BLOCK = 1 << 20

# Character devices a CT may have: LXC's default allow list (common.conf) and net/tun.
# None: every minor.
CT_DEVICES: dict[int, set[int] | None] = {1: {3, 5, 7, 8, 9}, 5: {0, 1, 2}, 10: {200, 229}, 136: None}


class Packing(NamedTuple):
    """How an archive is compressed, found from its first bytes (old names vary)."""

    name: str
    decompressor: tuple[str, ...] | None  # writes the tar stream to stdout
    tar_option: tuple[str, ...]


_PACKINGS = (
    (b"\x1f\x8b", Packing("gzip", ("gzip", "-dc"), ("--gzip",))),
    (b"\x89LZO\x00\r\n\x1a\n", Packing("lzop", ("lzop", "-dc"), ("--lzop",))),
    (b"\x28\xb5\x2f\xfd", Packing("zstd", ("zstd", "-dcq"), ("--zstd",))),
    (b"\xfd7zXZ\x00", Packing("xz", ("xz", "-dc"), ("--xz",))),
    (b"BZh", Packing("bzip2", ("bzip2", "-dc"), ("--bzip2",))),
)
_PLAIN = Packing("tar", None, ())


def packing_of(archive: Path) -> Packing:
    try:
        with open(archive, "rb") as handle:
            head = handle.read(512)
    except FileNotFoundError:
        raise VzError(ExitCode.RESTORE_ERROR, f"archive {archive} not found") from None
    except OSError as err:
        raise VzError(ExitCode.RESTORE_ERROR, f"cannot read {archive}: {err.strerror}") from None
    for magic, packing in _PACKINGS:
        if head.startswith(magic):
            return packing
    if head[257:262] == b"ustar":
        return _PLAIN
    raise VzError(ExitCode.RESTORE_ERROR, f"{archive.name} is not a tar archive (plain, gzip or lzop)")


@contextmanager
def _members(archive: Path, packing: Packing) -> Iterator[tarfile.TarFile]:
    """The archive's tar stream, read in order and never seeked."""
    if packing.decompressor is None:
        with open(archive, "rb") as handle, tarfile.open(fileobj=handle, mode="r|", bufsize=_BLOCK) as tar:
            yield tar
        return
    with piped([*packing.decompressor, str(archive)], "r", error_code=ExitCode.RESTORE_ERROR) as pipe:
        stream: IO[bytes] = os.fdopen(pipe.read_fd, "rb", closefd=False)
        with tarfile.open(fileobj=stream, mode="r|", bufsize=_BLOCK) as tar:
            yield tar
        while stream.read(_BLOCK):  # the padding after the end: the decompressor must not lose its reader
            pass


def is_pyvz(archive: Path, first: str) -> bool:
    """Whether the archive is pyvz's own: its first member is `first` (pyvz.json)."""
    packing = packing_of(archive)
    found = ""

    class _Enough(Exception):
        pass

    try:
        with _members(archive, packing) as tar:
            member = tar.next()
            found = member.name if member is not None else ""
            raise _Enough  # the rest of the archive is not read
    except _Enough:
        pass
    except (tarfile.TarError, EOFError, OSError, VzError):
        return False
    return _relative(found) == _relative(first)


class Vetted(NamedTuple):
    packing: Packing
    config: str
    scripts: dict[str, str]  # action -> text
    dropped: tuple[str, ...]  # device nodes under dev/ left out (relative paths)
    members: int


def _relative(name: str) -> str:
    return "/".join(part for part in name.split("/") if part not in ("", "."))


def _checked_name(name: str, archive: Path, what: str = "member") -> str:
    if name.startswith("/") or ".." in name.split("/"):
        raise VzError(
            ExitCode.RESTORE_ERROR, f"{archive.name}: {what} {name!r} points outside the private area"
        )
    if "\n" in name or "\0" in name:
        raise VzError(ExitCode.RESTORE_ERROR, f"{archive.name}: {what} {name!r} has a newline in its name")
    return _relative(name)


def _parents(rel: str) -> Iterator[str]:
    parts = rel.split("/")
    for end in range(1, len(parts)):
        yield "/".join(parts[:end])


def _device_ok(member: tarfile.TarInfo) -> bool:
    minors = CT_DEVICES.get(member.devmajor, set())
    return member.ischr() and (minors is None or member.devminor in minors)


def _read_small(tar: tarfile.TarFile, member: tarfile.TarInfo, archive: Path) -> str:
    if member.size > _SMALL:
        raise VzError(ExitCode.RESTORE_ERROR, f"{archive.name}: {member.name} is too large to be a config")
    handle = tar.extractfile(member)
    assert handle is not None
    return handle.read().decode("utf-8", errors="replace")


def vet(archive: Path) -> Vetted:
    """Read the whole archive and refuse it (one line) if it is unsafe or not a vzdump archive."""
    packing = packing_of(archive)
    symlinks: set[str] = set()
    parents: set[str] = set()  # names something else was unpacked below
    files: set[str] = set()
    dirs: set[str] = set()
    config: str | None = None
    scripts: dict[str, str] = {}
    dropped: list[str] = []
    count = 0
    try:
        with _members(archive, packing) as tar:
            for member in tar:
                count += 1
                rel = _checked_name(member.name, archive)
                below = next((p for p in _parents(rel) if p in symlinks), None)
                if below is not None:
                    raise VzError(
                        ExitCode.RESTORE_ERROR,
                        f"{archive.name}: {member.name!r} lies below the symlink {below!r} (it would be "
                        "written through it)",
                    )
                if rel == "" and not member.isdir():
                    raise VzError(ExitCode.RESTORE_ERROR, f"{archive.name}: its top is not a directory")
                if rel in symlinks:
                    raise VzError(
                        ExitCode.RESTORE_ERROR, f"{archive.name}: {member.name!r} replaces a symlink"
                    )
                parents.update(_parents(rel))
                if member.issym():
                    if rel == "" or rel in parents or rel in dirs:
                        raise VzError(
                            ExitCode.RESTORE_ERROR,
                            f"{archive.name}: symlink {member.name!r} replaces a directory",
                        )
                    symlinks.add(rel)
                elif member.islnk():
                    target = _checked_name(member.linkname, archive, f"hard link {member.name!r} to")
                    if target not in files or any(p in symlinks for p in _parents(target)):
                        raise VzError(
                            ExitCode.RESTORE_ERROR,
                            f"{archive.name}: hard link {member.name!r} to {member.linkname!r}, "
                            "which is no file the archive holds",
                        )
                    files.add(rel)
                elif member.ischr() or member.isblk():
                    if _device_ok(member):
                        pass
                    elif rel.startswith("dev/"):
                        dropped.append(rel)
                    else:
                        kind = "block" if member.isblk() else "character"
                        raise VzError(
                            ExitCode.RESTORE_ERROR,
                            f"{archive.name}: {member.name!r} is a {kind} device "
                            f"({member.devmajor}:{member.devminor}) a CT may not have",
                        )
                elif member.isfile():
                    files.add(rel)
                    if rel == CONFIG:
                        config = _read_small(tar, member, archive)
                    elif (match := _SCRIPT_RE.fullmatch(rel)) and match.group(1) in _ACTIONS:
                        scripts[match.group(1)] = _read_small(tar, member, archive)
                elif member.isdir():
                    dirs.add(rel)
                elif not member.isfifo():
                    raise VzError(
                        ExitCode.RESTORE_ERROR,
                        f"{archive.name}: {member.name!r} is of a kind tar cannot safely unpack "
                        f"(type {member.type!r})",
                    )
    except (tarfile.TarError, EOFError) as err:
        raise VzError(ExitCode.RESTORE_ERROR, f"{archive.name} is damaged or truncated: {err}") from None
    if config is None:
        raise VzError(
            ExitCode.RESTORE_ERROR,
            f"{archive.name} has no {CONFIG}: not a vzdump archive (neither pyvz's nor OpenVZ's)",
        )
    if dropped:
        shown = ", ".join(f"/{d}" for d in dropped[:5]) + (" ..." if len(dropped) > 5 else "")
        log.warning(
            f"{len(dropped)} device node(s) under /dev are left out (LXC gives the CT its own /dev): {shown}"
        )
    return Vetted(packing, config, scripts, tuple(dropped), count)


def extract(archive: Path, vetted: Vetted, target: Path) -> None:
    """Unpack a vetted archive into `target` (a new, empty directory), owners as stored."""
    argv = [
        "tar", "-x", *vetted.packing.tar_option, "-f", str(archive), "--numeric-owner",
        "--same-permissions", "--same-owner", "--no-xattrs", "--no-acls", "--no-selinux",
        "-C", str(target),
    ]  # fmt: skip
    try:
        pipeline([argv], error_code=ExitCode.RESTORE_ERROR)
    except VzError as err:
        raise VzError(err.code, f"{archive.name} is damaged or truncated: {err.message}") from None
    top = os.path.realpath(target)
    for rel in (META_DIR, *vetted.dropped):
        path = target / rel
        # Every parent is a real directory (vet refused anything below a symlink): this stays in.
        inside = os.path.realpath(path.parent) == top or os.path.realpath(path.parent).startswith(top + "/")
        if inside and (path.is_symlink() or path.exists()):
            remove_path(path)
