"""One progress line on stderr for a long transfer (a template download, a migration's
streams): drawn only on a terminal and not under --quiet, at most five times a second."""

from __future__ import annotations

import sys
import time

from pyvz.log import log
from pyvz.units import human_size

REDRAW_EVERY = 0.2  # seconds
PROGRESS_FD_ENV = "PYVZ_PROGRESS_FD"  # pyvzd follows a command's transfers here, as JSON lines


def _progress_fd() -> int | None:
    import os

    fd = os.environ.get(PROGRESS_FD_ENV, "")
    return int(fd) if fd.isdigit() else None


class Progress:
    """`start()` a transfer (with its size if known), `add()` or `update()` its bytes,
    `close()` it; the last line drawn stays on the terminal."""

    def __init__(self, label: str = "", total: int | None = None) -> None:
        self.tty = sys.stderr.isatty() and not log.quiet
        self.feed = _progress_fd()
        self.start(label, total)

    def start(self, label: str, total: int | None = None) -> None:
        self.label, self.total = label, total
        self.count, self.last, self.shown = 0, 0.0, False

    def add(self, count: int) -> None:
        self.update(self.count + count)

    def update(self, count: int) -> None:
        self.count = count
        now = time.monotonic()
        finished = self.total is not None and count >= self.total
        if (not self.tty and self.feed is None) or (now - self.last < REDRAW_EVERY and not finished):
            return
        self.last = now
        if self.feed is not None:
            self._tell(count)
        if not self.tty:
            return
        self.shown = True
        if self.total:
            text = f"{count * 100 // self.total:3d}% ({human_size(count)} of {human_size(self.total)})"
        else:
            text = f"{human_size(count)} sent"
        sys.stderr.write(f"\r{self.label}: {text}\x1b[K")
        sys.stderr.flush()

    def _tell(self, count: int) -> None:
        import json
        import os

        assert self.feed is not None
        line = json.dumps({"label": self.label, "done": count, "total": self.total}) + "\n"
        try:
            os.write(self.feed, line.encode())
        except OSError:
            self.feed = None

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
        self.shown = False
