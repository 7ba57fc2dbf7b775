"""One lock per CT (and one for the whole root), in OpenVZ's lock file format.

vzctl 4.x locks a CT by link(2)ing a temporary file holding "PID\\nSTATUS\\n" to
LOCKDIR/CTID.lck, and unlinks it when done; a lock file whose PID is not running is stale
and is taken over. pyvz does the same, so pyvz and OpenVZ's own tools on one host exclude
each other, and nothing is left behind once a command is done. A `kill -9` leaves the file,
which the next command finds stale. pyvz writes its process's start time as the status, so
a PID that the kernel has given to a new process since does not keep a stale lock alive.
"""

from __future__ import annotations

import fcntl
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from pyvz.atomic import signals_held
from pyvz.errors import ExitCode, VzError
from pyvz.log import log

POLL = 0.05  # seconds between tries while waiting for a lock
STALE_TEMPORARY = 60.0  # seconds after which a taker's temporary file is a dead taker's


def process_start_time(pid: int) -> str | None:
    """When `pid` started (clock ticks since boot, /proc/PID/stat field 22); None if gone.
    A zombie is gone too: it holds nothing, and its parent may take its time to reap it (a
    `kill -9`ed vzmigrate --receive stays one until its sshd notices)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")


def _holder(text: str) -> int | None:
    """The PID in a lock file's text, if it is a running process that took the lock."""
    lines = text.splitlines()
    if not lines or not lines[0].strip().isdigit() or int(lines[0]) <= 0:
        return None  # vzctl: an incorrect pid, the file goes
    pid = int(lines[0])
    started = process_start_time(pid)
    if started is None:
        return None
    status = lines[1].split() if len(lines) > 1 else []
    if len(status) >= 2 and status[0] == "pyvz" and status[1] != started:
        return None  # a pyvz lock of a process that is gone; its PID was given out again
    return pid


def held(path: Path) -> bool:
    """Whether a running process holds the lock file at `path` (a look, not a take)."""
    try:
        return _holder(path.read_text(errors="replace")) is not None
    except OSError:
        return False


class Lock:
    def __init__(
        self, path: Path, what: str, wait: float = 0.0, on_release: Callable[[], None] | None = None
    ) -> None:
        self.path = path
        self.what = what
        self.wait = wait
        self.on_release = on_release  # told once the lock is let go (pyvzd's events)
        self.mine: str | None = None  # the text of the lock file while we hold it

    def __enter__(self) -> Lock:
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        command = " ".join(os.path.basename(a) for a in sys.argv[:3])
        mine = f"{pid}\npyvz {process_start_time(pid)} {command}\n"
        deadline = time.monotonic() + self.wait
        with signals_held():  # a Ctrl-C lands after the temporary file is gone again
            fd, tmp = tempfile.mkstemp(prefix=self.path.name, dir=directory)
        try:
            os.write(fd, mine.encode())
            os.close(fd)
            while True:
                with signals_held():
                    try:
                        os.link(tmp, self.path)
                        self.mine = mine
                        break
                    except FileExistsError:
                        pass
                try:
                    text = self.path.read_text(errors="replace")
                except FileNotFoundError:
                    continue  # released just now
                holder = _holder(text)
                if holder is None:
                    self._remove_stale(text)
                    continue
                if time.monotonic() >= deadline:
                    cmdline = _cmdline(holder)
                    raise VzError(
                        ExitCode.LOCKED,
                        f"{self.what} is locked by pid {holder}"
                        + (f" ({cmdline})" if cmdline else "")
                        + "; try again when it has finished",
                    )
                time.sleep(POLL)
        finally:
            with signals_held():
                os.unlink(tmp)
        self._sweep_temporaries()
        return self

    def _sweep_temporaries(self) -> None:
        """Temporary files of takers that were killed before they removed them. A taker's
        own lives for milliseconds, and is empty until written: only old ones go."""
        old = time.time() - STALE_TEMPORARY
        for leftover in self.path.parent.glob(f"{self.path.name}?*"):
            try:
                if leftover.stat().st_mtime < old and _holder(leftover.read_text(errors="replace")) is None:
                    leftover.unlink()
            except OSError:
                pass

    def _remove_stale(self, text: str) -> None:
        """Unlink a stale lock file, unless another pyvz took it over meanwhile (the check and
        the unlink happen under a flock of the lock directory, which pyvz processes share)."""
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if self.path.read_text(errors="replace") != text:
                    return
            except FileNotFoundError:
                return
            self.path.unlink()
            log.info(f"Removing stale lock file {self.path}")
        finally:
            os.close(fd)

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.mine is None:
            return
        with signals_held():
            try:
                if self.path.read_text(errors="replace") == self.mine:
                    self.path.unlink()
            except FileNotFoundError:
                pass
            self.mine = None
        if self.on_release is not None:
            self.on_release()


class NoLock:
    """What --skiplock gives: the admin takes responsibility."""

    def __enter__(self) -> NoLock:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None
