"""The audit log: every change asked of the API, and every refused login, one JSON line
each (who, what, when, from where, and how it ended), appended to var/log/pyvz-audit.log."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from pyvz.paths import Paths


class Audit:
    def __init__(self, paths: Paths) -> None:
        self.path = paths.audit_log

    def write(self, **entry: Any) -> None:
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **entry}, ensure_ascii=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One write(2) of one line with O_APPEND: lines from two writers never interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
