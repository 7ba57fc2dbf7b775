"""Atomic file replacement: temp file, fsync, rename, fsync the directory.

A crash or kill -9 at any point leaves either the old file or the new one, never a mix; a
Ctrl-C is held back for the few system calls in between, so it never leaves a temp file.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back for a short critical section; they land when it ends."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644, durable: bool = True) -> None:
    """durable=False skips the fsyncs: still all-or-nothing, but may be lost in a power cut
    (for runtime state that a reboot resets anyway)."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with signals_held():
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        try:
            try:
                os.write(fd, raw)
                os.fchmod(fd, mode)
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    if durable:
        fsync_dir(path.parent)


def symlink_atomic(target: str, link: Path) -> None:
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    with signals_held():
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        try:
            os.replace(tmp, link)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    fsync_dir(link.parent)


def exchange(first: Path, second: Path) -> None:
    """Swap two paths in one step (renameat2 RENAME_EXCHANGE): a crash leaves one or the other
    in each place, never neither."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot swap {first} and {second}: {os.strerror(err)}")


def read_journal(path: Path) -> dict[str, Any] | None:
    """A journal file that write_atomic() wrote (an interrupted convert or rebuild): None
    when there is none. One that does not parse cannot be a torn write of ours: it is
    removed, and None returned."""
    try:
        journal = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        path.unlink()
        return None
    return journal if isinstance(journal, dict) else None
