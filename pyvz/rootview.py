"""Reading and writing files inside a CT's root from the host, safely.

A CT's root belongs to the CT: /etc/hostname may be a symlink to the host's /etc/shadow by
the time we write it. Every path is resolved component by component with symlinks followed
*inside* the CT root (like openat2's RESOLVE_IN_ROOT), and files are replaced atomically with
the owner the CT expects, shifted into the CT's host id range where the view needs it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from pyvz.errors import ExitCode, VzError

_MAX_LINKS = 40


class RootView(NamedTuple):
    root: Path
    uid_base: int = 0  # host uid of CT uid 0 as seen through this view
    gid_base: int = 0

    def _walk(self, rel_dir: PurePosixPath, create: bool = False) -> int:
        """An O_PATH fd of a directory inside the root."""
        fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY)
        parts = list(rel_dir.parts)
        links = 0
        stack: list[int] = []
        try:
            while parts:
                part = parts.pop(0)
                if part in ("/", "."):
                    continue
                if part == "..":
                    if stack:
                        os.close(fd)
                        fd = stack.pop()
                    continue
                try:
                    st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fd)
                    os.chown(part, self.uid_base, self.gid_base, dir_fd=fd, follow_symlinks=False)
                    st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    links += 1
                    if links > _MAX_LINKS:
                        raise VzError(ExitCode.SYSTEM_ERROR, f"too many symlinks under {self.root}")
                    target = PurePosixPath(os.readlink(part, dir_fd=fd))
                    if target.is_absolute():
                        while stack:
                            os.close(fd)
                            fd = stack.pop()
                    parts = list(target.parts) + parts
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    raise NotADirectoryError(part)
                child = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                stack.append(fd)
                fd = child
            return fd
        finally:
            for leftover in stack:
                os.close(leftover)

    def host_dir(self, rel_dir: str, create: bool = False) -> Path:
        """The host path of a directory inside the root, symlinks followed inside it
        (`create`: missing ones made, 0755, owned by the view's root). Only for a tree no one
        else changes meanwhile (a stopped CT's, a snapshot): the path is not held open."""
        fd = self._walk(PurePosixPath("/" + rel_dir.lstrip("/")), create=create)
        try:
            return Path(os.readlink(f"/proc/self/fd/{fd}"))
        finally:
            os.close(fd)

    def _final(self, rel: str, links: int = 0) -> tuple[int, str]:
        path = PurePosixPath("/" + rel.lstrip("/"))
        dir_fd = self._walk(path.parent)
        name = path.name
        st = _lstat(name, dir_fd)
        if st is not None and stat.S_ISLNK(st.st_mode):
            target = PurePosixPath(os.readlink(name, dir_fd=dir_fd))
            os.close(dir_fd)
            if links >= _MAX_LINKS:
                raise VzError(ExitCode.SYSTEM_ERROR, f"too many symlinks at {rel} under {self.root}")
            resolved = target if target.is_absolute() else path.parent / target
            return self._final(str(resolved), links + 1)
        return dir_fd, name

    def exists(self, rel: str) -> bool:
        try:
            dir_fd, name = self._final(rel)
        except (FileNotFoundError, NotADirectoryError):
            return False
        try:
            return _lstat(name, dir_fd) is not None
        finally:
            os.close(dir_fd)

    def read_text(self, rel: str) -> str:
        dir_fd, name = self._final(rel)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        with os.fdopen(fd) as handle:
            return handle.read()

    def read_or_empty(self, rel: str) -> str:
        try:
            return self.read_text(rel)
        except (FileNotFoundError, NotADirectoryError):
            return ""

    def write_text(self, rel: str, content: str, mode: int = 0o644, owner: tuple[int, int] = (0, 0)) -> None:
        """Replace the file atomically, owned by CT uid/gid `owner`; a no-op if already so."""
        if self._unchanged(rel, content, mode, owner):
            return
        path = PurePosixPath("/" + rel.lstrip("/"))
        dir_fd = self._walk(path.parent, create=True)
        name = path.name
        # A symlink in the last place is replaced by a file, never followed.
        tmp = f".{name}.pyvz-tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode, dir_fd=dir_fd)
            try:
                os.write(fd, content.encode())
                os.fchown(fd, self.uid_base + owner[0], self.gid_base + owner[1])
                os.fchmod(fd, mode)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except OSError:
                pass
            raise
        finally:
            os.close(dir_fd)

    def _unchanged(self, rel: str, content: str, mode: int, owner: tuple[int, int]) -> bool:
        path = PurePosixPath("/" + rel.lstrip("/"))
        try:
            dir_fd = self._walk(path.parent)
        except (FileNotFoundError, NotADirectoryError):
            return False
        name = path.name  # a symlink here is never "unchanged": write_text replaces it
        try:
            st = _lstat(name, dir_fd)
            if st is None or not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != mode:
                return False
            if (st.st_uid, st.st_gid) != (self.uid_base + owner[0], self.gid_base + owner[1]):
                return False
            if st.st_size != len(content.encode()):
                return False
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
            with os.fdopen(fd, "rb") as handle:
                return handle.read() == content.encode()
        finally:
            os.close(dir_fd)

    def mode_of(self, rel: str) -> int | None:
        try:
            dir_fd, name = self._final(rel)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            st = _lstat(name, dir_fd)
            return None if st is None else stat.S_IMODE(st.st_mode)
        finally:
            os.close(dir_fd)

    def mkdir(self, rel: str, mode: int = 0o755, owner: tuple[int, int] = (0, 0)) -> None:
        path = PurePosixPath("/" + rel.lstrip("/"))
        dir_fd = self._walk(path.parent, create=True)
        try:
            if _lstat(path.name, dir_fd) is None:
                os.mkdir(path.name, mode, dir_fd=dir_fd)
                os.chown(
                    path.name,
                    self.uid_base + owner[0],
                    self.gid_base + owner[1],
                    dir_fd=dir_fd,
                    follow_symlinks=False,
                )
                os.chmod(path.name, mode, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
