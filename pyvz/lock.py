"""One lock per CT (and one for the whole root), held with flock.

flock locks die with their process, so a kill -9 never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path
from types import TracebackType

from pyvz.errors import ExitCode, VzError


class Lock:
    def __init__(self, path: Path, what: str, wait: float = 0.0) -> None:
        self.path = path
        self.what = what
        self.wait = wait
        self.fd: int | None = None

    def __enter__(self) -> Lock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                    os.close(fd)
                    raise VzError(
                        ExitCode.LOCKED,
                        f"{self.what} is locked by another command ({holder or 'unknown'}); "
                        "try again when it has finished",
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(
            fd, f"pid {os.getpid()}: {' '.join(os.path.basename(a) for a in sys.argv[:3])}\n".encode(), 0
        )
        self.fd = fd
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None


class NoLock:
    """What --skiplock gives: the admin takes responsibility."""

    def __enter__(self) -> NoLock:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None
