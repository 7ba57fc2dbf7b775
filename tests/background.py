"""A pyvz command run in the background on a test host, its output read as it comes, and
its ssh's stderr too (where a receiver's stderr arrives: the sender keeps it in a memfd),
so a test can wait for a fault point on either end (pyvz/faults.py) and then kill there."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.conftest import REPO, Done


class Background:
    def __init__(self, argv: Sequence[str], env: dict[str, str], what: str) -> None:
        self.what = what  # for messages: "vzmigrate", "vzreplicate"
        self.started = time.monotonic()
        self.took = 0.0
        self.proc = subprocess.Popen(
            list(argv),
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = [
            threading.Thread(target=self._read, args=(pipe, lines), daemon=True)
            for pipe, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(pipe: object, lines: list[str]) -> None:
        for line in pipe:  # type: ignore[attr-defined]
            lines.append(line)

    def remote_err(self) -> str:
        """What the command's ssh wrote to stderr so far (the receiver's stderr included)."""
        texts = []
        try:
            fds = list(Path(f"/proc/{self.proc.pid}/fd").iterdir())
        except OSError:
            return ""
        for fd in fds:
            try:
                if os.readlink(fd).startswith("/memfd:stderr"):
                    texts.append(fd.read_text(errors="replace"))
            except OSError:
                pass
        return "".join(texts)

    def wait_point(self, name: str, timeout: float = 120) -> int:
        """The PID of the process (this end or the other) that stopped at point `name`."""
        pattern = re.compile(rf"fault point {name} reached \(pid (\d+)\)")
        deadline = time.monotonic() + timeout
        while True:
            match = pattern.search("".join(self.err)) or pattern.search(self.remote_err())
            if match:
                return int(match[1])
            if self.proc.poll() is not None:
                self.finish(10)
                pytest.fail(
                    f"{self.what} ended ({self.proc.returncode}) before point {name}: "
                    f"{''.join(self.err)}{''.join(self.out)}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"point {name} not reached in {timeout:.0f} s: {''.join(self.err)}")
            time.sleep(0.05)

    def finish(self, timeout: float = 120) -> Done:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"{self.what} did not end within {timeout:.0f} s: {''.join(self.err)}")
        for reader in self.readers:
            reader.join(10)
        self.took = time.monotonic() - self.started
        return Done(self.proc.returncode, "".join(self.out), "".join(self.err))
